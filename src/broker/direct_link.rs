//! `DirectLink` actor: one connection (QUIC, or TLS/TCP to an `rpc_url`:
//! `wire::mux::Conn`) to one service's RPC socket, as one remote user, for
//! one owner.
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
//! it is down fail fast with `UNAVAILABLE` naming the service, and each
//! starts a new attempt at once when none is running (so the link comes
//! back as soon as the service answers while callers want it). A service
//! silent while calls wait is lost within the liveness bound
//! (`wire::liveness`: `silence` + 250 ms, 2.25 s by default); a restarted
//! one resets the old connection at once (stable stateless-reset key). A
//! reconnect's handshake that hears nothing for
//! [`RECONNECT_HANDSHAKE_SILENCE`] is abandoned for a fresh attempt. A
//! refused login or a changed certificate is final: the link stops
//! retrying. A link nobody holds closes after `idle_timeout` (at once when
//! that is 0).

use std::sync::atomic::Ordering;
use std::time::Duration;

use actix::prelude::*;
use tracing::{Instrument, debug, info, info_span, warn};

use super::dialer::{DialRequest, Dialer, TransportPolicy};
use super::direct_client::DirectConnection;
use super::link::{LinkChannel, LinkError};
use super::link_actor::{
    Acquire, Acquired, CloseLink, Hold, LinkActor, LinkCommon, LinkInfo, LinkState, LinkStatus,
    Release, answer_waiters, release, stop_and_report,
};
use crate::backoff::Backoff;
use crate::task::AbortOnDrop;
use crate::wire::conn::{Liveness, TransportLimits, watch_liveness};
use crate::wire::mux::{Carrier, Conn};
use crate::wire::pin::Fingerprint;

/// How long a reconnect's QUIC handshake may go without an answer before
/// it is abandoned and a new attempt starts: QUIC retransmits its first
/// packet after ~1 s, then 2 and 4 s later, so a service that comes back
/// while an attempt waits would otherwise be found only seconds later.
pub const RECONNECT_HANDSHAKE_SILENCE: Duration = Duration::from_secs(1);

/// Tunables for links.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    pub idle_timeout: Duration,
    /// Bound on resolving, the QUIC/TLS handshake and the login.
    pub connect_timeout: Duration,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    pub limits: TransportLimits,
    /// QUIC or TCP, for links whose service listens on both.
    pub transport: TransportPolicy,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(10),
            reconnect_min: Duration::from_millis(200),
            reconnect_max: Duration::from_secs(30),
            limits: TransportLimits::default(),
            transport: TransportPolicy::default(),
        }
    }
}

pub struct DirectLink {
    common: LinkCommon,
    dialer: Dialer,
    /// Lives as long as `conn` (a relayed tunnel under it).
    guard: Option<Box<dyn std::any::Any + Send>>,
    fingerprint: Option<Fingerprint>,
    config: LinkConfig,
    state: LinkState,
    conn: Option<Conn>,
    /// Who waits on `conn`, and the task that closes it when its service
    /// goes silent meanwhile (lives as long as `conn`).
    liveness: Liveness,
    watchdog: Option<AbortOnDrop<()>>,
    endpoint: Option<quinn::Endpoint>,
    service_name: String,
    /// Bumped on every new connection, so a stale "connection closed"
    /// notice for an old one is ignored.
    generation: u64,
    connecting: bool,
    connects: u64,
    last_error: Option<LinkError>,
    backoff: Backoff,
    retry_timer: Option<SpawnHandle>,
    /// A QUIC attempt by a link that fell back to TCP, scheduled or
    /// running (see [`Dialer::probes_quic`]).
    probe: Option<SpawnHandle>,
}

/// Everything needed to create a link.
pub struct NewDirectLink {
    pub common: LinkCommon,
    pub dialer: Dialer,
    pub fingerprint: Option<Fingerprint>,
    pub config: LinkConfig,
}

impl DirectLink {
    pub fn new(n: NewDirectLink) -> Self {
        let backoff = Backoff::new(n.config.reconnect_min, n.config.reconnect_max);
        Self {
            common: n.common,
            dialer: n.dialer,
            guard: None,
            fingerprint: n.fingerprint,
            config: n.config,
            state: LinkState::Connecting,
            conn: None,
            liveness: Liveness::on_demand(),
            watchdog: None,
            endpoint: None,
            service_name: String::new(),
            generation: 0,
            connecting: false,
            connects: 0,
            last_error: None,
            backoff,
            retry_timer: None,
            probe: None,
        }
    }

    fn channel(&self, conn: Conn) -> LinkChannel {
        LinkChannel::Remote {
            conn,
            target: self.common.key.target.clone(),
            max_frame: self.config.limits.max_frame,
            liveness: self.liveness.clone(),
        }
    }

    fn start_connect(&mut self, ctx: &mut Context<Self>) {
        if self.connecting {
            return;
        }
        self.connecting = true;
        let fut = self.dial(false);
        ctx.spawn(fut.into_actor(self).map(|result, act, ctx| {
            act.connecting = false;
            act.on_connect_result(result, ctx);
        }));
    }

    /// One dial of this link's service (`quic_only`: a probe from TCP).
    fn dial(
        &self,
        quic_only: bool,
    ) -> impl Future<Output = Result<(Option<quinn::Endpoint>, DirectConnection), LinkError>> + 'static
    {
        let target = self.common.key.target.clone();
        let username = self.common.key.username.clone();
        let dialer = self.dialer.clone();
        let fingerprint = self.fingerprint;
        let mut limits = self.config.limits.clone();
        if self.connects > 0 {
            limits.handshake_silence = Some(RECONNECT_HANDSHAKE_SILENCE);
        }
        let endpoint = self.endpoint.clone();
        let connect_timeout = self.config.connect_timeout;
        let span = info_span!("link_connect", link = %format!("L{}", self.common.id), target = %target, transport = dialer.transport().as_str(), quic_only);
        async move {
            dialer
                .dial(DialRequest {
                    label: &target,
                    username: &username,
                    endpoint,
                    fingerprint,
                    limits: &limits,
                    connect_timeout,
                    quic_only,
                })
                .await
        }
        .instrument(span)
    }

    /// On TCP after a fallback: tries QUIC again after the probe interval;
    /// when it works, new calls move to it (calls on TCP finish there).
    fn schedule_quic_probe(&mut self, ctx: &mut Context<Self>) {
        let Some(every) = self.dialer.quic_probe() else {
            return;
        };
        if self.probe.is_some() {
            return;
        }
        self.probe = Some(ctx.run_later(every, |act, ctx| {
            let on_tcp = act
                .conn
                .as_ref()
                .is_some_and(|c| c.carrier() == Carrier::Tcp);
            if act.state != LinkState::Up || !on_tcp {
                act.probe = None;
                return;
            }
            let generation = act.generation;
            let probe = act.dial(true);
            act.probe = Some(ctx.spawn(probe.into_actor(act).map(move |result, act, ctx| {
                act.probe = None;
                match result {
                    Ok(connected) if act.generation == generation && act.state == LinkState::Up => {
                        info!(link = act.common.id, target = %act.common.key.target, "QUIC works again: new calls move to it from TCP");
                        act.on_connect_result(Ok(connected), ctx);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        debug!(link = act.common.id, error = %e, "QUIC still unreachable; staying on TCP");
                        act.schedule_quic_probe(ctx);
                    }
                }
            })));
        }));
    }

    fn on_connect_result(
        &mut self,
        result: Result<(Option<quinn::Endpoint>, DirectConnection), LinkError>,
        ctx: &mut Context<Self>,
    ) {
        match result {
            Ok((endpoint, mut connected)) => {
                if endpoint.is_some() {
                    self.endpoint = endpoint;
                }
                self.guard = connected.guard.take();
                self.generation += 1;
                self.connects += 1;
                metrics::counter!("switchyard_link_connects_total", "transport" => self.dialer.transport().as_str())
                    .increment(1);
                self.state = LinkState::Up;
                self.last_error = None;
                self.backoff.reset();
                self.fingerprint = Some(connected.fingerprint);
                self.service_name = connected.service_name;
                info!(link = self.common.id, target = %self.common.key.target, user = %self.common.key.username, connects = self.connects, carrier = connected.conn.carrier().as_str(), "link up");
                let generation = self.generation;
                let watch = connected.conn.clone();
                self.liveness = Liveness::on_demand();
                self.watchdog = Some(watch_liveness(
                    connected.conn.clone(),
                    self.liveness.clone(),
                    self.config.limits.silence,
                ));
                self.common
                    .publish(Some(self.channel(connected.conn.clone())));
                let on_tcp = connected.conn.carrier() == Carrier::Tcp;
                self.conn = Some(connected.conn);
                if on_tcp {
                    self.schedule_quic_probe(ctx);
                }
                ctx.spawn(
                    watch
                        .closed()
                        .into_actor(self)
                        .map(move |reason, act, ctx| act.on_lost(generation, reason, ctx)),
                );
                answer_waiters(self, ctx);
            }
            Err(e) => {
                let permanent = matches!(
                    e,
                    LinkError::Rejected { .. }
                        | LinkError::Refused { .. }
                        | LinkError::FingerprintMismatch { .. }
                );
                warn!(link = self.common.id, target = %self.common.key.target, error = %e, "link connect failed");
                self.common.fail_waiters(&e);
                self.last_error = Some(e);
                if permanent || self.common.holders == 0 {
                    self.state = LinkState::Failed;
                    if self.common.holders == 0 {
                        stop_and_report(self, ctx);
                    }
                } else {
                    self.state = LinkState::Reconnecting;
                    self.schedule_retry(ctx);
                }
            }
        }
    }

    fn on_lost(&mut self, generation: u64, reason: String, ctx: &mut Context<Self>) {
        if generation != self.generation || self.state != LinkState::Up {
            return;
        }
        let reason = self.liveness.explain(reason);
        warn!(link = self.common.id, target = %self.common.key.target, %reason, "link lost");
        self.conn = None;
        self.watchdog = None;
        self.guard = None;
        self.common.publish(None);
        self.last_error = Some(LinkError::lost(&self.common.key.target, reason));
        if self.common.holders == 0 {
            stop_and_report(self, ctx);
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
        debug!(link = self.common.id, ?delay, "reconnect scheduled");
        self.retry_timer = Some(ctx.run_later(delay, |act, ctx| {
            act.retry_timer = None;
            if act.state == LinkState::Reconnecting {
                act.start_connect(ctx);
            }
        }));
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
                target: self.common.key.target.clone(),
                reason: format!("reconnecting ({reason})"),
            },
        }
    }
}

impl Actor for DirectLink {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Unbounded waits on a link would let callers pile up; the mailbox
        // bound gives back-pressure to senders instead.
        ctx.set_mailbox_capacity(1024);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.common.on_stopped();
        if let Some(conn) = self.conn.take() {
            conn.close(0, b"link closed");
        }
        self.watchdog = None;
        self.guard = None;
        info!(link = self.common.id, target = %self.common.key.target, "link closed");
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
                let answer = self.common.wait(msg.hold);
                self.start_connect(ctx);
                answer
            }
            LinkState::Reconnecting => {
                // Someone wants the link now: try now rather than at the
                // back-off's next turn; this call still fails fast.
                if !self.connecting {
                    if let Some(timer) = self.retry_timer.take() {
                        ctx.cancel_future(timer);
                    }
                    self.start_connect(ctx);
                }
                Box::pin(std::future::ready(Err(self.unavailable())))
            }
            _ => Box::pin(std::future::ready(Err(self.unavailable()))),
        }
    }
}

impl Handler<Release> for DirectLink {
    type Result = ();

    fn handle(&mut self, _: Release, ctx: &mut Self::Context) {
        let up = self.state == LinkState::Up;
        release(self, ctx, up);
    }
}

impl Handler<Hold> for DirectLink {
    type Result = ();

    fn handle(&mut self, _: Hold, ctx: &mut Self::Context) {
        self.common.hold(ctx);
        if self.state == LinkState::Connecting {
            self.start_connect(ctx);
        }
    }
}

impl LinkActor for DirectLink {
    fn common(&mut self) -> &mut LinkCommon {
        &mut self.common
    }

    fn acquired(&mut self, hold: bool, ctx: &mut Context<Self>) -> Option<Acquired> {
        let conn = self.conn.as_ref().filter(|c| !c.is_closed())?.clone();
        if hold {
            self.common.hold(ctx);
        }
        Some(Acquired {
            channel: self.channel(conn),
            in_flight: self.common.in_flight_guard(),
            fingerprint: self.fingerprint,
            service_name: self.service_name.clone(),
        })
    }
}

impl Handler<LinkStatus> for DirectLink {
    type Result = MessageResult<LinkStatus>;

    fn handle(&mut self, _: LinkStatus, _: &mut Self::Context) -> Self::Result {
        MessageResult(LinkInfo {
            id: self.common.id,
            key: self.common.key.clone(),
            transport: self.dialer.transport(),
            state: self.state,
            holders: self.common.holders,
            in_flight: self.common.in_flight.load(Ordering::Relaxed),
            connects: self.connects,
            last_error: self.last_error.as_ref().map(|e| e.to_string()),
            fingerprint: self.fingerprint,
            carrier: self
                .conn
                .as_ref()
                .map(|c| self.dialer.carrier(c))
                .unwrap_or_default(),
        })
    }
}

impl Handler<CloseLink> for DirectLink {
    type Result = ();

    fn handle(&mut self, _: CloseLink, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
