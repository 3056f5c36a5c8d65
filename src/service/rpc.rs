//! The service RPC socket: QUIC (TLS 1.3, ALPN `switchyard/1`) on UDP, and
//! optionally the same protocol over TLS 1.3 + HTTP/2 on a TCP listener
//! (`wire::tcp`; the `rpc_url` callers name).
//!
//! Owns: the QUIC endpoint, the TCP listener, every connection accepted on
//! them and every request task on those connections (a cancellation tree
//! rooted in [`RpcServer`]; `shutdown` or drop ends them all). Both
//! transports share one login limiter, one cap on connections not yet
//! logged in and one request path (`serve_logged_in`): a TCP caller gets
//! exactly what a QUIC caller gets.
//!
//! Takes: connections. Each must authenticate on its first stream within
//! `auth_timeout`; after that every request rides its own bidirectional
//! stream (at most `max_concurrent_streams` at once, enforced by QUIC flow
//! control), handled by [`ServiceOps`].
//!
//! At most `max_unauthenticated` connections may be between their first
//! packet and a finished login at once (the rest are refused at once and
//! counted in `switchyard_service_prelogin_refused_total`); the handshake
//! and the login together must finish within `auth_timeout` (on TCP: the
//! TCP accept's TLS handshake, the HTTP/2 preface and the login).
//!
//! On failure: a wrong password gets `AuthResponse::Rejected` and the
//! connection is closed with `UNAUTHENTICATED`; repeated password failures
//! from one source or for one user are locked out for a while (see
//! [`super::ratelimit`] for the keys, and why relay assertions are not
//! counted); an oversized,
//! malformed or wrong-version frame closes that one connection with
//! `PROTOCOL_VIOLATION`. Other connections are never affected: on TCP, bytes
//! that are not TLS, a handshake that never finishes, an oversized frame or
//! a caller gone silent (nothing for `idle_timeout`) end only their own
//! connection. A caller that stops reading its stream (it went away)
//! cancels that request.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quinn::{Endpoint, VarInt};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use super::drivers::terminal::TERMINAL_QUEUE;
use super::inventory::TlsIdentity;
use super::ops::{OpsError, Principal, ServiceOps};
use super::ratelimit::{Attempt, FailureLimiter, LimiterConfig, Refusal};
use crate::secret::Secret;
use crate::wire::conn::{self, ConnError, TransportLimits, read_frame, write_frame};
use crate::wire::messages::{
    AuthRequest, AuthResponse, Credentials, ErrorCode, RequestEnvelope, Response, TerminalInput,
    WireError, close_code,
};
use crate::wire::mux::{Conn, RecvHalf, SendHalf};
use crate::wire::tcp;
use crate::wire::tunnel::{Carrier, TunnelEndpoint, TunnelRole, tunnel_transport};

/// Settings of the RPC socket.
#[derive(Debug, Clone)]
pub struct RpcConfig {
    /// UDP address of the QUIC socket.
    pub listen: SocketAddr,
    /// TCP address of the TLS/HTTP/2 listener (`None`: none).
    pub tcp_listen: Option<SocketAddr>,
    pub limits: TransportLimits,
    /// Time a new connection has for its handshake and login.
    pub auth_timeout: Duration,
    pub login_limiter: LimiterConfig,
    /// Connections that have not finished logging in, at most, at once
    /// (direct and relayed together).
    pub max_unauthenticated: usize,
}

/// Longest user name a password login may claim, in bytes (the
/// inventory's own limit): a longer one is refused before any hashing.
pub const USERNAME_MAX: usize = 256;

impl Default for RpcConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8181)),
            tcp_listen: None,
            limits: TransportLimits::default(),
            auth_timeout: Duration::from_secs(10),
            login_limiter: LimiterConfig::default(),
            max_unauthenticated: 256,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: ConnError },
    #[error("cannot listen on TCP {addr}: {source}")]
    ListenTcp {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

struct Shared {
    /// Set at shutdown: new requests are refused while running ones finish.
    draining: CancellationToken,
    in_flight: Arc<AtomicU32>,
    ops: Arc<ServiceOps>,
    limits: TransportLimits,
    auth_timeout: Duration,
    limiter: Mutex<FailureLimiter>,
    /// Woken whenever a login attempt finishes (attempts waiting on
    /// [`Refusal::Busy`] try again).
    limiter_changed: Notify,
    /// One permit per connection not yet logged in.
    unauthenticated: Arc<Semaphore>,
}

/// Where a connection comes from, for the login limiter.
#[derive(Debug, Clone)]
enum Source {
    /// Straight to the RPC socket, from this address.
    Direct(IpAddr),
    /// Inside a relayed tunnel the relay opened for this identity (every
    /// relayed connection shares the relay's address).
    Relayed { caller: String },
}

/// A connection not logged in yet: its permit, and the gauge of such
/// connections (decremented however the login ends).
struct PreLogin(#[allow(dead_code)] OwnedSemaphorePermit);

impl PreLogin {
    fn new(permit: OwnedSemaphorePermit) -> Self {
        metrics::gauge!("switchyard_service_unauthenticated_connections").increment(1.0);
        Self(permit)
    }
}

impl Drop for PreLogin {
    fn drop(&mut self) {
        metrics::gauge!("switchyard_service_unauthenticated_connections").decrement(1.0);
    }
}

impl Source {
    fn limiter_key(&self) -> String {
        match self {
            Self::Direct(ip) => format!("ip:{ip}"),
            Self::Relayed { caller } => format!("relayed:{caller}"),
        }
    }
}

/// A running RPC socket.
pub struct RpcServer {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    tcp_addr: Option<SocketAddr>,
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
    queue: mpsc::Sender<(TunnelEndpoint, String)>,
}

impl TunnelAcceptor {
    /// Starts the service end of a tunnel whose control stream is
    /// `send`/`recv` and whose packets travel by `carrier`; `caller` is the
    /// identity the relay authenticated for it (the tunnel offer's), which
    /// password failures inside the tunnel are counted against.
    pub async fn accept(
        &self,
        send: crate::wire::mux::SendHalf,
        recv: crate::wire::mux::RecvHalf,
        carrier: Carrier,
        caller: &str,
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
            .send((tunnel, crate::label::tidy(caller)))
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
            limiter_changed: Notify::new(),
            unauthenticated: Arc::new(Semaphore::new(config.max_unauthenticated)),
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
        let tcp = match config.tcp_listen {
            Some(addr) => Some(tcp_listener(addr, &identity)?),
            None => None,
        };
        let tcp_addr = tcp.as_ref().map(|(l, _)| l.local_addr()).transpose();
        let tcp_addr = tcp_addr.map_err(|source| RpcError::ListenTcp {
            addr: config.tcp_listen.unwrap_or(config.listen),
            source,
        })?;
        let (tunnel_tx, tunnel_rx) = mpsc::channel(16);
        let cancel = CancellationToken::new();
        let accept = tokio::spawn(
            accept_loop(
                endpoint.clone(),
                tcp,
                tunnel_rx,
                shared.clone(),
                cancel.clone(),
            )
            .instrument(info_span!("rpc", addr = %local_addr)),
        );
        info!(addr = %local_addr, "service RPC socket listening");
        if let Some(addr) = tcp_addr {
            info!(%addr, "service RPC listening on TCP (TLS, HTTP/2)");
        }
        Ok(Self {
            shared,
            local_addr,
            tcp_addr,
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

    /// The TCP listener's address, when there is one.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// Requests running now (a finished one until its reply is
    /// acknowledged, `REPLY_DELIVERY` at most).
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

/// Binds the TCP listener and the TLS configuration presenting the
/// service's identity (ALPN `h2`).
fn tcp_listener(
    addr: SocketAddr,
    identity: &TlsIdentity,
) -> Result<(tokio::net::TcpListener, tokio_rustls::TlsAcceptor), RpcError> {
    let tls = tcp::server_tls(identity.cert_der.clone(), &identity.key_der)
        .map_err(|source| RpcError::Listen { addr, source })?;
    let listen = || {
        let socket = std::net::TcpListener::bind(addr)?;
        socket.set_nonblocking(true)?;
        tokio::net::TcpListener::from_std(socket)
    };
    let listener = listen().map_err(|source| RpcError::ListenTcp { addr, source })?;
    Ok((listener, tokio_rustls::TlsAcceptor::from(Arc::new(tls))))
}

/// The next TCP connection, or never when there is no listener.
async fn accept_tcp(
    tcp: &Option<(tokio::net::TcpListener, tokio_rustls::TlsAcceptor)>,
) -> std::io::Result<tokio::net::TcpStream> {
    match tcp {
        Some((listener, _)) => listener.accept().await.map(|(stream, _)| stream),
        None => std::future::pending().await,
    }
}

async fn accept_loop(
    endpoint: Endpoint,
    tcp: Option<(tokio::net::TcpListener, tokio_rustls::TlsAcceptor)>,
    mut tunnels: mpsc::Receiver<(TunnelEndpoint, String)>,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = accept_tcp(&tcp), if !shared.draining.is_cancelled() => match accepted {
                Ok(stream) => {
                    let Some((_, tls)) = &tcp else { continue };
                    let peer = stream.peer_addr().ok();
                    let span = info_span!("rpc_tcp", peer = ?peer);
                    connections.spawn(
                        serve_tcp(stream, tls.clone(), shared.clone(), cancel.child_token())
                            .instrument(span),
                    );
                }
                // Out of descriptors and the like: the listener stays;
                // back off a moment instead of spinning.
                Err(e) => {
                    warn!(error = %e, "TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some((tunnel, caller)) = tunnels.recv(), if !shared.draining.is_cancelled() => {
                connections.spawn(
                    serve_tunnel(tunnel, caller, shared.clone(), cancel.child_token())
                        .instrument(info_span!("rpc_tunnel")),
                );
            }
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => {
                    let span = info_span!("rpc_conn", peer = %incoming.remote_address());
                    let source = Source::Direct(incoming.remote_address().ip());
                    connections.spawn(
                        serve_connection(incoming, source, shared.clone(), cancel.child_token())
                            .instrument(span),
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
async fn serve_tunnel(
    tunnel: TunnelEndpoint,
    caller: String,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) {
    let endpoint = tunnel.endpoint.clone();
    let source = Source::Relayed { caller };
    let serve = async {
        while let Some(incoming) = endpoint.accept().await {
            serve_connection(
                incoming,
                source.clone(),
                shared.clone(),
                cancel.child_token(),
            )
            .await;
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
    source: Source,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) {
    // Held until the login is over: strangers cannot hold more than
    // `max_unauthenticated` connections (handshake included) at once.
    let Ok(permit) = shared.unauthenticated.clone().try_acquire_owned() else {
        metrics::counter!("switchyard_service_prelogin_refused_total").increment(1);
        debug!("too many connections logging in; refused");
        incoming.refuse();
        return;
    };
    let pre_login = PreLogin::new(permit);
    let deadline = tokio::time::Instant::now() + shared.auth_timeout;
    let conn = match tokio::time::timeout_at(deadline, incoming).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            debug!(error = %e, "handshake failed");
            return;
        }
        Err(_) => {
            debug!("handshake did not finish before the login deadline");
            return;
        }
    };
    serve_logged_in(
        Conn::Quic(conn),
        deadline,
        pre_login,
        source,
        shared,
        cancel,
    )
    .await;
}

/// Serves one TCP connection: TLS and HTTP/2 handshakes, then as a QUIC
/// connection (same login, limiter and requests).
async fn serve_tcp(
    stream: tokio::net::TcpStream,
    tls: tokio_rustls::TlsAcceptor,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) {
    let Ok(permit) = shared.unauthenticated.clone().try_acquire_owned() else {
        metrics::counter!("switchyard_service_prelogin_refused_total").increment(1);
        debug!("too many connections logging in; refused");
        return;
    };
    let pre_login = PreLogin::new(permit);
    let Ok(peer) = stream.peer_addr() else { return };
    let deadline = tokio::time::Instant::now() + shared.auth_timeout;
    let conn =
        match tokio::time::timeout_at(deadline, tcp::accept(stream, tls, &shared.limits)).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                debug!(error = %e, "TLS or HTTP/2 handshake failed");
                return;
            }
            Err(_) => {
                debug!("handshake did not finish before the login deadline");
                return;
            }
        };
    let source = Source::Direct(peer.ip());
    serve_logged_in(Conn::H2(conn), deadline, pre_login, source, shared, cancel).await;
}

/// Runs the login on a connection whose handshake is done (by
/// `deadline`), then serves its requests until it closes.
async fn serve_logged_in(
    conn: Conn,
    deadline: tokio::time::Instant,
    pre_login: PreLogin,
    source: Source,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) {
    let principal =
        match tokio::time::timeout_at(deadline, authenticate(&conn, &source, &shared)).await {
            Ok(Some(principal)) => principal,
            Ok(None) => return,
            Err(_) => {
                conn.close(close_code::UNAUTHENTICATED, b"authentication timed out");
                return;
            }
        };
    drop(pre_login);
    conn.open_windows();
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
async fn authenticate(conn: &Conn, source: &Source, shared: &Shared) -> Option<Principal> {
    let (mut send, mut recv) = conn.accept_bi().await.ok()?;
    let max = shared.limits.max_frame;
    let request: AuthRequest = match read_frame(&mut recv, max).await {
        Ok(Some(r)) => r,
        Ok(None)
        | Err(ConnError::Read(_))
        | Err(ConnError::Truncated)
        | Err(ConnError::H2(_))
        | Err(ConnError::Gone(_)) => return None,
        Err(e) => {
            conn.close(close_code::PROTOCOL_VIOLATION, e.to_string().as_bytes());
            return None;
        }
    };
    // Both reach the log: one bounded, escaped line each.
    let claimed = crate::label::tidy_max(request.credentials.claimed_user(), 64);
    let client = crate::label::tidy_max(&request.client, 128);
    let outcome = match &request.credentials {
        Credentials::Password { username, password } => {
            password_login(shared, source, username, password).await
        }
        // Not limited: see `ratelimit`'s module docs.
        Credentials::Assertion { token } => shared
            .ops
            .authenticate_assertion(token)
            .map_err(|e| e.to_wire()),
    };
    let result = match &outcome {
        Ok(_) => "ok",
        Err(e) if e.code == ErrorCode::ResourceExhausted => "locked",
        Err(_) => "refused",
    };
    metrics::counter!("switchyard_service_logins_total", "result" => result).increment(1);
    match outcome {
        Ok(principal) => {
            info!(user = %crate::label::tidy(&principal.user), %client, "remote user authenticated");
            let reply = AuthResponse::Accepted {
                service: shared.ops.name().to_string(),
            };
            write_frame(&mut send, &reply, max).await.ok()?;
            send.finish().ok()?;
            Some(principal)
        }
        Err(error) => {
            warn!(user = %claimed, %client, reason = %error, "login refused");
            let _ = write_frame(&mut send, &AuthResponse::Rejected(error), max).await;
            let _ = send.finish();
            // Let the reply arrive before the connection goes.
            send.delivered(Duration::from_secs(2)).await;
            conn.close(close_code::UNAUTHENTICATED, b"login refused");
            // HTTP/2 flushes the answer while it closes: let it (bounded)
            // before the connection is dropped.
            let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
            None
        }
    }
}

/// A password login, counted by the failure limiter before the hash runs
/// (its user and its source; an attempt that never finishes counts as a
/// failure).
async fn password_login(
    shared: &Shared,
    source: &Source,
    username: &str,
    password: &str,
) -> Result<Principal, WireError> {
    if username.len() > USERNAME_MAX {
        return Err(WireError::new(
            ErrorCode::InvalidArgument,
            format!("a user name has at most {USERNAME_MAX} bytes"),
        ));
    }
    let user_key = format!("user:{username}");
    let source_key = source.limiter_key();
    let keys = [source_key.as_str(), user_key.as_str()];
    let attempt = loop {
        // Registered before the check, so a finish in between is not missed.
        let changed = shared.limiter_changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let reserved = shared.limiter().reserve(&keys, Instant::now());
        match reserved {
            Ok(attempt) => break Reported::new(shared, attempt),
            // Decided by attempts still running: wait for one to finish
            // (bounded by the login deadline).
            Err(Refusal::Busy) => changed.await,
            // Locked, or no room in the table (the service fails closed).
            Err(refusal) => {
                if refusal == Refusal::Full {
                    metrics::counter!("switchyard_service_login_limiter_full_total").increment(1);
                }
                return Err(WireError::new(
                    ErrorCode::ResourceExhausted,
                    refusal.to_string(),
                ));
            }
        }
    };
    match shared
        .ops
        .authenticate(username, Secret::new(password))
        .await
    {
        Ok(principal) => {
            attempt.succeeded(&user_key);
            Ok(principal)
        }
        Err(e @ OpsError::Unauthenticated) => {
            // Dropping the attempt records the failure.
            drop(attempt);
            Err(e.to_wire())
        }
        Err(e) => {
            // The service failed, not the caller.
            attempt.released();
            Err(e.to_wire())
        }
    }
}

/// A reserved login attempt that reports its outcome to the limiter: a
/// success explicitly, anything else (a wrong password, an internal error,
/// the caller going away mid-hash) as a failure when dropped.
struct Reported<'a> {
    shared: &'a Shared,
    attempt: Option<Attempt>,
}

impl<'a> Reported<'a> {
    fn new(shared: &'a Shared, attempt: Attempt) -> Self {
        Self {
            shared,
            attempt: Some(attempt),
        }
    }

    fn succeeded(mut self, user_key: &str) {
        if let Some(attempt) = self.attempt.take() {
            self.shared
                .limiter()
                .succeeded(attempt, user_key, Instant::now());
            self.shared.limiter_changed.notify_waiters();
        }
    }
}

impl Reported<'_> {
    fn released(mut self) {
        if let Some(attempt) = self.attempt.take() {
            self.shared.limiter().released(attempt, Instant::now());
            self.shared.limiter_changed.notify_waiters();
        }
    }
}

impl Drop for Reported<'_> {
    fn drop(&mut self) {
        if let Some(attempt) = self.attempt.take() {
            self.shared.limiter().failed(attempt, Instant::now());
            self.shared.limiter_changed.notify_waiters();
        }
    }
}

impl Shared {
    fn limiter(&self) -> std::sync::MutexGuard<'_, FailureLimiter> {
        self.limiter.lock().unwrap_or_else(|p| p.into_inner())
    }
}

async fn serve_request(
    conn: Conn,
    mut send: SendHalf,
    mut recv: RecvHalf,
    shared: Arc<Shared>,
    principal: Arc<Principal>,
) {
    let max = shared.limits.max_frame;
    let violation = |e: &ConnError| {
        conn.close(close_code::PROTOCOL_VIOLATION, e.to_string().as_bytes());
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
    if let crate::wire::messages::Request::Forward { device, port } = &envelope.request {
        let deadline = envelope.deadline_ms.map(Duration::from_millis);
        let target = (device.as_str(), *port);
        let ops = &shared.ops;
        return super::forward::serve(ops, &principal, target, deadline, send, recv, max).await;
    }
    if let crate::wire::messages::Request::Subsystem { device, name } = &envelope.request {
        let deadline = envelope.deadline_ms.map(Duration::from_millis);
        let target = (device.as_str(), name.as_str());
        let ops = &shared.ops;
        return super::subsystem::serve(ops, &principal, target, deadline, send, recv, max).await;
    }
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
        _ = async { tokio::join!(work, pump_in, pump_out) } => {
            // Running until the caller has the reply (QUIC: acknowledged;
            // HTTP/2 flushes on close), at most `REPLY_DELIVERY`: a drain
            // closes the connection once nothing runs, and a QUIC close
            // drops what is still unsent.
            send.delivered(REPLY_DELIVERY).await;
        }
        () = stopped => debug!("caller stopped reading (or the stream ended); request over"),
    }
}

/// How long a finished request waits for its reply to be acknowledged
/// before it stops counting as running.
const REPLY_DELIVERY: Duration = Duration::from_secs(2);

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
