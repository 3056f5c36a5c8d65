//! Cloud logins kept across broker restarts.
//!
//! One file per login under `<state dir>/logins/`, mode 0600, written
//! atomically (temp + fsync + rename), each sealed with XChaCha20-Poly1305
//! under the broker's login key (the file name is the associated data, so
//! files cannot be swapped).
//!
//! What protects the key: it is 32 random bytes, read from systemd's
//! credential `login-key` when the unit passes one (`LoadCredential=` or,
//! better, `LoadCredentialEncrypted=`, which ties it to the host's TPM or
//! credential secret), else kept in `<state dir>/login.key` (mode 0600,
//! made on first use). Whoever can read that key and the state directory
//! can use the logins — the same trust as the broker's own user.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use crate::fsutil::write_atomically;

#[derive(Debug, thiserror::Error)]
pub enum LoginStoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: the login key is not 32 bytes")]
    BadKey(PathBuf),
    #[error("{0}: cannot decrypt (another broker's key, or damaged)")]
    Sealed(PathBuf),
    #[error("{0}: {1}")]
    Format(PathBuf, String),
}

/// A login as stored. Secrets are wiped when it is dropped.
#[derive(Clone, Serialize, Deserialize, Default)]
pub struct StoredLogin {
    pub relay_url: String,
    pub ca_pem: Option<String>,
    pub identity: String,
    /// `sso`, `certificate` or `token`.
    pub method: String,
    /// `user:<uid>` or `group:<gid>`.
    pub owner: String,
    pub access_token: Option<String>,
    pub access_expires: Option<u64>,
    pub refresh_token: Option<String>,
    pub cert_der: Option<Vec<u8>>,
    pub key_der: Option<Vec<u8>>,
}

impl Drop for StoredLogin {
    fn drop(&mut self) {
        self.access_token.zeroize();
        self.refresh_token.zeroize();
        self.key_der.zeroize();
    }
}

impl StoredLogin {
    /// The file name: a hash of what identifies the login.
    fn file_name(&self) -> String {
        let id = format!(
            "{}\n{}\n{}\n{}",
            self.relay_url, self.identity, self.method, self.owner
        );
        format!(
            "{}.login",
            hex::encode(&Sha256::digest(id.as_bytes())[..16])
        )
    }
}

pub struct LoginStore {
    dir: PathBuf,
    cipher: XChaCha20Poly1305,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LoginStoreError + '_ {
    move |source| LoginStoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl LoginStore {
    /// Opens the store under `state_dir`, making the key on first use.
    pub fn open(state_dir: &Path) -> Result<Self, LoginStoreError> {
        let dir = state_dir.join("logins");
        crate::fsutil::create_private_dir_all(&dir).map_err(io(&dir))?;
        let key = load_key(state_dir)?;
        let cipher = XChaCha20Poly1305::new_from_slice(&key)
            .map_err(|_| LoginStoreError::BadKey(state_dir.join("login.key")))?;
        Ok(Self { dir, cipher })
    }

    pub fn save(&self, login: &StoredLogin) -> Result<(), LoginStoreError> {
        let name = login.file_name();
        let path = self.dir.join(&name);
        let plain = Zeroizing::new(
            serde_json::to_vec(login)
                .map_err(|e| LoginStoreError::Format(path.clone(), e.to_string()))?,
        );
        let nonce_bytes: [u8; 24] = rand::random();
        let sealed = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce_bytes),
                Payload {
                    msg: &plain,
                    aad: name.as_bytes(),
                },
            )
            .map_err(|_| LoginStoreError::Sealed(path.clone()))?;
        let mut file = nonce_bytes.to_vec();
        file.extend_from_slice(&sealed);
        write_atomically(&path, &file).map_err(io(&path))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).map_err(io(&path))
    }

    pub fn remove(&self, login: &StoredLogin) -> Result<(), LoginStoreError> {
        let path = self.dir.join(login.file_name());
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&path)(e)),
            _ => Ok(()),
        }
    }

    /// Every stored login; unreadable files are reported, not fatal.
    pub fn load_all(&self) -> (Vec<StoredLogin>, Vec<LoginStoreError>) {
        let mut logins = Vec::new();
        let mut errors = Vec::new();
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) => return (logins, vec![io(&self.dir)(e)]),
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "login") {
                continue;
            }
            match self.load(&path) {
                Ok(login) => logins.push(login),
                Err(e) => errors.push(e),
            }
        }
        (logins, errors)
    }

    fn load(&self, path: &Path) -> Result<StoredLogin, LoginStoreError> {
        let bytes = fs::read(path).map_err(io(path))?;
        if bytes.len() < 24 {
            return Err(LoginStoreError::Sealed(path.to_path_buf()));
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let plain = Zeroizing::new(
            self.cipher
                .decrypt(
                    XNonce::from_slice(&bytes[..24]),
                    Payload {
                        msg: &bytes[24..],
                        aad: name.as_bytes(),
                    },
                )
                .map_err(|_| LoginStoreError::Sealed(path.to_path_buf()))?,
        );
        serde_json::from_slice(&plain)
            .map_err(|e| LoginStoreError::Format(path.to_path_buf(), e.to_string()))
    }
}

fn load_key(state_dir: &Path) -> Result<Zeroizing<Vec<u8>>, LoginStoreError> {
    if let Some(creds) = std::env::var_os("CREDENTIALS_DIRECTORY") {
        let path = Path::new(&creds).join("login-key");
        if path.exists() {
            return read_key(&path);
        }
    }
    let path = state_dir.join("login.key");
    if path.exists() {
        return read_key(&path);
    }
    let key = Zeroizing::new(rand::random::<[u8; 32]>().to_vec());
    write_atomically(&path, &key).map_err(io(&path))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).map_err(io(&path))?;
    Ok(key)
}

fn read_key(path: &Path) -> Result<Zeroizing<Vec<u8>>, LoginStoreError> {
    let key = Zeroizing::new(fs::read(path).map_err(io(path))?);
    if key.len() != 32 {
        return Err(LoginStoreError::BadKey(path.to_path_buf()));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login() -> StoredLogin {
        let mut login = StoredLogin::default();
        login.relay_url = "https://r".into();
        login.identity = "a@x".into();
        login.method = "sso".into();
        login.owner = "user:1".into();
        login.refresh_token = Some("very-secret-refresh".into());
        login
    }

    #[test]
    fn logins_round_trip_sealed_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let store = LoginStore::open(dir.path()).unwrap();
        store.save(&login()).unwrap();
        let (loaded, errors) = LoginStore::open(dir.path()).unwrap().load_all();
        assert!(errors.is_empty());
        assert_eq!(loaded.len(), 1);
        assert_eq!(
            loaded[0].refresh_token.as_deref(),
            Some("very-secret-refresh")
        );
        let file = fs::read_dir(dir.path().join("logins"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let raw = fs::read(&file).unwrap();
        assert!(!raw.windows(11).any(|w| w == b"very-secret"));
        let mode = fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        store.remove(&loaded[0]).unwrap();
        assert!(store.load_all().0.is_empty());
    }

    #[test]
    fn another_key_cannot_read_them() {
        let dir = tempfile::tempdir().unwrap();
        LoginStore::open(dir.path())
            .unwrap()
            .save(&login())
            .unwrap();
        fs::write(dir.path().join("login.key"), [7u8; 32]).unwrap();
        let (loaded, errors) = LoginStore::open(dir.path()).unwrap().load_all();
        assert!(loaded.is_empty());
        assert!(matches!(errors[0], LoginStoreError::Sealed(_)));
    }
}
