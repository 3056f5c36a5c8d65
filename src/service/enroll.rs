//! `service enroll`: redeem a one-time password at the relay for a
//! certificate bound to this service's serial, and store the enrollment
//! in the inventory. The private key is made here and never sent.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use super::identity;
use super::inventory::{Inventory, InventoryError, RelayEnrollment};
use crate::secret::Secret;
use crate::wire::relay::{EnrollServiceRequest, EnrollServiceResponse, ErrorBody};

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("cannot make a key: {0}")]
    Key(String),
    #[error("cannot reach the relay at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the relay refused the enrollment: {0}")]
    Refused(String),
    #[error("the relay's answer is malformed: {0}")]
    Malformed(String),
    #[error(transparent)]
    Url(#[from] crate::relay_url::RelayUrlError),
}

/// What `service enroll` needs.
pub struct EnrollOptions {
    /// The relay's HTTPS base URL.
    pub relay_url: String,
    pub otp: Secret,
    pub roots: rustls::RootCertStore,
    /// Direct RPC address to advertise to callers (`service_direct_with_sso`).
    pub advertise: Option<String>,
}

/// Enrolls and stores the result; returns the serial.
pub async fn enroll(
    inventory: &mut Inventory,
    options: EnrollOptions,
) -> Result<String, EnrollError> {
    // Checked first: the URL is stored and logged, so it carries no secret.
    let relay_url = crate::relay_url::check(&options.relay_url)?;
    let fingerprint = identity::fingerprint(&inventory.tls_identity()?.cert_der);
    let (csr, key_der) = crate::tls::new_certificate_request("switchyard service")
        .map_err(|e| EnrollError::Key(e.to_string()))?;
    let client = crate::tls::http_client(options.roots)?;
    let url = format!("{relay_url}/v1/enroll/service");
    let body = EnrollServiceRequest {
        otp: options.otp.clone(),
        csr: B64.encode(&csr),
        fingerprint,
        advertise: options.advertise.clone(),
    };
    let unreachable = |e: reqwest::Error| EnrollError::Unreachable {
        url: relay_url.clone(),
        reason: crate::error_chain::describe(&e),
    };
    let response = client
        .post(&url)
        .json(&body)
        .send()
        .await
        .map_err(unreachable)?;
    if !response.status().is_success() {
        let status = response.status();
        let message = match response.json::<ErrorBody>().await {
            Ok(body) => body.message,
            Err(_) => status.to_string(),
        };
        return Err(EnrollError::Refused(message));
    }
    let answer: EnrollServiceResponse = response.json().await.map_err(unreachable)?;
    let decode = |what: &str, text: &str| {
        B64.decode(text)
            .map_err(|_| EnrollError::Malformed(format!("{what} is not base64")))
    };
    let enrollment = RelayEnrollment {
        url: relay_url,
        // The node enrolled through first, then the tier's others.
        quic: std::iter::once(answer.quic)
            .chain(answer.nodes)
            .collect::<Vec<_>>()
            .join(","),
        serial: answer.serial.clone(),
        cert_der: decode("cert", &answer.cert)?,
        key_der,
        ca_der: decode("ca", &answer.ca)?,
        assertion_key: decode("assertion_key", &answer.assertion_key)?,
        issuer: answer.issuer,
        advertise: options.advertise,
    };
    inventory.set_relay_enrollment(&enrollment)?;
    Ok(answer.serial)
}
