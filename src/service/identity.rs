//! The service's TLS identity: a key pair and self-signed certificate made at
//! `init`. Callers pin the certificate by its SHA-256 fingerprint, so no CA
//! is involved for direct connections.

use zeroize::Zeroizing;

use crate::wire::pin::Fingerprint;

/// A freshly generated identity. The private key is sealed before storage.
pub struct GeneratedIdentity {
    pub cert_der: Vec<u8>,
    pub key_der: Zeroizing<Vec<u8>>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot generate TLS identity: {0}")]
pub struct IdentityError(String);

/// Generates an ECDSA P-256 key and a self-signed certificate naming the
/// service (`subject_alt_names`, e.g. its serial or host names).
pub fn generate(subject_alt_names: Vec<String>) -> Result<GeneratedIdentity, IdentityError> {
    let certified = rcgen::generate_simple_self_signed(subject_alt_names)
        .map_err(|e| IdentityError(e.to_string()))?;
    Ok(GeneratedIdentity {
        cert_der: certified.cert.der().to_vec(),
        key_der: Zeroizing::new(certified.signing_key.serialize_der()),
    })
}

/// The fingerprint callers pin: lowercase hex SHA-256 of the DER certificate,
/// bytes separated by colons (as `openssl x509 -fingerprint -sha256` shows it).
pub fn fingerprint(cert_der: &[u8]) -> String {
    Fingerprint::of(cert_der).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_distinct_identities_with_stable_fingerprints() {
        crate::tls::install_crypto_provider();
        let a = generate(vec!["svc".into()]).unwrap();
        let b = generate(vec!["svc".into()]).unwrap();
        assert_ne!(a.cert_der, b.cert_der);
        let fp = fingerprint(&a.cert_der);
        assert_eq!(fp, fingerprint(&a.cert_der));
        assert_eq!(fp.len(), 32 * 3 - 1);
    }
}
