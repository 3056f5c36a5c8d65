//! `SessionRegistry` actor: the broker's book of sessions, services and
//! links.
//!
//! Owns: the maps of sessions (id → `Session` actor, its services), named
//! services ((owner, name) → link), and links (id → link actor, with
//! the keyed hash of the password each proved). Only this actor creates or
//! forgets links, so sharing decisions are made in one place, in order.
//!
//! Takes: `OpenSession`, `GetSession`, `SessionEnded`, `ServiceDirect`,
//! `ServiceCloud`, `ServiceIntegrated`, `Disconnect`, `Status`, `Summary`,
//! `LinkClosed`, `Shutdown`, `ListKnownServices`, `ForgetKnownService`.
//! After every change
//! it publishes a routing snapshot (`routes`) that requests are routed by.
//!
//! On failure: a link that fails its first connect is forgotten and the
//! caller gets the error; a session that ends releases every link it held;
//! a named service unused for `named_idle_timeout` is released.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix::prelude::*;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::cloud_login::LoginKey;
use super::dialer::{CloudRoute, CloudTarget, Dialer};
use super::direct_link::{DirectLink, LinkConfig, NewDirectLink};
use super::error::BrokerError;
use super::integrated::{IntegratedLink, NewIntegratedLink};
use super::known_services::KnownServices;
use super::link::LinkChannel;
use super::link_actor::{
    Acquire, Acquired, CloseLink, Hold, LinkClosed, LinkCommon, LinkHandle, LinkId, LinkInfo,
    LinkKey, LinkStatus, Release, Transport,
};
use super::names;
use super::peer::{Owner, Peer, owner_for};
use super::routes::{LinkRoute, NamedRoute, Routes, SessionRoute};
use super::session::{EndSession, NotifyShutdown, Session};
use crate::secret::Secret;
use crate::service::drivers::ssh::SshDriverConfig;
use crate::service::exec_limits::ExecLimits;
use crate::wire::pin::Fingerprint;
use tokio::sync::watch;

/// Broker-wide settings the registry applies.
#[derive(Debug, Clone)]
pub struct RegistrySettings {
    pub link: LinkConfig,
    /// Device driver settings of integrated services.
    pub ssh: SshDriverConfig,
    /// Exec caps of integrated services; their device slots are shared by
    /// every inventory this broker opens.
    pub exec: ExecLimits,
    /// A named service unused this long is released (0: never).
    pub named_idle_timeout: Duration,
    /// Time a new session has to attach.
    pub attach_grace: Duration,
    /// Sessions one local uid may hold at once.
    pub max_sessions_per_user: usize,
    /// Links one owner (a uid, or the sharing group) may hold at once.
    pub max_links_per_user: usize,
    /// Named services one owner may hold at once.
    pub max_named_per_user: usize,
    /// Members of this group share links and named services.
    pub share_group: Option<u32>,
    /// Where learned service fingerprints are kept (`None`: memory only).
    pub state_dir: Option<PathBuf>,
    /// The HTTP proxy for links over TCP that name none themselves.
    pub proxy: crate::proxy::ProxyRule,
}

impl Default for RegistrySettings {
    fn default() -> Self {
        Self {
            link: LinkConfig::default(),
            ssh: SshDriverConfig::default(),
            exec: ExecLimits::default(),
            named_idle_timeout: Duration::from_secs(1800),
            attach_grace: Duration::from_secs(10),
            max_sessions_per_user: 4096,
            max_links_per_user: 1024,
            max_named_per_user: 1024,
            share_group: None,
            state_dir: None,
            proxy: Default::default(),
        }
    }
}

struct SessionEntry {
    peer: Peer,
    client_name: String,
    addr: Addr<Session>,
    cancel: CancellationToken,
    in_flight: Arc<AtomicU32>,
    services: HashMap<String, LinkId>,
}

struct LinkEntry {
    /// The link's live channel, as it publishes it.
    channel: tokio::sync::watch::Receiver<Option<LinkChannel>>,
    in_flight: Arc<AtomicU32>,
    key: LinkKey,
    password_tag: [u8; 32],
    transport: Transport,
    /// The certificate the link verified (known once it connected).
    fingerprint: Option<Fingerprint>,
    handle: LinkHandle,
}

struct NamedEntry {
    link: LinkId,
    /// Milliseconds since the routes' epoch; the front door updates it.
    last_used: Arc<AtomicU64>,
}

pub struct SessionRegistry {
    settings: RegistrySettings,
    next_id: u64,
    tag_key: [u8; 32],
    sessions: HashMap<String, SessionEntry>,
    links: HashMap<LinkId, LinkEntry>,
    named: HashMap<(Owner, String), NamedEntry>,
    known: KnownServices,
    /// Parent of every request's cancellation (broker shutdown).
    cancel: CancellationToken,
    routes: watch::Sender<Arc<Routes>>,
    epoch: Instant,
}

impl SessionRegistry {
    /// A registry and the receiving end of its routing snapshots.
    pub fn new(
        settings: RegistrySettings,
        cancel: CancellationToken,
    ) -> (Self, watch::Receiver<Arc<Routes>>) {
        let initial = Routes::new(settings.share_group, cancel.clone());
        let epoch = initial.epoch;
        let (routes, receiver) = watch::channel(Arc::new(initial));
        let known = KnownServices::load(
            settings
                .state_dir
                .as_ref()
                .map(|d| d.join("known_services.json")),
        );
        let registry = Self {
            settings,
            next_id: 0,
            tag_key: rand::random(),
            sessions: HashMap::new(),
            links: HashMap::new(),
            named: HashMap::new(),
            known,
            cancel,
            routes,
            epoch,
        };
        (registry, receiver)
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn link_route(&self, id: LinkId) -> Option<LinkRoute> {
        self.links.get(&id).map(|l| LinkRoute {
            acquire: l.handle.acquire.clone(),
            channel: l.channel.clone(),
            in_flight: l.in_flight.clone(),
        })
    }

    /// Publishes the current routing table (after every change).
    fn publish(&self) {
        let mut routes = Routes::new(self.settings.share_group, self.cancel.clone());
        routes.epoch = self.epoch;
        for (id, s) in &self.sessions {
            let services = s
                .services
                .iter()
                .filter_map(|(sid, link)| Some((sid.clone(), self.link_route(*link)?)))
                .collect();
            routes.sessions.insert(
                id.clone(),
                SessionRoute {
                    uid: s.peer.uid,
                    cancel: s.cancel.clone(),
                    in_flight: s.in_flight.clone(),
                    services,
                },
            );
        }
        for (key, n) in &self.named {
            if let Some(route) = self.link_route(n.link) {
                routes.named.insert(
                    key.clone(),
                    NamedRoute {
                        route,
                        last_used: n.last_used.clone(),
                    },
                );
            }
        }
        self.routes.send_replace(Arc::new(routes));
        metrics::gauge!("switchyard_sessions").set(self.sessions.len() as f64);
        for transport in Transport::ALL {
            let links = self
                .links
                .values()
                .filter(|l| l.transport == transport)
                .count();
            metrics::gauge!("switchyard_links", "transport" => transport.as_str())
                .set(links as f64);
        }
    }

    fn next(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Keyed hash of a password: links remember which password they proved
    /// without keeping a comparable copy around for lookups.
    fn tag(&self, password: &Secret) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.tag_key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(password.expose().as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The live link to share for `key`: one that proved the same secret
    /// (`tag`; `None` when the caller proves none and rides an existing
    /// link of its own principal), and, when the caller pins a certificate,
    /// verified that same certificate (or has not connected yet). The
    /// oldest wins, so callers converge on one link.
    fn shared_link(
        &self,
        key: &LinkKey,
        tag: Option<&[u8; 32]>,
        pinned: Option<Fingerprint>,
    ) -> Option<LinkId> {
        self.links
            .iter()
            .filter(|(_, l)| {
                l.key == *key
                    && tag.is_none_or(|t| bool::from(l.password_tag.ct_eq(t)))
                    && (pinned.is_none() || l.fingerprint.is_none() || l.fingerprint == pinned)
            })
            .map(|(id, _)| *id)
            .min()
    }

    /// Creates a link's common part; `start` builds and starts the actor
    /// from it. The link is registered under a fresh id.
    fn add_link(
        &mut self,
        key: LinkKey,
        password_tag: [u8; 32],
        transport: Transport,
        ctx: &mut Context<Self>,
        start: impl FnOnce(LinkCommon) -> LinkHandle,
    ) -> LinkId {
        let id = self.next();
        let (common, channel) = LinkCommon::new(
            id,
            key.clone(),
            ctx.address().recipient(),
            self.settings.link.idle_timeout,
        );
        let in_flight = common.in_flight.clone();
        info!(link = id, target = %key.target, user = %key.username, owner = %key.owner, "link created");
        let handle = start(common);
        self.links.insert(
            id,
            LinkEntry {
                channel,
                in_flight,
                key,
                password_tag,
                transport,
                fingerprint: None,
                handle,
            },
        );
        id
    }

    fn session_of(&self, peer: &Peer, id: &str) -> Result<&SessionEntry, BrokerError> {
        let entry = self.sessions.get(id).ok_or_else(|| {
            BrokerError::NotFound(format!("no session {id:?} (it may have ended)"))
        })?;
        if entry.peer.uid != peer.uid {
            return Err(BrokerError::PermissionDenied(format!(
                "session {id:?} belongs to another user"
            )));
        }
        Ok(entry)
    }

    /// Refuses a new link when `owner` already holds
    /// `max_links_per_user` of them.
    fn check_link_cap(&self, owner: Owner) -> Result<(), BrokerError> {
        let held = self.links.values().filter(|l| l.key.owner == owner).count();
        if held >= self.settings.max_links_per_user {
            metrics::counter!("switchyard_links_refused_total").increment(1);
            return Err(BrokerError::ResourceExhausted(format!(
                "{owner} already holds {held} links, the broker's limit \
                 (broker.max_links_per_user); disconnect services that are no longer used"
            )));
        }
        Ok(())
    }

    /// Refuses a new named service `name` when `owner` already holds
    /// `max_named_per_user` of them (replacing one of its names is fine).
    fn check_named_cap(&self, owner: Owner, name: &str) -> Result<(), BrokerError> {
        if self.named.contains_key(&(owner, name.to_string())) {
            return Ok(());
        }
        let held = self.named.keys().filter(|(o, _)| *o == owner).count();
        if held >= self.settings.max_named_per_user {
            metrics::counter!("switchyard_named_refused_total").increment(1);
            return Err(BrokerError::ResourceExhausted(format!(
                "{owner} already holds {held} named services, the broker's limit \
                 (broker.max_named_per_user); `switchyard disconnect` unused ones"
            )));
        }
        Ok(())
    }

    fn release(&mut self, link: LinkId, ctx: &mut Context<Self>) {
        if let Some(entry) = self.links.get(&link) {
            let release = entry.handle.release.clone();
            ctx.spawn(
                async move {
                    let _ = release.send(Release).await;
                }
                .into_actor(self),
            );
        }
    }

    fn sweep_named(&mut self, ctx: &mut Context<Self>) {
        let timeout = self.settings.named_idle_timeout;
        if timeout.is_zero() {
            return;
        }
        let now = self.now_ms();
        let timeout_ms = timeout.as_millis() as u64;
        let expired: Vec<_> = self
            .named
            .iter()
            .filter(|(_, n)| now.saturating_sub(n.last_used.load(Ordering::Relaxed)) >= timeout_ms)
            .map(|(k, _)| k.clone())
            .collect();
        if expired.is_empty() {
            return;
        }
        for key in expired {
            if let Some(n) = self.named.remove(&key) {
                info!(name = %key.1, owner = %key.0, "named service idle; released");
                self.release(n.link, ctx);
            }
        }
        self.publish();
    }
}

impl Actor for SessionRegistry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
        let period = (self.settings.named_idle_timeout / 4)
            .clamp(Duration::from_millis(100), Duration::from_secs(30));
        ctx.run_interval(period, |act, ctx| act.sweep_named(ctx));
    }
}

#[derive(Message)]
#[rtype(result = "Result<String, BrokerError>")]
pub struct OpenSession {
    pub peer: Peer,
    pub client_name: String,
}

impl Handler<OpenSession> for SessionRegistry {
    type Result = Result<String, BrokerError>;

    fn handle(&mut self, msg: OpenSession, ctx: &mut Self::Context) -> Self::Result {
        if self.cancel.is_cancelled() {
            return Err(BrokerError::Unavailable(
                "the broker is shutting down".into(),
            ));
        }
        let held = self
            .sessions
            .values()
            .filter(|s| s.peer.uid == msg.peer.uid)
            .count();
        if held >= self.settings.max_sessions_per_user {
            // Counted, not logged each time: a client retrying in a loop
            // would flood the log.
            metrics::counter!("switchyard_sessions_refused_total").increment(1);
            return Err(BrokerError::ResourceExhausted(format!(
                "uid {} already holds {held} sessions, the broker's limit \
                 (broker.max_sessions_per_user); close sessions that are no longer used",
                msg.peer.uid
            )));
        }
        let n = self.next();
        let id = format!("s{n}-{:08x}", rand::random::<u32>());
        let cancel = self.cancel.child_token();
        let addr = Session::new(
            id.clone(),
            ctx.address(),
            cancel.clone(),
            self.settings.attach_grace,
        )
        .start();
        let client_name = names::tidy_label(&msg.client_name);
        info!(session = %id, uid = msg.peer.uid, pid = ?msg.peer.pid, client = %client_name, "session opened");
        self.sessions.insert(
            id.clone(),
            SessionEntry {
                peer: msg.peer,
                client_name,
                addr,
                cancel,
                in_flight: Arc::new(AtomicU32::new(0)),
                services: HashMap::new(),
            },
        );
        self.publish();
        Ok(id)
    }
}

#[derive(Message)]
#[rtype(result = "Result<Addr<Session>, BrokerError>")]
pub struct GetSession {
    pub peer: Peer,
    pub session_id: String,
}

impl Handler<GetSession> for SessionRegistry {
    type Result = Result<Addr<Session>, BrokerError>;

    fn handle(&mut self, msg: GetSession, _: &mut Self::Context) -> Self::Result {
        Ok(self.session_of(&msg.peer, &msg.session_id)?.addr.clone())
    }
}

/// Sent by a session as it ends.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SessionEnded(pub String);

impl Handler<SessionEnded> for SessionRegistry {
    type Result = ();

    fn handle(&mut self, msg: SessionEnded, ctx: &mut Self::Context) {
        if let Some(entry) = self.sessions.remove(&msg.0) {
            entry.cancel.cancel();
            for link in entry.services.into_values() {
                self.release(link, ctx);
            }
            self.publish();
        }
    }
}

/// A direct-connection request, already converted from the API.
#[derive(Message)]
#[rtype(result = "Result<ServiceInfo, BrokerError>")]
pub struct ServiceDirect {
    pub peer: Peer,
    pub session_id: Option<String>,
    pub name: Option<String>,
    pub username: String,
    pub host: String,
    pub port: u16,
    pub password: Option<Secret>,
    pub fingerprint: Option<Fingerprint>,
    /// Set: over TCP to this URL instead of QUIC to `host:port`.
    pub rpc_url: Option<crate::wire::tcp::RpcUrl>,
    /// The caller's HTTP proxy for the TCP connection (else the broker's
    /// configured one, if any applies to the host).
    pub proxy: Option<crate::proxy::Proxy>,
    /// Without `rpc_url`: the service's TCP RPC port, tried when QUIC to
    /// `host:port` gets no answer (`[broker] transport`).
    pub tcp_port: u16,
}

impl ServiceDirect {
    /// The TCP listener a QUIC link falls back to: the same host at
    /// `tcp_port` (none with an `rpc_url`, which is TCP already).
    pub fn fallback(&self) -> Option<crate::wire::tcp::RpcUrl> {
        match &self.rpc_url {
            Some(_) => None,
            None => Some(crate::wire::tcp::RpcUrl {
                host: self.host.clone(),
                port: self.tcp_port,
                path: crate::wire::tcp::RPC_PATH.into(),
            }),
        }
    }

    /// What the link is to: `host:port` (QUIC) or the `rpc_url` (TCP), so
    /// the two transports to one service are separate links.
    pub fn target(&self) -> String {
        match &self.rpc_url {
            Some(url) => url.to_string(),
            None => format!("{}:{}", self.host, self.port),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ServiceInfo {
    pub service_id: Option<String>,
    pub name: Option<String>,
    pub service_name: String,
    pub fingerprint: Option<Fingerprint>,
    pub reused: bool,
}

impl SessionRegistry {
    /// Finds the link to share, or creates one. Returns it and whether it
    /// already existed.
    fn link_for(
        &mut self,
        msg: &ServiceDirect,
        ctx: &mut Context<Self>,
    ) -> Result<(LinkId, bool), BrokerError> {
        let owner = owner_for(&msg.peer, self.settings.share_group);
        let key = LinkKey {
            target: msg.target(),
            username: msg.username.clone(),
            owner,
        };
        let pinned = msg.fingerprint;
        match &msg.password {
            None => self
                .shared_link(&key, None, pinned)
                .map(|id| (id, true))
                .ok_or_else(|| {
                    BrokerError::InvalidArgument(format!(
                        "a password is needed: there is no live link to {} as {}",
                        key.target, key.username
                    ))
                }),
            Some(password) => {
                let tag = self.tag(password);
                if let Some(id) = self.shared_link(&key, Some(&tag), pinned) {
                    return Ok((id, true));
                }
                self.check_link_cap(owner)?;
                let fingerprint = pinned.or_else(|| self.known.get(owner, &key.target));
                let config = self.settings.link.clone();
                let fallback = msg.fallback();
                let proxy = msg.rpc_url.as_ref().or(fallback.as_ref()).and_then(|url| {
                    msg.proxy
                        .clone()
                        .or_else(|| self.settings.proxy.for_host(&url.host).cloned())
                });
                let id = self.add_link(key, tag, Transport::Direct, ctx, |common| {
                    LinkHandle::of(
                        &DirectLink::new(NewDirectLink {
                            common,
                            dialer: Dialer::Password {
                                password: password.clone(),
                                rpc_url: msg.rpc_url.clone(),
                                proxy,
                                fallback,
                                policy: config.transport,
                            },
                            fingerprint,
                            config,
                        })
                        .start(),
                    )
                });
                Ok((id, false))
            }
        }
    }
}

impl Handler<ServiceDirect> for SessionRegistry {
    type Result = ResponseActFuture<Self, Result<ServiceInfo, BrokerError>>;

    fn handle(&mut self, msg: ServiceDirect, ctx: &mut Self::Context) -> Self::Result {
        let checked = (|| {
            self.check_target(&msg.peer, &msg.session_id, &msg.name)?;
            if msg.username.is_empty() || (msg.host.is_empty() && msg.rpc_url.is_none()) {
                return Err(BrokerError::InvalidArgument(
                    "a direct connection needs a user name and a host (or an rpc_url)".into(),
                ));
            }
            names::label("user name", &msg.username)?;
            names::label("host", &msg.target())
        })();
        let link = checked.and_then(|()| self.link_for(&msg, ctx));
        let (link_id, existed) = match link {
            Ok(l) => l,
            Err(e) => return Box::pin(fut::ready(Err(e))),
        };
        self.acquire_then(link_id, move |acquired, act, ctx| {
            if let Some(entry) = act.links.get_mut(&link_id) {
                entry.fingerprint = acquired.fingerprint;
            }
            if let (Some(pinned), Some(seen)) = (msg.fingerprint, acquired.fingerprint)
                && pinned != seen
            {
                act.release(link_id, ctx);
                return Err(BrokerError::Link(
                    super::link::LinkError::FingerprintMismatch {
                        target: msg.target(),
                        expected: pinned.to_string(),
                        presented: seen.to_string(),
                    },
                ));
            }
            let owner = owner_for(&msg.peer, act.settings.share_group);
            let target = msg.target();
            // Learned on first use; a fingerprint the caller gave
            // explicitly (and the service just proved) replaces the
            // remembered one, so later callers without one are not refused.
            if let Some(fp) = acquired.fingerprint
                && act.known.get(owner, &target) != Some(fp)
                && (msg.fingerprint.is_some() || act.known.get(owner, &target).is_none())
                && let Err(e) = act.known.record(owner, &target, fp)
            {
                warn!(error = %e, "cannot persist the service fingerprint");
            }
            let info = ServiceInfo {
                service_id: None,
                name: None,
                service_name: acquired.service_name.clone(),
                fingerprint: acquired.fingerprint,
                reused: existed,
            };
            act.record_service(link_id, msg.session_id, msg.name, owner, info, ctx)
        })
    }
}

impl SessionRegistry {
    /// Takes a hold on a link (connecting it if needed), then hands the
    /// result to `then` back inside the actor.
    fn acquire_then(
        &mut self,
        link_id: LinkId,
        then: impl FnOnce(Acquired, &mut Self, &mut Context<Self>) -> Result<ServiceInfo, BrokerError>
        + 'static,
    ) -> ResponseActFuture<Self, Result<ServiceInfo, BrokerError>> {
        let Some(acquire) = self.links.get(&link_id).map(|l| l.handle.acquire.clone()) else {
            return Box::pin(fut::ready(Err(BrokerError::Internal(
                "link vanished".into(),
            ))));
        };
        let acquire = async move { acquire.send(Acquire { hold: true }).await };
        Box::pin(
            acquire
                .into_actor(self)
                .map(move |result, act, ctx| match result {
                    Ok(Ok(acquired)) => then(acquired, act, ctx),
                    Ok(Err(e)) => Err(e.into()),
                    Err(e) => Err(BrokerError::mailbox(e)),
                }),
        )
    }

    /// Files an acquired (and held) link under a session service or a
    /// named service, and publishes the new routes.
    fn record_service(
        &mut self,
        link_id: LinkId,
        session_id: Option<String>,
        name: Option<String>,
        owner: Owner,
        mut info: ServiceInfo,
        ctx: &mut Context<Self>,
    ) -> Result<ServiceInfo, BrokerError> {
        match (session_id, name) {
            (Some(session), _) => {
                let n = self.next();
                let service_id = format!("v{n}");
                match self.sessions.get_mut(&session) {
                    Some(entry) => {
                        entry.services.insert(service_id.clone(), link_id);
                    }
                    None => {
                        // The session ended while we connected.
                        self.release(link_id, ctx);
                        return Err(BrokerError::NotFound(format!(
                            "session {session:?} has ended"
                        )));
                    }
                }
                info.service_id = Some(service_id);
            }
            (None, Some(name)) => {
                // Checked before connecting too; two calls may have raced.
                if let Err(e) = self.check_named_cap(owner, &name) {
                    self.release(link_id, ctx);
                    return Err(e);
                }
                let previous = self.named.insert(
                    (owner, name.clone()),
                    NamedEntry {
                        link: link_id,
                        last_used: Arc::new(AtomicU64::new(self.now_ms())),
                    },
                );
                if let Some(previous) = previous {
                    self.release(previous.link, ctx);
                }
                info.name = Some(name);
            }
            (None, None) => {}
        }
        self.publish();
        Ok(info)
    }

    /// Checks that a request names exactly one of a session and a name,
    /// and that the session is the caller's.
    fn check_target(
        &self,
        peer: &Peer,
        session_id: &Option<String>,
        name: &Option<String>,
    ) -> Result<(), BrokerError> {
        match (session_id, name) {
            (Some(id), None) => self.session_of(peer, id).map(drop),
            (None, Some(name)) => {
                names::service_name(name)?;
                self.check_named_cap(owner_for(peer, self.settings.share_group), name)
            }
            _ => Err(BrokerError::InvalidArgument(
                "give either a session id or a service name".into(),
            )),
        }
    }
}

/// A service reached with a cloud login (relayed, or direct with SSO).
#[derive(Message)]
#[rtype(result = "Result<ServiceInfo, BrokerError>")]
pub struct ServiceCloud {
    pub peer: Peer,
    pub session_id: Option<String>,
    pub name: Option<String>,
    pub login: LoginKey,
    pub target: CloudTarget,
}

impl Handler<ServiceCloud> for SessionRegistry {
    type Result = ResponseActFuture<Self, Result<ServiceInfo, BrokerError>>;

    fn handle(&mut self, msg: ServiceCloud, ctx: &mut Self::Context) -> Self::Result {
        if let Err(e) = self.check_target(&msg.peer, &msg.session_id, &msg.name) {
            return Box::pin(fut::ready(Err(e)));
        }
        let serial = msg.target.serial.clone();
        if serial.is_empty() {
            return Box::pin(fut::ready(Err(BrokerError::InvalidArgument(
                "a cloud service needs its serial".into(),
            ))));
        }
        let labels = names::label("serial", &serial).and_then(|()| match &msg.target.route {
            CloudRoute::Direct { addr: Some(addr) } => names::label("service address", addr),
            _ => Ok(()),
        });
        if let Err(e) = labels {
            return Box::pin(fut::ready(Err(e)));
        }
        let owner = owner_for(&msg.peer, self.settings.share_group);
        let label = match &msg.target.route {
            CloudRoute::Relayed => format!("{serial} (relayed by {})", msg.login.relay),
            CloudRoute::Direct { addr } => format!(
                "{serial} (direct to {}, SSO by {})",
                addr.as_deref().unwrap_or("its advertised address"),
                msg.login.relay
            ),
        };
        let key = LinkKey {
            target: label,
            username: msg.login.identity.clone(),
            owner,
        };
        // Links of one login are shared; another login (or method) of the
        // same identity gets its own.
        let tag = self.tag(&Secret::new(format!("{:?}", msg.login)));
        let pinned = msg.target.e2ee;
        let (link_id, existed) = match self.shared_link(&key, Some(&tag), pinned) {
            Some(id) => (id, true),
            None => {
                if let Err(e) = self.check_link_cap(owner) {
                    return Box::pin(fut::ready(Err(e)));
                }
                let config = self.settings.link.clone();
                let dialer = Dialer::Cloud(msg.target.clone());
                let id = self.add_link(key, tag, dialer.transport(), ctx, |common| {
                    LinkHandle::of(
                        &DirectLink::new(NewDirectLink {
                            common,
                            dialer,
                            fingerprint: pinned,
                            config,
                        })
                        .start(),
                    )
                });
                (id, false)
            }
        };
        let Some(hold) = self.links.get(&link_id).map(|l| l.handle.hold.clone()) else {
            return Box::pin(fut::ready(Err(BrokerError::Internal(
                "link vanished".into(),
            ))));
        };
        Box::pin(async move { hold.send(Hold).await }.into_actor(self).map(
            move |sent, act, ctx| {
                sent.map_err(BrokerError::mailbox)?;
                let info = ServiceInfo {
                    service_id: None,
                    name: None,
                    service_name: serial,
                    fingerprint: pinned,
                    reused: existed,
                };
                act.record_service(link_id, msg.session_id, msg.name, owner, info, ctx)
            },
        ))
    }
}

/// Run the service library in the broker over an inventory on this host.
#[derive(Message)]
#[rtype(result = "Result<ServiceInfo, BrokerError>")]
pub struct ServiceIntegrated {
    pub peer: Peer,
    pub session_id: Option<String>,
    pub name: Option<String>,
    pub db: PathBuf,
    pub admin_password: Secret,
}

impl Handler<ServiceIntegrated> for SessionRegistry {
    type Result = ResponseActFuture<Self, Result<ServiceInfo, BrokerError>>;

    fn handle(&mut self, msg: ServiceIntegrated, ctx: &mut Self::Context) -> Self::Result {
        let prepared = self
            .check_target(&msg.peer, &msg.session_id, &msg.name)
            .and_then(|()| super::caller_access::inventory_path_for(&msg.peer, &msg.db));
        let db = match prepared {
            Ok(db) => db,
            Err(e) => return Box::pin(fut::ready(Err(e))),
        };
        let owner = owner_for(&msg.peer, self.settings.share_group);
        let key = LinkKey {
            target: format!("integrated:{}", db.display()),
            username: "admin".into(),
            owner,
        };
        let tag = self.tag(&msg.admin_password);
        let (link_id, existed) = match self.shared_link(&key, Some(&tag), None) {
            Some(id) => (id, true),
            None => {
                if let Err(e) = self.check_link_cap(owner) {
                    return Box::pin(fut::ready(Err(e)));
                }
                let ssh = self.settings.ssh.clone();
                let exec = self.settings.exec.clone();
                let password = msg.admin_password.clone();
                let id = self.add_link(key, tag, Transport::Integrated, ctx, |common| {
                    LinkHandle::of(
                        &IntegratedLink::new(NewIntegratedLink {
                            common,
                            db,
                            admin_password: password,
                            ssh,
                            exec,
                        })
                        .start(),
                    )
                });
                (id, false)
            }
        };
        self.acquire_then(link_id, move |acquired, act, ctx| {
            let info = ServiceInfo {
                service_id: None,
                name: None,
                service_name: acquired.service_name.clone(),
                fingerprint: None,
                reused: existed,
            };
            act.record_service(link_id, msg.session_id, msg.name, owner, info, ctx)
        })
    }
}

#[derive(Message)]
#[rtype(result = "Result<(), BrokerError>")]
pub struct Disconnect {
    pub peer: Peer,
    pub name: String,
}

impl Handler<Disconnect> for SessionRegistry {
    type Result = Result<(), BrokerError>;

    fn handle(&mut self, msg: Disconnect, ctx: &mut Self::Context) -> Self::Result {
        let owner = owner_for(&msg.peer, self.settings.share_group);
        let entry = self
            .named
            .remove(&(owner, msg.name.clone()))
            .ok_or_else(|| BrokerError::NotFound(format!("no named service {:?}", msg.name)))?;
        self.release(entry.link, ctx);
        self.publish();
        Ok(())
    }
}

/// The calling owner's learned service fingerprints, (target, fingerprint)
/// sorted by target.
#[derive(Message)]
#[rtype(result = "Vec<(String, Fingerprint)>")]
pub struct ListKnownServices {
    pub peer: Peer,
}

impl Handler<ListKnownServices> for SessionRegistry {
    type Result = MessageResult<ListKnownServices>;

    fn handle(&mut self, msg: ListKnownServices, _: &mut Self::Context) -> Self::Result {
        let owner = owner_for(&msg.peer, self.settings.share_group);
        MessageResult(self.known.list(owner))
    }
}

/// Forgets the calling owner's learned fingerprint for a target
/// (`host:port`); returns it and the target. `NotFound` when there is none. Live links keep
/// the certificate they verified; the next new link trusts on first use.
#[derive(Message)]
#[rtype(result = "Result<(String, Fingerprint), BrokerError>")]
pub struct ForgetKnownService {
    pub peer: Peer,
    /// `host:port`; a `host` that matches nothing means `host:8181`.
    pub target: String,
}

impl Handler<ForgetKnownService> for SessionRegistry {
    type Result = Result<(String, Fingerprint), BrokerError>;

    fn handle(&mut self, msg: ForgetKnownService, _: &mut Self::Context) -> Self::Result {
        let owner = owner_for(&msg.peer, self.settings.share_group);
        let target = if self.known.get(owner, &msg.target).is_none() {
            format!("{}:8181", msg.target)
        } else {
            msg.target.clone()
        };
        match self.known.forget(owner, &target) {
            Ok(Some(fp)) => {
                info!(%owner, target = %crate::label::tidy(&target), "forgot a learned service fingerprint");
                Ok((target, fp))
            }
            Ok(None) => Err(BrokerError::NotFound(format!(
                "no remembered certificate for {:?} (see `switchyard known-services list`)",
                crate::label::tidy(&msg.target)
            ))),
            Err(e) => Err(BrokerError::Internal(format!(
                "cannot update the remembered certificates: {e}"
            ))),
        }
    }
}

impl Handler<LinkClosed> for SessionRegistry {
    type Result = ();

    fn handle(&mut self, msg: LinkClosed, _: &mut Self::Context) {
        self.links.remove(&msg.0);
        self.named.retain(|_, n| n.link != msg.0);
        for s in self.sessions.values_mut() {
            s.services.retain(|_, l| *l != msg.0);
        }
        self.publish();
    }
}

#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub session_id: String,
    pub client_name: String,
    pub pid: Option<u32>,
    pub services: u32,
    pub in_flight: u32,
}

#[derive(Debug, Clone)]
pub struct NamedInfo {
    pub name: String,
    pub link: LinkId,
    pub idle: Duration,
}

#[derive(Debug, Clone, Default)]
pub struct StatusInfo {
    pub sessions: Vec<SessionInfo>,
    pub named: Vec<NamedInfo>,
    pub links: Vec<LinkInfo>,
}

#[derive(Message)]
#[rtype(result = "StatusInfo")]
pub struct Status {
    pub peer: Peer,
}

impl Handler<Status> for SessionRegistry {
    type Result = ResponseFuture<StatusInfo>;

    fn handle(&mut self, msg: Status, _: &mut Self::Context) -> Self::Result {
        let owner = owner_for(&msg.peer, self.settings.share_group);
        let mut sessions: Vec<SessionInfo> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.peer.uid == msg.peer.uid)
            .map(|(id, s)| SessionInfo {
                session_id: id.clone(),
                client_name: s.client_name.clone(),
                pid: s.peer.pid,
                services: s.services.len() as u32,
                in_flight: s.in_flight.load(Ordering::Relaxed),
            })
            .collect();
        sessions.sort_by(|a, b| a.session_id.cmp(&b.session_id));
        let mut named: Vec<NamedInfo> = self
            .named
            .iter()
            .filter(|((o, _), _)| *o == owner)
            .map(|((_, name), n)| NamedInfo {
                name: name.clone(),
                link: n.link,
                idle: std::time::Duration::from_millis(
                    self.now_ms()
                        .saturating_sub(n.last_used.load(Ordering::Relaxed)),
                ),
            })
            .collect();
        named.sort_by(|a, b| a.name.cmp(&b.name));
        let links: Vec<_> = self
            .links
            .values()
            .filter(|l| l.key.owner == owner)
            .map(|l| l.handle.status.clone())
            .collect();
        Box::pin(async move {
            let mut infos = Vec::with_capacity(links.len());
            for link in links {
                if let Ok(info) = link.send(LinkStatus).await {
                    infos.push(info);
                }
            }
            infos.sort_by_key(|l| l.id);
            StatusInfo {
                sessions,
                named,
                links: infos,
            }
        })
    }
}

/// Counts for the daemon's status line.
#[derive(Message)]
#[rtype(result = "(usize, usize)")]
pub struct Summary;

impl Handler<Summary> for SessionRegistry {
    type Result = MessageResult<Summary>;

    /// (sessions, links)
    fn handle(&mut self, _: Summary, _: &mut Self::Context) -> Self::Result {
        MessageResult((self.sessions.len(), self.links.len()))
    }
}

/// Broker shutdown: tell sessions, cancel requests, close links.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown {
    pub reason: String,
}

impl Handler<Shutdown> for SessionRegistry {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: Shutdown, _: &mut Self::Context) -> Self::Result {
        let sessions: Vec<_> = self.sessions.values().map(|s| s.addr.clone()).collect();
        let links: Vec<_> = self
            .links
            .values()
            .map(|l| l.handle.close.clone())
            .collect();
        self.cancel.cancel();
        Box::pin(async move {
            for s in &sessions {
                let _ = s.send(NotifyShutdown(msg.reason.clone())).await;
            }
            for s in sessions {
                let _ = s.send(EndSession).await;
            }
            for l in links {
                let _ = l.send(CloseLink).await;
            }
        })
    }
}
