//! The encrypted form of a client certificate's private key, as `enroll
//! client` hands it to the caller and `certificate_login` takes it back:
//!
//! `"SYK1"` · memory KiB (u32 BE) · iterations (u32 BE) · parallelism
//! (u32 BE) · salt (16 bytes) · XChaCha20-Poly1305 sealed PKCS#8 key, under
//! a key Argon2id derives from the user's password.

use zeroize::Zeroizing;

use crate::secret::Secret;
use crate::service::seal::{KdfParams, SealKey, new_salt};

const MAGIC: &[u8; 4] = b"SYK1";
const CONTEXT: &str = "switchyard client key";
const HEADER: usize = 4 + 12 + 16;

#[derive(Debug, thiserror::Error)]
pub enum ClientKeyError {
    #[error("the key password must not be empty")]
    EmptyPassword,
    #[error("not a Switchyard encrypted key")]
    Format,
    #[error("wrong key password (or a damaged key file)")]
    WrongPassword,
    #[error("{0}")]
    Kdf(String),
}

pub fn encrypt(key_der: &[u8], password: &Secret) -> Result<Vec<u8>, ClientKeyError> {
    if password.is_empty() {
        return Err(ClientKeyError::EmptyPassword);
    }
    let params = KdfParams::default();
    let salt = new_salt();
    let key =
        SealKey::derive(password, &salt, params).map_err(|e| ClientKeyError::Kdf(e.to_string()))?;
    let sealed = key
        .seal(CONTEXT, key_der)
        .map_err(|e| ClientKeyError::Kdf(e.to_string()))?;
    let mut out = MAGIC.to_vec();
    for v in [params.memory_kib, params.iterations, params.parallelism] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(&salt);
    out.extend_from_slice(&sealed);
    Ok(out)
}

pub fn decrypt(blob: &[u8], password: &Secret) -> Result<Zeroizing<Vec<u8>>, ClientKeyError> {
    if blob.len() <= HEADER || &blob[..4] != MAGIC {
        return Err(ClientKeyError::Format);
    }
    let word = |i: usize| u32::from_be_bytes([blob[i], blob[i + 1], blob[i + 2], blob[i + 3]]);
    let params = KdfParams {
        memory_kib: word(4),
        iterations: word(8),
        parallelism: word(12),
    };
    // A file cannot make us spend unbounded memory or time.
    if params.memory_kib > 1024 * 1024 || params.iterations > 64 || params.parallelism > 16 {
        return Err(ClientKeyError::Format);
    }
    let key = SealKey::derive(password, &blob[16..32], params)
        .map_err(|e| ClientKeyError::Kdf(e.to_string()))?;
    key.open(CONTEXT, &blob[HEADER..])
        .map_err(|_| ClientKeyError::WrongPassword)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_wrong_password() {
        let blob = encrypt(b"pkcs8 key bytes", &Secret::new("pw")).unwrap();
        assert!(!blob.windows(9).any(|w| w == b"pkcs8 key"));
        assert_eq!(
            &*decrypt(&blob, &Secret::new("pw")).unwrap(),
            b"pkcs8 key bytes"
        );
        assert!(matches!(
            decrypt(&blob, &Secret::new("no")),
            Err(ClientKeyError::WrongPassword)
        ));
        assert!(matches!(
            decrypt(b"junk", &Secret::new("pw")),
            Err(ClientKeyError::Format)
        ));
        assert!(matches!(
            encrypt(b"k", &Secret::new("")),
            Err(ClientKeyError::EmptyPassword)
        ));
    }
}
