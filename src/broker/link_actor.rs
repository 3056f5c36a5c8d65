//! What every link actor shares: its identity, the messages it takes, and
//! the bookkeeping of holders, waiters and idle close ([`LinkCommon`]).
//!
//! A link actor owns one way of reaching one service for one principal:
//! `DirectLink` (QUIC to the RPC socket) or `IntegratedLink` (the service
//! library in-process). The registry talks to any of them through a
//! [`LinkHandle`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use actix::dev::ToEnvelope;
use actix::prelude::*;
use tokio::sync::{oneshot, watch};
use tracing::debug;

use super::link::{LinkChannel, LinkError};
use super::peer::Owner;
use crate::wire::pin::Fingerprint;

/// Link ids are small integers shown as `L<n>`.
pub type LinkId = u64;

/// What identifies a link for sharing (the secret is checked separately,
/// by keyed hash).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LinkKey {
    /// `host:port`, or `integrated:<db path>`.
    pub target: String,
    pub username: String,
    pub owner: Owner,
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

/// How a link reaches its service; `status` and the metrics name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// QUIC to the service's RPC socket, with a service password.
    Direct,
    /// QUIC to the service's RPC socket, with a cloud (SSO) login.
    DirectSso,
    /// Through the cloud relay.
    Relayed,
    /// The service library inside the broker.
    Integrated,
}

impl Transport {
    pub const ALL: [Self; 4] = [
        Self::Direct,
        Self::DirectSso,
        Self::Relayed,
        Self::Integrated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::DirectSso => "direct-sso",
            Self::Relayed => "relayed",
            Self::Integrated => "integrated",
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

/// Take a hold without waiting for the link to come up (a cloud service
/// handle is returned at once; `Wait` then waits for it). The link starts
/// connecting and keeps retrying while held.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Hold;

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
    pub transport: Transport,
    pub state: LinkState,
    pub holders: u32,
    pub in_flight: u32,
    pub connects: u64,
    pub last_error: Option<String>,
    pub fingerprint: Option<Fingerprint>,
    /// How the connection travels (`Dialer::carrier`); empty in-process.
    pub carrier: String,
}

/// The registry's handle on any link actor.
#[derive(Clone)]
pub struct LinkHandle {
    pub acquire: Recipient<Acquire>,
    pub release: Recipient<Release>,
    pub hold: Recipient<Hold>,
    pub status: Recipient<LinkStatus>,
    pub close: Recipient<CloseLink>,
}

impl LinkHandle {
    pub fn of<A>(addr: &Addr<A>) -> Self
    where
        A: Actor
            + Handler<Acquire>
            + Handler<Release>
            + Handler<Hold>
            + Handler<LinkStatus>
            + Handler<CloseLink>,
        A::Context: ToEnvelope<A, Acquire>
            + ToEnvelope<A, Release>
            + ToEnvelope<A, Hold>
            + ToEnvelope<A, LinkStatus>
            + ToEnvelope<A, CloseLink>,
    {
        Self {
            acquire: addr.clone().recipient(),
            release: addr.clone().recipient(),
            hold: addr.clone().recipient(),
            status: addr.clone().recipient(),
            close: addr.clone().recipient(),
        }
    }
}

/// A queued `Acquire`: whether it takes a hold, and where to answer.
pub type Waiter = (bool, oneshot::Sender<Result<Acquired, LinkError>>);

/// Bookkeeping every link actor keeps the same way.
pub struct LinkCommon {
    pub id: LinkId,
    pub key: LinkKey,
    registry: Recipient<LinkClosed>,
    /// Where the link publishes its live channel, so callers can skip a
    /// message round trip while it is up.
    published: watch::Sender<Option<LinkChannel>>,
    pub in_flight: Arc<AtomicU32>,
    pub holders: u32,
    idle_timeout: Duration,
    idle_timer: Option<SpawnHandle>,
    waiters: Vec<Waiter>,
}

/// A link actor: gives access to its common part and, while it is up, to
/// channels on it.
pub trait LinkActor: Actor<Context = Context<Self>> {
    fn common(&mut self) -> &mut LinkCommon;

    /// A channel now, if the link is up (taking a hold when asked).
    fn acquired(&mut self, hold: bool, ctx: &mut Context<Self>) -> Option<Acquired>;
}

/// Answers every queued `Acquire` once the link came up.
pub fn answer_waiters<A: LinkActor>(act: &mut A, ctx: &mut Context<A>) {
    for (hold, waiter) in act.common().take_waiters() {
        let reply = act
            .acquired(hold, ctx)
            .ok_or_else(|| LinkError::Closed("the link closed".into()));
        let _ = waiter.send(reply);
    }
}

impl LinkCommon {
    /// A new link's common part, and the receiving end of what it publishes.
    pub fn new(
        id: LinkId,
        key: LinkKey,
        registry: Recipient<LinkClosed>,
        idle_timeout: Duration,
    ) -> (Self, watch::Receiver<Option<LinkChannel>>) {
        let (published, receiver) = watch::channel(None);
        let common = Self {
            id,
            key,
            registry,
            published,
            in_flight: Arc::new(AtomicU32::new(0)),
            holders: 0,
            idle_timeout,
            idle_timer: None,
            waiters: Vec::new(),
        };
        (common, receiver)
    }

    pub fn publish(&self, channel: Option<LinkChannel>) {
        self.published.send_replace(channel);
    }

    pub fn in_flight_guard(&self) -> InFlight {
        InFlight::new(vec![self.in_flight.clone()])
    }

    /// Takes a hold, cancelling a pending idle close.
    pub fn hold<A: LinkActor>(&mut self, ctx: &mut Context<A>) {
        self.holders += 1;
        if let Some(t) = self.idle_timer.take() {
            ctx.cancel_future(t);
        }
    }

    /// Queues an `Acquire` until the link is ready; the future answers it.
    pub fn wait(&mut self, hold: bool) -> ResponseFuture<Result<Acquired, LinkError>> {
        let (tx, rx) = oneshot::channel();
        self.waiters.push((hold, tx));
        Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err(LinkError::Closed("the link was closed".into())))
        })
    }

    /// The queued `Acquire`s, to answer now.
    pub fn take_waiters(&mut self) -> Vec<Waiter> {
        std::mem::take(&mut self.waiters)
    }

    pub fn fail_waiters(&mut self, error: &LinkError) {
        for (_, waiter) in self.take_waiters() {
            let _ = waiter.send(Err(error.clone()));
        }
    }

    /// At stop: nothing is published any more, nobody waits.
    pub fn on_stopped(&mut self) {
        self.publish(None);
        self.fail_waiters(&LinkError::Closed("the link was closed".into()));
    }
}

/// Tells the registry the link is going, then stops it.
pub fn stop_and_report<A: LinkActor>(act: &mut A, ctx: &mut Context<A>) {
    let common = act.common();
    let (id, registry) = (common.id, common.registry.clone());
    ctx.spawn(
        async move {
            let _ = registry.send(LinkClosed(id)).await;
        }
        .into_actor(act)
        .map(|_, _, ctx| ctx.stop()),
    );
}

/// Drops a hold. With none left, a link that is up closes after its idle
/// timeout (at once when that is 0); one that is not up closes now.
pub fn release<A: LinkActor>(act: &mut A, ctx: &mut Context<A>, up: bool) {
    let common = act.common();
    common.holders = common.holders.saturating_sub(1);
    if common.holders > 0 {
        return;
    }
    let idle = common.idle_timeout;
    if !up || idle.is_zero() {
        stop_and_report(act, ctx);
        return;
    }
    let timer = ctx.run_later(idle, |act: &mut A, ctx| {
        let common = act.common();
        common.idle_timer = None;
        if common.holders == 0 {
            debug!(link = common.id, "idle timeout");
            stop_and_report(act, ctx);
        }
    });
    act.common().idle_timer = Some(timer);
}
