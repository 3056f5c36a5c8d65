//! The service's inventory: devices, remote users and sealed secrets in one
//! SQLite file (WAL mode, migrations by `user_version`).
//!
//! An [`Inventory`] is one connection. Open it with the admin password to
//! read or write secrets, or without (`open_unsealed`) for listings, which
//! never touch a secret. **Invariant:** a device secret is written only
//! sealed (see `seal`); opening with a wrong admin password fails before any
//! write, so the file is left exactly as it was.

mod devices;
mod forwarding;
mod jump;
mod rekey;
mod relay;
mod schema;
mod users;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use zeroize::Zeroizing;

pub use devices::{Device, DeviceCredentials, DriverKind, NewDevice, SessionKind};
pub use forwarding::{ForwardPorts, ForwardTarget};
pub use jump::MAX_JUMPS;
pub use rekey::ABORT_MIDWAY_ENV;
pub use relay::RelayEnrollment;
pub use users::{DeviceScope, LoginRecord, NewRemoteUser, RemoteUser, UserChanges};

use crate::secret::Secret;
use crate::service::identity;
use crate::service::seal::{KdfParams, SealError, SealKey, new_salt};

/// The plaintext sealed at `init`; opening it proves the admin password.
const CHECK_PLAINTEXT: &[u8] = b"switchyard inventory v1";
const CHECK_CONTEXT: &str = "meta:seal_check";
const TLS_KEY_CONTEXT: &str = "meta:tls_key";

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error(
        "inventory {p} does not exist; create it with `switchyard service init --db {p}`",
        p = .0.display()
    )]
    NotFound(PathBuf),
    #[error(
        "{p} is not an initialized inventory; run `switchyard service init --db {p}`",
        p = .0.display()
    )]
    NotInitialized(PathBuf),
    #[error("inventory {p} is already initialized", p = .0.display())]
    AlreadyInitialized(PathBuf),
    #[error("wrong admin password for inventory {p}", p = .0.display())]
    WrongAdminPassword(PathBuf),
    #[error(
        "inventory schema version {found} is newer than this switchyard understands ({supported}); upgrade switchyard"
    )]
    TooNew { found: u32, supported: u32 },
    #[error("this operation needs the admin password (the inventory was opened without it)")]
    Locked,
    #[error("a device named {0:?} already exists")]
    DuplicateDevice(String),
    #[error("no device named {0:?} in the inventory")]
    UnknownDevice(String),
    #[error("a remote user named {0:?} already exists")]
    DuplicateUser(String),
    #[error("no remote user named {0:?}")]
    UnknownUser(String),
    #[error("{0}")]
    Invalid(String),
    #[error("inventory data is corrupt: {0}")]
    Corrupt(String),
    #[error("sealed secret cannot be opened: {0}")]
    Seal(#[from] SealError),
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{0}")]
    Identity(#[from] identity::IdentityError),
    #[error("cannot create {path}: {source}", path = .path.display())]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Facts about an inventory that need no secret.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InventoryInfo {
    pub path: PathBuf,
    pub schema_version: u32,
    pub tls_fingerprint: String,
    pub devices: u64,
    pub remote_users: u64,
    pub created_at: u64,
}

/// The service's TLS identity as stored: certificate plus (unsealed) key.
pub struct TlsIdentity {
    pub cert_der: Vec<u8>,
    pub key_der: Zeroizing<Vec<u8>>,
}

/// One open connection to an inventory file.
pub struct Inventory {
    conn: Connection,
    key: Option<SealKey>,
    path: PathBuf,
}

impl std::fmt::Debug for Inventory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inventory")
            .field("path", &self.path)
            .field("unsealed", &self.key.is_some())
            .finish()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    // Concurrent admin commands and the running service share the file;
    // wait for a writer instead of failing at once.
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "foreign_keys", true)?;
    Ok(())
}

impl Inventory {
    /// Creates a new inventory at `path` (a missing or empty file) sealed
    /// under `admin_password`, with a fresh TLS identity.
    pub fn init(path: &Path, admin_password: &Secret) -> Result<Self, InventoryError> {
        Self::init_with(path, admin_password, KdfParams::default())
    }

    /// [`Inventory::init`] with explicit KDF cost (tests use a cheap one).
    pub fn init_with(
        path: &Path,
        admin_password: &Secret,
        kdf: KdfParams,
    ) -> Result<Self, InventoryError> {
        if admin_password.is_empty() {
            return Err(InventoryError::Invalid(
                "the admin password must not be empty".into(),
            ));
        }
        create_private_file(path)?;
        let mut conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        configure(&conn)?;
        if schema::version(&conn)? != 0 {
            return Err(InventoryError::AlreadyInitialized(path.to_path_buf()));
        }
        conn.pragma_update(None, "journal_mode", "WAL")?;

        let salt = new_salt();
        let key = SealKey::derive(admin_password, &salt, kdf)?;
        let identity = identity::generate(vec!["switchyard-service".into()])?;
        let tx = conn.transaction()?;
        schema::migrate(&tx, 0)?;
        let params_json = serde_json::to_vec(&kdf)
            .map_err(|e| InventoryError::Corrupt(format!("kdf params: {e}")))?;
        let meta: [(&str, Vec<u8>); 6] = [
            ("kdf_salt", salt.to_vec()),
            ("kdf_params", params_json),
            ("seal_check", key.seal(CHECK_CONTEXT, CHECK_PLAINTEXT)?),
            ("tls_cert", identity.cert_der.clone()),
            ("tls_key", key.seal(TLS_KEY_CONTEXT, &identity.key_der)?),
            ("created_at", now_secs().to_string().into_bytes()),
        ];
        for (k, v) in meta {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)",
                params![k, v],
            )?;
        }
        tx.commit()?;
        Ok(Self {
            conn,
            key: Some(key),
            path: path.to_path_buf(),
        })
    }

    /// Opens an inventory and proves the admin password, unsealing it.
    pub fn open(path: &Path, admin_password: &Secret) -> Result<Self, InventoryError> {
        let mut inv = Self::open_raw(path)?;
        let salt = inv.meta("kdf_salt")?;
        let kdf: KdfParams = serde_json::from_slice(&inv.meta("kdf_params")?)
            .map_err(|e| InventoryError::Corrupt(format!("kdf params: {e}")))?;
        let key = SealKey::derive(admin_password, &salt, kdf)?;
        key.open(CHECK_CONTEXT, &inv.meta("seal_check")?)
            .map_err(|_| InventoryError::WrongAdminPassword(path.to_path_buf()))?;
        inv.key = Some(key);
        inv.migrate()?;
        Ok(inv)
    }

    /// Opens an inventory without the admin password: listings and host-key
    /// records work, anything that needs a secret returns `Locked`.
    pub fn open_unsealed(path: &Path) -> Result<Self, InventoryError> {
        let mut inv = Self::open_raw(path)?;
        inv.migrate()?;
        Ok(inv)
    }

    fn open_raw(path: &Path) -> Result<Self, InventoryError> {
        if !path.exists() {
            return Err(InventoryError::NotFound(path.to_path_buf()));
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        configure(&conn)?;
        let version = schema::version(&conn)?;
        if version == 0 {
            return Err(InventoryError::NotInitialized(path.to_path_buf()));
        }
        if version > schema::LATEST {
            return Err(InventoryError::TooNew {
                found: version,
                supported: schema::LATEST,
            });
        }
        Ok(Self {
            conn,
            key: None,
            path: path.to_path_buf(),
        })
    }

    fn migrate(&mut self) -> Result<(), InventoryError> {
        let from = schema::version(&self.conn)?;
        if from < schema::LATEST {
            let tx = self.conn.transaction()?;
            schema::migrate(&tx, from)?;
            tx.commit()?;
        }
        Ok(())
    }

    fn meta(&self, key: &str) -> Result<Vec<u8>, InventoryError> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?
            .ok_or_else(|| InventoryError::Corrupt(format!("meta entry {key:?} is missing")))
    }

    fn key(&self) -> Result<&SealKey, InventoryError> {
        self.key.as_ref().ok_or(InventoryError::Locked)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Summary facts, including the TLS fingerprint callers pin.
    pub fn info(&self) -> Result<InventoryInfo, InventoryError> {
        let count = |table: &str| -> Result<u64, InventoryError> {
            Ok(self
                .conn
                .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))?)
        };
        let created_at = String::from_utf8_lossy(&self.meta("created_at")?)
            .parse()
            .unwrap_or(0);
        Ok(InventoryInfo {
            path: self.path.clone(),
            schema_version: schema::version(&self.conn)?,
            tls_fingerprint: identity::fingerprint(&self.meta("tls_cert")?),
            devices: count("devices")?,
            remote_users: count("remote_users")?,
            created_at,
        })
    }

    /// The service's TLS certificate and unsealed private key.
    pub fn tls_identity(&self) -> Result<TlsIdentity, InventoryError> {
        let key_der = self.key()?.open(TLS_KEY_CONTEXT, &self.meta("tls_key")?)?;
        Ok(TlsIdentity {
            cert_der: self.meta("tls_cert")?,
            key_der,
        })
    }
}

/// Creates `path` with mode 0600 if missing; an existing empty file is
/// accepted (SQLite treats it as an empty database).
/// Creates the inventory file (0600), and its directory (0700) when missing,
/// so `init` works on a fresh host (e.g. a unit's not yet created
/// `StateDirectory`).
fn create_private_file(path: &Path) -> Result<(), InventoryError> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::fsutil::create_private_dir_all(dir).map_err(|source| InventoryError::Create {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let result = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path);
    result.map(drop).map_err(|source| InventoryError::Create {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap_kdf() -> KdfParams {
        KdfParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        }
    }

    fn device(name: &str, password: &str) -> NewDevice {
        NewDevice {
            name: name.into(),
            host: "192.0.2.1".into(),
            port: 22,
            device_type: "IOS".into(),
            driver: DriverKind::Ssh,
            attributes: [("site".to_string(), "lab".to_string())].into(),
            username: Some("admin".into()),
            password: Some(Secret::new(password)),
            private_key: None,
            legacy_algorithms: None,
            enable_password: None,
            session: None,
        }
    }

    #[test]
    fn init_creates_a_missing_directory_private() {
        use std::os::unix::fs::PermissionsExt;
        crate::tls::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("var/lib/switchyard-service");
        let db = state.join("inventory.db");
        Inventory::init_with(&db, &Secret::new("admin-pw"), cheap_kdf()).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&db), 0o600);
    }

    #[test]
    fn init_open_and_device_round_trip() {
        crate::tls::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("inv.db");
        let admin = Secret::new("admin-pw");
        let mut inv = Inventory::init_with(&db, &admin, cheap_kdf()).unwrap();
        inv.add_device(&device("r1", "cisco123")).unwrap();
        assert!(matches!(
            inv.add_device(&device("r1", "x")),
            Err(InventoryError::DuplicateDevice(_))
        ));
        drop(inv);

        let inv = Inventory::open(&db, &admin).unwrap();
        let creds = inv.device_credentials("r1").unwrap();
        assert_eq!(creds.password.unwrap().expose(), "cisco123");
        let listed = inv.devices().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].attributes["site"], "lab");
        assert!(inv.tls_identity().is_ok());

        let locked = Inventory::open_unsealed(&db).unwrap();
        assert_eq!(locked.devices().unwrap().len(), 1);
        assert!(matches!(
            locked.device_credentials("r1"),
            Err(InventoryError::Locked)
        ));
        assert!(matches!(
            Inventory::init_with(&db, &admin, cheap_kdf()),
            Err(InventoryError::AlreadyInitialized(_))
        ));
    }

    #[test]
    fn unknown_names_and_uninitialized_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("missing.db");
        assert!(matches!(
            Inventory::open(&db, &Secret::new("x")),
            Err(InventoryError::NotFound(_))
        ));
        std::fs::write(&db, b"").unwrap();
        assert!(matches!(
            Inventory::open_unsealed(&db),
            Err(InventoryError::NotInitialized(_))
        ));
        let mut inv = Inventory::init_with(&db, &Secret::new("a"), cheap_kdf()).unwrap();
        assert!(matches!(
            inv.remove_device("nope"),
            Err(InventoryError::UnknownDevice(_))
        ));
        assert!(matches!(
            inv.device("nope"),
            Err(InventoryError::UnknownDevice(_))
        ));
        assert!(matches!(
            inv.remove_user("nope"),
            Err(InventoryError::UnknownUser(_))
        ));
    }

    #[test]
    fn remote_user_authentication() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("inv.db");
        let mut inv = Inventory::init_with(&db, &Secret::new("a"), cheap_kdf()).unwrap();
        inv.add_user(&NewRemoteUser {
            name: "alice".into(),
            password: Some(Secret::new("pw")),
            devices: DeviceScope::parse("core-*").unwrap(),
            enabled: true,
            cloud: false,
        })
        .unwrap();
        inv.add_user(&NewRemoteUser {
            name: "bob".into(),
            password: Some(Secret::new("pw")),
            devices: DeviceScope::all(),
            enabled: false,
            cloud: false,
        })
        .unwrap();
        let alice = inv
            .authenticate_user("alice", &Secret::new("pw"))
            .unwrap()
            .unwrap();
        assert!(alice.devices.allows("core-1") && !alice.devices.allows("edge-1"));
        assert!(
            inv.authenticate_user("alice", &Secret::new("no"))
                .unwrap()
                .is_none()
        );
        assert!(
            inv.authenticate_user("bob", &Secret::new("pw"))
                .unwrap()
                .is_none()
        );
        assert!(
            inv.authenticate_user("carol", &Secret::new("pw"))
                .unwrap()
                .is_none()
        );
    }
}
