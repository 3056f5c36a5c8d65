//! Talking to a relay (no actor state: the `CloudLogin` actor and the
//! cloud dialers use it): discovery over HTTPS, the OAuth 2.0 device grant
//! and refresh (the `oauth2` crate), the relay connection and its requests.
//!
//! The connection is QUIC, or TLS 1.3 over TCP with HTTP/2 streams (the
//! relay's TCP listener, `wire::tcp`) when QUIC is not possible: by
//! [`TransportPolicy`] (`auto` races QUIC against TCP with QUIC's head
//! start, the first hello answered wins), or always through an HTTP proxy
//! when one applies to the relay. Everything after the hello sees a
//! `wire::mux::Conn`; tunnels over a TCP connection carry their packets
//! in the stream (no packet port).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use oauth2::basic::BasicClient;
use oauth2::{
    ClientId, DeviceAuthorizationUrl, RefreshToken, StandardDeviceAuthorizationResponse,
    TokenResponse, TokenUrl,
};
use quinn::Endpoint;

use super::dialer::{TransportMode, TransportPolicy};
use crate::proxy::Proxy;
use crate::secret::Secret;
use crate::task::AbortOnDrop;
use crate::wire::conn::{
    Liveness, TransportLimits, client_endpoint, read_frame, relay_client_config, watch_liveness,
    write_frame,
};
use crate::wire::messages::{ErrorCode, WireError};
use crate::wire::mux::{Conn, RecvHalf, SendHalf};
use crate::wire::relay::{
    HelloReply, RelayHello, RelayReply, RelayRequest, ServiceFacts, WellKnown,
};
use crate::wire::tcp::RpcUrl;
use crate::wire::tunnel::Carrier;

/// Bound on reaching one relay node and its answer to our hello (both
/// transports, raced or not).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The OAuth client id brokers use with the relay's device grant.
pub const CLIENT_ID: &str = "switchyard-broker";

#[derive(Debug, Clone, thiserror::Error)]
pub enum CloudError {
    #[error("cannot reach the relay at {relay}: {reason}")]
    Unreachable { relay: String, reason: String },
    #[error("the relay refused: {0}")]
    Refused(WireError),
    #[error("{0}")]
    Sso(String),
    #[error("bad relay settings: {0}")]
    Config(String),
    #[error("not logged in to {relay} as {identity}; log in first")]
    NotLoggedIn { relay: String, identity: String },
    #[error("the relay's answer made no sense: {0}")]
    Protocol(String),
    /// An HTTP proxy refused us (wrong or missing credentials, a
    /// destination it forbids): final, names the proxy and its answer.
    #[error("cannot reach the relay at {relay}: {reason}")]
    ProxyRefused { relay: String, reason: String },
}

impl CloudError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Unreachable { .. } => ErrorCode::Unavailable,
            Self::Refused(e) => e.code,
            Self::Sso(_) | Self::NotLoggedIn { .. } => ErrorCode::Unauthenticated,
            Self::Config(_) => ErrorCode::InvalidArgument,
            Self::Protocol(_) => ErrorCode::Internal,
            Self::ProxyRefused { .. } => ErrorCode::PermissionDenied,
        }
    }
}

/// A relay as the broker reaches it.
#[derive(Clone)]
pub struct RelayInfo {
    /// HTTPS base URL, without a trailing slash; for a relay tier, several
    /// separated by commas (its nodes, tried in turn when one is down).
    pub url: String,
    /// TLS name of the relay (the first URL's host).
    pub host: String,
    /// Each node's (URL, TLS name), in the order given.
    nodes: Arc<Vec<(String, String)>>,
    /// The node that answered last: tried first next time.
    current: Arc<std::sync::atomic::AtomicUsize>,
    pub roots: Arc<rustls::RootCertStore>,
    /// The CA certificates the roots came from (`None`: the system's),
    /// kept so a stored login can rebuild them.
    pub ca_pem: Option<String>,
    pub http: reqwest::Client,
    /// QUIC, TCP, or both raced (`[broker] transport`).
    pub transport: TransportPolicy,
    /// The HTTP proxy relay connections go through (TCP only then).
    pub proxy: Option<Proxy>,
}

impl RelayInfo {
    /// A relay at `url` (one HTTPS base URL, or a tier's several separated
    /// by commas), trusting `ca_pem` (or the system's roots).
    pub fn new(url: &str, ca_pem: Option<String>) -> Result<Self, CloudError> {
        let nodes = url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(node_url)
            .collect::<Result<Vec<_>, _>>()?;
        let Some((_, host)) = nodes.first().cloned() else {
            return Err(CloudError::Config(format!("{url:?}: no relay URL")));
        };
        let url = nodes
            .iter()
            .map(|(u, _)| u.as_str())
            .collect::<Vec<_>>()
            .join(",");
        let roots = match &ca_pem {
            Some(pem) => {
                use rustls::pki_types::CertificateDer;
                use rustls::pki_types::pem::PemObject;
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                    let cert =
                        cert.map_err(|e| CloudError::Config(format!("CA certificates: {e}")))?;
                    roots
                        .add(cert)
                        .map_err(|e| CloudError::Config(format!("CA certificates: {e}")))?;
                }
                roots
            }
            None => crate::tls::root_store(None).map_err(|e| CloudError::Config(e.to_string()))?,
        };
        let http = crate::tls::http_client(roots.clone())
            .map_err(|e| CloudError::Config(e.to_string()))?;
        Ok(Self {
            url,
            host,
            nodes: Arc::new(nodes),
            current: Arc::default(),
            roots: Arc::new(roots),
            ca_pem,
            http,
            transport: TransportPolicy::default(),
            proxy: None,
        })
    }

    /// The same relay reached as `transport` says, through `proxy` when
    /// one is given (HTTPS requests too).
    pub fn with_transport(
        mut self,
        transport: TransportPolicy,
        proxy: Option<Proxy>,
    ) -> Result<Self, CloudError> {
        if let Some(proxy) = &proxy {
            self.http = crate::tls::http_client_via(
                (*self.roots).clone(),
                Some(
                    proxy
                        .reqwest()
                        .map_err(|e| CloudError::Config(e.to_string()))?,
                ),
            )
            .map_err(|e| CloudError::Config(e.to_string()))?;
        }
        self.transport = transport;
        self.proxy = proxy;
        Ok(self)
    }

    fn unreachable(&self, reason: impl std::fmt::Display) -> CloudError {
        CloudError::Unreachable {
            relay: self.url.clone(),
            reason: reason.to_string(),
        }
    }

    /// The URL OAuth and HTTPS requests go to: the node that answered last.
    fn base(&self) -> &str {
        let k = self.current.load(std::sync::atomic::Ordering::Relaxed);
        &self.nodes[k % self.nodes.len()].0
    }

    /// The QUIC address of the node that answered last, from its
    /// well-known document.
    pub async fn discover(&self) -> Result<SocketAddr, CloudError> {
        self.discover_at(self.base()).await
    }

    /// The QUIC address of the node at `base`, from its well-known document.
    async fn discover_at(&self, base: &str) -> Result<SocketAddr, CloudError> {
        let doc = self.well_known(base).await?;
        doc.quic
            .parse()
            .map_err(|_| CloudError::Protocol(format!("QUIC address {:?}", doc.quic)))
    }

    /// The well-known document of the node at `base`.
    async fn well_known(&self, base: &str) -> Result<WellKnown, CloudError> {
        let url = format!("{base}/.well-known/switchyard-relay");
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .and_then(|r| r.error_for_status());
        let response = match response {
            Ok(response) => response,
            Err(e) => return Err(self.explain(base, e).await),
        };
        let doc: WellKnown = response
            .json()
            .await
            .map_err(|e| self.unreachable(crate::error_chain::describe(&e)))?;
        Ok(doc)
    }

    /// An HTTPS request to `base` failed. Through a proxy, reqwest's
    /// error does not say what the proxy answered: one `CONNECT` of our
    /// own to the same place does (a refusal names the proxy and its
    /// answer, e.g. 407 for wrong credentials).
    async fn explain(&self, base: &str, e: reqwest::Error) -> CloudError {
        let e = crate::error_chain::describe(&e);
        let (Some(proxy), Ok(url)) = (&self.proxy, url::Url::parse(base)) else {
            return self.unreachable(e);
        };
        let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
            return self.unreachable(e);
        };
        match proxy.connect(host.trim_matches(['[', ']']), port).await {
            Err(refused) => self.proxy_error(refused),
            Ok(_) => self.unreachable(e),
        }
    }

    /// A proxy's refusal of credentials or destination is final; anything
    /// else (not reachable, a 502) is worth retrying.
    fn proxy_error(&self, e: crate::proxy::ProxyError) -> CloudError {
        match e {
            crate::proxy::ProxyError::Refused {
                status: 401 | 403 | 407,
                ..
            } => CloudError::ProxyRefused {
                relay: self.url.clone(),
                reason: e.to_string(),
            },
            other => self.unreachable(other),
        }
    }

    fn oauth_at(&self, base: &str) -> Result<OAuthClient, CloudError> {
        let bad = |e: url::ParseError| CloudError::Config(e.to_string());
        Ok(BasicClient::new(ClientId::new(CLIENT_ID.into()))
            .set_device_authorization_url(
                DeviceAuthorizationUrl::new(format!("{base}/oauth/device_authorization"))
                    .map_err(bad)?,
            )
            .set_token_uri(TokenUrl::new(format!("{base}/oauth/token")).map_err(bad)?))
    }

    /// One request to a token endpoint (its path and query kept), sent to
    /// the node that answered last or, when that one cannot be reached,
    /// the others in turn.
    async fn token_request_on_some_node(
        &self,
        request: oauth2::HttpRequest,
    ) -> Result<oauth2::HttpResponse, CloudError> {
        let (parts, body) = request.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .map_or("/oauth/token".to_string(), |p| p.as_str().to_string());
        self.on_some_node(
            |e| !matches!(e, CloudError::Unreachable { .. }),
            |base| {
                let request = http::Request::builder()
                    .method(parts.method.clone())
                    .uri(format!("{base}{path}"))
                    .body(body.clone())
                    .map(|mut r| {
                        *r.headers_mut() = parts.headers.clone();
                        r
                    });
                async move {
                    let request = request.map_err(|e| CloudError::Config(e.to_string()))?;
                    oauth2::AsyncHttpClient::call(&self.http, request)
                        .await
                        .map_err(|e| self.unreachable(crate::error_chain::describe(&e)))
                }
            },
        )
        .await
    }

    /// `request` against the node that answered last, else each other node
    /// in turn (a tier's nodes share grants' results, tokens and
    /// revocations); the node that answers becomes the one asked first.
    /// A node that cannot be reached is passed over; any other error
    /// (`is_final`) is the answer.
    async fn on_some_node<T, F, Fut>(
        &self,
        is_final: impl Fn(&CloudError) -> bool,
        request: F,
    ) -> Result<T, CloudError>
    where
        F: Fn(String) -> Fut,
        Fut: std::future::Future<Output = Result<T, CloudError>>,
    {
        let start = self.current.load(std::sync::atomic::Ordering::Relaxed);
        let mut failed = Vec::new();
        for i in 0..self.nodes.len() {
            let k = (start + i) % self.nodes.len();
            match request(self.nodes[k].0.clone()).await {
                Ok(answer) => {
                    self.current.store(k, std::sync::atomic::Ordering::Relaxed);
                    return Ok(answer);
                }
                Err(e) if is_final(&e) => return Err(e),
                Err(e) => {
                    tracing::debug!(node = %self.nodes[k].0, error = %e, "relay node unreachable; trying the next");
                    failed.push(e);
                }
            }
        }
        Err(match failed.len() {
            1 => failed.remove(0),
            _ => self.unreachable(
                failed
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
        })
    }

    /// Starts a device grant for `identity` (on the first node that
    /// answers; a tier's nodes share their grants, so it can be finished
    /// through any of them).
    pub async fn start_device_flow(
        &self,
        identity: &str,
    ) -> Result<StandardDeviceAuthorizationResponse, CloudError> {
        self.on_some_node(
            |e| !matches!(e, CloudError::Unreachable { .. }),
            |base| async move {
                self.oauth_at(&base)?
                    .exchange_device_code()
                    .add_extra_param("login_hint", identity)
                    .request_async(&self.http)
                    .await
                    .map_err(|e| self.unreachable(describe(&e)))
            },
        )
        .await
    }

    /// Polls until the person decides (honouring `interval` and
    /// `slow_down`) or the code expires. Each poll goes to the node that
    /// answered last and, when that one is down (it died mid-approval), to
    /// the next node of the tier, which holds the same grant; the relay's
    /// answer (denied, expired) is final.
    pub async fn finish_device_flow(
        &self,
        details: &StandardDeviceAuthorizationResponse,
    ) -> Result<Tokens, CloudError> {
        let http = |request: oauth2::HttpRequest| self.token_request_on_some_node(request);
        let response = self
            .oauth_at(self.base())?
            .exchange_device_access_token(details)
            .request_async(&http, tokio::time::sleep, None)
            .await
            .map_err(|e| CloudError::Sso(describe(&e)))?;
        tokens(response)
    }

    /// A new access token for a refresh token, from the node that answered
    /// last or, when it is down, from another node of the tier (a refusal
    /// is final).
    pub async fn refresh(&self, refresh: &Secret) -> Result<Tokens, CloudError> {
        let response = self
            .on_some_node(
                |e| !matches!(e, CloudError::Unreachable { .. }),
                |base| async move {
                    self.oauth_at(&base)?
                        .exchange_refresh_token(&RefreshToken::new(refresh.expose().to_string()))
                        .request_async(&self.http)
                        .await
                        .map_err(|e| match &e {
                            oauth2::RequestTokenError::ServerResponse(_) => {
                                CloudError::Sso(describe(&e))
                            }
                            _ => self.unreachable(describe(&e)),
                        })
                },
            )
            .await?;
        let mut t = tokens(response)?;
        if t.refresh.is_none() {
            t.refresh = Some(refresh.clone());
        }
        Ok(t)
    }

    /// Connects to the relay's QUIC listener and says hello: to the node
    /// that answered last, else to each other node in turn (a node that is
    /// down is passed over; a refusal is final).
    pub async fn connect(
        &self,
        hello: RelayHello,
        client_cert: Option<(Vec<u8>, &[u8])>,
        limits: &TransportLimits,
    ) -> Result<RelayConnection, CloudError> {
        let start = self.current.load(std::sync::atomic::Ordering::Relaxed);
        let mut failed = Vec::new();
        for i in 0..self.nodes.len() {
            let k = (start + i) % self.nodes.len();
            let (base, host) = &self.nodes[k];
            let attempt = self.connect_to(base, host, &hello, client_cert.clone(), limits);
            let attempt = tokio::time::timeout(CONNECT_TIMEOUT, attempt)
                .await
                .unwrap_or_else(|_| {
                    Err(self.unreachable(format!(
                        "no answer within {CONNECT_TIMEOUT:?} (is UDP blocked? `[broker] \
                         transport = \"auto\"` falls back to TCP)"
                    )))
                });
            match attempt {
                Ok(conn) => {
                    self.current.store(k, std::sync::atomic::Ordering::Relaxed);
                    return Ok(conn);
                }
                Err(e @ (CloudError::Refused(_) | CloudError::ProxyRefused { .. })) => {
                    return Err(e);
                }
                Err(e) => {
                    tracing::debug!(node = %base, error = %e, "relay node unreachable; trying the next");
                    failed.push(e)
                }
            }
        }
        drop(hello);
        Err(match failed.len() {
            1 => failed.remove(0),
            _ => self.unreachable(
                failed
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
        })
    }

    async fn connect_to(
        &self,
        base: &str,
        host: &str,
        hello: &RelayHello,
        client_cert: Option<(Vec<u8>, &[u8])>,
        limits: &TransportLimits,
    ) -> Result<RelayConnection, CloudError> {
        let doc = self.well_known(base).await?;
        let quic_addr = || {
            doc.quic
                .parse::<SocketAddr>()
                .map_err(|_| CloudError::Protocol(format!("QUIC address {:?}", doc.quic)))
        };
        let tcp_addr = doc
            .tcp
            .as_deref()
            .map(|a| {
                a.parse::<SocketAddr>()
                    .map_err(|_| CloudError::Protocol(format!("TCP address {a:?}")))
            })
            .transpose()?;
        let quic = async {
            let addr = quic_addr()?;
            let config = relay_client_config((*self.roots).clone(), client_cert.clone(), limits)
                .map_err(|e| CloudError::Config(e.to_string()))?;
            let endpoint = client_endpoint(addr).map_err(|e| self.unreachable(e))?;
            let conn = endpoint
                .connect_with(config, addr, host)
                .map_err(|e| self.unreachable(e))?
                .await
                .map_err(|e| self.unreachable(e))?;
            self.hello(
                Conn::Quic(conn),
                Some(endpoint),
                hello,
                "quic".into(),
                limits,
            )
            .await
        };
        let no_tcp = || {
            self.unreachable("the relay has no TCP listener (its well-known document names none)")
        };
        let tcp = async {
            let addr = tcp_addr.ok_or_else(no_tcp)?;
            let (conn, carrier) = self
                .connect_tcp(host, addr, client_cert.clone(), limits)
                .await?;
            self.hello(conn, None, hello, carrier, limits).await
        };
        match (self.transport.mode, &self.proxy, tcp_addr) {
            // A proxy is there because nothing else gets out.
            (_, Some(_), _) | (TransportMode::Tcp, None, _) => tcp.await,
            (TransportMode::Auto, None, Some(_)) => {
                super::dialer::race(quic, self.transport.quic_head_start, tcp, |e| {
                    matches!(e, CloudError::Unreachable { .. })
                })
                .await
            }
            (TransportMode::Auto | TransportMode::Quic, None, _) => quic.await,
        }
    }

    /// TLS 1.3 + HTTP/2 to the relay's TCP listener at `addr` (or through
    /// the proxy, to `host` and `addr`'s port); with how it travels, for
    /// `status`.
    async fn connect_tcp(
        &self,
        host: &str,
        addr: SocketAddr,
        client_cert: Option<(Vec<u8>, &[u8])>,
        limits: &TransportLimits,
    ) -> Result<(Conn, String), CloudError> {
        let tls = crate::wire::conn::relay_client_tls(
            (*self.roots).clone(),
            client_cert,
            crate::wire::tcp::ALPN_H2,
        )
        .map_err(|e| CloudError::Config(e.to_string()))?;
        let url = RpcUrl {
            host: host.to_string(),
            port: addr.port(),
            path: crate::wire::tcp::RPC_PATH.to_string(),
        };
        let (socket, carrier) = match &self.proxy {
            Some(proxy) => (
                proxy
                    .connect(host, addr.port())
                    .await
                    .map_err(|e| self.proxy_error(e))?,
                format!("tcp via proxy {}", proxy.address()),
            ),
            None => (
                tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(|e| self.unreachable(format!("TCP {addr}: {e}")))?,
                "tcp".to_string(),
            ),
        };
        let _ = socket.set_nodelay(true);
        let conn = crate::wire::tcp::connect(socket, addr, &url, Arc::new(tls), limits)
            .await
            .map_err(|e| self.unreachable(e))?;
        Ok((Conn::H2(conn), carrier))
    }

    /// Says hello on a new connection; the relay's answer.
    async fn hello(
        &self,
        conn: Conn,
        endpoint: Option<Endpoint>,
        hello: &RelayHello,
        carrier: String,
        limits: &TransportLimits,
    ) -> Result<RelayConnection, CloudError> {
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| self.unreachable(e))?;
        write_frame(&mut send, hello, limits.max_frame)
            .await
            .map_err(|e| self.unreachable(e))?;
        let _ = send.finish();
        match read_frame::<HelloReply>(&mut recv, limits.max_frame).await {
            Ok(Some(HelloReply::Welcome {
                identity,
                expires_unix,
            })) => Ok(RelayConnection {
                endpoint,
                _watchdog: Arc::new(watch_liveness(
                    conn.clone(),
                    Liveness::always(),
                    limits.silence,
                )),
                conn,
                carrier,
                identity,
                expires: expires_unix,
            }),
            Ok(Some(HelloReply::Refused(e))) => Err(CloudError::Refused(e)),
            Ok(None) => Err(self.unreachable("the relay closed the hello stream")),
            Err(e) => Err(self.unreachable(e)),
        }
    }
}

/// One node's base URL (checked: no credentials in it, as they would be
/// logged, shown and stored) and its TLS name.
fn node_url(url: &str) -> Result<(String, String), CloudError> {
    let url = crate::relay_url::check(url).map_err(|e| CloudError::Config(e.to_string()))?;
    let parsed = url::Url::parse(&url).map_err(|e| CloudError::Config(format!("{url}: {e}")))?;
    let host = parsed
        .host_str()
        .ok_or_else(|| CloudError::Config(format!("{url}: no host")))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    Ok((url, host))
}

type OAuthClient = BasicClient<
    oauth2::EndpointNotSet,
    oauth2::EndpointSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointSet,
>;

/// A readable message for an OAuth failure (the server's error code and
/// description when there is one).
fn describe<RE: std::error::Error + 'static, T: oauth2::ErrorResponse + 'static>(
    e: &oauth2::RequestTokenError<RE, T>,
) -> String {
    match e {
        oauth2::RequestTokenError::ServerResponse(r) => serde_json::to_value(r)
            .ok()
            .and_then(|v| {
                let code = v.get("error")?.as_str()?.to_string();
                let description = v
                    .get("error_description")
                    .and_then(|d| d.as_str())
                    .unwrap_or("");
                Some(match code.as_str() {
                    "access_denied" => "the login was denied in the browser".to_string(),
                    "expired_token" => {
                        "the login code expired before it was approved; log in again".to_string()
                    }
                    _ => format!("{code}: {description}"),
                })
            })
            .unwrap_or_else(|| "the relay refused".into()),
        other => crate::error_chain::describe(other),
    }
}

/// Tokens from a grant or refresh.
#[derive(Clone)]
pub struct Tokens {
    pub access: Secret,
    pub refresh: Option<Secret>,
    /// Unix time the access token expires.
    pub expires: u64,
}

fn tokens(response: oauth2::basic::BasicTokenResponse) -> Result<Tokens, CloudError> {
    let lifetime = response
        .expires_in()
        .unwrap_or(Duration::from_secs(3600))
        .as_secs();
    Ok(Tokens {
        access: Secret::new(response.access_token().secret().as_str()),
        refresh: response
            .refresh_token()
            .map(|r| Secret::new(r.secret().as_str())),
        expires: crate::relay::unix_now() + lifetime,
    })
}

/// An authenticated connection to a relay (QUIC or TLS/TCP). A standing
/// connection: a relay silent for `TransportLimits::silence` at any time
/// is gone (the connection closes, and the tunnels riding it with it), so
/// the next use reconnects instead of waiting out an idle timeout.
#[derive(Clone)]
pub struct RelayConnection {
    /// The UDP endpoint (QUIC only).
    pub endpoint: Option<Endpoint>,
    pub conn: Conn,
    /// How it travels, for `status`: `quic`, `tcp` or `tcp via proxy
    /// HOST:PORT`.
    pub carrier: String,
    pub identity: String,
    pub expires: Option<u64>,
    /// Watches `conn` while any clone of this lives.
    _watchdog: Arc<AbortOnDrop<()>>,
}

/// Sends one request on its own stream and reads the reply.
pub async fn call(
    conn: &Conn,
    request: &RelayRequest,
    limits: &TransportLimits,
) -> Result<RelayReply, CloudError> {
    let (mut send, mut recv) = open(conn, request, limits).await?;
    let _ = send.finish();
    reply(&mut recv, limits).await
}

async fn open(
    conn: &Conn,
    request: &RelayRequest,
    limits: &TransportLimits,
) -> Result<(SendHalf, RecvHalf), CloudError> {
    let lost = |e: &dyn std::fmt::Display| CloudError::Unreachable {
        relay: "relay".into(),
        reason: e.to_string(),
    };
    let (mut send, recv) = conn.open_bi().await.map_err(|e| lost(&e))?;
    write_frame(&mut send, request, limits.max_frame)
        .await
        .map_err(|e| lost(&e))?;
    Ok((send, recv))
}

async fn reply(recv: &mut RecvHalf, limits: &TransportLimits) -> Result<RelayReply, CloudError> {
    match read_frame::<RelayReply>(recv, limits.max_frame).await {
        Ok(Some(RelayReply::Error(e))) => Err(CloudError::Refused(e)),
        Ok(Some(reply)) => Ok(reply),
        Ok(None) => Err(CloudError::Protocol("no reply".into())),
        Err(e) => Err(CloudError::Unreachable {
            relay: "relay".into(),
            reason: e.to_string(),
        }),
    }
}

/// An open tunnel: its control stream, how its packets travel, and what
/// the relay knows of the service.
pub struct OpenTunnel {
    pub send: SendHalf,
    pub recv: RecvHalf,
    pub carrier: Carrier,
    pub facts: ServiceFacts,
}

/// Opens a tunnel to `serial`.
pub async fn open_tunnel(
    conn: &Conn,
    serial: &str,
    limits: &TransportLimits,
) -> Result<OpenTunnel, CloudError> {
    let request = RelayRequest::OpenTunnel {
        serial: serial.to_string(),
    };
    let (send, mut recv) = open(conn, &request, limits).await?;
    match reply(&mut recv, limits).await? {
        RelayReply::TunnelOpen { facts, packet } => Ok(OpenTunnel {
            send,
            recv,
            carrier: Carrier::through(conn, packet),
            facts,
        }),
        other => Err(CloudError::Protocol(format!(
            "expected a tunnel, got {other:?}"
        ))),
    }
}

/// A relay-signed assertion of who we are, for service `serial`.
pub async fn assertion(
    conn: &Conn,
    serial: &str,
    limits: &TransportLimits,
) -> Result<(Secret, ServiceFacts), CloudError> {
    let request = RelayRequest::Assert {
        serial: serial.to_string(),
    };
    match call(conn, &request, limits).await? {
        RelayReply::Assertion { token, facts } => Ok((Secret::new(token), facts)),
        other => Err(CloudError::Protocol(format!(
            "expected an assertion, got {other:?}"
        ))),
    }
}
