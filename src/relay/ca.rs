//! The relay's certificate authority (rcgen): made at `relay init`; signs
//! the relay's own TLS certificate, service certificates (bound to a
//! serial) and client certificates (bound to an identity).
//!
//! Certificates are issued for a public key the requester sent in a PKCS#10
//! request; the requester's private key never reaches the relay. The
//! subject in the request is ignored: the relay writes the subject it
//! authenticated.

use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::CertificateSigningRequestDer;
use time::{Duration, OffsetDateTime};

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("certificate authority: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("bad name {0:?}: {1}")]
    Name(String, String),
}

pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_der: Vec<u8>,
}

/// A freshly made key pair and certificate.
pub struct Issued {
    pub cert_der: Vec<u8>,
    pub key_pkcs8: zeroize::Zeroizing<Vec<u8>>,
}

impl CertificateAuthority {
    /// A new self-signed CA named `name`.
    pub fn generate(name: &str) -> Result<(Self, Issued), CaError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        params.distinguished_name = dn(name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = OffsetDateTime::now_utc() - Duration::hours(1);
        params.not_after = OffsetDateTime::now_utc() + Duration::days(3650);
        let cert = params.self_signed(&key)?;
        let issued = Issued {
            cert_der: cert.der().to_vec(),
            key_pkcs8: zeroize::Zeroizing::new(key.serialize_der()),
        };
        let ca = Self::load(&issued.cert_der, &issued.key_pkcs8)?;
        Ok((ca, issued))
    }

    /// The CA from its certificate and PKCS#8 key.
    pub fn load(cert_der: &[u8], key_pkcs8: &[u8]) -> Result<Self, CaError> {
        let key = KeyPair::try_from(key_pkcs8)?;
        let issuer = Issuer::from_ca_cert_der(&cert_der.into(), key)?;
        Ok(Self {
            issuer,
            cert_der: cert_der.to_vec(),
        })
    }

    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The relay's TLS server certificate for `names` (DNS names or IPs).
    pub fn issue_server(&self, names: &[String]) -> Result<Issued, CaError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.to_vec())?;
        params.distinguished_name = dn("switchyard relay");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.finish(params, &key, 825).map(|cert_der| Issued {
            cert_der,
            key_pkcs8: zeroize::Zeroizing::new(key.serialize_der()),
        })
    }

    /// A service certificate for `serial`, for the key in `csr_der`.
    pub fn issue_service(&self, csr_der: &[u8], serial: &str) -> Result<Vec<u8>, CaError> {
        let uri = format!("urn:switchyard:service:{serial}");
        let san = SanType::URI(
            uri.clone()
                .try_into()
                .map_err(|e: rcgen::Error| CaError::Name(uri, e.to_string()))?,
        );
        self.issue_for_request(csr_der, serial, san, 365)
    }

    /// A client certificate for `email`, for the key in `csr_der`.
    pub fn issue_client(&self, csr_der: &[u8], email: &str) -> Result<Vec<u8>, CaError> {
        let san = SanType::Rfc822Name(
            email
                .try_into()
                .map_err(|e: rcgen::Error| CaError::Name(email.into(), e.to_string()))?,
        );
        self.issue_for_request(csr_der, email, san, 365)
    }

    /// A relay node's certificate for node `id`, for the key in
    /// `csr_der` (mutual TLS between the nodes of a tier; see
    /// `relay::nodes`). Short-lived: a node makes a new one at each start.
    pub fn issue_node(&self, csr_der: &[u8], id: &str) -> Result<Vec<u8>, CaError> {
        let uri = format!("urn:switchyard:relay-node:{id}");
        let san = SanType::URI(
            uri.clone()
                .try_into()
                .map_err(|e: rcgen::Error| CaError::Name(uri, e.to_string()))?,
        );
        self.issue_for_request(csr_der, id, san, 30)
    }

    fn issue_for_request(
        &self,
        csr_der: &[u8],
        subject: &str,
        san: SanType,
        days: i64,
    ) -> Result<Vec<u8>, CaError> {
        let csr = CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(
            csr_der,
        ))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(subject);
        params.subject_alt_names = vec![san];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = OffsetDateTime::now_utc() - Duration::hours(1);
        params.not_after = OffsetDateTime::now_utc() + Duration::days(days);
        let cert = params.signed_by(&csr.public_key, &self.issuer)?;
        Ok(cert.der().to_vec())
    }

    fn finish(
        &self,
        mut params: CertificateParams,
        key: &KeyPair,
        days: i64,
    ) -> Result<Vec<u8>, CaError> {
        params.not_before = OffsetDateTime::now_utc() - Duration::hours(1);
        params.not_after = OffsetDateTime::now_utc() + Duration::days(days);
        Ok(params.signed_by(key, &self.issuer)?.der().to_vec())
    }
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_client_certificates_that_chain_to_the_ca() {
        crate::tls::install_crypto_provider();
        let (ca, _) = CertificateAuthority::generate("test ca").unwrap();
        let (csr, _key) = crate::tls::new_certificate_request("ignored").unwrap();
        let cert = ca.issue_client(&csr, "a@example.com").unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.cert_der().to_vec().into()).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder(roots.into())
            .build()
            .unwrap();
        verifier
            .verify_client_cert(&cert.into(), &[], rustls::pki_types::UnixTime::now())
            .unwrap();
        assert!(ca.issue_client(b"garbage", "a@example.com").is_err());
    }
}
