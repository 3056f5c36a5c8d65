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
