//! The relay's HTTPS listener (axum over hyper over tokio-rustls):
//!
//! | route | what |
//! |---|---|
//! | `GET /.well-known/switchyard-relay` | issuer name and QUIC address |
//! | `POST /oauth/device_authorization` | RFC 8628 §3.1: start a device grant |
//! | `POST /oauth/token` | RFC 8628 §3.4 device-code grant; RFC 6749 §6 refresh |
//! | `GET /device`, `POST /device` | the approval page a person signs in on |
//! | `POST /v1/enroll/service` | a service redeems a one-time password |
//!
//! The approval form needs the person's password on every decision and
//! keeps no session, so there is no cookie for a cross-site request to
//! ride on. Its sign-ins are limited per address and per user
//! (`limits::SignInLimiter`).
//!
//! Bounds ([`HttpLimits`]): connections at once and per address, the
//! handshake and headers in `header_timeout`, a whole request in
//! `request_timeout`, bodies under `max_body`, every field of an
//! unauthenticated request under a small cap (`400` naming the field),
//! device-login starts per address, and open grants in total
//! (`DeviceFlowConfig::max_pending`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Extension, Form, Json, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;
use tracing::{debug, info, warn};

use super::device_flow::{
    GrantKey, GrantRecord, GrantWrite, NewGrant, PollError, StartError, device_code_hash,
    new_grant, unix_now_ms,
};
use super::limits::{Limited, address_key};
use super::state::RelayKeys;
use super::store::GrantStart;
use super::store::{EnrollRequest, StoreError};
use super::{AuthError, RelayCore, RelayError};
use crate::secret::Secret;
use crate::wire::pin::Fingerprint;
use crate::wire::relay::{
    EnrollServiceRequest, EnrollServiceResponse, ErrorBody, WellKnown, secret_field,
};

pub const DEVICE_GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:device_code";

pub(super) fn tls_config(state: &RelayKeys) -> Result<Arc<rustls::ServerConfig>, RelayError> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(state.server_key.to_vec()));
    let mut tls = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(state.server_cert_der.clone())],
            key,
        )
        .map_err(|e| RelayError::Tls(e.to_string()))?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(tls))
}

/// Bounds on the HTTPS listener, which faces the internet: clients that
/// connect and then say nothing, send slowly, come too many at once from
/// one address, or start device logins in bulk cannot pile up.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Connections served at once; more are closed as they arrive.
    pub max_connections: usize,
    /// Connections served at once from one address (an IPv6 /64 counts
    /// as one); more from it are closed as they arrive.
    pub max_connections_per_address: usize,
    /// Time a client has for its TLS handshake, and then for each
    /// request's headers (also between requests on a kept-alive
    /// connection); past it the connection is closed.
    pub header_timeout: Duration,
    /// Time a whole request may take once its headers are in, body
    /// included; past it the client gets `408` and the connection closes.
    pub request_timeout: Duration,
    /// Largest request body accepted (`413` beyond it).
    pub max_body: usize,
    /// Device logins one address may start at once; it earns one more
    /// every `60 s / grant_starts_per_minute` (`429` when out).
    pub grant_starts_per_minute: u32,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_connections_per_address: 32,
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(15),
            max_body: 16 * 1024,
            grant_starts_per_minute: 10,
        }
    }
}

/// The client's address, as each request's extension.
#[derive(Debug, Clone, Copy)]
struct ClientAddr(IpAddr);

/// Connections open per address (keys from `limits::address_key`).
type PerAddress = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// A connection counted against its address until dropped.
struct AddressSlot {
    table: PerAddress,
    key: IpAddr,
}

impl AddressSlot {
    fn take(table: &PerAddress, addr: IpAddr, max: usize) -> Option<Self> {
        let key = address_key(addr);
        let mut open = table.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(key).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(Self {
            table: table.clone(),
            key,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

pub(super) async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    core: Arc<RelayCore>,
    cancel: CancellationToken,
) {
    let limits = core.config.http_limits.clone();
    let acceptor = TlsAcceptor::from(tls);
    let app = router(core);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let per_address: PerAddress = Default::default();
    let mut http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let http = Arc::new(http.http1_only());
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => {
                let Ok((tcp, peer)) = accepted else { continue };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    metrics::counter!("switchyard_relay_http_refused_total", "reason" => "connections").increment(1);
                    debug!(%peer, "HTTPS connection refused: at the connection limit");
                    continue;
                };
                let Some(address_slot) = AddressSlot::take(&per_address, peer.ip(), limits.max_connections_per_address) else {
                    metrics::counter!("switchyard_relay_http_refused_total", "reason" => "per_address").increment(1);
                    debug!(%peer, "HTTPS connection refused: at the per-address connection limit");
                    continue;
                };
                let acceptor = acceptor.clone();
                let client = ClientAddr(peer.ip());
                let service = TowerToHyperService::new(app.clone().map_request(
                    move |mut request: axum::http::Request<hyper::body::Incoming>| {
                        request.extensions_mut().insert(client);
                        request
                    },
                ));
                let http = http.clone();
                let header_timeout = limits.header_timeout;
                connections.spawn(async move {
                    let _slots = (slot, address_slot);
                    let tls = match tokio::time::timeout(header_timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => return debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => return debug!(%peer, "TLS handshake timed out"),
                    };
                    let served = http.serve_connection(TokioIo::new(tls), service).await;
                    if let Err(e) = served {
                        debug!(%peer, error = %e, "HTTP connection ended with an error");
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
}

/// Ends a request that is not done within `request_timeout` after its
/// headers (a body sent a byte at a time included) with `408` and closes
/// its connection.
async fn request_deadline(
    State(deadline): State<Duration>,
    request: axum::extract::Request,
    next: Next,
) -> Response {
    match tokio::time::timeout(deadline, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            metrics::counter!("switchyard_relay_http_request_timeouts_total").increment(1);
            debug!("HTTPS request not complete in time");
            (
                StatusCode::REQUEST_TIMEOUT,
                [(header::CONNECTION, "close")],
                "request not complete in time\n",
            )
                .into_response()
        }
    }
}

fn router(core: Arc<RelayCore>) -> Router {
    let limits = &core.config.http_limits;
    let deadline = limits.request_timeout;
    let max_body = limits.max_body;
    Router::new()
        .route("/.well-known/switchyard-relay", get(well_known))
        .route("/oauth/device_authorization", post(device_authorization))
        .route("/oauth/token", post(token))
        .route("/device", get(device_page).post(device_decide))
        .route("/v1/enroll/service", post(enroll_service))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(
            deadline,
            request_deadline,
        ))
        .with_state(core)
}

/// Caps on the fields of unauthenticated requests, in bytes.
mod caps {
    /// `client_id`, `grant_type`, `decision`.
    pub const NAME: usize = 128;
    /// Device and user codes.
    pub const CODE: usize = 128;
    /// An email (`login_hint`, the approval form's email), RFC 5321's path
    /// limit.
    pub const EMAIL: usize = 254;
    pub const PASSWORD: usize = 1024;
    /// A refresh token (a JWT the relay signed is far shorter).
    pub const TOKEN: usize = 4096;
    /// An enrollment's one-time password and fingerprint.
    pub const OTP: usize = 128;
    pub const FINGERPRINT: usize = 128;
    /// An advertised `host:port`.
    pub const ADVERTISE: usize = 256;
    /// A base64 PKCS#10 request.
    pub const CSR: usize = 8192;
}

/// The first field longer than its cap, as a message naming it.
fn oversize(fields: &[(&str, Option<&str>, usize)]) -> Option<String> {
    let (name, _, max) = fields
        .iter()
        .find(|(_, value, max)| value.is_some_and(|v| v.len() > *max))?;
    metrics::counter!("switchyard_relay_http_oversize_total").increment(1);
    Some(format!("{name} is longer than {max} bytes"))
}

async fn well_known(State(core): State<Arc<RelayCore>>) -> Json<WellKnown> {
    Json(WellKnown {
        issuer: core.state.signer.issuer().to_string(),
        quic: core.quic_addr.to_string(),
        tcp: core.tcp_addr.map(|a| a.to_string()),
    })
}

/// An OAuth error response (RFC 6749 §5.2).
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let body = serde_json::json!({ "error": error, "error_description": description });
    (status, [(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    format!("https://{host}")
}

#[derive(Deserialize)]
struct DeviceAuthorizationForm {
    client_id: String,
    #[serde(default)]
    login_hint: Option<String>,
}

async fn device_authorization(
    State(core): State<Arc<RelayCore>>,
    Extension(ClientAddr(client)): Extension<ClientAddr>,
    headers: HeaderMap,
    Form(form): Form<DeviceAuthorizationForm>,
) -> Response {
    if let Some(why) = oversize(&[
        ("client_id", Some(&form.client_id), caps::NAME),
        ("login_hint", form.login_hint.as_deref(), caps::EMAIL),
    ]) {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &why);
    }
    if form.client_id.is_empty() {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client_id is required",
        );
    }
    let now = Instant::now();
    let allowed = core
        .grant_starts
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .try_take(&address_key(client), now);
    if !allowed {
        metrics::counter!("switchyard_relay_device_grants_refused_total", "reason" => "per_address")
            .increment(1);
        return oauth_error(
            StatusCode::TOO_MANY_REQUESTS,
            "slow_down",
            "too many device logins started from this address; wait a minute",
        );
    }
    let hint = form.login_hint.filter(|h| !h.is_empty());
    let grant = match start_grant(&core, hint.clone()).await {
        Ok(Ok(grant)) => grant,
        Ok(Err(e)) => {
            metrics::counter!("switchyard_relay_device_grants_refused_total", "reason" => "pending")
                .increment(1);
            return oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                &e.to_string(),
            );
        }
        Err(e) => {
            return oauth_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                &e.to_string(),
            );
        }
    };
    info!(login_hint = ?hint, "device grant started");
    metrics::counter!("switchyard_relay_device_grants_total").increment(1);
    let base = base_url(&headers);
    let body = serde_json::json!({
        "device_code": grant.device_code,
        "user_code": grant.user_code,
        "verification_uri": format!("{base}/device"),
        "verification_uri_complete": format!("{base}/device?user_code={}", grant.user_code),
        "expires_in": grant.expires_in.as_secs(),
        "interval": grant.interval.as_secs(),
    });
    ([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

#[derive(Deserialize)]
struct TokenForm {
    grant_type: String,
    #[serde(default)]
    device_code: Option<String>,
    #[serde(default)]
    refresh_token: Option<String>,
}

async fn token(State(core): State<Arc<RelayCore>>, Form(form): Form<TokenForm>) -> Response {
    if let Some(why) = oversize(&[
        ("grant_type", Some(&form.grant_type), caps::NAME),
        ("device_code", form.device_code.as_deref(), caps::CODE),
        ("refresh_token", form.refresh_token.as_deref(), caps::TOKEN),
    ]) {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &why);
    }
    let email = match form.grant_type.as_str() {
        DEVICE_GRANT_TYPE => {
            let Some(device_code) = form.device_code else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "device_code is required",
                );
            };
            let hash = device_code_hash(&device_code);
            let now = unix_now_ms();
            let polled = core
                .db
                .update_grant(GrantKey::Device(&hash), |g| GrantRecord::poll(g, now))
                .await;
            match polled {
                Ok(Ok(email)) => email,
                Err(e) => {
                    return oauth_error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "server_error",
                        &e.to_string(),
                    );
                }
                Ok(Err(e)) => {
                    let description = match e {
                        PollError::AuthorizationPending => "waiting for approval",
                        PollError::SlowDown => "polling too fast",
                        PollError::AccessDenied => "the login was denied",
                        PollError::ExpiredToken => "the code expired before it was approved",
                        PollError::InvalidGrant => "unknown or already used device code",
                    };
                    return oauth_error(StatusCode::BAD_REQUEST, e.code(), description);
                }
            }
        }
        "refresh_token" => {
            let Some(refresh) = form.refresh_token else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "refresh_token is required",
                );
            };
            match core.check_token(&refresh, &["refresh"]).await {
                Ok(claims) => {
                    // One refresh token per login; the new access token
                    // replaces the old.
                    return match core
                        .issue_token(&claims.sub, "access", core.config.access_ttl)
                        .await
                    {
                        Ok((claims, access)) => token_response(&access, &refresh, claims.exp),
                        Err(e) => oauth_error(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "server_error",
                            &e.message,
                        ),
                    };
                }
                Err(e) => {
                    return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", &e.to_string());
                }
            }
        }
        other => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                &format!("grant type {other} is not supported"),
            );
        }
    };
    let issued = match core
        .issue_token(&email, "access", core.config.access_ttl)
        .await
    {
        Ok((claims, access)) => core
            .issue_token(&email, "refresh", core.config.refresh_ttl)
            .await
            .map(|(_, refresh)| (claims, access, refresh)),
        Err(e) => Err(e),
    };
    match issued {
        Ok((claims, access, refresh)) => {
            info!(%email, "device grant redeemed");
            token_response(&access, &refresh, claims.exp)
        }
        Err(e) => oauth_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            &e.message,
        ),
    }
}

/// Stores a new grant in the relay's database (a fresh user code if one
/// is taken; at most a few tries) and counts it.
async fn start_grant(
    core: &RelayCore,
    hint: Option<String>,
) -> Result<Result<NewGrant, StartError>, StoreError> {
    let config = &core.config.device_flow;
    for _ in 0..8 {
        let now = unix_now_ms();
        let (grant, record) = new_grant(config, hint.clone(), now);
        match core
            .db
            .start_grant(&record, config.max_pending, now)
            .await?
        {
            GrantStart::Started => {
                core.grants_started
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let Ok(pending) = core.db.pending_grants(now).await {
                    metrics::gauge!("switchyard_relay_device_grants_pending").set(pending as f64);
                }
                return Ok(Ok(grant));
            }
            GrantStart::TooManyPending => return Ok(Err(StartError::TooManyPending)),
            GrantStart::CodeTaken => continue,
        }
    }
    // 20^8 codes: eight collisions in a row mean the table is full.
    Ok(Err(StartError::TooManyPending))
}

fn token_response(access: &str, refresh: &str, expires_at: u64) -> Response {
    let body = serde_json::json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": expires_at.saturating_sub(super::unix_now()),
        "refresh_token": refresh,
    });
    ([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

/// Escapes text for HTML element content and attribute values.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body><h1>{title}</h1>{body}</body></html>",
        title = escape(title)
    ))
}

#[derive(Deserialize)]
struct DevicePageQuery {
    #[serde(default)]
    user_code: Option<String>,
}

async fn device_page(
    State(core): State<Arc<RelayCore>>,
    Query(query): Query<DevicePageQuery>,
) -> Html<String> {
    let mut code = query.user_code.unwrap_or_default();
    if code.len() > caps::CODE {
        code.clear();
    }
    let now = unix_now_ms();
    let hint = core
        .db
        .update_grant(GrantKey::UserCode(&code), |g| {
            let hint = GrantRecord::open(g.as_deref(), now).map(|g| g.login_hint.clone());
            (hint, GrantWrite::Keep)
        })
        .await
        .ok()
        .and_then(|hint| hint.ok())
        .flatten()
        .unwrap_or_default();
    page(
        "Switchyard sign-in",
        &format!(
            "<p>Check that the code matches the one your terminal shows, sign in, and approve.</p>\
             <form method=\"post\" action=\"/device\">\
             <label>Code <input id=\"user_code\" name=\"user_code\" value=\"{code}\"></label><br>\
             <label>Email <input id=\"email\" name=\"email\" value=\"{hint}\"></label><br>\
             <label>Password <input id=\"password\" name=\"password\" type=\"password\"></label><br>\
             <button id=\"approve\" name=\"decision\" value=\"approve\" type=\"submit\">Approve</button>\
             <button id=\"deny\" name=\"decision\" value=\"deny\" type=\"submit\">Deny</button>\
             </form>",
            code = escape(&code),
            hint = escape(&hint),
        ),
    )
}

/// The approval form. The password is moved into a [`Secret`] as it is
/// read (zeroized on drop, redacted in `Debug`).
#[derive(Debug, Deserialize)]
struct DecideForm {
    user_code: String,
    email: String,
    #[serde(with = "secret_field")]
    password: Secret,
    decision: String,
}

/// Logs and counts a failed sign-in. The email is the stranger's: it is
/// Debug-quoted (control characters escaped, so it cannot forge log
/// lines), capped by the form's field caps, and logged at info, since
/// anyone can cause it.
fn log_failed_sign_in(client: IpAddr, email: &str) {
    metrics::counter!("switchyard_relay_sso_sign_in_failures_total").increment(1);
    info!(%client, email = ?email, "approval page: sign-in failed");
}

fn sign_in_failed(status: StatusCode, text: &str) -> Response {
    (
        status,
        page(
            "Sign-in failed",
            &format!("<p id=\"result\">{}</p>", escape(text)),
        ),
    )
        .into_response()
}

async fn device_decide(
    State(core): State<Arc<RelayCore>>,
    Extension(ClientAddr(client)): Extension<ClientAddr>,
    Form(form): Form<DecideForm>,
) -> Response {
    if let Some(why) = oversize(&[
        ("user_code", Some(&form.user_code), caps::CODE),
        ("email", Some(&form.email), caps::EMAIL),
        ("password", Some(form.password.expose()), caps::PASSWORD),
        ("decision", Some(&form.decision), caps::NAME),
    ]) {
        return (StatusCode::BAD_REQUEST, page("Bad request", &escape(&why))).into_response();
    }
    let email = form.email.trim().to_string();
    let admitted = core
        .sign_ins
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .begin(client, &email, Instant::now());
    if let Err(limited) = admitted {
        let by = match limited {
            Limited::Address => "address",
            Limited::User => "user",
        };
        metrics::counter!("switchyard_relay_sso_sign_ins_limited_total", "by" => by).increment(1);
        debug!(%client, email = ?email, by, "approval page: sign-in attempt limited");
        return sign_in_failed(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many sign-in attempts; wait a minute and try again.",
        );
    }
    let verified = core.db.verify_user(&email, form.password).await;
    match verified {
        Ok(true) => core
            .sign_ins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .succeeded(client, &email),
        Ok(false) => {
            log_failed_sign_in(client, &email);
            return sign_in_failed(StatusCode::UNAUTHORIZED, "Wrong email or password.");
        }
        Err(e) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                page("Error", &escape(&e.to_string())),
            )
                .into_response();
        }
    }
    let approve = form.decision == "approve";
    let now = unix_now_ms();
    let decided = core
        .db
        .update_grant(GrantKey::UserCode(&form.user_code), |g| {
            GrantRecord::decide(g, &email, approve, now)
        })
        .await;
    let decided = match decided {
        Ok(decided) => decided,
        Err(e) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                page("Error", &escape(&e.to_string())),
            )
                .into_response();
        }
    };
    match decided {
        Ok(()) => {
            info!(%email, approve, "device grant decided");
            let text = if approve {
                "Approved. You can close this window and return to your terminal."
            } else {
                "Denied. The login will not go ahead."
            };
            page("Done", &format!("<p id=\"result\">{text}</p>")).into_response()
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            page(
                "Not approved",
                &format!("<p id=\"result\">{}</p>", escape(&e.to_string())),
            ),
        )
            .into_response(),
    }
}

fn api_error(status: StatusCode, error: &str, message: String) -> Response {
    (
        status,
        Json(ErrorBody {
            error: error.into(),
            message,
        }),
    )
        .into_response()
}

async fn enroll_service(
    State(core): State<Arc<RelayCore>>,
    Json(request): Json<EnrollServiceRequest>,
) -> Response {
    if let Some(why) = oversize(&[
        ("otp", Some(request.otp.expose()), caps::OTP),
        ("csr", Some(&request.csr), caps::CSR),
        ("fingerprint", Some(&request.fingerprint), caps::FINGERPRINT),
        ("advertise", request.advertise.as_deref(), caps::ADVERTISE),
    ]) {
        return api_error(StatusCode::BAD_REQUEST, "invalid_request", why);
    }
    let Some(fingerprint) = Fingerprint::parse(&request.fingerprint) else {
        return api_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "fingerprint is not a SHA-256 fingerprint".into(),
        );
    };
    let Ok(csr) = B64.decode(&request.csr) else {
        return api_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "csr is not base64".into(),
        );
    };
    let otp = request.otp;
    let enroll = EnrollRequest {
        fingerprint: fingerprint.0,
        advertise: request.advertise,
    };
    let ca = &core.state.ca;
    let enrolled = core
        .db
        .enroll_with_otp(&otp, &enroll, |serial| {
            ca.issue_service(&csr, serial).map_err(|e| e.to_string())
        })
        .await;
    let enrolled = match enrolled {
        Ok(enrolled) => enrolled,
        Err(e @ (StoreError::OtpUnknown | StoreError::OtpUsed | StoreError::OtpExpired)) => {
            warn!(reason = %e, "service enrollment refused");
            return api_error(StatusCode::UNAUTHORIZED, "invalid_otp", e.to_string());
        }
        Err(e @ (StoreError::SerialOwned { .. } | StoreError::SerialUnowned { .. })) => {
            warn!(reason = %e, "service enrollment refused: the serial belongs to another user");
            return api_error(StatusCode::FORBIDDEN, "serial_owned", e.to_string());
        }
        Err(e @ StoreError::Issue(_)) => {
            return api_error(StatusCode::BAD_REQUEST, "invalid_request", e.to_string());
        }
        Err(e) => {
            return api_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                e.to_string(),
            );
        }
    };
    let (serial, cert) = (enrolled.serial, enrolled.cert_der);
    // A tier's other live nodes, for the service to fall back to.
    let nodes = match core.db.nodes().await {
        Ok(nodes) => nodes
            .into_iter()
            .filter(|n| n.alive && n.id != core.node_id)
            .map(|n| n.quic)
            .collect(),
        Err(e) => {
            warn!(error = %e, "cannot list the tier's nodes for an enrollment");
            Vec::new()
        }
    };
    info!(
        %serial,
        %fingerprint,
        owner = %enrolled.owner,
        action = enrolled.action,
        "service enrolled (audit)"
    );
    Json(EnrollServiceResponse {
        serial,
        cert: B64.encode(&cert),
        ca: B64.encode(core.state.ca.cert_der()),
        assertion_key: B64.encode(&core.state.signing_public),
        issuer: core.state.signer.issuer().to_string(),
        quic: core.quic_addr.to_string(),
        nodes,
    })
    .into_response()
}

impl From<AuthError> for Response {
    fn from(e: AuthError) -> Self {
        api_error(StatusCode::UNAUTHORIZED, "unauthenticated", e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_approval_form_never_shows_its_password() {
        let form: DecideForm = serde_json::from_value(serde_json::json!({
            "user_code": "BCDF-GHJK",
            "email": "a@x",
            "password": "hunter2-plaintext",
            "decision": "approve",
        }))
        .unwrap();
        assert_eq!(form.password.expose(), "hunter2-plaintext");
        let debug = format!("{form:?}");
        assert!(!debug.contains("hunter2-plaintext"), "{debug}");
        assert!(debug.contains("BCDF-GHJK"), "{debug}");
    }

    /// A `MakeWriter` into a shared buffer.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_strangers_email_is_logged_escaped_at_info() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::TRACE)
            .finish();
        let forged = "x@y\n2026-01-01T00:00:00Z  INFO device grant decided email=admin\u{1b}[2J";
        tracing::subscriber::with_default(subscriber, || {
            log_failed_sign_in("192.0.2.7".parse().unwrap(), forged);
        });
        let out = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(!out.contains('\u{1b}'), "{out:?}");
        assert!(out.contains(r"x@y\n2026"), "{out}");
        assert!(out.contains(" INFO "), "{out}");
    }

    #[test]
    fn the_first_oversize_field_is_named() {
        let long = "x".repeat(300);
        assert_eq!(oversize(&[("a", Some("ok"), 10), ("b", None, 1)]), None);
        assert_eq!(
            oversize(&[
                ("a", Some("ok"), 10),
                ("login_hint", Some(&long), caps::EMAIL)
            ])
            .as_deref(),
            Some("login_hint is longer than 254 bytes")
        );
    }
}
