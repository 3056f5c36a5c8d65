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
//! ride on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Form, Json, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
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
use tracing::{debug, info, warn};

use super::device_flow::PollError;
use super::state::RelayState;
use super::store::{ServiceRecord, StoreError};
use super::{AuthError, RelayCore, RelayError};
use crate::secret::Secret;
use crate::wire::pin::Fingerprint;
use crate::wire::relay::{EnrollServiceRequest, EnrollServiceResponse, ErrorBody, WellKnown};

pub const DEVICE_GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:device_code";

pub(super) fn tls_config(state: &RelayState) -> Result<Arc<rustls::ServerConfig>, RelayError> {
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
/// connect and then say nothing, or too many at once, cannot pile up.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Connections served at once; more are closed as they arrive.
    pub max_connections: usize,
    /// Time a client has for its TLS handshake, and then for each
    /// request's headers (also between requests on a kept-alive
    /// connection); past it the connection is closed.
    pub header_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
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
                    metrics::counter!("switchyard_relay_http_refused_total").increment(1);
                    debug!(%peer, "HTTPS connection refused: at the connection limit");
                    continue;
                };
                let acceptor = acceptor.clone();
                let service = TowerToHyperService::new(app.clone());
                let http = http.clone();
                let header_timeout = limits.header_timeout;
                connections.spawn(async move {
                    let _slot = slot;
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

fn router(core: Arc<RelayCore>) -> Router {
    Router::new()
        .route("/.well-known/switchyard-relay", get(well_known))
        .route("/oauth/device_authorization", post(device_authorization))
        .route("/oauth/token", post(token))
        .route("/device", get(device_page).post(device_decide))
        .route("/v1/enroll/service", post(enroll_service))
        .with_state(core)
}

async fn well_known(State(core): State<Arc<RelayCore>>) -> Json<WellKnown> {
    Json(WellKnown {
        issuer: core.state.signer.issuer().to_string(),
        quic: core.quic_addr.to_string(),
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
    headers: HeaderMap,
    Form(form): Form<DeviceAuthorizationForm>,
) -> Response {
    if form.client_id.is_empty() {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client_id is required",
        );
    }
    let hint = form.login_hint.filter(|h| !h.is_empty());
    let grant = core
        .grants
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .start(hint.clone(), Instant::now());
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
    let email = match form.grant_type.as_str() {
        DEVICE_GRANT_TYPE => {
            let Some(device_code) = form.device_code else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "device_code is required",
                );
            };
            let polled = core
                .grants
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .poll(&device_code, Instant::now());
            match polled {
                Ok(email) => email,
                Err(e) => {
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
            match core.check_token(&refresh, &["refresh"]) {
                Ok(claims) => {
                    // One refresh token per login; the new access token
                    // replaces the old.
                    return match core.issue_token(&claims.sub, "access", core.config.access_ttl) {
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
    let issued = core
        .issue_token(&email, "access", core.config.access_ttl)
        .and_then(|(claims, access)| {
            core.issue_token(&email, "refresh", core.config.refresh_ttl)
                .map(|(_, refresh)| (claims, access, refresh))
        });
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
    let code = query.user_code.unwrap_or_default();
    let hint = core
        .grants
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .login_hint(&code, Instant::now())
        .ok()
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

#[derive(Deserialize)]
struct DecideForm {
    user_code: String,
    email: String,
    password: String,
    decision: String,
}

async fn device_decide(
    State(core): State<Arc<RelayCore>>,
    Form(form): Form<DecideForm>,
) -> Response {
    let password = Secret::new(form.password.as_str());
    let email = form.email.trim().to_string();
    let verified = {
        let core = core.clone();
        let email = email.clone();
        crate::password::hashing(move || core.state.store.verify_user(&email, &password))
            .await
            .unwrap_or(Ok(false))
    };
    match verified {
        Ok(true) => {}
        Ok(false) => {
            warn!(%email, "approval page: sign-in failed");
            return (
                StatusCode::UNAUTHORIZED,
                page(
                    "Sign-in failed",
                    "<p id=\"result\">Wrong email or password.</p>",
                ),
            )
                .into_response();
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
    let decided = core
        .grants
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .decide(&form.user_code, &email, approve, Instant::now());
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
    let serial = match core
        .state
        .store
        .redeem_otp(&Secret::new(request.otp.as_str()))
    {
        Ok(serial) => serial,
        Err(e @ (StoreError::OtpUnknown | StoreError::OtpUsed | StoreError::OtpExpired)) => {
            warn!(reason = %e, "service enrollment refused");
            return api_error(StatusCode::UNAUTHORIZED, "invalid_otp", e.to_string());
        }
        Err(e) => {
            return api_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                e.to_string(),
            );
        }
    };
    let cert = match core.state.ca.issue_service(&csr, &serial) {
        Ok(cert) => cert,
        Err(e) => return api_error(StatusCode::BAD_REQUEST, "invalid_request", e.to_string()),
    };
    let recorded = core
        .state
        .store
        .record_cert(&Fingerprint::of(&cert).0, "service", &serial)
        .and_then(|()| {
            core.state.store.upsert_service(&ServiceRecord {
                serial: serial.clone(),
                fingerprint: fingerprint.0,
                advertise: request.advertise.clone(),
            })
        });
    if let Err(e) = recorded {
        return api_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            e.to_string(),
        );
    }
    info!(%serial, %fingerprint, "service enrolled");
    Json(EnrollServiceResponse {
        serial,
        cert: B64.encode(&cert),
        ca: B64.encode(core.state.ca.cert_der()),
        assertion_key: B64.encode(&core.state.signing_public),
        issuer: core.state.signer.issuer().to_string(),
        quic: core.quic_addr.to_string(),
    })
    .into_response()
}

impl From<AuthError> for Response {
    fn from(e: AuthError) -> Self {
        api_error(StatusCode::UNAUTHORIZED, "unauthenticated", e.to_string())
    }
}
