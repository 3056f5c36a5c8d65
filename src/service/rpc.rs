//! The service RPC socket: QUIC (TLS 1.3, ALPN `switchyard/1`) on UDP.
//!
//! Owns: the QUIC endpoint, every connection accepted on it and every
//! request task on those connections (a cancellation tree rooted in
//! [`RpcServer`]; `shutdown` or drop ends them all).
//!
//! Takes: connections. Each must authenticate on its first stream within
//! `auth_timeout`; after that every request rides its own bidirectional
//! stream (at most `max_concurrent_streams` at once, enforced by QUIC flow
//! control), handled by [`ServiceOps`].
//!
//! On failure: a wrong password gets `AuthResponse::Rejected` and the
//! connection is closed with `UNAUTHENTICATED`; repeated failures from one
//! address or for one user are locked out for a while; an oversized,
//! malformed or wrong-version frame closes that one connection with
//! `PROTOCOL_VIOLATION`. Other connections are never affected. A caller
//! that stops reading its stream (it went away) cancels that request.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quinn::{Connection, Endpoint, RecvStream, SendStream, VarInt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use super::drivers::terminal::TERMINAL_QUEUE;
use super::inventory::TlsIdentity;
use super::ops::{OpsError, Principal, ServiceOps};
use super::ratelimit::{FailureLimiter, LimiterConfig};
use crate::secret::Secret;
use crate::wire::conn::{self, ConnError, TransportLimits, read_frame, write_frame};
use crate::wire::messages::{
    AuthRequest, AuthResponse, Credentials, ErrorCode, RequestEnvelope, Response, TerminalInput,
    WireError, close_code,
};
use crate::wire::tunnel::{Carrier, TunnelEndpoint, TunnelRole, tunnel_transport};

/// Settings of the RPC socket.
#[derive(Debug, Clone)]
pub struct RpcConfig {
    pub listen: SocketAddr,
    pub limits: TransportLimits,
    /// Time a new connection has to authenticate.
    pub auth_timeout: Duration,
    pub login_limiter: LimiterConfig,
}

impl Default for RpcConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8181)),
            limits: TransportLimits::default(),
            auth_timeout: Duration::from_secs(10),
            login_limiter: LimiterConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: ConnError },
}

struct Shared {
    /// Set at shutdown: new requests are refused while running ones finish.
    draining: CancellationToken,
    in_flight: Arc<AtomicU32>,
    ops: Arc<ServiceOps>,
    limits: TransportLimits,
    auth_timeout: Duration,
    limiter: Mutex<FailureLimiter>,
}

/// A running RPC socket.
pub struct RpcServer {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    endpoint: Endpoint,
    cancel: CancellationToken,
    accept: tokio::task::JoinHandle<()>,
    tunnels: TunnelAcceptor,
}

/// Hands relayed tunnels to the RPC server, which serves each like a
/// direct connection (same authentication, same operations).
#[derive(Clone)]
pub struct TunnelAcceptor {
    config: quinn::ServerConfig,
    limits: TransportLimits,
    queue: mpsc::Sender<TunnelEndpoint>,
}

impl TunnelAcceptor {
    /// Starts the service end of a tunnel whose control stream is
    /// `send`/`recv` and whose packets travel by `carrier`.
    pub async fn accept(
        &self,
        send: SendStream,
        recv: RecvStream,
        carrier: Carrier,
    ) -> Result<(), ConnError> {
        let tunnel = TunnelEndpoint::start(
            TunnelRole::Service,
            send,
            recv,
            Some(self.config.clone()),
            carrier,
            &self.limits,
        )?;
        self.queue
            .send(tunnel)
            .await
            .map_err(|_| ConnError::Tls("the RPC server has stopped".into()))
    }
}

impl RpcServer {
    /// Binds the socket and starts accepting.
    pub fn start(
        ops: Arc<ServiceOps>,
        identity: TlsIdentity,
        config: RpcConfig,
    ) -> Result<Self, RpcError> {
        let endpoint = conn::server_endpoint(
            config.listen,
            identity.cert_der.clone(),
            &identity.key_der,
            &config.limits,
        )
        .and_then(|e| Ok((e.local_addr()?, e)))
        .map_err(|source| RpcError::Listen {
            addr: config.listen,
            source,
        });
        let (local_addr, endpoint) = endpoint?;
        let shared = Arc::new(Shared {
            draining: CancellationToken::new(),
            in_flight: Arc::new(AtomicU32::new(0)),
            ops,
            limits: config.limits.clone(),
            auth_timeout: config.auth_timeout,
            limiter: Mutex::new(FailureLimiter::new(config.login_limiter)),
        });
        let tunnel_config = conn::server_config(
            identity.cert_der.clone(),
            &identity.key_der,
            tunnel_transport(&config.limits),
        )
        .map_err(|source| RpcError::Listen {
            addr: config.listen,
            source,
        })?;
        let (tunnel_tx, tunnel_rx) = mpsc::channel(16);
        let cancel = CancellationToken::new();
        let accept = tokio::spawn(
            accept_loop(endpoint.clone(), tunnel_rx, shared.clone(), cancel.clone())
                .instrument(info_span!("rpc", addr = %local_addr)),
        );
        info!(addr = %local_addr, "service RPC socket listening");
        Ok(Self {
            shared,
            local_addr,
            endpoint,
            cancel,
            accept,
            tunnels: TunnelAcceptor {
                config: tunnel_config,
                limits: config.limits.clone(),
                queue: tunnel_tx,
            },
        })
    }

    /// Where a relay agent hands its tunnels.
    pub fn tunnel_acceptor(&self) -> TunnelAcceptor {
        self.tunnels.clone()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Requests running now.
    pub fn running_requests(&self) -> u32 {
        self.shared.in_flight.load(Ordering::Relaxed)
    }

    /// Drains, then closes: new connections and requests are refused
    /// (`UNAVAILABLE`), running requests get up to `drain` to finish, then
    /// every connection is closed and the peers told why.
    pub async fn shutdown(self, drain: Duration) {
        self.shared.draining.cancel();
        self.endpoint.set_server_config(None);
        let deadline = tokio::time::Instant::now() + drain;
        while self.shared.in_flight.load(Ordering::Relaxed) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let unfinished = self.shared.in_flight.load(Ordering::Relaxed);
        if unfinished > 0 {
            warn!(
                unfinished,
                "drain timeout: closing with requests still running"
            );
        }
        // Connections close before the unfinished requests are cancelled,
        // so no reply a cancellation provokes reaches a caller as if the
        // request had finished: callers see the service go away.
        self.endpoint.close(
            VarInt::from_u32(close_code::SHUTTING_DOWN),
            b"service shutting down",
        );
        self.cancel.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
    }
}

impl Drop for RpcServer {
    fn drop(&mut self) {
        self.endpoint.close(
            VarInt::from_u32(close_code::SHUTTING_DOWN),
            b"service shutting down",
        );
        self.cancel.cancel();
        self.accept.abort();
    }
}

async fn accept_loop(
    endpoint: Endpoint,
    mut tunnels: mpsc::Receiver<TunnelEndpoint>,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            Some(tunnel) = tunnels.recv(), if !shared.draining.is_cancelled() => {
                connections.spawn(
                    serve_tunnel(tunnel, shared.clone(), cancel.child_token())
                        .instrument(info_span!("rpc_tunnel")),
                );
            }
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => {
                    let span = info_span!("rpc_conn", peer = %incoming.remote_address());
                    connections.spawn(
                        serve_connection(incoming, shared.clone(), cancel.child_token()).instrument(span),
                    );
                }
                None => break,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
}

/// Serves the connection(s) inside one relayed tunnel until the tunnel
/// ends; then closes its endpoint at once (no idle timeout to wait out).
async fn serve_tunnel(tunnel: TunnelEndpoint, shared: Arc<Shared>, cancel: CancellationToken) {
    let endpoint = tunnel.endpoint.clone();
    let serve = async {
        while let Some(incoming) = endpoint.accept().await {
            serve_connection(incoming, shared.clone(), cancel.child_token()).await;
        }
    };
    tokio::select! {
        _ = serve => {}
        _ = tunnel.closed() => debug!("tunnel closed"),
        _ = cancel.cancelled() => {}
    }
    endpoint.close(
        VarInt::from_u32(close_code::SHUTTING_DOWN),
        b"tunnel closed",
    );
}

async fn serve_connection(
    incoming: quinn::Incoming,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) {
    let conn = match incoming.await {
        Ok(conn) => conn,
        Err(e) => {
            debug!(error = %e, "handshake failed");
            return;
        }
    };
    let principal =
        match tokio::time::timeout(shared.auth_timeout, authenticate(&conn, &shared)).await {
            Ok(Some(principal)) => principal,
            Ok(None) => return,
            Err(_) => {
                conn.close(
                    VarInt::from_u32(close_code::UNAUTHENTICATED),
                    b"authentication timed out",
                );
                return;
            }
        };
    let principal = Arc::new(principal);
    let mut requests = JoinSet::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            stream = conn.accept_bi() => match stream {
                Ok((send, recv)) => {
                    requests.spawn(serve_request(conn.clone(), send, recv, shared.clone(), principal.clone()));
                }
                Err(e) => {
                    debug!(reason = %e, "connection closed");
                    break;
                }
            },
            Some(_) = requests.join_next(), if !requests.is_empty() => {}
        }
    }
    requests.shutdown().await;
}

/// Runs the login exchange; `None` when the connection was refused (it is
/// closed here with the reason).
async fn authenticate(conn: &Connection, shared: &Shared) -> Option<Principal> {
    let (mut send, mut recv) = conn.accept_bi().await.ok()?;
    let max = shared.limits.max_frame;
    let request: AuthRequest = match read_frame(&mut recv, max).await {
        Ok(Some(r)) => r,
        Ok(None) | Err(ConnError::Read(_)) | Err(ConnError::Truncated) => return None,
        Err(e) => {
            conn.close(
                VarInt::from_u32(close_code::PROTOCOL_VIOLATION),
                e.to_string().as_bytes(),
            );
            return None;
        }
    };
    let ip_key = format!("ip:{}", conn.remote_address().ip());
    let user_key = format!("user:{}", request.credentials.claimed_user());
    let locked = {
        let limiter = shared.limiter.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        limiter
            .check(&ip_key, now)
            .and(limiter.check(&user_key, now))
    };
    let outcome = match locked {
        Err(wait) => Err(WireError::new(
            ErrorCode::ResourceExhausted,
            format!(
                "too many failed logins; try again in {} s",
                wait.as_secs().max(1)
            ),
        )),
        Ok(()) => {
            let result = match &request.credentials {
                Credentials::Password { username, password } => {
                    shared
                        .ops
                        .authenticate(username, Secret::new(password.as_str()))
                        .await
                }
                Credentials::Assertion { token } => shared.ops.authenticate_assertion(token),
            };
            let mut limiter = shared.limiter.lock().unwrap_or_else(|p| p.into_inner());
            match result {
                Ok(principal) => {
                    limiter.record_success(&user_key);
                    limiter.record_success(&ip_key);
                    Ok(principal)
                }
                Err(e) => {
                    if matches!(e, OpsError::Unauthenticated | OpsError::BadAssertion(_)) {
                        let now = Instant::now();
                        limiter.record_failure(&user_key, now);
                        limiter.record_failure(&ip_key, now);
                    }
                    Err(e.to_wire())
                }
            }
        }
    };
    let result = match &outcome {
        Ok(_) => "ok",
        Err(e) if e.code == ErrorCode::ResourceExhausted => "locked",
        Err(_) => "refused",
    };
    metrics::counter!("switchyard_service_logins_total", "result" => result).increment(1);
    match outcome {
        Ok(principal) => {
            info!(user = %principal.user, client = %request.client, "remote user authenticated");
            let reply = AuthResponse::Accepted {
                service: shared.ops.name().to_string(),
            };
            write_frame(&mut send, &reply, max).await.ok()?;
            send.finish().ok()?;
            Some(principal)
        }
        Err(error) => {
            warn!(user = %request.credentials.claimed_user(), reason = %error, "login refused");
            let _ = write_frame(&mut send, &AuthResponse::Rejected(error), max).await;
            let _ = send.finish();
            // Let the reply arrive before the connection goes.
            let _ = tokio::time::timeout(Duration::from_secs(2), send.stopped()).await;
            conn.close(
                VarInt::from_u32(close_code::UNAUTHENTICATED),
                b"login refused",
            );
            None
        }
    }
}

async fn serve_request(
    conn: Connection,
    mut send: SendStream,
    mut recv: RecvStream,
    shared: Arc<Shared>,
    principal: Arc<Principal>,
) {
    let max = shared.limits.max_frame;
    let violation = |e: &ConnError| {
        conn.close(
            VarInt::from_u32(close_code::PROTOCOL_VIOLATION),
            e.to_string().as_bytes(),
        );
    };
    let envelope: RequestEnvelope = match read_frame(&mut recv, max).await {
        Ok(Some(envelope)) => envelope,
        Ok(None) => return,
        Err(e @ ConnError::Frame(_)) => return violation(&e),
        Err(e) => {
            debug!(error = %e, "request stream failed");
            return;
        }
    };
    if shared.draining.is_cancelled() {
        let refusal = Response::Error(WireError::new(
            ErrorCode::Unavailable,
            format!("service {} is shutting down", shared.ops.name()),
        ));
        let _ = write_frame(&mut send, &refusal, max).await;
        let _ = send.finish();
        return;
    }
    shared.in_flight.fetch_add(1, Ordering::Relaxed);
    let _running = count_in_flight(&shared.in_flight);
    let takes_input = envelope.request.takes_input();
    let (in_tx, in_rx) = mpsc::channel::<TerminalInput>(TERMINAL_QUEUE);
    let (out_tx, mut out_rx) = mpsc::channel::<Response>(64);
    let stopped = send.stopped();
    let work = shared.ops.handle(&principal, envelope, in_rx, out_tx);
    let pump_in = async {
        // Owned here: when the caller ends its input, the terminal ends.
        let in_tx = in_tx;
        if !takes_input {
            return;
        }
        loop {
            match read_frame::<TerminalInput>(&mut recv, max).await {
                Ok(Some(input)) => {
                    if in_tx.send(input).await.is_err() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e @ ConnError::Frame(_)) => {
                    violation(&e);
                    break;
                }
                Err(_) => break,
            }
        }
    };
    let pump_out = async {
        while let Some(response) = out_rx.recv().await {
            // When the work has already ended, its last response and the
            // stream's end are handed to quinn back to back, so they leave
            // in one packet: sent apart (the connection's driver may run
            // on another thread in between), the end took a packet and a
            // wake-up of its own at the caller, and the broker's answer
            // then left in two writes.
            let last = out_rx.is_closed() && out_rx.is_empty();
            if write_frame(&mut send, &response, max).await.is_err() {
                return;
            }
            if last {
                break;
            }
        }
        let _ = send.finish();
    };
    tokio::select! {
        _ = async { tokio::join!(work, pump_in, pump_out) } => {}
        stop = stopped => {
            if let Ok(Some(code)) = stop {
                debug!(%code, "caller stopped reading; request cancelled");
            }
        }
    }
}

/// Decrements the in-flight count when the request ends, however it ends.
fn count_in_flight(counter: &Arc<AtomicU32>) -> impl Drop + use<> {
    struct Done(Arc<AtomicU32>);
    impl Drop for Done {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::Relaxed);
        }
    }
    Done(counter.clone())
}
