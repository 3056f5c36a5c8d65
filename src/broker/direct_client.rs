//! Connecting and logging in to a service's RPC socket (no actor state:
//! the `DirectLink` actor and the benchmarks both use it).

use std::net::SocketAddr;
use std::sync::Arc;

use quinn::Endpoint;

use super::link::LinkError;
use crate::secret::Secret;
use crate::wire::conn::{self, TransportLimits, read_frame, write_frame};
use crate::wire::messages::{AuthRequest, AuthResponse, Credentials};
use crate::wire::pin::{Fingerprint, PinnedServerVerifier};

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
}

/// A logged-in connection.
pub struct DirectConnection {
    pub conn: quinn::Connection,
    pub fingerprint: Fingerprint,
    pub service_name: String,
    /// What must live as long as the connection (a relayed tunnel).
    pub guard: Option<Box<dyn std::any::Any + Send>>,
}

/// The name we ask for in TLS; the certificate is checked by fingerprint.
const SERVER_NAME: &str = "switchyard-service";

/// Connects, verifies the certificate and logs in with a password.
pub async fn connect(
    endpoint: &Endpoint,
    target: &DirectTarget,
    limits: &TransportLimits,
) -> Result<DirectConnection, LinkError> {
    let credentials = Credentials::Password {
        username: target.username.clone(),
        password: target.password.expose().to_string(),
    };
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
    let label = label.to_string();
    let unreachable = |reason: String| LinkError::Unreachable {
        target: label.clone(),
        reason,
    };
    let verifier = PinnedServerVerifier::new(fingerprint);
    let config = conn::client_config_with(Arc::clone(&verifier), transport)
        .map_err(|e| unreachable(e.to_string()))?;
    let connecting = endpoint
        .connect_with(config, addr, SERVER_NAME)
        .map_err(|e| unreachable(e.to_string()))?;
    // A reconnect abandons a handshake nobody answers (see
    // `TransportLimits::handshake_silence`); dropping it ends the attempt.
    let outcome = match limits.handshake_silence {
        Some(silence) => match tokio::time::timeout(silence, connecting).await {
            Ok(outcome) => outcome,
            Err(_) => return Err(unreachable(format!("no answer within {silence:?}"))),
        },
        None => connecting.await,
    };
    let conn = match outcome {
        Ok(conn) => conn,
        Err(e) => {
            return Err(match (fingerprint, verifier.seen()) {
                (Some(expected), Some(presented)) if expected != presented => {
                    LinkError::FingerprintMismatch {
                        target: label,
                        expected: expected.to_string(),
                        presented: presented.to_string(),
                    }
                }
                _ => unreachable(e.to_string()),
            });
        }
    };
    let fingerprint = verifier
        .seen()
        .ok_or_else(|| unreachable("no certificate was presented".into()))?;
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
            conn.close(0u32.into(), b"login refused");
            Err(LinkError::Rejected {
                target: label,
                error,
            })
        }
        Ok(None) => Err(lost(&"the service closed the login stream")),
        Err(e) => Err(lost(&e)),
    }
}
