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
//! On failure: a lost or refused connection is retried with jittered
//! exponential back-off (200 ms to 30 s) for as long as the agent lives;
//! the direct RPC socket is unaffected. The connection is a standing one:
//! a relay silent for `TransportLimits::silence` (2 s) counts as lost
//! (`wire::liveness`), and a restarted relay resets it at once (its
//! stateless-reset key survives restarts). A connection attempt and its
//! hello are bounded by [`CONNECT_TIMEOUT`].

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::watch;
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
use crate::wire::relay::{HelloReply, RelayHello, TunnelOffer};
use crate::wire::tunnel::Carrier;

/// Bound on reaching the relay and its answer to our hello.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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
}

pub struct RelayAgent {
    state: watch::Receiver<AgentState>,
    _task: AbortOnDrop<()>,
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
            )
            .instrument(span),
        );
        Ok(Self {
            state,
            _task: AbortOnDrop::new(task),
        })
    }

    pub fn state(&self) -> AgentState {
        self.state.borrow().clone()
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

async fn run(
    relay: Relay,
    addrs: Vec<SocketAddr>,
    tunnels: TunnelAcceptor,
    limits: TransportLimits,
    state: watch::Sender<AgentState>,
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
        )
        .await;
        let reason = match result {
            Ok(()) => format!("relay connection to {quic} ended"),
            Err(e) => format!("{quic}: {e}"),
        };
        let delay = backoff.next_delay(rand::random::<f64>());
        warn!(%reason, ?delay, "relay connection down; retrying");
        let _ = state.send(AgentState::Retrying(reason));
        tokio::time::sleep(delay).await;
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
    ) -> Result<Conn, String> {
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
            self.hello(Conn::Quic(conn), limits).await
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

    async fn hello(&self, conn: Conn, limits: &TransportLimits) -> Result<Conn, String> {
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        let hello = RelayHello::Service {
            advertise: self.enrollment.advertise.clone(),
        };
        write_frame(&mut send, &hello, limits.max_frame)
            .await
            .map_err(|e| e.to_string())?;
        let _ = send.finish();
        match read_frame::<HelloReply>(&mut recv, limits.max_frame).await {
            Ok(Some(HelloReply::Welcome { identity, .. })) => {
                info!(serial = %identity, carrier = %conn.carrier().as_str(), "online at the relay");
                Ok(conn)
            }
            Ok(Some(HelloReply::Refused(e))) => Err(format!("{REFUSED}: {e}")),
            Ok(None) => Err("the relay closed the hello stream".into()),
            Err(e) => Err(e.to_string()),
        }
    }
}

async fn connect_and_serve(
    relay: &Relay,
    addr: SocketAddr,
    tunnels: &TunnelAcceptor,
    limits: &TransportLimits,
    state: &watch::Sender<AgentState>,
    backoff: &mut Backoff,
    draining: &mut Option<AbortOnDrop<()>>,
) -> Result<(), String> {
    let mut conn = relay.connect(addr, relay.transport.mode, limits).await?;
    backoff.reset();
    let _ = state.send(AgentState::Online);
    if (relay.transport.mode, conn.carrier())
        == (TransportMode::Auto, crate::wire::mux::Carrier::Tcp)
    {
        info!(
            every = ?relay.transport.quic_probe,
            "on TCP to the relay; trying QUIC again every {:?}",
            relay.transport.quic_probe
        );
    }
    loop {
        let liveness = Liveness::always();
        let _watchdog = watch_liveness(conn.clone(), liveness.clone(), limits.silence);
        let serve = async {
            match conn.carrier() {
                crate::wire::mux::Carrier::Quic => serve_quic(&conn, tunnels, limits).await,
                crate::wire::mux::Carrier::Tcp => serve_tcp(&conn, tunnels, limits).await,
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
            ended = serve => return ended,
            quic = probe => {
                info!("QUIC to the relay works again; moving off TCP");
                let tcp = std::mem::replace(&mut conn, quic);
                // Replacing an older one closes it (one left at a time).
                *draining = Some(AbortOnDrop::new(tokio::spawn(
                    drain(tcp, relay.tcp_drain).in_current_span(),
                )));
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
