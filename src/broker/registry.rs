//! `SessionRegistry` actor: the broker's book of sessions, services and
//! links.
//!
//! Owns: the maps of sessions (id → `Session` actor, its services), named
//! services ((owner, name) → link), and links (id → `DirectLink` actor, with
//! the keyed hash of the password each proved). Only this actor creates or
//! forgets links, so sharing decisions are made in one place, in order.
//!
//! Takes: `OpenSession`, `GetSession`, `SessionEnded`, `ServiceDirect`,
//! `Disconnect`, `Resolve` (service reference → link), `Status`,
//! `LinkClosed`, `Shutdown`.
//!
//! On failure: a link that fails its first connect is forgotten and the
//! caller gets the error; a session that ends releases every link it held;
//! a named service unused for `named_idle_timeout` is released.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use actix::prelude::*;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::direct_link::{
    Acquire, Acquired, CloseLink, DirectLink, LinkClosed, LinkConfig, LinkId, LinkInfo, LinkKey,
    LinkStatus, NewDirectLink, Release,
};
use super::error::BrokerError;
use super::known_services::KnownServices;
use super::link::LinkChannel;
use super::peer::{Owner, Peer, owner_for};
use super::session::{EndSession, NotifyShutdown, Session};
use crate::secret::Secret;
use crate::wire::pin::Fingerprint;

/// Broker-wide settings the registry applies.
#[derive(Debug, Clone)]
pub struct RegistrySettings {
    pub link: LinkConfig,
    /// A named service unused this long is released (0: never).
    pub named_idle_timeout: Duration,
    /// Time a new session has to attach.
    pub attach_grace: Duration,
    /// Members of this group share links and named services.
    pub share_group: Option<u32>,
    /// Where learned service fingerprints are kept (`None`: memory only).
    pub state_dir: Option<PathBuf>,
}

impl Default for RegistrySettings {
    fn default() -> Self {
        Self {
            link: LinkConfig::default(),
            named_idle_timeout: Duration::from_secs(1800),
            attach_grace: Duration::from_secs(10),
            share_group: None,
            state_dir: None,
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
    /// The certificate the link verified (known once it connected).
    fingerprint: Option<Fingerprint>,
    addr: Addr<DirectLink>,
}

struct NamedEntry {
    link: LinkId,
    last_used: Instant,
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
}

impl SessionRegistry {
    pub fn new(settings: RegistrySettings, cancel: CancellationToken) -> Self {
        let known = KnownServices::load(
            settings
                .state_dir
                .as_ref()
                .map(|d| d.join("known_services.json")),
        );
        Self {
            settings,
            next_id: 0,
            tag_key: rand::random(),
            sessions: HashMap::new(),
            links: HashMap::new(),
            named: HashMap::new(),
            known,
            cancel,
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

    fn release(&mut self, link: LinkId, ctx: &mut Context<Self>) {
        if let Some(entry) = self.links.get(&link) {
            let addr = entry.addr.clone();
            ctx.spawn(
                async move {
                    let _ = addr.send(Release).await;
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
        let expired: Vec<_> = self
            .named
            .iter()
            .filter(|(_, n)| n.last_used.elapsed() >= timeout)
            .map(|(k, _)| k.clone())
            .collect();
        for key in expired {
            if let Some(n) = self.named.remove(&key) {
                info!(name = %key.1, owner = %key.0, "named service idle; released");
                self.release(n.link, ctx);
            }
        }
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
        info!(session = %id, uid = msg.peer.uid, pid = ?msg.peer.pid, client = %msg.client_name, "session opened");
        self.sessions.insert(
            id.clone(),
            SessionEntry {
                peer: msg.peer,
                client_name: msg.client_name,
                addr,
                cancel,
                in_flight: Arc::new(AtomicU32::new(0)),
                services: HashMap::new(),
            },
        );
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
            target: format!("{}:{}", msg.host, msg.port),
            username: msg.username.clone(),
            owner,
        };
        // A caller that pins a certificate shares only a link that verified
        // that same certificate.
        let pinned = msg.fingerprint;
        let same_principal = self.links.iter().filter(|(_, l)| {
            l.key == key && (pinned.is_none() || l.fingerprint.is_none() || l.fingerprint == pinned)
        });
        match &msg.password {
            None => same_principal
                .map(|(id, _)| *id)
                .min()
                .map(|id| (id, true))
                .ok_or_else(|| {
                    BrokerError::InvalidArgument(format!(
                        "a password is needed: there is no live link to {} as {}",
                        key.target, key.username
                    ))
                }),
            Some(password) => {
                let tag = self.tag(password);
                let shared = same_principal
                    .filter(|(_, l)| bool::from(l.password_tag.ct_eq(&tag)))
                    .map(|(id, _)| *id)
                    .min();
                if let Some(id) = shared {
                    return Ok((id, true));
                }
                let fingerprint = msg
                    .fingerprint
                    .or_else(|| self.known.get(owner, &key.target));
                let id = self.next();
                let (published, channel) = tokio::sync::watch::channel(None);
                let in_flight = Arc::new(AtomicU32::new(0));
                let addr = DirectLink::new(NewDirectLink {
                    published,
                    in_flight: in_flight.clone(),
                    id,
                    key: key.clone(),
                    password: password.clone(),
                    fingerprint,
                    config: self.settings.link.clone(),
                    registry: ctx.address().recipient(),
                })
                .start();
                info!(link = id, target = %key.target, user = %key.username, %owner, "link created");
                self.links.insert(
                    id,
                    LinkEntry {
                        channel,
                        in_flight,
                        key,
                        password_tag: tag,
                        fingerprint: None,
                        addr,
                    },
                );
                Ok((id, false))
            }
        }
    }
}

impl Handler<ServiceDirect> for SessionRegistry {
    type Result = ResponseActFuture<Self, Result<ServiceInfo, BrokerError>>;

    fn handle(&mut self, msg: ServiceDirect, ctx: &mut Self::Context) -> Self::Result {
        let checked = (|| {
            match (&msg.session_id, &msg.name) {
                (Some(id), None) => {
                    self.session_of(&msg.peer, id)?;
                }
                (None, Some(name)) if !name.is_empty() => {}
                _ => {
                    return Err(BrokerError::InvalidArgument(
                        "give either a session id or a service name".into(),
                    ));
                }
            }
            if msg.username.is_empty() || msg.host.is_empty() {
                return Err(BrokerError::InvalidArgument(
                    "a direct connection needs a user name and a host".into(),
                ));
            }
            Ok(())
        })();
        let link = checked.and_then(|()| self.link_for(&msg, ctx));
        let (link_id, existed) = match link {
            Ok(l) => l,
            Err(e) => return Box::pin(fut::ready(Err(e))),
        };
        let Some(addr) = self.links.get(&link_id).map(|l| l.addr.clone()) else {
            return Box::pin(fut::ready(Err(BrokerError::Internal(
                "link vanished".into(),
            ))));
        };
        let acquire = async move { addr.send(Acquire { hold: true }).await };
        Box::pin(acquire.into_actor(self).map(move |result, act, ctx| {
            let acquired: Acquired = match result {
                Ok(Ok(a)) => a,
                Ok(Err(e)) => return Err(e.into()),
                Err(e) => return Err(BrokerError::mailbox(e)),
            };
            if let Some(entry) = act.links.get_mut(&link_id) {
                entry.fingerprint = acquired.fingerprint;
            }
            if let (Some(pinned), Some(seen)) = (msg.fingerprint, acquired.fingerprint)
                && pinned != seen
            {
                act.release(link_id, ctx);
                return Err(BrokerError::Link(
                    super::link::LinkError::FingerprintMismatch {
                        target: format!("{}:{}", msg.host, msg.port),
                        expected: pinned.to_string(),
                        presented: seen.to_string(),
                    },
                ));
            }
            let owner = owner_for(&msg.peer, act.settings.share_group);
            let target = format!("{}:{}", msg.host, msg.port);
            if let Some(fp) = acquired.fingerprint
                && act.known.get(owner, &target).is_none()
                && let Err(e) = act.known.record(owner, &target, fp)
            {
                warn!(error = %e, "cannot persist the service fingerprint");
            }
            let mut info = ServiceInfo {
                service_id: None,
                name: None,
                service_name: acquired.service_name.clone(),
                fingerprint: acquired.fingerprint,
                reused: existed,
            };
            match (msg.session_id, msg.name) {
                (Some(session), _) => {
                    let n = act.next();
                    let service_id = format!("v{n}");
                    match act.sessions.get_mut(&session) {
                        Some(entry) => {
                            entry.services.insert(service_id.clone(), link_id);
                        }
                        None => {
                            // The session ended while we connected.
                            act.release(link_id, ctx);
                            return Err(BrokerError::NotFound(format!(
                                "session {session:?} has ended"
                            )));
                        }
                    }
                    info.service_id = Some(service_id);
                }
                (None, Some(name)) => {
                    let previous = act.named.insert(
                        (owner, name.clone()),
                        NamedEntry {
                            link: link_id,
                            last_used: Instant::now(),
                        },
                    );
                    if let Some(previous) = previous {
                        act.release(previous.link, ctx);
                    }
                    info.name = Some(name);
                }
                (None, None) => {}
            }
            Ok(info)
        }))
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
        Ok(())
    }
}

/// Which service a call is for.
#[derive(Debug, Clone)]
pub enum ServiceRef {
    InSession {
        session_id: String,
        service_id: String,
    },
    Named(String),
}

/// What a request needs to run: the link, and the token that cancels it
/// when its session (or the broker) ends.
pub struct Resolved {
    pub link: Addr<DirectLink>,
    /// The link's channel while it is up (no further message needed).
    pub channel: Option<LinkChannel>,
    pub link_in_flight: Arc<AtomicU32>,
    pub cancel: CancellationToken,
    pub session_in_flight: Option<Arc<AtomicU32>>,
}

#[derive(Message)]
#[rtype(result = "Result<Resolved, BrokerError>")]
pub struct Resolve {
    pub peer: Peer,
    pub service: ServiceRef,
}

impl Handler<Resolve> for SessionRegistry {
    type Result = Result<Resolved, BrokerError>;

    fn handle(&mut self, msg: Resolve, _: &mut Self::Context) -> Self::Result {
        let (link_id, cancel, session_in_flight) = match &msg.service {
            ServiceRef::InSession {
                session_id,
                service_id,
            } => {
                let session = self.session_of(&msg.peer, session_id)?;
                let link = *session.services.get(service_id).ok_or_else(|| {
                    BrokerError::NotFound(format!(
                        "no service {service_id:?} in session {session_id:?}"
                    ))
                })?;
                (
                    link,
                    session.cancel.clone(),
                    Some(session.in_flight.clone()),
                )
            }
            ServiceRef::Named(name) => {
                let owner = owner_for(&msg.peer, self.settings.share_group);
                let entry = self.named.get_mut(&(owner, name.clone())).ok_or_else(|| {
                    BrokerError::NotFound(format!(
                        "no named service {name:?}; create it with `switchyard connect direct {name} ...`"
                    ))
                })?;
                entry.last_used = Instant::now();
                (entry.link, self.cancel.child_token(), None)
            }
        };
        let link = self.links.get(&link_id).ok_or_else(|| {
            BrokerError::Unavailable("the service's link has closed; connect again".into())
        })?;
        Ok(Resolved {
            link: link.addr.clone(),
            channel: link.channel.borrow().clone(),
            link_in_flight: link.in_flight.clone(),
            cancel,
            session_in_flight,
        })
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
                idle: n.last_used.elapsed(),
            })
            .collect();
        named.sort_by(|a, b| a.name.cmp(&b.name));
        let links: Vec<_> = self
            .links
            .values()
            .filter(|l| l.key.owner == owner)
            .map(|l| l.addr.clone())
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
        let links: Vec<_> = self.links.values().map(|l| l.addr.clone()).collect();
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
