//! Sealing device secrets at rest.
//!
//! The admin password is stretched with Argon2id (salt and cost stored in the
//! inventory) into a 256-bit key; each secret is sealed with
//! XChaCha20-Poly1305 under a fresh random 192-bit nonce. The associated data
//! names the row and field a secret belongs to, so a sealed value copied to
//! another row fails to open instead of silently becoming that row's secret.

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::secret::Secret;

const NONCE_LEN: usize = 24;

/// Argon2id cost parameters, stored beside the salt so they can be raised
/// for new inventories without breaking old ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for KdfParams {
    /// OWASP's Argon2id recommendation (19 MiB, 2 passes): tens of
    /// milliseconds per unseal, which every admin command and service start pays.
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("invalid key-derivation parameters: {0}")]
    Params(String),
    #[error("sealed value is corrupt or was sealed under another key")]
    Open,
    #[error("sealing failed")]
    Seal,
}

/// The key that seals an inventory's secrets. Wiped on drop.
pub struct SealKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey([redacted])")
    }
}

impl SealKey {
    /// Derives the key from the admin password.
    pub fn derive(password: &Secret, salt: &[u8], params: KdfParams) -> Result<Self, SealError> {
        let p = Params::new(
            params.memory_kib,
            params.iterations,
            params.parallelism,
            Some(32),
        )
        .map_err(|e| SealError::Params(e.to_string()))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, p);
        let mut key = Zeroizing::new([0u8; 32]);
        argon
            .hash_password_into(password.expose().as_bytes(), salt, key.as_mut())
            .map_err(|e| SealError::Params(e.to_string()))?;
        Ok(Self(key))
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(self.0.as_ref().into())
    }

    /// Seals `plaintext`, bound to `context` (e.g. `"device:r1:password"`).
    /// Output: nonce ‖ ciphertext ‖ tag.
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let body = self
            .cipher()
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| SealError::Seal)?;
        let mut out = Vec::with_capacity(NONCE_LEN + body.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Opens a value sealed by [`SealKey::seal`] with the same `context`.
    pub fn open(&self, context: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        if sealed.len() < NONCE_LEN {
            return Err(SealError::Open);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        self.cipher()
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: context.as_bytes(),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| SealError::Open)
    }
}

/// A fresh random salt for a new inventory.
pub fn new_salt() -> [u8; 16] {
    use chacha20poly1305::aead::rand_core::RngCore;
    let mut salt = [0u8; 16];
    OsRng.fill_bytes(&mut salt);
    salt
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> KdfParams {
        KdfParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        }
    }

    #[test]
    fn seal_open_round_trip_and_context_binding() {
        let key = SealKey::derive(&Secret::new("admin"), b"0123456789abcdef", cheap()).unwrap();
        let sealed = key.seal("device:r1:password", b"cisco123").unwrap();
        assert!(!sealed.windows(8).any(|w| w == b"cisco123"));
        assert_eq!(
            &*key.open("device:r1:password", &sealed).unwrap(),
            b"cisco123"
        );
        assert!(key.open("device:r2:password", &sealed).is_err());
        assert!(key.open("device:r1:password", &sealed[..10]).is_err());
    }

    #[test]
    fn wrong_password_cannot_open() {
        let salt = b"0123456789abcdef";
        let good = SealKey::derive(&Secret::new("admin"), salt, cheap()).unwrap();
        let bad = SealKey::derive(&Secret::new("admin2"), salt, cheap()).unwrap();
        let sealed = good.seal("x", b"secret").unwrap();
        assert!(matches!(bad.open("x", &sealed), Err(SealError::Open)));
    }
}
