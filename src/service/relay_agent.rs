//! The service's connection to the relay it enrolled with.
//!
//! Owns: one QUIC connection to the relay (mutual TLS with the certificate
//! bound to the service's serial) and its reconnect loop; a task owned by
//! [`RelayAgent`] (dropped = stopped).
//!
//! Takes: tunnel offers the relay opens as streams; each becomes an inner
//! QUIC connection handed to the RPC server ([`TunnelAcceptor`]), which
//! authenticates the caller end to end from the relay's assertion.
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
use crate::wire::conn::{
    Liveness, TransportLimits, client_endpoint, read_frame, relay_client_config, watch_liveness,
    write_frame,
};
use crate::wire::relay::{HelloReply, RelayHello, TunnelOffer};
use crate::wire::tunnel::Carrier;

/// Bound on reaching the relay and its answer to our hello.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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
    pub fn start(
        enrollment: RelayEnrollment,
        tunnels: TunnelAcceptor,
        limits: TransportLimits,
    ) -> Result<Self, AgentError> {
        let quic = relay_addresses(&enrollment.quic)?;
        let server_name = relay_host(&enrollment.url)?;
        let (state_tx, state) = watch::channel(AgentState::Connecting);
        // An enrollment stored before URLs were checked may hold credentials.
        let relay = crate::relay_url::redacted(&enrollment.url);
        let span = info_span!("relay_agent", serial = %enrollment.serial, %relay);
        let task = tokio::spawn(
            run(enrollment, quic, server_name, tunnels, limits, state_tx).instrument(span),
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

async fn run(
    enrollment: RelayEnrollment,
    addrs: Vec<SocketAddr>,
    server_name: String,
    tunnels: TunnelAcceptor,
    limits: TransportLimits,
    state: watch::Sender<AgentState>,
) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    for next in 0.. {
        // A lost or refused node is followed by the next one.
        let quic = addrs[next % addrs.len()];
        let _ = state.send(AgentState::Connecting);
        let result = connect_and_serve(
            &enrollment,
            quic,
            &server_name,
            &tunnels,
            &limits,
            &state,
            &mut backoff,
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

async fn connect_and_serve(
    enrollment: &RelayEnrollment,
    quic: SocketAddr,
    server_name: &str,
    tunnels: &TunnelAcceptor,
    limits: &TransportLimits,
    state: &watch::Sender<AgentState>,
    backoff: &mut Backoff,
) -> Result<(), String> {
    let roots = crate::tls::root_store_of(&enrollment.ca_der).map_err(|e| e.to_string())?;
    let config = relay_client_config(
        roots,
        Some((enrollment.cert_der.clone(), &enrollment.key_der)),
        limits,
    )
    .map_err(|e| e.to_string())?;
    let endpoint = client_endpoint(quic).map_err(|e| e.to_string())?;
    let hello = async {
        let conn = endpoint
            .connect_with(config, quic, server_name)
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| format!("cannot connect to the relay: {e}"))?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        let hello = RelayHello::Service {
            advertise: enrollment.advertise.clone(),
        };
        write_frame(&mut send, &hello, limits.max_frame)
            .await
            .map_err(|e| e.to_string())?;
        let _ = send.finish();
        match read_frame::<HelloReply>(&mut recv, limits.max_frame).await {
            Ok(Some(HelloReply::Welcome { identity, .. })) => {
                info!(serial = %identity, "online at the relay");
                Ok(conn)
            }
            Ok(Some(HelloReply::Refused(e))) => Err(format!("the relay refused us: {e}")),
            Ok(None) => Err("the relay closed the hello stream".into()),
            Err(e) => Err(e.to_string()),
        }
    };
    let conn = tokio::time::timeout(CONNECT_TIMEOUT, hello)
        .await
        .map_err(|_| format!("no answer from the relay within {CONNECT_TIMEOUT:?}"))??;
    let liveness = Liveness::always();
    let _watchdog = watch_liveness(conn.clone(), liveness.clone(), limits.silence);
    backoff.reset();
    let _ = state.send(AgentState::Online);
    loop {
        let (send, mut recv) = match conn.accept_bi().await {
            Ok(stream) => stream,
            Err(e) => {
                return Err(format!("relay connection lost: {}", liveness.explain(e)));
            }
        };
        let offer: TunnelOffer = match read_frame(&mut recv, limits.max_frame).await {
            Ok(Some(offer)) => offer,
            Ok(None) => continue,
            Err(e) => {
                debug!(error = %e, "bad tunnel offer");
                continue;
            }
        };
        debug!(tunnel = offer.tunnel, caller = %offer.caller, "tunnel offered");
        let carrier = Carrier::through(&conn, offer.packet);
        if let Err(e) = tunnels.accept(send, recv, carrier, &offer.caller).await {
            return Err(e.to_string());
        }
    }
}
