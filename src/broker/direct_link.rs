//! `DirectLink` actor: one QUIC connection to one service's RPC socket, as
//! one remote user, for one owner.
//!
//! Owns: the connection (and the password needed to re-establish it; wiped
//! on drop), its state, holder count, in-flight counter and connect count.
//!
//! Takes: `Acquire` (a channel to open calls on, connecting first if needed
//! — concurrent first callers share one handshake), `Hold`/`Release`
//! (sessions and named services that keep the link), `LinkStatus`,
//! `CloseLink`.
//!
//! On failure: a lost connection fails in-flight calls at once (their
//! streams error) and is re-established in the background with jittered
//! exponential back-off while anyone holds the link; calls arriving while
//! it is down fail fast with `UNAVAILABLE` naming the service. A refused
//! login or a changed certificate is final: the link stops retrying. A link
//! nobody holds closes after `idle_timeout` (at once when that is 0).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;
use tracing::{Instrument, debug, info, info_span, warn};

use super::backoff::Backoff;
use super::direct_client::{self, DirectTarget};
use super::link::{LinkChannel, LinkError};
use super::peer::Owner;
use crate::secret::Secret;
use crate::wire::conn::{TransportLimits, client_endpoint};
use crate::wire::pin::Fingerprint;

/// Link ids are small integers shown as `L<n>`.
pub type LinkId = u64;

/// What identifies a link for sharing (the password is checked separately,
/// by keyed hash).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LinkKey {
    /// `host:port` as the caller named it.
    pub target: String,
    pub username: String,
    pub owner: Owner,
}

/// Tunables for links.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    pub idle_timeout: Duration,
    /// Bound on resolving, the QUIC/TLS handshake and the login.
    pub connect_timeout: Duration,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    pub limits: TransportLimits,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(10),
            reconnect_min: Duration::from_millis(200),
            reconnect_max: Duration::from_secs(30),
            limits: TransportLimits::default(),
        }
    }
}

/// Told to the registry when a link stops.
#[derive(Message)]
#[rtype(result = "()")]
pub struct LinkClosed(pub LinkId);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    Connecting,
    Up,
    Reconnecting,
    Failed,
}

impl LinkState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Up => "up",
            Self::Reconnecting => "reconnecting",
            Self::Failed => "failed",
        }
    }
}

/// Counts a request on the link (and its session) while alive.
pub struct InFlight(Vec<Arc<AtomicU32>>);

impl InFlight {
    pub fn new(counters: Vec<Arc<AtomicU32>>) -> Self {
        for c in &counters {
            c.fetch_add(1, Ordering::Relaxed);
        }
        Self(counters)
    }

    pub fn also(mut self, counter: Arc<AtomicU32>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        self.0.push(counter);
        self
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        for c in &self.0 {
            c.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// What `Acquire` hands out.
pub struct Acquired {
    pub channel: LinkChannel,
    pub in_flight: InFlight,
    pub fingerprint: Option<Fingerprint>,
    pub service_name: String,
}

/// Get a channel; with `hold`, also take a hold on the link (atomically, so
/// an idle close cannot slip in between).
#[derive(Message)]
#[rtype(result = "Result<Acquired, LinkError>")]
pub struct Acquire {
    pub hold: bool,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Release;

#[derive(Message)]
#[rtype(result = "LinkInfo")]
pub struct LinkStatus;

/// Close the link now (broker shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseLink;

#[derive(Debug, Clone)]
pub struct LinkInfo {
    pub id: LinkId,
    pub key: LinkKey,
    pub transport: &'static str,
    pub state: LinkState,
    pub holders: u32,
    pub in_flight: u32,
    pub connects: u64,
    pub last_error: Option<String>,
    pub fingerprint: Option<Fingerprint>,
}

pub struct DirectLink {
    published: tokio::sync::watch::Sender<Option<LinkChannel>>,
    id: LinkId,
    key: LinkKey,
    password: Secret,
    fingerprint: Option<Fingerprint>,
    config: LinkConfig,
    registry: Recipient<LinkClosed>,
    state: LinkState,
    conn: Option<quinn::Connection>,
    endpoint: Option<quinn::Endpoint>,
    service_name: String,
    /// Bumped on every new connection, so a stale "connection closed"
    /// notice for an old one is ignored.
    generation: u64,
    connecting: bool,
    waiters: Vec<(bool, oneshot::Sender<Result<Acquired, LinkError>>)>,
    holders: u32,
    in_flight: Arc<AtomicU32>,
    connects: u64,
    last_error: Option<LinkError>,
    backoff: Backoff,
    idle_timer: Option<SpawnHandle>,
    retry_timer: Option<SpawnHandle>,
}

/// Everything needed to create a link.
pub struct NewDirectLink {
    /// Where the link publishes its live channel, so callers can skip a
    /// message round trip while it is up.
    pub published: tokio::sync::watch::Sender<Option<LinkChannel>>,
    /// Requests running on the link (shared with its callers' guards).
    pub in_flight: Arc<AtomicU32>,
    pub id: LinkId,
    pub key: LinkKey,
    pub password: Secret,
    pub fingerprint: Option<Fingerprint>,
    pub config: LinkConfig,
    pub registry: Recipient<LinkClosed>,
}

impl DirectLink {
    pub fn new(n: NewDirectLink) -> Self {
        let backoff = Backoff::new(n.config.reconnect_min, n.config.reconnect_max);
        Self {
            published: n.published,
            id: n.id,
            key: n.key,
            password: n.password,
            fingerprint: n.fingerprint,
            config: n.config,
            registry: n.registry,
            state: LinkState::Connecting,
            conn: None,
            endpoint: None,
            service_name: String::new(),
            generation: 0,
            connecting: false,
            waiters: Vec::new(),
            holders: 0,
            in_flight: n.in_flight,
            connects: 0,
            last_error: None,
            backoff,
            idle_timer: None,
            retry_timer: None,
        }
    }

    fn acquired(&mut self, hold: bool, ctx: &mut Context<Self>) -> Option<Acquired> {
        let conn = self
            .conn
            .as_ref()
            .filter(|c| c.close_reason().is_none())?
            .clone();
        if hold {
            self.hold(ctx);
        }
        Some(Acquired {
            channel: LinkChannel::Quic {
                conn,
                target: self.key.target.clone(),
                max_frame: self.config.limits.max_frame,
            },
            in_flight: InFlight::new(vec![self.in_flight.clone()]),
            fingerprint: self.fingerprint,
            service_name: self.service_name.clone(),
        })
    }

    fn hold(&mut self, ctx: &mut Context<Self>) {
        self.holders += 1;
        if let Some(t) = self.idle_timer.take() {
            ctx.cancel_future(t);
        }
    }

    fn start_connect(&mut self, ctx: &mut Context<Self>) {
        if self.connecting {
            return;
        }
        self.connecting = true;
        let target = self.key.target.clone();
        let direct = DirectTarget {
            label: target.clone(),
            addr: "0.0.0.0:0"
                .parse()
                .unwrap_or_else(|_| std::net::SocketAddr::from(([0, 0, 0, 0], 0))),
            username: self.key.username.clone(),
            password: self.password.clone(),
            fingerprint: self.fingerprint,
        };
        let limits = self.config.limits.clone();
        let endpoint = self.endpoint.clone();
        let connect_timeout = self.config.connect_timeout;
        let span = info_span!("link_connect", link = %format!("L{}", self.id), target = %target);
        let attempt = async move {
            let addr = resolve(&target).await?;
            let endpoint = match endpoint {
                Some(e) => e,
                None => client_endpoint(addr).map_err(|e| LinkError::Unreachable {
                    target: target.clone(),
                    reason: e.to_string(),
                })?,
            };
            let direct = DirectTarget { addr, ..direct };
            let connected = direct_client::connect(&endpoint, &direct, &limits).await?;
            Ok((endpoint, connected))
        };
        let timeout_target = self.key.target.clone();
        let fut = async move {
            tokio::time::timeout(connect_timeout, attempt)
                .await
                .unwrap_or_else(|_| {
                    Err(LinkError::Unreachable {
                        target: timeout_target,
                        reason: format!("no answer within {connect_timeout:?}"),
                    })
                })
        }
        .instrument(span);
        ctx.spawn(fut.into_actor(self).map(|result, act, ctx| {
            act.connecting = false;
            act.on_connect_result(result, ctx);
        }));
    }

    fn on_connect_result(
        &mut self,
        result: Result<(quinn::Endpoint, direct_client::DirectConnection), LinkError>,
        ctx: &mut Context<Self>,
    ) {
        match result {
            Ok((endpoint, connected)) => {
                self.endpoint = Some(endpoint);
                self.generation += 1;
                self.connects += 1;
                self.state = LinkState::Up;
                self.last_error = None;
                self.backoff.reset();
                self.fingerprint = Some(connected.fingerprint);
                self.service_name = connected.service_name;
                info!(link = self.id, target = %self.key.target, user = %self.key.username, connects = self.connects, "link up");
                let generation = self.generation;
                let watch = connected.conn.clone();
                self.published.send_replace(Some(LinkChannel::Quic {
                    conn: connected.conn.clone(),
                    target: self.key.target.clone(),
                    max_frame: self.config.limits.max_frame,
                }));
                self.conn = Some(connected.conn);
                ctx.spawn(
                    async move { watch.closed().await }
                        .into_actor(self)
                        .map(move |reason, act, ctx| act.on_lost(generation, reason, ctx)),
                );
                for (hold, waiter) in std::mem::take(&mut self.waiters) {
                    let reply = self
                        .acquired(hold, ctx)
                        .ok_or_else(|| LinkError::Closed("link closed".into()));
                    let _ = waiter.send(reply);
                }
            }
            Err(e) => {
                let permanent = matches!(
                    e,
                    LinkError::Rejected { .. } | LinkError::FingerprintMismatch { .. }
                );
                warn!(link = self.id, target = %self.key.target, error = %e, "link connect failed");
                for (_, waiter) in std::mem::take(&mut self.waiters) {
                    let _ = waiter.send(Err(e.clone()));
                }
                self.last_error = Some(e);
                if permanent || self.holders == 0 {
                    self.state = LinkState::Failed;
                    if self.holders == 0 {
                        self.stop_and_report(ctx);
                    }
                } else {
                    self.state = LinkState::Reconnecting;
                    self.schedule_retry(ctx);
                }
            }
        }
    }

    fn on_lost(
        &mut self,
        generation: u64,
        reason: quinn::ConnectionError,
        ctx: &mut Context<Self>,
    ) {
        if generation != self.generation || self.state != LinkState::Up {
            return;
        }
        warn!(link = self.id, target = %self.key.target, %reason, "link lost");
        self.conn = None;
        self.published.send_replace(None);
        self.last_error = Some(LinkError::Lost {
            target: self.key.target.clone(),
            reason: reason.to_string(),
        });
        if self.holders == 0 {
            self.stop_and_report(ctx);
        } else {
            self.state = LinkState::Reconnecting;
            self.schedule_retry(ctx);
        }
    }

    fn schedule_retry(&mut self, ctx: &mut Context<Self>) {
        if self.retry_timer.is_some() {
            return;
        }
        let delay = self.backoff.next_delay(rand::random::<f64>());
        debug!(link = self.id, ?delay, "reconnect scheduled");
        self.retry_timer = Some(ctx.run_later(delay, |act, ctx| {
            act.retry_timer = None;
            if act.state == LinkState::Reconnecting {
                act.start_connect(ctx);
            }
        }));
    }

    fn stop_and_report(&mut self, ctx: &mut Context<Self>) {
        let id = self.id;
        let registry = self.registry.clone();
        ctx.spawn(
            async move {
                let _ = registry.send(LinkClosed(id)).await;
            }
            .into_actor(self)
            .map(|_, _, ctx| ctx.stop()),
        );
    }

    fn unavailable(&self) -> LinkError {
        let reason = self
            .last_error
            .as_ref()
            .map(|e| e.to_string())
            .unwrap_or_else(|| "not connected".into());
        match self.state {
            LinkState::Failed => self.last_error.clone().unwrap_or(LinkError::Closed(reason)),
            _ => LinkError::Unreachable {
                target: self.key.target.clone(),
                reason: format!("reconnecting ({reason})"),
            },
        }
    }
}

/// Resolves `host:port` (DNS when needed) to the first address.
async fn resolve(target: &str) -> Result<std::net::SocketAddr, LinkError> {
    let unreachable = |reason: String| LinkError::Unreachable {
        target: target.to_string(),
        reason,
    };
    tokio::net::lookup_host(target)
        .await
        .map_err(|e| unreachable(format!("cannot resolve: {e}")))?
        .next()
        .ok_or_else(|| unreachable("name resolves to no address".into()))
}

impl Actor for DirectLink {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Unbounded waits on a link would let callers pile up; the mailbox
        // bound gives back-pressure to senders instead.
        ctx.set_mailbox_capacity(1024);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.published.send_replace(None);
        if let Some(conn) = self.conn.take() {
            conn.close(0u32.into(), b"link closed");
        }
        for (_, waiter) in self.waiters.drain(..) {
            let _ = waiter.send(Err(LinkError::Closed("the link was closed".into())));
        }
        info!(link = self.id, target = %self.key.target, "link closed");
    }
}

impl Handler<Acquire> for DirectLink {
    type Result = ResponseFuture<Result<Acquired, LinkError>>;

    fn handle(&mut self, msg: Acquire, ctx: &mut Self::Context) -> Self::Result {
        if let Some(acquired) = self.acquired(msg.hold, ctx) {
            return Box::pin(std::future::ready(Ok(acquired)));
        }
        match self.state {
            LinkState::Connecting => {
                let (tx, rx) = oneshot::channel();
                self.waiters.push((msg.hold, tx));
                self.start_connect(ctx);
                Box::pin(async move {
                    rx.await
                        .unwrap_or_else(|_| Err(LinkError::Closed("the link was closed".into())))
                })
            }
            _ => Box::pin(std::future::ready(Err(self.unavailable()))),
        }
    }
}

impl Handler<Release> for DirectLink {
    type Result = ();

    fn handle(&mut self, _: Release, ctx: &mut Self::Context) {
        self.holders = self.holders.saturating_sub(1);
        if self.holders > 0 {
            return;
        }
        if self.state != LinkState::Up || self.config.idle_timeout.is_zero() {
            self.stop_and_report(ctx);
            return;
        }
        let idle = self.config.idle_timeout;
        self.idle_timer = Some(ctx.run_later(idle, |act, ctx| {
            act.idle_timer = None;
            if act.holders == 0 {
                debug!(link = act.id, "idle timeout");
                act.stop_and_report(ctx);
            }
        }));
    }
}

impl Handler<LinkStatus> for DirectLink {
    type Result = MessageResult<LinkStatus>;

    fn handle(&mut self, _: LinkStatus, _: &mut Self::Context) -> Self::Result {
        MessageResult(LinkInfo {
            id: self.id,
            key: self.key.clone(),
            transport: "direct",
            state: self.state,
            holders: self.holders,
            in_flight: self.in_flight.load(Ordering::Relaxed),
            connects: self.connects,
            last_error: self.last_error.as_ref().map(|e| e.to_string()),
            fingerprint: self.fingerprint,
        })
    }
}

impl Handler<CloseLink> for DirectLink {
    type Result = ();

    fn handle(&mut self, _: CloseLink, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
