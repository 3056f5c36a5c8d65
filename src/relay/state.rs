//! The relay's state directory, made by `relay init`:
//!
//! | file | what |
//! |---|---|
//! | `ca.pem`, `ca.key` | the CA certificate (give `ca.pem` to brokers and services) and its key |
//! | `server.pem`, `server.key` | the relay's TLS certificate for its host names, signed by the CA |
//! | `signing.key` | Ed25519 key that signs tokens and assertions |
//! | `relay-id` | the issuer name in every token (stable across restarts and ports) |
//! | `relay.db` | users, tokens, one-time passwords, certificates, services (SQLite; unused by a tier on PostgreSQL) |
//!
//! Keys are PKCS#8 DER files of mode 0600 in a directory of mode 0700;
//! what protects them is the file system (under systemd, the relay's own
//! user and `StateDirectory=`), as for any CA or TLS server key.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use zeroize::Zeroizing;

use super::ca::{CaError, CertificateAuthority};
use super::db::Database;
use super::store::{RelayStore, StoreError, TokenRecord};
use super::tokens::TokenSigner;
use crate::fsutil::write_atomically;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} is already initialized (remove it first to start over)")]
    Exists(PathBuf),
    #[error("{0} is not a relay state directory (run `switchyard relay init --state {0}`)")]
    NotInitialized(PathBuf),
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}: {reason}")]
    Bad { path: PathBuf, reason: String },
}

/// The keys and identity every node of a relay loads from its state
/// directory: CA, server certificate, signing key, issuer. A tier's nodes
/// load copies of one directory (made once by `relay init`), so a token or
/// certificate issued by any node is valid on all; the database holds no
/// private key.
pub struct RelayKeys {
    pub dir: PathBuf,
    pub ca: CertificateAuthority,
    pub server_cert_der: Vec<u8>,
    pub server_key: Zeroizing<Vec<u8>>,
    pub signer: TokenSigner,
    /// The raw Ed25519 public key services verify assertions with.
    pub signing_public: Vec<u8>,
}

/// The keys and the state directory's own SQLite store (what the
/// single-node relay and its admin commands open).
pub struct RelayState {
    pub keys: RelayKeys,
    pub store: RelayStore,
}

impl std::ops::Deref for RelayState {
    type Target = RelayKeys;
    fn deref(&self) -> &RelayKeys {
        &self.keys
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    write_atomically(path, bytes).map_err(io(path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(io(path))
}

fn write_pem(path: &Path, der: &[u8]) -> Result<(), StateError> {
    let text = pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()));
    write_atomically(path, text.as_bytes()).map_err(io(path))
}

/// Reads the first certificate of a PEM file.
pub fn read_cert_pem(path: &Path) -> Result<Vec<u8>, StateError> {
    rustls::pki_types::CertificateDer::from_pem_file(path)
        .map(|c| c.to_vec())
        .map_err(|e| StateError::Bad {
            path: path.to_path_buf(),
            reason: format!("not a PEM certificate: {e}"),
        })
}

fn read(path: &Path) -> Result<Vec<u8>, StateError> {
    fs::read(path).map_err(io(path))
}

/// Creates the state directory: CA, server certificate for `hostnames`,
/// signing key, database. Refuses to overwrite an existing one.
pub fn init(dir: &Path, hostnames: &[String]) -> Result<(), StateError> {
    if dir.join("ca.key").exists() {
        return Err(StateError::Exists(dir.to_path_buf()));
    }
    crate::fsutil::create_private_dir_all(dir).map_err(io(dir))?;
    let (ca, ca_issued) = CertificateAuthority::generate("switchyard relay CA")?;
    let server = ca.issue_server(hostnames)?;
    let signing = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(CaError::from)?;
    write_secret(&dir.join("ca.key"), &ca_issued.key_pkcs8)?;
    write_pem(&dir.join("ca.pem"), &ca_issued.cert_der)?;
    write_secret(&dir.join("server.key"), &server.key_pkcs8)?;
    write_pem(&dir.join("server.pem"), &server.cert_der)?;
    write_secret(
        &dir.join("signing.key"),
        &Zeroizing::new(signing.serialize_der()),
    )?;
    let id = format!(
        "switchyard-relay:{}",
        hex::encode(rand::random::<[u8; 8]>())
    );
    write_atomically(&dir.join("relay-id"), id.as_bytes()).map_err(io(dir))?;
    RelayStore::open(&dir.join("relay.db"))?;
    Ok(())
}

/// Loads an initialized state directory with its SQLite store.
pub fn load(dir: &Path) -> Result<RelayState, StateError> {
    let keys = load_keys(dir)?;
    Ok(RelayState {
        keys,
        store: RelayStore::open(&dir.join("relay.db"))?,
    })
}

/// Loads the keys of an initialized state directory (not its database).
pub fn load_keys(dir: &Path) -> Result<RelayKeys, StateError> {
    if !dir.join("ca.key").exists() {
        return Err(StateError::NotInitialized(dir.to_path_buf()));
    }
    let ca_key = Zeroizing::new(read(&dir.join("ca.key"))?);
    let ca = CertificateAuthority::load(&read_cert_pem(&dir.join("ca.pem"))?, &ca_key)?;
    let signing_der = Zeroizing::new(read(&dir.join("signing.key"))?);
    let signing = rcgen::KeyPair::try_from(signing_der.as_slice()).map_err(CaError::from)?;
    let signing_public = signing.public_key_raw().to_vec();
    let id_path = dir.join("relay-id");
    let issuer = String::from_utf8(read(&id_path)?).map_err(|_| StateError::Bad {
        path: id_path.clone(),
        reason: "not UTF-8".into(),
    })?;
    Ok(RelayKeys {
        dir: dir.to_path_buf(),
        ca,
        server_cert_der: read_cert_pem(&dir.join("server.pem"))?,
        server_key: Zeroizing::new(read(&dir.join("server.key"))?),
        signer: TokenSigner::new(issuer.trim().to_string(), &signing_der, &signing_public),
        signing_public,
    })
}

impl RelayKeys {
    /// Signs a token of `kind` for `email` expiring at unix time `exp`;
    /// with the record that must be stored before it is handed out.
    fn sign(
        &self,
        email: &str,
        kind: &str,
        exp: u64,
    ) -> Result<(crate::wire::relay::TokenClaims, String, TokenRecord), StateError> {
        let (claims, token) = self
            .signer
            .issue_token_until(email, kind, exp)
            .map_err(|e| StateError::Bad {
                path: self.dir.clone(),
                reason: e.to_string(),
            })?;
        let record = TokenRecord {
            id: claims.jti.clone(),
            email: email.into(),
            kind: kind.into(),
            expires_at: claims.exp,
            revoked: false,
        };
        Ok((claims, token, record))
    }

    /// Signs a token and records it in `db` (so it can be listed and
    /// revoked on every node).
    pub async fn issue_token(
        &self,
        db: &Database,
        email: &str,
        kind: &str,
        exp: u64,
    ) -> Result<(crate::wire::relay::TokenClaims, String), StateError> {
        let (claims, token, record) = self.sign(email, kind, exp)?;
        db.record_token(&record).await?;
        Ok((claims, token))
    }

    /// Issues a long-lived access token for an enabled user (`relay token
    /// issue`), expiring at unix time `exp`.
    pub async fn issue_api_token(
        &self,
        db: &Database,
        email: &str,
        exp: u64,
    ) -> Result<(crate::wire::relay::TokenClaims, String), StateError> {
        if !db.user_enabled(email).await? {
            return Err(StateError::Store(StoreError::NoSuchUser(email.into())));
        }
        self.issue_token(db, email, "api", exp).await
    }
}

impl RelayState {
    /// Signs a token of `kind` for `email`, expiring at unix time `exp`, and
    /// records it in the SQLite store (so it can be listed and revoked).
    pub fn issue_token(
        &self,
        email: &str,
        kind: &str,
        exp: u64,
    ) -> Result<(crate::wire::relay::TokenClaims, String), StateError> {
        let (claims, token, record) = self.keys.sign(email, kind, exp)?;
        self.store.record_token(&record)?;
        Ok((claims, token))
    }

    /// Issues a long-lived access token for an enabled user, expiring at
    /// unix time `exp`.
    pub fn issue_api_token(
        &self,
        email: &str,
        exp: u64,
    ) -> Result<(crate::wire::relay::TokenClaims, String), StateError> {
        if !self.store.user_enabled(email)? {
            return Err(StateError::Store(StoreError::NoSuchUser(email.into())));
        }
        self.issue_token(email, "api", exp)
    }
}
