//! Process-wide TLS set-up.
//!
//! rustls panics at run time if more than one crypto provider is compiled in
//! and none is installed as the default. Switchyard builds with exactly one
//! (`ring`, for rustls, rcgen and russh alike) and installs it once here,
//! before anything touches TLS.

/// Installs `ring` as the process-default rustls crypto provider.
///
/// Safe to call more than once (tests call it from many threads).
pub fn install_crypto_provider() {
    // `install_default` fails only when a provider is already installed,
    // which is exactly the state we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Errors setting up a TLS client.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read CA certificates from {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("no trusted CA certificates: {0}")]
    NoRoots(String),
    #[error("cannot build the HTTPS client: {0}")]
    Client(String),
}

/// Trust anchors: the certificates in `ca_file` (PEM) when given, else the
/// system's store. Verification is never switched off.
pub fn root_store(ca_file: Option<&std::path::Path>) -> Result<rustls::RootCertStore, TlsError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let bad = |reason: String| TlsError::CaFile {
                path: path.display().to_string(),
                reason,
            };
            let certs = CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))?;
            for cert in certs {
                roots
                    .add(cert.map_err(|e| bad(e.to_string()))?)
                    .map_err(|e| bad(e.to_string()))?;
            }
        }
        None => {
            let loaded = rustls_native_certs::load_native_certs();
            for cert in loaded.certs {
                let _ = roots.add(cert);
            }
        }
    }
    if roots.is_empty() {
        return Err(TlsError::NoRoots(match ca_file {
            Some(p) => format!("{} holds no certificate", p.display()),
            None => "the system trust store is empty; name a CA file".into(),
        }));
    }
    Ok(roots)
}

/// A root store holding one DER certificate.
pub fn root_store_of(ca_der: &[u8]) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(ca_der.to_vec().into())
        .map_err(|e| TlsError::NoRoots(e.to_string()))?;
    Ok(roots)
}

/// An HTTPS client (ring provider, TLS 1.2+, `roots` as trust anchors, no
/// redirects: OAuth endpoints must not be followed elsewhere).
pub fn http_client(roots: rustls::RootCertStore) -> Result<reqwest::Client, TlsError> {
    http_client_via(roots, None)
}

/// As [`http_client`], through `proxy` (HTTP `CONNECT`) when given.
pub fn http_client_via(
    roots: rustls::RootCertStore,
    proxy: Option<reqwest::Proxy>,
) -> Result<reqwest::Client, TlsError> {
    install_crypto_provider();
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let builder = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(30));
    let builder = match proxy {
        Some(proxy) => builder.proxy(proxy),
        None => builder,
    };
    builder.build().map_err(|e| TlsError::Client(e.to_string()))
}

/// A PKCS#10 request for a new ECDSA P-256 key: (request DER, PKCS#8
/// key). The key never leaves the caller; the CA signs the request.
pub fn new_certificate_request(
    subject: &str,
) -> Result<(Vec<u8>, zeroize::Zeroizing<Vec<u8>>), rcgen::Error> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, subject);
    let csr = params.serialize_request(&key)?;
    Ok((
        csr.der().to_vec(),
        zeroize::Zeroizing::new(key.serialize_der()),
    ))
}
