//! Signed tokens (JWT, EdDSA with the relay's Ed25519 key): access and
//! refresh tokens for clients, and assertions that tell a service who a
//! caller is.
//!
//! The verifying half ([`AssertionVerifier`]) needs only the public key, so
//! an enrolled service can check assertions without talking to the relay.

use jsonwebtoken::{Algorithm, EncodingKey, Header, Validation};
use zeroize::Zeroizing;

pub use crate::wire::assertion::{AssertionVerifier, TokenError};
use crate::wire::relay::{AssertionClaims, TokenClaims};

/// Signs and verifies with the relay's key pair.
pub struct TokenSigner {
    issuer: String,
    encoding: EncodingKey,
    verifier: AssertionVerifier,
}

impl TokenSigner {
    /// `key_pkcs8` is the Ed25519 private key; `public_raw` its 32-byte
    /// public key.
    pub fn new(issuer: String, key_pkcs8: &Zeroizing<Vec<u8>>, public_raw: &[u8]) -> Self {
        Self {
            encoding: EncodingKey::from_ed_der(key_pkcs8),
            verifier: AssertionVerifier::new(issuer.clone(), public_raw),
            issuer,
        }
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    fn sign<T: serde::Serialize>(&self, claims: &T) -> Result<String, TokenError> {
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), claims, &self.encoding)
            .map_err(|e| TokenError::Sign(e.to_string()))
    }

    /// A token of `kind` for `sub`, good for `lifetime_secs`.
    pub fn issue_token(
        &self,
        sub: &str,
        kind: &str,
        lifetime_secs: u64,
    ) -> Result<(TokenClaims, String), TokenError> {
        self.issue_token_until(sub, kind, super::unix_now() + lifetime_secs)
    }

    /// A token of `kind` for `sub` that expires at unix time `exp`.
    pub fn issue_token_until(
        &self,
        sub: &str,
        kind: &str,
        exp: u64,
    ) -> Result<(TokenClaims, String), TokenError> {
        let iat = super::unix_now().min(exp);
        let claims = TokenClaims {
            iss: self.issuer.clone(),
            sub: sub.to_string(),
            jti: format!(
                "{}-{}",
                kind_prefix(kind),
                hex::encode(rand::random::<[u8; 8]>())
            ),
            kind: kind.to_string(),
            exp,
            iat,
        };
        let token = self.sign(&claims)?;
        Ok((claims, token))
    }

    /// Checks signature, issuer and expiry (revocation is the store's job).
    pub fn verify_token(&self, token: &str) -> Result<TokenClaims, TokenError> {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&self.issuer]);
        validation.validate_aud = false;
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        jsonwebtoken::decode::<TokenClaims>(token, self.verifier.decoding_key(), &validation)
            .map(|d| d.claims)
            .map_err(crate::wire::assertion::classify)
    }

    /// An assertion that `sub` is calling service `serial`.
    pub fn assert(
        &self,
        sub: &str,
        serial: &str,
        lifetime_secs: u64,
    ) -> Result<String, TokenError> {
        let iat = super::unix_now();
        self.sign(&AssertionClaims {
            iss: self.issuer.clone(),
            sub: sub.to_string(),
            aud: serial.to_string(),
            exp: iat + lifetime_secs,
            iat,
        })
    }
}

fn kind_prefix(kind: &str) -> &'static str {
    match kind {
        "api" => "tok",
        "refresh" => "ref",
        _ => "acc",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_signer() -> TokenSigner {
        crate::tls::install_crypto_provider();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        TokenSigner::new(
            "https://relay.test".into(),
            &Zeroizing::new(key.serialize_der()),
            key.public_key_raw(),
        )
    }

    #[test]
    fn tokens_round_trip_and_tampering_is_caught() {
        let signer = new_signer();
        let (claims, token) = signer.issue_token("a@x", "access", 60).unwrap();
        assert_eq!(signer.verify_token(&token).unwrap(), claims);
        let mut forged = token.clone();
        forged.pop();
        forged.push(if token.ends_with('A') { 'B' } else { 'A' });
        assert!(matches!(
            signer.verify_token(&forged),
            Err(TokenError::Invalid(_))
        ));
        // Another relay's key does not verify.
        assert!(new_signer().verify_token(&token).is_err());
    }

    #[test]
    fn expired_tokens_say_so() {
        let signer = new_signer();
        let mut claims = signer.issue_token("a@x", "access", 60).unwrap().0;
        claims.exp = super::super::unix_now() - 5;
        let token = signer.sign(&claims).unwrap();
        assert!(matches!(
            signer.verify_token(&token),
            Err(TokenError::Expired)
        ));
    }

    #[test]
    fn assertions_are_bound_to_one_serial_and_are_not_tokens() {
        let signer = new_signer();
        let assertion = signer.assert("a@x", "SN1", 60).unwrap();
        let claims = signer.verifier.verify(&assertion, "SN1").unwrap();
        assert_eq!(claims.sub, "a@x");
        assert!(signer.verifier.verify(&assertion, "SN2").is_err());
        assert!(signer.verify_token(&assertion).is_err());
        let (_, token) = signer.issue_token("a@x", "access", 60).unwrap();
        assert!(signer.verifier.verify(&token, "SN1").is_err());
    }
}
