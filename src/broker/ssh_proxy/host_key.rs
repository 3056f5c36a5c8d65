//! The SSH proxy's host key: ed25519, made once and kept in the broker's
//! state directory (`ssh-proxy-host-key`, OpenSSH private key format, mode
//! 0600), so clients' `known_hosts` entries stay valid across restarts.
//!
//! **Invariant:** an existing key file is never replaced; one that cannot
//! be read is an error naming the file (remove it to make a new key).

use std::path::{Path, PathBuf};

use russh::keys::PrivateKey;
use russh::keys::ssh_key::LineEnding;
use russh::keys::ssh_key::private::Ed25519Keypair;
use tracing::{info, warn};

/// The key file's name in the state directory.
pub const FILE_NAME: &str = "ssh-proxy-host-key";

/// Why the host key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum HostKeyError {
    #[error(
        "cannot read the SSH proxy's host key {path}: {reason}; remove the file to make \
         a new key (clients will then see a changed host key)"
    )]
    Read { path: PathBuf, reason: String },
    #[error("cannot store the SSH proxy's host key in {path}: {reason}")]
    Write { path: PathBuf, reason: String },
    #[error("cannot make a host key: {0}")]
    Random(String),
}

/// A fresh ed25519 key from the system's random source.
fn generate() -> Result<PrivateKey, HostKeyError> {
    use ring::rand::SecureRandom;
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    ring::rand::SystemRandom::new()
        .fill(&mut seed[..])
        .map_err(|_| HostKeyError::Random("the system's random source failed".into()))?;
    Ok(PrivateKey::from(Ed25519Keypair::from_seed(&seed)))
}

/// The key kept in `state_dir`, made (and stored, 0600) on first use.
/// Without a state directory the key lives in memory only (a warning says
/// clients will see a new key after a restart).
pub fn load_or_create(state_dir: Option<&Path>) -> Result<PrivateKey, HostKeyError> {
    let Some(dir) = state_dir else {
        warn!("no state directory: the SSH proxy's host key changes with every broker start");
        return generate();
    };
    let path = dir.join(FILE_NAME);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            return PrivateKey::from_openssh(text.as_bytes()).map_err(|e| HostKeyError::Read {
                path,
                reason: e.to_string(),
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(HostKeyError::Read {
                path,
                reason: e.to_string(),
            });
        }
    }
    let key = generate()?;
    let write = |reason: String| HostKeyError::Write {
        path: path.clone(),
        reason,
    };
    let text = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| write(e.to_string()))?;
    std::fs::create_dir_all(dir).map_err(|e| write(e.to_string()))?;
    // A temporary file (created 0600) renamed into place.
    crate::fsutil::write_atomically(&path, text.as_bytes()).map_err(|e| write(e.to_string()))?;
    info!(path = %path.display(), "made the SSH proxy's host key");
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn made_once_kept_private_and_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(Some(dir.path())).unwrap();
        let b = load_or_create(Some(dir.path())).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        let path = dir.path().join(FILE_NAME);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::write(&path, "not a key").unwrap();
        let e = load_or_create(Some(dir.path())).unwrap_err().to_string();
        assert!(e.contains(FILE_NAME) && e.contains("remove"), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a key");
    }
}
