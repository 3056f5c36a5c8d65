//! The service's connection to the relay it enrolled with.
//!
//! Owns: one connection to the relay (mutual TLS with the certificate
//! bound to the service's serial) and its reconnect loop; a task owned by
//! [`RelayAgent`] (dropped = stopped). The connection is QUIC, or TLS 1.3
//! over TCP with HTTP/2 streams to the relay's TCP listener (the same
//! address and port number) when QUIC does not get through: the two are
//! raced with QUIC's head start ([`TransportPolicy`]), and while on TCP
//! QUIC is tried again every `quic_probe` (`[relay_agent]
//! quic_probe_secs`). A working QUIC connection replaces the TCP one
//! gracefully: new tunnels come over QUIC (the relay offers them on the
//! newest connection), tunnels already open on TCP keep running, and the
//! TCP connection is closed once they have all ended, or after
//! [`AgentConfig::tcp_drain`] at the latest.
//!
//! Takes: tunnel offers the relay sends on streams (over QUIC it opens
//! one per tunnel; over TCP, where the relay cannot open streams, the
//! agent keeps [`TCP_SLOTS`] streams open for it to answer on); each
//! becomes an inner QUIC connection handed to the RPC server
//! ([`TunnelAcceptor`]), which authenticates the caller end to end from
//! the relay's assertion. The inner connection rides the stream either
//! way on TCP (no packet port), still end to end encrypted.
//!
//! The enrollment may name several relay addresses (the nodes of a relay
//! tier, comma-separated: [`relay_addresses`]); the agent connects to the
//! first and, whenever a connection is lost or refused, tries the next one
//! (in a ring), so a node that dies moves its services to another node.
//!
//! Stopping ([`RelayAgent::leave`], on SIGTERM/SIGINT or a systemd
//! stop): the agent says goodbye on its control stream (the hello stream,
//! kept open: `wire::relay::ServiceNotice`) and waits at most
//! [`GOODBYE_BOUND`] for the relay's answer, so the relay refuses new
//! tunnels and clears the serial's presence at once instead of after its
//! idle timeout (a QUIC close sent as the process exits may never leave:
//! quinn #2785). It never reconnects after that. The tunnels already open
//! keep the connection ([`Departed`]) while the RPC server drains their
//! calls; [`Departed::close`] then closes it and waits (at most
//! [`CLOSE_BOUND`]) until the close is sent (`Endpoint::wait_idle`; on TCP
//! until the connection has ended). A relay that does not answer the
//! goodbye (an older one) gets the close at once instead, as before.
//!
//! On failure: a lost or refused connection is retried with jittered
//! exponential back-off (200 ms to 30 s) for as long as the agent lives;
//! the direct RPC socket is unaffected. The connection is a standing one:
//! a relay silent for `TransportLimits::silence` (2 s) counts as lost
//! (`wire::liveness`), and a restarted relay resets it at once (its
//! stateless-reset key survives restarts). A connection attempt and its
//! hello are bounded by [`CONNECT_TIMEOUT`].

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tracing::{Instrument, debug, info, info_span, warn};

use super::inventory::RelayEnrollment;
use super::rpc::TunnelAcceptor;
use crate::backoff::Backoff;
use crate::task::AbortOnDrop;
use crate::transport_policy::{TransportMode, TransportPolicy, race};
use crate::wire::conn::{
    Liveness, TransportLimits, client_endpoint, read_frame, relay_client_config, watch_liveness,
    write_frame,
};
use crate::wire::mux::{Conn, RecvHalf, SendHalf};
use crate::wire::relay::{HelloReply, NoticeReply, RelayHello, ServiceNotice, TunnelOffer};
use crate::wire::tunnel::Carrier;

/// Bound on reaching the relay and its answer to our hello.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Bound on the relay's answer to our goodbye.
pub const GOODBYE_BOUND: Duration = Duration::from_secs(1);

/// Bound on sending our close to the relay once we close.
pub const CLOSE_BOUND: Duration = Duration::from_secs(1);

/// How a refused hello's error begins.
const REFUSED: &str = "the relay refused us";

/// Streams a service on TCP keeps open at the relay for tunnel offers (a
/// new one is opened as soon as one is used).
pub const TCP_SLOTS: usize = 4;

/// How the agent reaches its relay (`[relay_agent]` in the config file,
/// the transport from `service run --relay-transport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentConfig {
    pub transport: TransportPolicy,
    /// After moving from TCP back to QUIC, how long tunnels still open on
    /// the TCP connection may keep it before it is closed under them.
    pub tcp_drain: Duration,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            transport: TransportPolicy::default(),
            tcp_drain: Duration::from_secs(300),
        }
    }
}

/// Where the agent is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentState {
    Connecting,
    Online,
    /// Waiting to retry after this error.
    Retrying(String),
    /// Stopping: said goodbye (or had no connection); never reconnects.
    Left,
}

pub struct RelayAgent {
    state: watch::Receiver<AgentState>,
    /// Asks the run task to say goodbye and hand back what is left.
    leave: mpsc::Sender<oneshot::Sender<Departed>>,
    _task: AbortOnDrop<()>,
}

/// What is left of a [`RelayAgent`] after its goodbye: the relay
/// connection, which the tunnels still open ride until [`Departed::close`]
/// (the relay sends no new ones). Dropped without `close`, the connection
/// ends when its last tunnel does.
#[derive(Default)]
pub struct Departed {
    /// The connection the relay acknowledged our goodbye on, and its QUIC
    /// endpoint.
    link: Option<(Conn, Option<quinn::Endpoint>)>,
    /// A TCP connection still draining after a move to QUIC.
    draining: Option<AbortOnDrop<()>>,
    acknowledged: bool,
}

impl Departed {
    /// Whether the relay acknowledged the goodbye (then it showed the
    /// service offline before [`RelayAgent::leave`] returned).
    pub fn acknowledged(&self) -> bool {
        self.acknowledged
    }

    /// Closes the relay connection (ending the tunnels still on it) and
    /// waits, at most [`CLOSE_BOUND`], until the close has been sent.
    pub async fn close(self) {
        if let Some((conn, endpoint)) = self.link {
            close_link(&conn, endpoint.as_ref(), b"service stopping").await;
        }
        drop(self.draining);
    }
}

/// Closes `conn` and waits (at most [`CLOSE_BOUND`]) until the close is
/// on its way: QUIC's endpoint idle (a close frame of an endpoint dropped
/// at once may never be sent: quinn #2785), TCP's connection ended.
async fn close_link(conn: &Conn, endpoint: Option<&quinn::Endpoint>, why: &[u8]) {
    conn.close(0, why);
    let sent = match endpoint {
        Some(endpoint) => tokio::time::timeout(CLOSE_BOUND, endpoint.wait_idle())
            .await
            .is_ok(),
        None => tokio::time::timeout(CLOSE_BOUND, conn.closed())
            .await
            .is_ok(),
    };
    if !sent {
        debug!(bound = ?CLOSE_BOUND, "the close to the relay was not confirmed in time");
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("relay address {0:?} is not HOST:PORT")]
    BadAddress(String),
    #[error("relay URL {0:?} has no host")]
    BadUrl(String),
}

/// The relay addresses an enrollment's `quic` names: one `HOST:PORT`, or
/// several separated by commas (a tier's nodes, in the order to try).
pub fn relay_addresses(quic: &str) -> Result<Vec<SocketAddr>, AgentError> {
    let addrs = quic
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|a| a.parse().map_err(|_| AgentError::BadAddress(a.to_string())))
        .collect::<Result<Vec<SocketAddr>, _>>()?;
    if addrs.is_empty() {
        return Err(AgentError::BadAddress(quic.to_string()));
    }
    Ok(addrs)
}

/// The TLS server name of a relay URL (`https://host:port`).
pub fn relay_host(url: &str) -> Result<String, AgentError> {
    let parsed = url::Url::parse(url).map_err(|_| AgentError::BadUrl(url.into()))?;
    let host = parsed
        .host_str()
        .ok_or_else(|| AgentError::BadUrl(url.into()))?;
    Ok(host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string())
}

impl RelayAgent {
    /// [`RelayAgent::start_with`] with `transport` and the default drain.
    pub fn start(
        enrollment: RelayEnrollment,
        tunnels: TunnelAcceptor,
        limits: TransportLimits,
        transport: TransportPolicy,
    ) -> Result<Self, AgentError> {
        let config = AgentConfig {
            transport,
            ..Default::default()
        };
        Self::start_with(enrollment, tunnels, limits, config)
    }

    /// Starts the agent's task (stopped when the agent is dropped).
    /// Errors: the enrollment's relay addresses or URL are malformed.
    pub fn start_with(
        enrollment: RelayEnrollment,
        tunnels: TunnelAcceptor,
        limits: TransportLimits,
        config: AgentConfig,
    ) -> Result<Self, AgentError> {
        let quic = relay_addresses(&enrollment.quic)?;
        let server_name = relay_host(&enrollment.url)?;
        let (state_tx, state) = watch::channel(AgentState::Connecting);
        let (leave, leave_rx) = mpsc::channel(1);
        // An enrollment stored before URLs were checked may hold credentials.
        let relay = crate::relay_url::redacted(&enrollment.url);
        let span = info_span!("relay_agent", serial = %enrollment.serial, %relay);
        let task = tokio::spawn(
            run(
                Relay {
                    enrollment,
                    server_name,
                    transport: config.transport,
                    tcp_drain: config.tcp_drain,
                },
                quic,
                tunnels,
                limits,
                state_tx,
                leave_rx,
            )
            .instrument(span),
        );
        Ok(Self {
            state,
            leave,
            _task: AbortOnDrop::new(task),
        })
    }

    pub fn state(&self) -> AgentState {
        self.state.borrow().clone()
    }

    /// Stops the agent gracefully: says goodbye to the relay (waiting at
    /// most [`GOODBYE_BOUND`] for its answer), stops reconnecting, and
    /// hands back the connection for [`Departed::close`] once the calls
    /// on its tunnels have drained. Not connected (or a relay that does
    /// not answer): nothing to hand back, any connection is closed now.
    pub async fn leave(self) -> Departed {
        let (answer, answered) = oneshot::channel();
        if self.leave.send(answer).await.is_err() {
            return Departed::default();
        }
        // The task answers within the goodbye's bound, or the close's.
        let bound = GOODBYE_BOUND + CLOSE_BOUND + Duration::from_secs(1);
        match tokio::time::timeout(bound, answered).await {
            Ok(Ok(departed)) => departed,
            _ => Departed::default(),
        }
    }

    /// Waits until the agent is online (or `timeout` passes).
    pub async fn wait_online(&self, timeout: Duration) -> bool {
        let mut state = self.state.clone();
        tokio::time::timeout(timeout, state.wait_for(|s| *s == AgentState::Online))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// The relay as this agent reaches it.
struct Relay {
    enrollment: RelayEnrollment,
    server_name: String,
    transport: TransportPolicy,
    tcp_drain: Duration,
}

/// A request to leave: answered with what is left.
type Leave = oneshot::Sender<Departed>;

/// How serving one connection ended.
enum Served {
    /// The relay ended it (or the RPC server stopped).
    Ended,
    /// We left (the caller has its answer): no reconnecting.
    Left,
}

async fn run(
    relay: Relay,
    addrs: Vec<SocketAddr>,
    tunnels: TunnelAcceptor,
    limits: TransportLimits,
    state: watch::Sender<AgentState>,
    mut leave: mpsc::Receiver<Leave>,
) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    // A TCP connection left behind by a move to QUIC, until its tunnels
    // end (it outlives the QUIC connection's own end: its tunnels are
    // still good).
    let mut draining = None;
    for next in 0.. {
        // A lost or refused node is followed by the next one.
        let quic = addrs[next % addrs.len()];
        let _ = state.send(AgentState::Connecting);
        let result = connect_and_serve(
            &relay,
            quic,
            &tunnels,
            &limits,
            &state,
            &mut backoff,
            &mut draining,
            &mut leave,
        )
        .await;
        let reason = match result {
            Ok(Served::Left) => return,
            Ok(Served::Ended) => format!("relay connection to {quic} ended"),
            Err(e) => format!("{quic}: {e}"),
        };
        let delay = backoff.next_delay(rand::random::<f64>());
        warn!(%reason, ?delay, "relay connection down; retrying");
        let _ = state.send(AgentState::Retrying(reason));
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            asked = leave.recv() => return left_offline(asked, &state, &mut draining),
        }
    }
}

/// Leaving with no connection: nothing to say goodbye on.
fn left_offline(
    asked: Option<Leave>,
    state: &watch::Sender<AgentState>,
    draining: &mut Option<AbortOnDrop<()>>,
) {
    let _ = state.send(AgentState::Left);
    if let Some(answer) = asked {
        let _ = answer.send(Departed {
            draining: draining.take(),
            ..Default::default()
        });
    }
}

/// A connection the relay welcomed.
struct Link {
    conn: Conn,
    /// The hello stream, kept open to say goodbye on.
    control: Control,
    /// The QUIC connection's endpoint (one per connection), waited on
    /// when it closes.
    endpoint: Option<quinn::Endpoint>,
}

/// The service's control stream to the relay (`wire::relay::ServiceNotice`).
struct Control {
    send: SendHalf,
    recv: RecvHalf,
}

impl Control {
    /// Says goodbye; true once the relay answered that we are offline
    /// (within [`GOODBYE_BOUND`]). False from a relay that finished or
    /// stopped the stream without an answer (an older relay), or sent
    /// something else.
    async fn goodbye(mut self, max: usize) -> bool {
        let exchange = async {
            write_frame(&mut self.send, &ServiceNotice::Goodbye, max)
                .await
                .map_err(|e| e.to_string())?;
            let _ = self.send.finish();
            match read_frame::<NoticeReply>(&mut self.recv, max).await {
                Ok(Some(NoticeReply::Offline)) => Ok(()),
                Ok(None) => Err("the relay does not know goodbyes".to_string()),
                Err(e) => Err(e.to_string()),
            }
        };
        match tokio::time::timeout(GOODBYE_BOUND, exchange).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                info!(reason = %e, "the relay did not answer our goodbye");
                false
            }
            Err(_) => {
                info!(bound = ?GOODBYE_BOUND, "no answer to our goodbye in time");
                false
            }
        }
    }
}

impl Relay {
    /// Connects over QUIC, TCP or both raced (as `transport` says) and
    /// says hello; the connection the relay welcomed.
    async fn connect(
        &self,
        addr: SocketAddr,
        mode: TransportMode,
        limits: &TransportLimits,
    ) -> Result<Link, String> {
        let quic = async {
            let roots =
                crate::tls::root_store_of(&self.enrollment.ca_der).map_err(|e| e.to_string())?;
            let config = relay_client_config(roots, Some(self.client_cert()), limits)
                .map_err(|e| e.to_string())?;
            let endpoint = client_endpoint(addr).map_err(|e| e.to_string())?;
            let conn = endpoint
                .connect_with(config, addr, &self.server_name)
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| format!("cannot connect to the relay over QUIC: {e}"))?;
            let mut link = self.hello(Conn::Quic(conn), limits).await?;
            link.endpoint = Some(endpoint);
            Ok(link)
        };
        let tcp = async {
            let roots =
                crate::tls::root_store_of(&self.enrollment.ca_der).map_err(|e| e.to_string())?;
            let tls = crate::wire::conn::relay_client_tls(
                roots,
                Some(self.client_cert()),
                crate::wire::tcp::ALPN_H2,
            )
            .map_err(|e| e.to_string())?;
            let url = crate::wire::tcp::RpcUrl {
                host: self.server_name.clone(),
                port: addr.port(),
                path: crate::wire::tcp::RPC_PATH.to_string(),
            };
            let socket = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| format!("cannot connect to the relay over TCP: {e}"))?;
            let _ = socket.set_nodelay(true);
            let conn =
                crate::wire::tcp::connect(socket, addr, &url, std::sync::Arc::new(tls), limits)
                    .await
                    .map_err(|e| format!("cannot connect to the relay over TCP: {e}"))?;
            self.hello(Conn::H2(conn), limits).await
        };
        let attempt = async {
            match mode {
                TransportMode::Quic => quic.await,
                TransportMode::Tcp => tcp.await,
                // Both failing: the relay's refusal wherever it came from
                // (it says why: a revoked certificate), else TCP's error.
                TransportMode::Auto => {
                    race(quic, self.transport.quic_head_start, tcp, |e| {
                        !e.starts_with(REFUSED)
                    })
                    .await
                }
            }
        };
        tokio::time::timeout(CONNECT_TIMEOUT, attempt)
            .await
            .map_err(|_| format!("no answer from the relay within {CONNECT_TIMEOUT:?}"))?
    }

    fn client_cert(&self) -> (Vec<u8>, &[u8]) {
        (self.enrollment.cert_der.clone(), &self.enrollment.key_der)
    }

    /// Says hello on the connection's first stream, which stays open as
    /// its control stream.
    async fn hello(&self, conn: Conn, limits: &TransportLimits) -> Result<Link, String> {
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        let hello = RelayHello::Service {
            advertise: self.enrollment.advertise.clone(),
        };
        write_frame(&mut send, &hello, limits.max_frame)
            .await
            .map_err(|e| e.to_string())?;
        match read_frame::<HelloReply>(&mut recv, limits.max_frame).await {
            Ok(Some(HelloReply::Welcome { identity, .. })) => {
                info!(serial = %identity, carrier = %conn.carrier().as_str(), "online at the relay");
                Ok(Link {
                    conn,
                    control: Control { send, recv },
                    endpoint: None,
                })
            }
            Ok(Some(HelloReply::Refused(e))) => Err(format!("{REFUSED}: {e}")),
            Ok(None) => Err("the relay closed the hello stream".into()),
            Err(e) => Err(e.to_string()),
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn connect_and_serve(
    relay: &Relay,
    addr: SocketAddr,
    tunnels: &TunnelAcceptor,
    limits: &TransportLimits,
    state: &watch::Sender<AgentState>,
    backoff: &mut Backoff,
    draining: &mut Option<AbortOnDrop<()>>,
    leave: &mut mpsc::Receiver<Leave>,
) -> Result<Served, String> {
    let mut link = tokio::select! {
        link = relay.connect(addr, relay.transport.mode, limits) => link?,
        asked = leave.recv() => {
            left_offline(asked, state, draining);
            return Ok(Served::Left);
        }
    };
    backoff.reset();
    let _ = state.send(AgentState::Online);
    if (relay.transport.mode, link.conn.carrier())
        == (TransportMode::Auto, crate::wire::mux::Carrier::Tcp)
    {
        info!(
            every = ?relay.transport.quic_probe,
            "on TCP to the relay; trying QUIC again every {:?}",
            relay.transport.quic_probe
        );
    }
    loop {
        let conn = &link.conn;
        let liveness = Liveness::always();
        let _watchdog = watch_liveness(conn.clone(), liveness.clone(), limits.silence);
        let serve = async {
            match conn.carrier() {
                crate::wire::mux::Carrier::Quic => serve_quic(conn, tunnels, limits).await,
                crate::wire::mux::Carrier::Tcp => serve_tcp(conn, tunnels, limits).await,
            }
            .map_err(|e| match e {
                Lost::Conn(e) => format!("relay connection lost: {}", liveness.explain(e)),
                Lost::Server(e) => e,
            })
        };
        // On TCP after a fallback, QUIC is tried again now and then.
        let probe = async {
            let every = match (relay.transport.mode, conn.carrier()) {
                (TransportMode::Auto, crate::wire::mux::Carrier::Tcp) => relay.transport.quic_probe,
                _ => return std::future::pending().await,
            };
            loop {
                tokio::time::sleep(every).await;
                match relay.connect(addr, TransportMode::Quic, limits).await {
                    Ok(quic) => return quic,
                    Err(e) => debug!(error = %e, "QUIC to the relay still fails; staying on TCP"),
                }
            }
        };
        tokio::select! {
            ended = serve => return ended.map(|()| Served::Ended),
            quic = probe => {
                info!("QUIC to the relay works again; moving off TCP");
                // The old connection's control stream ends here (its
                // sending half held would keep it from draining).
                let tcp = std::mem::replace(&mut link, quic).conn;
                // Replacing an older one closes it (one left at a time).
                *draining = Some(AbortOnDrop::new(tokio::spawn(
                    drain(tcp, relay.tcp_drain).in_current_span(),
                )));
            }
            asked = leave.recv() => {
                let _ = state.send(AgentState::Left);
                let Link { conn, control, endpoint } = link;
                let acknowledged = control.goodbye(limits.max_frame).await;
                let departed = if acknowledged {
                    info!("said goodbye: the relay shows us offline");
                    Departed {
                        link: Some((conn, endpoint)),
                        draining: draining.take(),
                        acknowledged,
                    }
                } else {
                    // As before goodbyes: the relay learns from the close.
                    close_link(&conn, endpoint.as_ref(), b"service stopping").await;
                    Departed {
                        draining: draining.take(),
                        ..Default::default()
                    }
                };
                if let Some(answer) = asked {
                    let _ = answer.send(departed);
                }
                return Ok(Served::Left);
            }
        }
    }
}

/// A TCP connection the agent moved off: it takes no new tunnels (its
/// offer slots went with `serve_tcp`), and is closed once the tunnels it
/// carries have ended, or after `bound`.
async fn drain(tcp: Conn, bound: Duration) {
    let Conn::H2(h2) = &tcp else {
        tcp.close(0, b"moved to QUIC");
        return;
    };
    let drained = tokio::time::timeout(bound, h2.streams_done()).await.is_ok();
    if drained {
        info!("the tunnels on the old TCP connection to the relay have ended; closing it");
    } else {
        info!(
            ?bound,
            "closing the old TCP connection to the relay with tunnels still open"
        );
    }
    tcp.close(0, b"moved to QUIC");
}

/// Why serving a relay connection ended.
enum Lost {
    /// The connection failed (explained by its liveness watcher).
    Conn(crate::wire::conn::ConnError),
    /// The RPC server stopped.
    Server(String),
}

/// QUIC: the relay opens a stream per tunnel offer.
async fn serve_quic(
    conn: &Conn,
    tunnels: &TunnelAcceptor,
    limits: &TransportLimits,
) -> Result<(), Lost> {
    loop {
        let (send, mut recv) = conn.accept_bi().await.map_err(Lost::Conn)?;
        let offer: TunnelOffer = match read_frame(&mut recv, limits.max_frame).await {
            Ok(Some(offer)) => offer,
            Ok(None) => continue,
            Err(e) => {
                debug!(error = %e, "bad tunnel offer");
                continue;
            }
        };
        offered(conn, tunnels, send, recv, offer).await?;
    }
}

/// TCP: [`TCP_SLOTS`] streams held open, each waiting for an offer; one
/// used is replaced at once.
async fn serve_tcp(
    conn: &Conn,
    tunnels: &TunnelAcceptor,
    limits: &TransportLimits,
) -> Result<(), Lost> {
    let mut slots = tokio::task::JoinSet::new();
    let slot = |conn: Conn, max: usize| async move {
        let (send, mut recv) = conn.open_bi().await?;
        let offer = read_frame::<TunnelOffer>(&mut recv, max).await;
        Ok::<_, crate::wire::conn::ConnError>((send, recv, offer))
    };
    for _ in 0..TCP_SLOTS {
        slots.spawn(slot(conn.clone(), limits.max_frame));
    }
    while let Some(done) = slots.join_next().await {
        let (send, recv, offer) = match done {
            Ok(Ok(streams)) => streams,
            Ok(Err(e)) => return Err(Lost::Conn(e)),
            Err(e) => return Err(Lost::Server(format!("a tunnel slot failed: {e}"))),
        };
        if conn.is_closed() {
            return Err(Lost::Conn(crate::wire::conn::ConnError::Gone(
                conn.closed().await,
            )));
        }
        slots.spawn(slot(conn.clone(), limits.max_frame));
        match offer {
            Ok(Some(offer)) => offered(conn, tunnels, send, recv, offer).await?,
            Ok(None) => {}
            Err(e) => debug!(error = %e, "bad tunnel offer"),
        }
    }
    Ok(())
}

/// Hands an offered tunnel to the RPC server.
async fn offered(
    conn: &Conn,
    tunnels: &TunnelAcceptor,
    send: SendHalf,
    recv: RecvHalf,
    offer: TunnelOffer,
) -> Result<(), Lost> {
    debug!(tunnel = offer.tunnel, caller = %offer.caller, "tunnel offered");
    let carrier = Carrier::through(conn, offer.packet);
    tunnels
        .accept(send, recv, carrier, &offer.caller)
        .await
        .map_err(|e| Lost::Server(e.to_string()))
}
