//! Relay-signed caller assertions (JWT, EdDSA), verifying half: an
//! enrolled service checks them with the relay's public key alone, without
//! talking to the relay. Pure (no I/O).

use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use super::relay::AssertionClaims;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the token expired")]
    Expired,
    #[error("the token is not valid: {0}")]
    Invalid(String),
    #[error("cannot sign a token: {0}")]
    Sign(String),
}

pub(crate) fn classify(e: jsonwebtoken::errors::Error) -> TokenError {
    match e.kind() {
        jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
        _ => TokenError::Invalid(e.to_string()),
    }
}

/// Verifies relay-signed assertions with the relay's public key.
#[derive(Clone)]
pub struct AssertionVerifier {
    issuer: String,
    decoding: DecodingKey,
}

impl AssertionVerifier {
    pub fn new(issuer: String, public_raw: &[u8]) -> Self {
        Self {
            issuer,
            decoding: DecodingKey::from_ed_der(public_raw),
        }
    }

    pub(crate) fn decoding_key(&self) -> &DecodingKey {
        &self.decoding
    }

    /// The caller's identity, if `assertion` is a valid, unexpired
    /// statement by this relay for service `serial`. Allows 30 s of clock
    /// skew between relay and service.
    pub fn verify(&self, assertion: &str, serial: &str) -> Result<AssertionClaims, TokenError> {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[serial]);
        validation.leeway = 30;
        validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
        jsonwebtoken::decode::<AssertionClaims>(assertion, &self.decoding, &validation)
            .map(|d| d.claims)
            .map_err(classify)
    }
}
