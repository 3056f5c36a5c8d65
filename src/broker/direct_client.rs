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
}

/// The name we ask for in TLS; the certificate is checked by fingerprint.
const SERVER_NAME: &str = "switchyard-service";

/// Connects, verifies the certificate and logs in.
pub async fn connect(
    endpoint: &Endpoint,
    target: &DirectTarget,
    limits: &TransportLimits,
) -> Result<DirectConnection, LinkError> {
    let label = target.label.clone();
    let unreachable = |reason: String| LinkError::Unreachable {
        target: label.clone(),
        reason,
    };
    let verifier = PinnedServerVerifier::new(target.fingerprint);
    let config = conn::client_config(Arc::clone(&verifier), limits)
        .map_err(|e| unreachable(e.to_string()))?;
    let connecting = endpoint
        .connect_with(config, target.addr, SERVER_NAME)
        .map_err(|e| unreachable(e.to_string()))?;
    let conn = match connecting.await {
        Ok(conn) => conn,
        Err(e) => {
            return Err(match (target.fingerprint, verifier.seen()) {
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
    let lost = |e: &dyn std::fmt::Display| LinkError::Lost {
        target: label.clone(),
        reason: e.to_string(),
    };
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| lost(&e))?;
    let request = AuthRequest {
        credentials: Credentials::Password {
            username: target.username.clone(),
            password: target.password.expose().to_string(),
        },
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
            service_name: service,
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
