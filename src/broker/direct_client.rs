//! Connecting and logging in to a service's RPC socket, over QUIC or over
//! TCP (`rpc_url`), (no actor state: the `DirectLink` actor and the
//! benchmarks both use it).

use std::net::SocketAddr;
use std::sync::Arc;

use quinn::Endpoint;

use super::link::LinkError;
use crate::proxy::{Proxy, ProxyError};
use crate::secret::Secret;
use crate::wire::conn::{self, TransportLimits, read_frame, write_frame};
use crate::wire::messages::{AuthRequest, AuthResponse, Credentials};
use crate::wire::messages::{ErrorCode, WireError};
use crate::wire::mux::Conn;
use crate::wire::pin::{Fingerprint, PinnedServerVerifier};
use crate::wire::tcp::{self, RpcUrl};

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct DirectTarget {
    /// `host:port` as the caller named it (for messages).
    pub label: String,
    pub addr: SocketAddr,
    pub username: String,
    pub password: Secret,
    /// Pinned certificate; `None` trusts on first use.
    pub fingerprint: Option<Fingerprint>,
    /// Set: over TCP to this `rpc_url` (`addr` is its resolved address)
    /// instead of QUIC.
    pub rpc_url: Option<RpcUrl>,
    /// With `rpc_url`: through this HTTP proxy (`addr` is then unused: the
    /// proxy resolves the service's name).
    pub proxy: Option<Proxy>,
}

/// A logged-in connection.
pub struct DirectConnection {
    /// QUIC or TCP.
    pub conn: Conn,
    pub fingerprint: Fingerprint,
    pub service_name: String,
    /// What must live as long as the connection (a relayed tunnel).
    pub guard: Option<Box<dyn std::any::Any + Send>>,
}

/// The name we ask for in TLS; the certificate is checked by fingerprint.
const SERVER_NAME: &str = "switchyard-service";

impl DirectTarget {
    fn credentials(&self) -> Credentials {
        Credentials::Password {
            username: self.username.clone(),
            password: self.password.expose().to_string(),
        }
    }
}

/// Connects over TCP to the target's `rpc_url` (at its `addr`), verifies
/// the certificate and logs in with a password.
pub async fn connect_tcp(
    target: &DirectTarget,
    limits: &TransportLimits,
) -> Result<DirectConnection, LinkError> {
    let url = target
        .rpc_url
        .as_ref()
        .ok_or_else(|| LinkError::Unreachable {
            target: target.label.clone(),
            reason: "no rpc_url to connect to over TCP".into(),
        })?;
    let via = match &target.proxy {
        Some(proxy) => TcpVia::Proxy(proxy),
        None => TcpVia::Direct(target.addr),
    };
    login_tcp(
        url,
        via,
        &target.label,
        target.credentials(),
        target.fingerprint,
        limits,
    )
    .await
}

/// How a TCP connection reaches the service.
#[derive(Debug, Clone, Copy)]
pub enum TcpVia<'a> {
    /// Straight to this address.
    Direct(SocketAddr),
    /// Through an HTTP proxy (`CONNECT` to the URL's host and port).
    Proxy(&'a Proxy),
}

/// A proxy's refusal as the link reports it: wrong credentials or a
/// forbidden destination are final; anything else is worth retrying.
fn proxy_error(label: &str, e: ProxyError) -> LinkError {
    match e {
        ProxyError::Refused {
            status: 401 | 403 | 407,
            ..
        } => LinkError::Refused {
            target: label.to_string(),
            error: WireError::new(ErrorCode::PermissionDenied, e.to_string()),
        },
        ProxyError::Url { .. } => LinkError::Refused {
            target: label.to_string(),
            error: WireError::new(ErrorCode::InvalidArgument, e.to_string()),
        },
        other => LinkError::Unreachable {
            target: label.to_string(),
            reason: other.to_string(),
        },
    }
}

/// Connects over QUIC, verifies the certificate and logs in with a
/// password.
pub async fn connect(
    endpoint: &Endpoint,
    target: &DirectTarget,
    limits: &TransportLimits,
) -> Result<DirectConnection, LinkError> {
    let credentials = target.credentials();
    let transport = Arc::new(conn::transport_config(limits));
    login(
        endpoint,
        target.addr,
        &target.label,
        credentials,
        target.fingerprint,
        transport,
        limits,
    )
    .await
}

/// Connects to `addr` with `transport` settings, checks the service's certificate
/// against `fingerprint` (trust on first use when `None`), and logs in.
pub async fn login(
    endpoint: &Endpoint,
    addr: SocketAddr,
    label: &str,
    credentials: Credentials,
    fingerprint: Option<Fingerprint>,
    transport: Arc<quinn::TransportConfig>,
    limits: &TransportLimits,
) -> Result<DirectConnection, LinkError> {
    let unreachable = |reason: String| LinkError::Unreachable {
        target: label.to_string(),
        reason,
    };
    let verifier = PinnedServerVerifier::new(fingerprint);
    let config = conn::client_config_with(Arc::clone(&verifier), transport)
        .map_err(|e| unreachable(e.to_string()))?;
    let connecting = endpoint
        .connect_with(config, addr, SERVER_NAME)
        .map_err(|e| unreachable(e.to_string()))?;
    let conn = match within_handshake_silence(limits, label, connecting).await? {
        Ok(conn) => conn,
        Err(e) => return Err(handshake_failed(label, fingerprint, &verifier, e)),
    };
    authenticate(Conn::Quic(conn), &verifier, label, credentials, limits).await
}

/// As [`login`], over TCP: TLS 1.3 and HTTP/2 to the service's TCP RPC
/// listener (`url` names it) at an address or through a proxy (`via`),
/// the certificate pinned the same way.
pub async fn login_tcp(
    url: &RpcUrl,
    via: TcpVia<'_>,
    label: &str,
    credentials: Credentials,
    fingerprint: Option<Fingerprint>,
    limits: &TransportLimits,
) -> Result<DirectConnection, LinkError> {
    let verifier = PinnedServerVerifier::new(fingerprint);
    let tls = Arc::new(tcp::client_tls(Arc::clone(&verifier)));
    let socket = async {
        let socket = match via {
            TcpVia::Direct(addr) => {
                tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(|e| LinkError::Unreachable {
                        target: label.to_string(),
                        reason: e.to_string(),
                    })?
            }
            TcpVia::Proxy(proxy) => proxy
                .connect(&url.host, url.port)
                .await
                .map_err(|e| proxy_error(label, e))?,
        };
        let _ = socket.set_nodelay(true);
        Ok::<_, LinkError>(socket)
    };
    let socket = within_handshake_silence(limits, label, socket).await??;
    let peer = socket
        .peer_addr()
        .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
    let handshake = tcp::connect(socket, peer, url, tls, limits);
    let conn = match within_handshake_silence(limits, label, handshake).await? {
        Ok(conn) => conn,
        Err(e) => return Err(handshake_failed(label, fingerprint, &verifier, e)),
    };
    authenticate(Conn::H2(conn), &verifier, label, credentials, limits).await
}

/// `handshake`, abandoned after `limits.handshake_silence` when set (see
/// `TransportLimits::handshake_silence`; dropping it ends the attempt).
async fn within_handshake_silence<T>(
    limits: &TransportLimits,
    label: &str,
    handshake: impl Future<Output = T>,
) -> Result<T, LinkError> {
    match limits.handshake_silence {
        Some(silence) => {
            tokio::time::timeout(silence, handshake)
                .await
                .map_err(|_| LinkError::Unreachable {
                    target: label.to_string(),
                    reason: format!("no answer within {silence:?}"),
                })
        }
        None => Ok(handshake.await),
    }
}

/// A failed handshake as the caller reads it: a certificate other than the
/// pinned one is named as that.
fn handshake_failed(
    label: &str,
    fingerprint: Option<Fingerprint>,
    verifier: &PinnedServerVerifier,
    e: impl std::fmt::Display,
) -> LinkError {
    match (fingerprint, verifier.seen()) {
        (Some(expected), Some(presented)) if expected != presented => {
            LinkError::FingerprintMismatch {
                target: label.to_string(),
                expected: expected.to_string(),
                presented: presented.to_string(),
            }
        }
        _ => LinkError::Unreachable {
            target: label.to_string(),
            reason: e.to_string(),
        },
    }
}

/// The login exchange on a new connection's first stream (either
/// transport).
async fn authenticate(
    conn: Conn,
    verifier: &PinnedServerVerifier,
    label: &str,
    credentials: Credentials,
    limits: &TransportLimits,
) -> Result<DirectConnection, LinkError> {
    let label = label.to_string();
    let fingerprint = verifier.seen().ok_or_else(|| LinkError::Unreachable {
        target: label.clone(),
        reason: "no certificate was presented".into(),
    })?;
    let lost = |e: &dyn std::fmt::Display| LinkError::lost(&label, e);
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| lost(&e))?;
    let request = AuthRequest {
        credentials,
        client: format!("switchyard-broker/{}", env!("CARGO_PKG_VERSION")),
    };
    write_frame(&mut send, &request, limits.max_frame)
        .await
        .map_err(|e| lost(&e))?;
    drop(request);
    let _ = send.finish();
    match read_frame::<AuthResponse>(&mut recv, limits.max_frame).await {
        Ok(Some(AuthResponse::Accepted { service })) => Ok(DirectConnection {
            conn,
            fingerprint,
            // The service names itself: shown in `status` and logs as a
            // label, never raw.
            service_name: crate::label::tidy(&service),
            guard: None,
        }),
        Ok(Some(AuthResponse::Rejected(error))) => {
            conn.close(0, b"login refused");
            Err(LinkError::Rejected {
                target: label,
                error,
            })
        }
        Ok(None) => Err(lost(&"the service closed the login stream")),
        Err(e) => Err(lost(&e)),
    }
}
