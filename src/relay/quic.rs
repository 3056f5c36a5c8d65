//! The relay's listeners for brokers and services: QUIC (ALPN
//! `switchyard-relay/1`) and, beside it on the same port number, TLS 1.3
//! over TCP with HTTP/2 streams (`wire::tcp`, ALPN `h2`) for callers whose
//! network lets no UDP through. Both serve the same protocol: after the
//! TLS handshake everything here sees a `wire::mux::Conn`.
//!
//! Why a TCP port beside QUIC's and not the HTTPS port: the HTTPS listener
//! (axum/hyper) asks for no client certificates (services and certificate
//! logins need them) and hands out hyper request bodies, not the `h2`
//! streams `wire::tcp` gives; a second listener reuses the direct TCP
//! transport as it is. The same port number as QUIC's (TCP and UDP ports
//! are separate) means services and tier nodes need no new address: the
//! TCP address of a relay is its QUIC address.
//!
//! A service on TCP cannot be sent new streams (an HTTP/2 server opens
//! none), so it keeps a few streams open to the relay (`SERVICE_SLOTS`
//! at most are held for it), each waiting for a tunnel offer; the relay
//! writes an offer on one of them instead of opening a stream.
//!
//! Owns: every client and service connection and every tunnel between
//! them (tasks under the relay's cancellation tree).
//!
//! Takes: connections. A service must present the certificate issued at
//! its enrollment and is then "online" until its connection ends (a newer
//! connection for the same serial replaces an older one) or it says
//! goodbye on its control stream (the hello stream, which stays open for
//! services: `ServiceNotice`): then it is offline at once, here and in the
//! presence table, new tunnels to it are refused, and the ones open run
//! until the service closes the connection once its calls drained. A client
//! authenticates with a token or its client certificate, then sends one
//! [`RelayRequest`] per stream.
//!
//! In a tier, another node logs in with its node certificate
//! (`RelayHello::Node`, see `nodes`) and then sends one
//! `RelayRequest::Forward` per stream; a client's `OpenTunnel` for a service
//! connected to another node is forwarded there over that node's link (one
//! hop; its packet path as plain UDP between the two nodes' packet ports,
//! with a hop token agreed in the forward request, see `packets`).
//!
//! Before login a connection holds one of `PreloginLimits::max_connections`
//! slots (more are refused as they arrive) and must have sent its hello
//! within `hello_timeout` of its first packet. After login it is recorded
//! in `live` with its credential, so revoking the token or certificate,
//! or disabling the user, closes it (see `live`).
//!
//! On failure: a refused hello closes that connection with the reason; a
//! tunnel to an offline service is refused with `UNAVAILABLE` naming the
//! serial; when either end of a tunnel goes away the other end's stream is
//! reset at once, so the broker fails over instead of hanging.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use quinn::Endpoint;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use super::live::{Credential, LiveEntry};
use super::state::RelayKeys;
use super::store::StoreError;
use super::{AuthError, OnlineService, RelayConfig, RelayCore, RelayError};
use crate::wire::conn::{read_frame, write_frame};
use crate::wire::messages::{ErrorCode, WireError, close_code};
use crate::wire::mux::{Carrier, Conn, RecvHalf, SendHalf};
use crate::wire::packet_relay::{HopToken, NodeHop, PacketPath};
use crate::wire::pin::Fingerprint;
use crate::wire::relay::{
    HelloReply, NoticeReply, RELAY_ALPN, RelayHello, RelayReply, RelayRequest, ServiceFacts,
    ServiceNotice, TunnelOffer,
};

/// The QUIC endpoint: server certificate from the CA, client certificates
/// optional (tokens are the other way in) but verified against the CA
/// whenever presented.
pub(super) fn endpoint(state: &RelayKeys, config: &RelayConfig) -> Result<Endpoint, RelayError> {
    let tls_err = |e: &dyn std::fmt::Display| RelayError::Tls(e.to_string());
    let tls = server_tls(state, RELAY_ALPN)?;
    let transport = Arc::new(crate::wire::conn::server_transport_config(&config.limits));
    let server = crate::wire::conn::quic_server_config(tls, transport).map_err(|e| tls_err(&e))?;
    // The stateless-reset key derives from the server key, so a restarted
    // relay ends its callers' old connections at their next packet.
    crate::wire::conn::keyed_endpoint(config.listen, server, &state.server_key).map_err(|e| {
        RelayError::Listen {
            addr: config.listen,
            reason: e.to_string(),
        }
    })
}

/// The TCP listener's TLS (the same certificate and client-certificate
/// rules as QUIC's, ALPN `h2`).
pub(super) fn tcp_acceptor(state: &RelayKeys) -> Result<tokio_rustls::TlsAcceptor, RelayError> {
    let tls = server_tls(state, crate::wire::tcp::ALPN_H2)?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(tls)))
}

/// TLS 1.3 with the relay's server certificate; client certificates
/// optional (tokens are the other way in) but verified against the CA
/// whenever presented.
fn server_tls(state: &RelayKeys, alpn: &[u8]) -> Result<rustls::ServerConfig, RelayError> {
    let tls_err = |e: &dyn std::fmt::Display| RelayError::Tls(e.to_string());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(state.ca.cert_der().to_vec()))
        .map_err(|e| tls_err(&e))?;
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .allow_unauthenticated()
        .build()
        .map_err(|e| tls_err(&e))?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(state.server_key.to_vec()));
    let mut tls = rustls::ServerConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from(state.server_cert_der.clone())],
            key,
        )
        .map_err(|e| tls_err(&e))?;
    tls.alpn_protocols = vec![alpn.to_vec()];
    tls.max_early_data_size = 0;
    Ok(tls)
}

/// Connections that have not logged in yet, on both listeners: a stranger
/// can open these for free, so they are capped (and each has a deadline).
pub(super) fn prelogin_slots(core: &RelayCore) -> Arc<Semaphore> {
    Arc::new(Semaphore::new(core.config.prelogin.max_connections))
}

pub(super) async fn serve(
    endpoint: Endpoint,
    core: Arc<RelayCore>,
    prelogin: Arc<Semaphore>,
    cancel: CancellationToken,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => {
                    let Ok(slot) = prelogin.clone().try_acquire_owned() else {
                        metrics::counter!("switchyard_relay_prelogin_refused_total").increment(1);
                        debug!(peer = %incoming.remote_address(), "QUIC connection refused: too many connections have not logged in yet");
                        incoming.refuse();
                        continue;
                    };
                    let span = info_span!("relay_conn", peer = %incoming.remote_address());
                    connections.spawn(
                        serve_quic(incoming, slot, core.clone(), cancel.child_token()).instrument(span),
                    );
                }
                None => break,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
}

/// The TCP listener: the same protocol over TLS 1.3 + HTTP/2.
pub(super) async fn serve_tcp(
    listener: tokio::net::TcpListener,
    tls: tokio_rustls::TlsAcceptor,
    core: Arc<RelayCore>,
    prelogin: Arc<Semaphore>,
    cancel: CancellationToken,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let Ok(slot) = prelogin.clone().try_acquire_owned() else {
                        metrics::counter!("switchyard_relay_prelogin_refused_total").increment(1);
                        debug!(%peer, "TCP connection refused: too many connections have not logged in yet");
                        continue;
                    };
                    let span = info_span!("relay_conn", %peer, carrier = "tcp");
                    connections.spawn(
                        serve_tcp_connection(tcp, tls.clone(), slot, core.clone(), cancel.child_token()).instrument(span),
                    );
                }
                // Out of descriptors and the like: the listener stays.
                Err(e) => {
                    warn!(error = %e, "cannot accept a TCP connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
}

async fn serve_tcp_connection(
    tcp: tokio::net::TcpStream,
    tls: tokio_rustls::TlsAcceptor,
    slot: OwnedSemaphorePermit,
    core: Arc<RelayCore>,
    cancel: CancellationToken,
) {
    let limits = core.config.limits.clone();
    let handshake = async move {
        crate::wire::tcp::accept(tcp, tls, &limits)
            .await
            .map(Conn::H2)
            .map_err(|e| e.to_string())
    };
    handshake_then_serve(handshake, slot, core, cancel).await
}

/// Bounds on connections that have not logged in yet.
#[derive(Debug, Clone)]
pub struct PreloginLimits {
    /// Such connections at once; more are refused as they arrive.
    pub max_connections: usize,
    /// Time from a connection's first packet to its hello having arrived
    /// (TLS handshake included); past it the connection is closed.
    pub hello_timeout: Duration,
}

impl Default for PreloginLimits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            hello_timeout: Duration::from_secs(10),
        }
    }
}

/// Counts a connection in `switchyard_relay_prelogin_connections` while it
/// has not logged in, and holds its pre-login slot.
struct Prelogin {
    _slot: OwnedSemaphorePermit,
}

impl Prelogin {
    fn new(slot: OwnedSemaphorePermit) -> Self {
        metrics::gauge!("switchyard_relay_prelogin_connections").increment(1.0);
        Self { _slot: slot }
    }
}

impl Drop for Prelogin {
    fn drop(&mut self) {
        metrics::gauge!("switchyard_relay_prelogin_connections").decrement(1.0);
    }
}

/// Who is on the other end of a connection.
enum Peer {
    Client {
        identity: String,
        /// Token expiry; `None` for certificate logins.
        expires: Option<u64>,
        /// Logged in through SSO (may create access tokens).
        sso: bool,
    },
    Service {
        serial: String,
    },
    /// Another node of the tier (see `nodes`).
    Node {
        id: String,
    },
}

fn peer_cert_fingerprint(conn: &Conn) -> Option<[u8; 32]> {
    conn.peer_certificate().map(|c| Fingerprint::of(&c).0)
}

async fn serve_quic(
    incoming: quinn::Incoming,
    slot: OwnedSemaphorePermit,
    core: Arc<RelayCore>,
    cancel: CancellationToken,
) {
    // Dropping an unfinished handshake closes the connection.
    let handshake = async move { incoming.await.map(Conn::Quic).map_err(|e| e.to_string()) };
    handshake_then_serve(handshake, slot, core, cancel).await
}

/// A new connection on either listener: its handshake (TLS, and HTTP/2's
/// preface on TCP) within the pre-login deadline, holding its pre-login
/// slot, then [`serve_connection`].
async fn handshake_then_serve(
    handshake: impl std::future::Future<Output = Result<Conn, String>>,
    slot: OwnedSemaphorePermit,
    core: Arc<RelayCore>,
    cancel: CancellationToken,
) {
    let prelogin = Prelogin::new(slot);
    let deadline = tokio::time::Instant::now() + core.config.prelogin.hello_timeout;
    let conn = match tokio::time::timeout_at(deadline, handshake).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            debug!(error = %e, "handshake failed");
            return;
        }
        Err(_) => {
            metrics::counter!("switchyard_relay_prelogin_timeouts_total").increment(1);
            debug!("handshake did not finish in time");
            return;
        }
    };
    serve_connection(conn, prelogin, deadline, core, cancel).await
}

/// A connection after its handshake, on either listener: its hello within
/// `deadline`, then what its peer is served.
async fn serve_connection(
    conn: Conn,
    prelogin: Prelogin,
    deadline: tokio::time::Instant,
    core: Arc<RelayCore>,
    cancel: CancellationToken,
) {
    let max = core.config.limits.max_frame;
    let hello = tokio::time::timeout_at(deadline, async {
        let (send, mut recv) = conn.accept_bi().await.ok()?;
        let hello: RelayHello = read_frame(&mut recv, max).await.ok()??;
        Some((send, recv, hello))
    })
    .await;
    let (mut send, recv, hello) = match hello {
        Ok(Some(hello)) => hello,
        Ok(None) => {
            conn.close(close_code::UNAUTHENTICATED, b"no hello");
            return;
        }
        Err(_) => {
            metrics::counter!("switchyard_relay_prelogin_timeouts_total").increment(1);
            conn.close(close_code::UNAUTHENTICATED, b"no hello in time");
            return;
        }
    };
    let (peer, credential) = match authenticate(&core, &conn, hello).await {
        Ok(peer) => peer,
        Err(e) => {
            // The slot stays taken until the refused connection is gone.
            warn!(reason = %e, "relay login refused");
            let _ = write_frame(&mut send, &HelloReply::Refused(e.to_wire()), max).await;
            let _ = send.finish();
            send.delivered(std::time::Duration::from_secs(2)).await;
            conn.close(close_code::UNAUTHENTICATED, b"login refused");
            drop(prelogin);
            return;
        }
    };
    drop(prelogin);
    conn.open_windows();
    // From here until the connection ends, a revocation closes it.
    let live = core.live.register(&conn, credential);
    let (identity, expires) = match &peer {
        Peer::Client {
            identity, expires, ..
        } => (identity.clone(), *expires),
        Peer::Service { serial } => (serial.clone(), None),
        Peer::Node { id } => (id.clone(), None),
    };
    let welcome = HelloReply::Welcome {
        identity,
        expires_unix: expires,
    };
    if write_frame(&mut send, &welcome, max).await.is_err() {
        return;
    }
    match peer {
        Peer::Service { serial } => {
            // The hello stream stays open: the service's control stream.
            serve_service(conn, core, serial, (send, recv), cancel).await;
            drop(live);
        }
        Peer::Node { id } => {
            let _ = send.finish();
            info!(node = %id, "relay node connected");
            let span = info_span!("node", node = %id);
            serve_node(conn, core, cancel).instrument(span).await;
            drop(live);
        }
        Peer::Client {
            identity,
            expires,
            sso,
        } => {
            let _ = send.finish();
            let span = info_span!("client", identity = %identity);
            serve_client(
                conn,
                core,
                ClientAuth {
                    identity,
                    expires,
                    sso,
                    live,
                },
                cancel,
            )
            .instrument(span)
            .await
        }
    }
}

async fn authenticate(
    core: &RelayCore,
    conn: &Conn,
    hello: RelayHello,
) -> Result<(Peer, Credential), AuthError> {
    let store = &core.db;
    match hello {
        RelayHello::Client { token: Some(token) } => {
            let claims = core.check_token(&token, &["access", "api"]).await?;
            let credential = Credential::Token {
                jti: claims.jti.clone(),
                user: claims.sub.clone(),
            };
            let peer = Peer::Client {
                identity: claims.sub,
                expires: Some(claims.exp),
                sso: claims.kind == "access",
            };
            Ok((peer, credential))
        }
        RelayHello::Client { token: None } => {
            let fingerprint = peer_cert_fingerprint(conn).ok_or(AuthError::Missing)?;
            let email = store
                .cert_subject(&fingerprint, "client")
                .await?
                .ok_or(AuthError::UnknownCertificate)?;
            if !store.user_enabled(&email).await? {
                return Err(AuthError::UserDisabled(email));
            }
            let credential = Credential::ClientCert {
                fingerprint,
                user: email.clone(),
            };
            let peer = Peer::Client {
                identity: email,
                expires: None,
                sso: false,
            };
            Ok((peer, credential))
        }
        RelayHello::Service { advertise } => {
            let fingerprint = peer_cert_fingerprint(conn).ok_or(AuthError::Missing)?;
            let serial = store
                .cert_subject(&fingerprint, "service")
                .await?
                .ok_or(AuthError::UnknownCertificate)?;
            info!(%serial, ?advertise, "service online");
            replace_online(core, &serial, OnlineService::new(conn.clone(), advertise));
            if let Err(e) = core.db.set_present(&serial, &core.node_id).await {
                warn!(error = %e, %serial, "cannot record the service's presence");
            }
            let credential = Credential::ServiceCert {
                fingerprint,
                serial: serial.clone(),
            };
            Ok((Peer::Service { serial }, credential))
        }
        RelayHello::Node { id } => {
            let fingerprint = peer_cert_fingerprint(conn).ok_or(AuthError::Missing)?;
            let subject = store
                .cert_subject(&fingerprint, super::nodes::NODE_CERT_KIND)
                .await?;
            if subject.as_deref() != Some(id.as_str()) {
                return Err(AuthError::NotANode(id));
            }
            let credential = Credential::NodeCert {
                fingerprint,
                node: id.clone(),
            };
            Ok((Peer::Node { id }, credential))
        }
    }
}

/// Makes `service` the one `serial` is reached by. The connection it
/// replaces keeps its running tunnels (a service moving from TCP back to
/// QUIC drains its TCP connection, then closes it) but gets no new ones,
/// and is closed after [`REPLACED_GRACE`]; one replaced earlier and still
/// open is closed now, so a serial holds two connections at most.
fn replace_online(core: &RelayCore, serial: &str, mut service: OnlineService) {
    let mut online = core.online.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(old) = online.remove(serial) {
        if let Some(older) = old.draining {
            older.close(0, b"replaced by a newer connection");
        }
        old.replaced.cancel();
        service.draining = Some(old.conn);
    }
    online.insert(serial.to_string(), service);
}

/// How long a service connection replaced by a newer one of the same
/// serial may keep carrying its tunnels before the relay closes it (the
/// service closes it itself once they end: `relay_agent`'s drain, 5 min
/// by default).
pub(crate) const REPLACED_GRACE: Duration = Duration::from_secs(10 * 60);

async fn serve_service(
    conn: Conn,
    core: Arc<RelayCore>,
    serial: String,
    control: (SendHalf, RecvHalf),
    cancel: CancellationToken,
) {
    let max = core.config.limits.max_frame;
    let (slots, replaced) = core
        .online
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&serial)
        .filter(|s| s.conn.same(&conn))
        .map(|s| (s.slots_in.clone(), s.replaced.clone()))
        .unzip();
    // Replaced by a newer connection (or, when this one was replaced
    // before it got here, at once): closed after the grace.
    let retire = async {
        if let Some(replaced) = replaced {
            replaced.cancelled().await;
        }
        tokio::time::sleep(REPLACED_GRACE).await;
    };
    // Streams a service opens are slots for tunnel offers (a service on
    // TCP; one on QUIC opens none): kept up to `SERVICE_SLOTS`, more are
    // reset.
    let park = async {
        while let Ok(stream) = conn.accept_bi().await {
            if let Some(Err(e)) = slots.as_ref().map(|s| s.try_send(stream)) {
                let (mut send, _) = e.into_inner();
                send.reset(0);
            }
        }
    };
    let goodbye = goodbye(control, &serial, max);
    let left = tokio::select! {
        _ = cancel.cancelled() => None,
        reason = conn.closed() => {
            debug!(%serial, %reason, "service connection ended");
            None
        }
        () = park => {
            debug!(%serial, "service connection ended");
            None
        }
        () = retire => {
            info!(%serial, "closing a replaced service connection after {REPLACED_GRACE:?}");
            conn.close(0, b"replaced by a newer connection");
            None
        }
        send = goodbye => Some(send),
    };
    let gone = offline(&core, &serial, &conn).await;
    let Some(mut send) = left else {
        return;
    };
    // Answered once the serial is offline here and in the presence table.
    info!(%serial, offline = gone, "service said goodbye");
    let _ = write_frame(&mut send, &NoticeReply::Offline, max).await;
    let _ = send.finish();
    // Its open tunnels run on until the service closes the connection,
    // after draining its calls (as a replaced connection's: the grace at
    // most).
    tokio::select! {
        _ = cancel.cancelled() => {}
        reason = conn.closed() => debug!(%serial, %reason, "service connection ended after its goodbye"),
        () = tokio::time::sleep(REPLACED_GRACE) => {
            conn.close(0, b"said goodbye long ago");
        }
    }
}

/// A service's control stream (its hello stream, kept open): resolves
/// with the stream's sending half when the service says goodbye; never
/// otherwise. Its end (an older service finishes it after its hello) or a
/// notice this relay does not know is answered by finishing our side, which
/// the service reads as "not understood".
async fn goodbye((mut send, mut recv): (SendHalf, RecvHalf), serial: &str, max: usize) -> SendHalf {
    match read_frame::<ServiceNotice>(&mut recv, max).await {
        Ok(Some(ServiceNotice::Goodbye)) => return send,
        Ok(None) => {}
        Err(e) => {
            debug!(%serial, error = %e, "a service notice this relay cannot read; not answered")
        }
    }
    let _ = send.finish();
    std::future::pending().await
}

/// Forgets `conn` as the connection `serial` is reached by, and clears the
/// serial's presence row, unless a newer connection has replaced it. True
/// if it was the serial's connection.
async fn offline(core: &RelayCore, serial: &str, conn: &Conn) -> bool {
    let gone = {
        let mut online = core.online.lock().unwrap_or_else(|p| p.into_inner());
        let gone = online.get(serial).is_some_and(|s| s.conn.same(conn));
        if gone {
            online.remove(serial);
        }
        gone
    };
    if gone {
        info!(%serial, "service offline");
        if let Err(e) = core.db.clear_present(serial, &core.node_id).await {
            warn!(error = %e, %serial, "cannot clear the service's presence");
        }
    }
    gone
}

struct ClientAuth {
    identity: String,
    expires: Option<u64>,
    sso: bool,
    /// The connection's entry among the live ones (its credential is
    /// replaced on `Reauth`).
    live: LiveEntry,
}

async fn serve_client(
    conn: Conn,
    core: Arc<RelayCore>,
    auth: ClientAuth,
    cancel: CancellationToken,
) {
    let auth = Arc::new(std::sync::Mutex::new(auth));
    // Tunnels of a client on TCP carry their packets in the stream.
    let hop = Hop::Client {
        udp: conn.carrier() == Carrier::Quic,
    };
    let mut streams = JoinSet::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            stream = conn.accept_bi() => match stream {
                Ok((send, recv)) => {
                    streams.spawn(serve_request(core.clone(), auth.clone(), hop.clone(), send, recv));
                }
                Err(e) => {
                    debug!(reason = %e, "client connection ended");
                    break;
                }
            },
            Some(_) = streams.join_next(), if !streams.is_empty() => {}
        }
    }
    streams.shutdown().await;
}

/// Another node's link: one [`RelayRequest::Forward`] per stream.
async fn serve_node(conn: Conn, core: Arc<RelayCore>, cancel: CancellationToken) {
    let mut streams = JoinSet::new();
    // The forwarding node's packet port is on the address its link
    // comes from (a mapped IPv4 address as plain IPv4, as the packet port
    // may be an IPv4 socket).
    let node_ip = conn.remote_address().ip().to_canonical();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            stream = conn.accept_bi() => match stream {
                Ok((send, recv)) => {
                    streams.spawn(serve_forward(core.clone(), node_ip, send, recv));
                }
                Err(e) => {
                    debug!(reason = %e, "relay node link ended");
                    break;
                }
            },
            Some(_) = streams.join_next(), if !streams.is_empty() => {}
        }
    }
    streams.shutdown().await;
}

/// A tunnel another node forwards here, for a service connected here.
async fn serve_forward(
    core: Arc<RelayCore>,
    node_ip: std::net::IpAddr,
    mut send: SendHalf,
    mut recv: RecvHalf,
) {
    let max = core.config.limits.max_frame;
    let reply = match read_frame(&mut recv, max).await {
        Ok(Some(RelayRequest::Forward {
            serial,
            caller,
            packets,
        })) => {
            metrics::counter!("switchyard_relay_requests_total", "kind" => "forward").increment(1);
            let across = packets.map(|hop| (SocketAddr::new(node_ip, hop.port), hop));
            let hop = Hop::Node(across);
            return open_tunnel(&core, &caller, &serial, send, recv, hop).await;
        }
        Ok(Some(other)) => refuse(
            ErrorCode::PermissionDenied,
            format!(
                "a relay node link carries forwarded tunnels only, not {}",
                other.kind()
            ),
        ),
        Ok(None) => return,
        Err(e) => refuse(ErrorCode::InvalidArgument, e.to_string()),
    };
    let _ = write_frame(&mut send, &reply, max).await;
    let _ = send.finish();
}

fn refuse(code: ErrorCode, message: impl Into<String>) -> RelayReply {
    RelayReply::Error(WireError::new(code, message))
}

async fn serve_request(
    core: Arc<RelayCore>,
    auth: Arc<std::sync::Mutex<ClientAuth>>,
    hop: Hop,
    mut send: SendHalf,
    mut recv: RecvHalf,
) {
    let max = core.config.limits.max_frame;
    let request: RelayRequest = match read_frame(&mut recv, max).await {
        Ok(Some(r)) => r,
        Ok(None) => return,
        Err(e) => {
            let _ = write_frame(
                &mut send,
                &refuse(ErrorCode::InvalidArgument, e.to_string()),
                max,
            )
            .await;
            return;
        }
    };
    let kind = request.kind();
    let (identity, sso, expired) = {
        let a = auth.lock().unwrap_or_else(|p| p.into_inner());
        let expired = a.expires.is_some_and(|exp| exp <= super::unix_now());
        (a.identity.clone(), a.sso, expired)
    };
    metrics::counter!("switchyard_relay_requests_total", "kind" => kind).increment(1);
    let reply = match request {
        RelayRequest::Reauth { token } => {
            match core.check_token(&token, &["access", "api"]).await {
                Ok(claims) if claims.sub == identity => {
                    let mut a = auth.lock().unwrap_or_else(|p| p.into_inner());
                    a.expires = Some(claims.exp);
                    a.sso = claims.kind == "access";
                    a.live.replace(Credential::Token {
                        jti: claims.jti,
                        user: claims.sub,
                    });
                    RelayReply::Ok
                }
                Ok(_) => refuse(
                    ErrorCode::PermissionDenied,
                    "a connection cannot change identity",
                ),
                Err(e) => RelayReply::Error(e.to_wire()),
            }
        }
        _ if expired => refuse(
            ErrorCode::Unauthenticated,
            "the access token of this connection expired; log in again",
        ),
        RelayRequest::OpenTunnel { serial } => {
            return open_tunnel(&core, &identity, &serial, send, recv, hop).await;
        }
        RelayRequest::Forward { .. } => refuse(
            ErrorCode::PermissionDenied,
            "only the relay's own nodes may forward tunnels",
        ),
        RelayRequest::Assert { serial } => assert_for(&core, &identity, &serial).await,
        RelayRequest::ServiceOtp { serial } => service_otp(&core, &identity, &serial).await,
        RelayRequest::IssueClientCert { csr_der } => {
            match core.state.ca.issue_client(&csr_der, &identity) {
                Ok(cert_der) => {
                    let fp = Fingerprint::of(&cert_der).0;
                    match core.db.record_cert(&fp, "client", &identity).await {
                        Ok(()) => {
                            info!(%identity, "client certificate issued");
                            RelayReply::ClientCert {
                                cert_der,
                                ca_der: core.state.ca.cert_der().to_vec(),
                            }
                        }
                        Err(e) => refuse(ErrorCode::Internal, e.to_string()),
                    }
                }
                Err(e) => refuse(ErrorCode::InvalidArgument, e.to_string()),
            }
        }
        RelayRequest::CreateToken { lifetime_secs } if sso => {
            let lifetime = std::time::Duration::from_secs(lifetime_secs.max(60));
            match core.issue_token(&identity, "api", lifetime).await {
                Ok((claims, token)) => {
                    info!(%identity, id = %claims.jti, "access token created");
                    RelayReply::Token {
                        id: claims.jti,
                        token,
                        expires_unix: claims.exp,
                    }
                }
                Err(e) => RelayReply::Error(e),
            }
        }
        RelayRequest::CreateToken { .. } => refuse(
            ErrorCode::PermissionDenied,
            "access tokens can only be created from an SSO login",
        ),
    };
    let _ = write_frame(&mut send, &reply, max).await;
    let _ = send.finish();
}

async fn facts(core: &RelayCore, serial: &str) -> Result<ServiceFacts, RelayReply> {
    let record = core
        .db
        .service(serial)
        .await
        .map_err(|e| refuse(ErrorCode::Internal, e.to_string()))?
        .ok_or_else(|| {
            refuse(
                ErrorCode::NotFound,
                format!("no service with serial {serial} is enrolled with this relay"),
            )
        })?;
    let advertise = core
        .online
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(serial)
        .and_then(|s| s.advertise.clone())
        .or(record.advertise);
    Ok(ServiceFacts {
        fingerprint: record.fingerprint,
        advertise,
    })
}

async fn assert_for(core: &RelayCore, identity: &str, serial: &str) -> RelayReply {
    let facts = match facts(core, serial).await {
        Ok(f) => f,
        Err(reply) => return reply,
    };
    match core
        .state
        .signer
        .assert(identity, serial, core.config.assertion_ttl.as_secs())
    {
        Ok(token) => RelayReply::Assertion { token, facts },
        Err(e) => refuse(ErrorCode::Internal, e.to_string()),
    }
}

async fn service_otp(core: &RelayCore, identity: &str, serial: &str) -> RelayReply {
    if serial.is_empty() || serial.len() > 128 || serial.chars().any(|c| c.is_control()) {
        return refuse(
            ErrorCode::InvalidArgument,
            "a serial is 1-128 printable characters",
        );
    }
    match core.db.check_may_enroll(serial, identity).await {
        Ok(()) => {}
        Err(e @ (StoreError::SerialOwned { .. } | StoreError::SerialUnowned { .. })) => {
            warn!(%serial, requested_by = %identity, "enrollment one-time password refused: the serial belongs to another user");
            return refuse(ErrorCode::PermissionDenied, e.to_string());
        }
        Err(e) => return refuse(ErrorCode::Internal, e.to_string()),
    }
    let otp = crate::secret::Secret::new(hex::encode(rand::random::<[u8; 16]>()));
    let expires = super::unix_now() + core.config.otp_ttl.as_secs();
    match core.db.add_otp(&otp, serial, identity, expires).await {
        Ok(()) => {
            info!(%serial, created_by = %identity, "enrollment one-time password created");
            RelayReply::Otp {
                otp: otp.expose().to_string(),
                expires_unix: expires,
            }
        }
        Err(e) => refuse(ErrorCode::Internal, e.to_string()),
    }
}

/// Who asked for a tunnel.
#[derive(Debug, Clone)]
enum Hop {
    /// A broker connected to this node: its service may be on another
    /// node, then the tunnel is forwarded there. `udp`: it came over QUIC
    /// (a broker on TCP gets no packet path).
    Client { udp: bool },
    /// Another node, forwarding a broker's tunnel: the service must be
    /// here (one hop, never forwarded again). With that node's packet
    /// port and the tunnel's hop when it asked for a packet path.
    Node(Option<(SocketAddr, NodeHop)>),
}

async fn reply_error(mut client_send: SendHalf, reply: RelayReply, max: usize) {
    let _ = write_frame(&mut client_send, &reply, max).await;
    let _ = client_send.finish();
}

async fn open_tunnel(
    core: &RelayCore,
    identity: &str,
    serial: &str,
    client_send: SendHalf,
    client_recv: RecvHalf,
    hop: Hop,
) {
    let max = core.config.limits.max_frame;
    let facts = match facts(core, serial).await {
        Ok(f) => f,
        Err(reply) => return reply_error(client_send, reply, max).await,
    };
    let service = core
        .online
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(serial)
        .cloned();
    match service {
        Some(service) => {
            bridge_local(
                core,
                identity,
                serial,
                facts,
                service,
                (client_send, client_recv),
                hop,
            )
            .await
        }
        None if matches!(hop, Hop::Client { .. }) && core.links.is_some() => {
            let client_udp = matches!(hop, Hop::Client { udp: true });
            forward_to_node(core, identity, serial, client_send, client_recv, client_udp).await
        }
        None => {
            let offline = refuse(
                ErrorCode::Unavailable,
                format!("service {serial} is offline"),
            );
            reply_error(client_send, offline, max).await
        }
    }
}

/// Bridges a tunnel to a service connected to this node.
async fn bridge_local(
    core: &RelayCore,
    identity: &str,
    serial: &str,
    facts: ServiceFacts,
    service: OnlineService,
    (mut client_send, client_recv): (SendHalf, RecvHalf),
    hop: Hop,
) {
    let max = core.config.limits.max_frame;
    let tunnel = core.next_tunnel.fetch_add(1, Ordering::Relaxed);
    // Held for the tunnel's life: dropping it closes the packet path. A
    // forwarded tunnel's client end is across the link it came over. A
    // tunnel with an end on TCP has none (UDP may be what is blocked there).
    let udp = service.conn.carrier() == Carrier::Quic;
    let mut packets = match (&hop, core.packets.as_ref()) {
        (Hop::Client { udp: true }, Some(p)) if udp => Some(p.register()),
        (Hop::Node(Some((node, hop))), Some(p)) if udp => p.register_across(*node, *hop),
        _ => None,
    };
    let packet = packets.as_ref().map(|t| t.path);
    let opened = async {
        let offline = || format!("service {serial} went offline");
        let offer = TunnelOffer {
            tunnel,
            caller: identity.to_string(),
            packet,
        };
        let (send, recv) = service.offer(&offer, max).await.map_err(|e| {
            debug!(tunnel, %serial, error = %e, "cannot offer the tunnel");
            offline()
        })?;
        // The client's first packet must find the service's address known.
        if let Some(path) = packets.as_mut()
            && !path.service_ready(SERVICE_READY).await
        {
            warn!(tunnel, %serial, "service never announced its packet address");
            return Err(format!(
                "service {serial} did not reach the relay's packet port \
                 (is UDP to it blocked on the service's side?)"
            ));
        }
        Ok((send, recv))
    }
    .await;
    let (service_send, service_recv) = match opened {
        Ok(streams) => streams,
        Err(why) => {
            return reply_error(client_send, refuse(ErrorCode::Unavailable, why), max).await;
        }
    };
    let packet = packet.map(|p| PacketPath {
        port: core.config.misdirect_client_packets.unwrap_or(p.port),
        ..p
    });
    let open = RelayReply::TunnelOpen { facts, packet };
    if write_frame(&mut client_send, &open, max).await.is_err() {
        return;
    }
    let from_node = matches!(hop, Hop::Node(_));
    info!(tunnel, %serial, caller = %identity, from_node, packets = packets.is_some(), "tunnel open");
    let _open = core.load.tunnel();
    let tap = core.config.tap.clone();
    // With a packet path the streams carry nothing, but their end (either
    // side's) still ends the tunnel on the other side.
    tokio::join!(
        forward(client_recv, service_send, tap.clone(), &core.load),
        forward(service_recv, client_send, tap, &core.load),
    );
    drop(packets);
    debug!(tunnel, "tunnel closed");
}

/// Forwards a broker's tunnel one hop to the node its service is
/// connected to (from the presence table), over that node's link. The
/// packet path is asked for only when the broker came over QUIC
/// (`client_udp`).
async fn forward_to_node(
    core: &RelayCore,
    identity: &str,
    serial: &str,
    client_send: SendHalf,
    client_recv: RecvHalf,
    client_udp: bool,
) {
    let max = core.config.limits.max_frame;
    let unavailable = |why: String| refuse(ErrorCode::Unavailable, why);
    let (node, addr) = match core.db.locate(serial).await {
        Ok(Some((node, addr))) if node != core.node_id => (node, addr),
        Ok(_) => {
            let offline = unavailable(format!("service {serial} is offline"));
            return reply_error(client_send, offline, max).await;
        }
        Err(e) => {
            return reply_error(client_send, refuse(ErrorCode::Internal, e.to_string()), max).await;
        }
    };
    let Some(links) = core.links.as_ref() else {
        return reply_error(
            client_send,
            unavailable(format!("service {serial} is offline")),
            max,
        )
        .await;
    };
    let opened = async {
        let addr: std::net::SocketAddr = addr
            .parse()
            .map_err(|_| format!("relay node {node} has a bad address {addr:?}"))?;
        let link = links.link(&node, addr).await.map_err(|e| e.to_string())?;
        let lost =
            |e: &dyn std::fmt::Display| format!("relay node {node} holding service {serial}: {e}");
        // The packet path crosses as plain UDP from this node's packet
        // port, with a token only the two nodes know (see `packets`).
        let hop = core
            .packets
            .as_ref()
            .filter(|_| client_udp)
            .map(|p| NodeHop {
                port: p.local_addr().port(),
                token: HopToken::random(),
            });
        let packets = hop.map(|h| h.token);
        let (mut send, mut recv) = link.open_bi().await.map_err(|e| lost(&e))?;
        let request = RelayRequest::Forward {
            serial: serial.to_string(),
            caller: identity.to_string(),
            packets: hop,
        };
        write_frame(&mut send, &request, max)
            .await
            .map_err(|e| lost(&e))?;
        let wait = SERVICE_READY + super::nodes::CONNECT_TIMEOUT;
        let reply: RelayReply = tokio::time::timeout(wait, read_frame(&mut recv, max))
            .await
            .map_err(|_| lost(&"no answer in time"))?
            .map_err(|e| lost(&e))?
            .ok_or_else(|| lost(&"the link closed"))?;
        // The packet path's client half: this node's port, the far node's
        // tunnel id, datagrams to the far node's packet port (on the
        // address its link answers at) with this tunnel's token.
        let (reply, joined) = match reply {
            RelayReply::TunnelOpen {
                facts,
                packet: Some(path),
            } => {
                let (port, token) = core
                    .packets
                    .as_ref()
                    .zip(packets)
                    .ok_or_else(|| lost(&"it offered a packet path not asked for"))?;
                let far = SocketAddr::new(link.remote_address().ip().to_canonical(), path.port);
                let joined = port
                    .join_forwarded(path.id, far, token)
                    .ok_or_else(|| lost(&"its tunnel id is taken here"))?;
                let packet = PacketPath {
                    port: core
                        .config
                        .misdirect_client_packets
                        .unwrap_or(joined.path.port),
                    id: path.id,
                };
                let open = RelayReply::TunnelOpen {
                    facts,
                    packet: Some(packet),
                };
                (open, Some(joined))
            }
            other => (other, None),
        };
        Ok::<_, String>((SendHalf::Quic(send), RecvHalf::Quic(recv), reply, joined))
    }
    .await;
    let (node_send, node_recv, reply, _packets) = match opened {
        Ok(opened) => opened,
        Err(why) => {
            warn!(%serial, %node, reason = %why, "cannot forward a tunnel");
            return reply_error(client_send, unavailable(why), max).await;
        }
    };
    let mut client_send = client_send;
    let is_open = matches!(reply, RelayReply::TunnelOpen { .. });
    if write_frame(&mut client_send, &reply, max).await.is_err() || !is_open {
        let _ = client_send.finish();
        return;
    }
    info!(%serial, caller = %identity, %node, packets = _packets.is_some(), "tunnel forwarded");
    let _open = core.load.tunnel();
    let tap = core.config.tap.clone();
    tokio::join!(
        forward(client_recv, node_send, tap.clone(), &core.load),
        forward(node_recv, client_send, tap, &core.load),
    );
}

/// How long a service may take to announce its packet address.
const SERVICE_READY: Duration = Duration::from_secs(5);

/// Chunks read (and then written) in one go by [`forward`].
const FORWARD_BATCH: usize = 32;

/// Copies one direction of a tunnel, chunk by chunk, without looking
/// inside. When the source fails, the sink is reset (and vice versa), so
/// the far end learns at once.
async fn forward(
    mut from: RecvHalf,
    mut to: SendHalf,
    tap: Option<tokio::sync::mpsc::Sender<Bytes>>,
    load: &super::NodeLoad,
) {
    // Chunks move in batches: one lock of each connection per batch instead
    // of per (packet-sized) chunk, and no copies.
    let mut batch: [Bytes; FORWARD_BATCH] = Default::default();
    loop {
        tokio::select! {
            got = from.read_chunks(&mut batch) => match got {
                Ok(Some(n)) => {
                    if let Some(tap) = &tap {
                        for chunk in &batch[..n] {
                            let _ = tap.try_send(chunk.clone());
                        }
                    }
                    load.add_bytes(batch[..n].iter().map(|c| c.len() as u64).sum());
                    if to.write_chunks(&mut batch[..n]).await.is_err() {
                        from.stop(0);
                        return;
                    }
                }
                Ok(None) => {
                    let _ = to.finish();
                    return;
                }
                Err(_) => {
                    to.reset(0);
                    return;
                }
            },
            () = to.stopped() => {
                from.stop(0);
                return;
            }
        }
    }
}

/// Streams a service on TCP may hold open at the relay, waiting for
/// tunnel offers.
pub(crate) const SERVICE_SLOTS: usize = 16;

impl OnlineService {
    pub(crate) fn new(conn: Conn, advertise: Option<String>) -> Self {
        let (slots_in, slots) = tokio::sync::mpsc::channel(SERVICE_SLOTS);
        Self {
            conn,
            advertise,
            slots_in,
            slots: Arc::new(tokio::sync::Mutex::new(slots)),
            replaced: CancellationToken::new(),
            draining: None,
        }
    }

    /// Sends `offer` to the service on a stream of its own and returns
    /// that stream: a new one over QUIC; over TCP one the service holds
    /// open (waiting at most [`SERVICE_READY`] for it to open another when
    /// none is; one the service reset meanwhile is passed over).
    async fn offer(&self, offer: &TunnelOffer, max: usize) -> Result<(SendHalf, RecvHalf), String> {
        if self.conn.carrier() == Carrier::Quic {
            let (mut send, recv) = self.conn.open_bi().await.map_err(|e| e.to_string())?;
            write_frame(&mut send, offer, max)
                .await
                .map_err(|e| e.to_string())?;
            return Ok((send, recv));
        }
        let mut slots = self.slots.lock().await;
        let deadline = tokio::time::Instant::now() + SERVICE_READY;
        loop {
            let next = tokio::select! {
                next = slots.recv() => next,
                why = self.conn.closed() => return Err(why),
                _ = tokio::time::sleep_until(deadline) => {
                    return Err("the service holds no stream open for tunnels".into());
                }
            };
            let (mut send, recv) = next.ok_or("the service is gone")?;
            if write_frame(&mut send, offer, max).await.is_ok() {
                return Ok((send, recv));
            }
        }
    }
}
