//! The relay's database on SQLite (WAL), the single-node default (a tier
//! of several nodes uses [`PgStore`](super::pg::PgStore); the relay itself
//! reaches either through [`Database`](super::db::Database)): its identity provider's users, every
//! token it issued (for listing and revocation), enrollment one-time
//! passwords, the certificates its CA issued, enrolled services with the
//! user who owns each, an audit trail of enrollments and transfers, and
//! device logins waiting for approval (RFC 8628 grants).
//!
//! **Invariant:** a serial belongs to the user whose one-time password
//! first enrolled it; only that user may enroll it again (which revokes
//! the older service certificates of that serial), and only an
//! administrator (`switchyard relay service transfer`) may give it to
//! someone else. Every enrollment and transfer leaves an audit row.
//!
//! **Invariant:** no secret is stored in the clear: passwords are Argon2id
//! hashes and one-time passwords and device codes are stored as SHA-256
//! hashes (they are random and short-lived, so a slow hash buys nothing).

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use sha2::{Digest, Sha256};

use super::device_flow::{Decision, EXPIRED_KEPT, GrantKey, GrantRecord, GrantWrite};
use crate::password;
use crate::secret::Secret;
use crate::wire::pin::Fingerprint;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("relay database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("relay database: {0}")]
    Pg(#[from] super::pg::PgError),
    #[error("password hashing stopped: {0}")]
    Hashing(String),
    #[error("user {0} already exists")]
    UserExists(String),
    #[error("no such user: {0}")]
    NoSuchUser(String),
    #[error("no such token: {0}")]
    NoSuchToken(String),
    #[error("{0}")]
    Password(#[from] password::PasswordError),
    #[error("the one-time password is not valid")]
    OtpUnknown,
    #[error("the one-time password was already used")]
    OtpUsed,
    #[error("the one-time password expired")]
    OtpExpired,
    #[error(
        "service {serial} is enrolled by another user; only its owner can enroll it again \
         (a relay administrator can transfer it: switchyard relay service transfer)"
    )]
    SerialOwned { serial: String },
    #[error(
        "service {serial} has no recorded owner; a relay administrator must assign one \
         (switchyard relay service transfer {serial} --to EMAIL)"
    )]
    SerialUnowned { serial: String },
    #[error("no service with serial {0} is enrolled")]
    NoSuchService(String),
    #[error("no certificate with fingerprint {0}")]
    NoSuchCert(String),
    #[error("cannot issue the service certificate: {0}")]
    Issue(String),
}

const SCHEMA: &[&str] = &[
    r#"
    CREATE TABLE users (
        email         TEXT PRIMARY KEY,
        password_hash TEXT NOT NULL,
        enabled       INTEGER NOT NULL DEFAULT 1,
        created_at    INTEGER NOT NULL
    );
    CREATE TABLE tokens (
        id         TEXT PRIMARY KEY,
        email      TEXT NOT NULL,
        kind       TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        revoked    INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE otps (
        hash       BLOB PRIMARY KEY,
        serial     TEXT NOT NULL,
        created_by TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        used_at    INTEGER
    );
    CREATE TABLE certs (
        fingerprint BLOB PRIMARY KEY,
        kind        TEXT NOT NULL,
        subject     TEXT NOT NULL,
        revoked     INTEGER NOT NULL DEFAULT 0,
        created_at  INTEGER NOT NULL
    );
    CREATE TABLE services (
        serial      TEXT PRIMARY KEY,
        fingerprint BLOB NOT NULL,
        advertise   TEXT,
        enrolled_at INTEGER NOT NULL
    );
"#,
    // 2: who owns each serial (backfilled from the one-time password that
    // last enrolled it), and the enrollment audit trail.
    r#"
    ALTER TABLE services ADD COLUMN owner TEXT;
    UPDATE services SET owner = (
        SELECT created_by FROM otps
        WHERE otps.serial = services.serial AND otps.used_at IS NOT NULL
        ORDER BY otps.used_at DESC LIMIT 1
    );
    CREATE TABLE enrollment_audit (
        id             INTEGER PRIMARY KEY AUTOINCREMENT,
        at             INTEGER NOT NULL,
        serial         TEXT NOT NULL,
        action         TEXT NOT NULL,
        actor          TEXT NOT NULL,
        owner          TEXT NOT NULL,
        previous_owner TEXT,
        fingerprint    BLOB
    );
"#,
    // 3: device logins (RFC 8628) waiting for approval or redemption, so
    // they outlive a relay restart (see `relay::device_flow`). Times in
    // Unix milliseconds; the device code only as its SHA-256.
    r#"
    CREATE TABLE device_grants (
        device_hash      BLOB PRIMARY KEY,
        user_code        TEXT NOT NULL UNIQUE,
        login_hint       TEXT,
        expires_at       INTEGER NOT NULL,
        poll_interval_ms INTEGER NOT NULL,
        last_poll        INTEGER,
        state            TEXT NOT NULL,
        approved_by      TEXT,
        created_at       INTEGER NOT NULL
    );
    CREATE INDEX device_grants_by_expiry ON device_grants (expires_at);
"#,
];

/// What storing a new device grant came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantStart {
    Started,
    /// `max_pending` unexpired grants are open already.
    TooManyPending,
    /// Another open grant has this user code: make another grant.
    CodeTaken,
}

/// A user of the built-in identity provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayUser {
    pub email: String,
    pub enabled: bool,
}

/// An issued token as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: String,
    pub email: String,
    pub kind: String,
    pub expires_at: u64,
    pub revoked: bool,
}

/// An enrolled service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRecord {
    pub serial: String,
    pub fingerprint: [u8; 32],
    pub advertise: Option<String>,
    /// The user who owns the serial (`None`: enrolled before owners were
    /// recorded and never claimed; only an administrator can assign it).
    pub owner: Option<String>,
}

/// What a service asks to be enrolled as (the one-time password names the
/// serial and, through its creator, the owner).
#[derive(Debug, Clone)]
pub struct EnrollRequest {
    /// SHA-256 of the service's own TLS identity (the end-to-end pin).
    pub fingerprint: [u8; 32],
    pub advertise: Option<String>,
}

/// A completed enrollment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolled {
    pub serial: String,
    pub owner: String,
    /// `enroll` (a new serial) or `reenroll` (its owner replaced it).
    pub action: &'static str,
    /// DER of the certificate issued for the relay connection.
    pub cert_der: Vec<u8>,
}

/// One row of the enrollment audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Unix seconds.
    pub at: u64,
    pub serial: String,
    /// `enroll`, `reenroll` or `transfer`.
    pub action: String,
    /// Who did it: the owner's email, or `admin` for administrator commands.
    pub actor: String,
    /// The owner afterwards.
    pub owner: String,
    pub previous_owner: Option<String>,
    /// The service's end-to-end fingerprint after the change.
    pub fingerprint: Option<[u8; 32]>,
}

/// A certificate the relay's CA issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertRecord {
    pub fingerprint: [u8; 32],
    /// `client` or `service`.
    pub kind: String,
    /// The user's email (client) or the serial (service).
    pub subject: String,
    pub revoked: bool,
    /// Unix seconds.
    pub created_at: u64,
}

pub struct RelayStore {
    conn: Mutex<Connection>,
    /// Bumped by every change made through this handle that can end a live
    /// credential (see [`RelayStore::generation`]).
    local_changes: std::sync::atomic::AtomicU64,
}

fn now() -> u64 {
    crate::relay::unix_now()
}

impl RelayStore {
    /// Opens (creating and migrating when needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let tx = conn.transaction()?;
        for (index, sql) in SCHEMA.iter().enumerate().skip(version as usize) {
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", index as u32 + 1)?;
        }
        tx.commit()?;
        Ok(Self {
            conn: Mutex::new(conn),
            local_changes: Default::default(),
        })
    }

    /// Changes when anything that can end a live credential may have
    /// changed: a commit by another connection to the database (an admin
    /// command: SQLite's `data_version`), or a revocation, disable or
    /// re-enrollment through this handle. Cheap; polled by the relay.
    pub fn generation(&self) -> Result<(u64, u64), StoreError> {
        let external: i64 = self
            .db()
            .query_row("PRAGMA data_version", [], |r| r.get(0))?;
        let local = self
            .local_changes
            .load(std::sync::atomic::Ordering::Relaxed);
        Ok((external as u64, local))
    }

    fn changed(&self) {
        self.local_changes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn add_user(&self, email: &str, password: &Secret) -> Result<(), StoreError> {
        let hash = password::hash_password(password)?;
        let inserted = self.db().execute(
            "INSERT OR IGNORE INTO users (email, password_hash, created_at) VALUES (?1, ?2, ?3)",
            params![email, hash, now() as i64],
        )?;
        if inserted == 0 {
            return Err(StoreError::UserExists(email.into()));
        }
        Ok(())
    }

    pub fn users(&self) -> Result<Vec<RelayUser>, StoreError> {
        let db = self.db();
        let mut stmt = db.prepare("SELECT email, enabled FROM users ORDER BY email")?;
        let rows = stmt.query_map([], |r| {
            Ok(RelayUser {
                email: r.get(0)?,
                enabled: r.get::<_, i64>(1)? != 0,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn set_user_enabled(&self, email: &str, enabled: bool) -> Result<(), StoreError> {
        let changed = self.db().execute(
            "UPDATE users SET enabled = ?2 WHERE email = ?1",
            params![email, enabled as i64],
        )?;
        if changed == 0 {
            return Err(StoreError::NoSuchUser(email.into()));
        }
        self.changed();
        Ok(())
    }

    pub fn user_enabled(&self, email: &str) -> Result<bool, StoreError> {
        Ok(self
            .db()
            .query_row(
                "SELECT enabled FROM users WHERE email = ?1",
                params![email],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
            .is_some_and(|e| e != 0))
    }

    /// Checks a sign-in. Costs one Argon2id verification whether or not the
    /// user exists, so timing does not reveal which emails are known.
    pub fn verify_user(&self, email: &str, password: &Secret) -> Result<bool, StoreError> {
        let row: Option<(String, i64)> = self
            .db()
            .query_row(
                "SELECT password_hash, enabled FROM users WHERE email = ?1",
                params![email],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let (hash, enabled) = match row {
            Some((hash, enabled)) => (hash, enabled != 0),
            None => (password::DUMMY_HASH.to_string(), false),
        };
        let ok = password::verify_password(&hash, password).unwrap_or(false);
        Ok(ok && enabled)
    }

    pub fn record_token(&self, record: &TokenRecord) -> Result<(), StoreError> {
        self.db().execute(
            "INSERT INTO tokens (id, email, kind, expires_at, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![record.id, record.email, record.kind, record.expires_at as i64, now() as i64],
        )?;
        Ok(())
    }

    pub fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        Ok(self
            .db()
            .query_row(
                "SELECT id, email, kind, expires_at, revoked FROM tokens WHERE id = ?1",
                params![id],
                token_row,
            )
            .optional()?)
    }

    /// Long-lived access tokens (not the short SSO access/refresh pairs).
    pub fn api_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let db = self.db();
        let mut stmt = db.prepare(
            "SELECT id, email, kind, expires_at, revoked FROM tokens WHERE kind = 'api' ORDER BY created_at",
        )?;
        let rows = stmt.query_map([], token_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn revoke_token(&self, id: &str) -> Result<(), StoreError> {
        let changed = self
            .db()
            .execute("UPDATE tokens SET revoked = 1 WHERE id = ?1", params![id])?;
        if changed == 0 {
            return Err(StoreError::NoSuchToken(id.into()));
        }
        self.changed();
        Ok(())
    }

    pub fn add_otp(
        &self,
        otp: &Secret,
        serial: &str,
        created_by: &str,
        expires_at: u64,
    ) -> Result<(), StoreError> {
        self.db().execute(
            "INSERT INTO otps (hash, serial, created_by, expires_at) VALUES (?1, ?2, ?3, ?4)",
            params![otp_hash(otp), serial, created_by, expires_at as i64],
        )?;
        Ok(())
    }

    /// Whether `user` may mint a one-time password for `serial`: a new
    /// serial, or one `user` owns. Anyone else's serial is refused.
    pub fn check_may_enroll(&self, serial: &str, user: &str) -> Result<(), StoreError> {
        check_owner(&self.db(), serial, user).map(|_| ())
    }

    /// Redeems a one-time password and enrolls its serial, in one
    /// transaction: the password is marked used (even when the enrollment
    /// is then refused, so it cannot be retried), the serial must be new or
    /// owned by the password's creator, `issue` signs the certificate for
    /// the serial, older service certificates of the serial are revoked,
    /// and the service row and an audit row are written. Of two concurrent
    /// redemptions exactly one wins.
    pub fn enroll_with_otp(
        &self,
        otp: &Secret,
        request: &EnrollRequest,
        issue: impl FnOnce(&str) -> Result<Vec<u8>, String>,
    ) -> Result<Enrolled, StoreError> {
        let hash = otp_hash(otp);
        let mut db = self.db();
        let tx = db.transaction()?;
        let row: Option<(String, String, i64, Option<i64>)> = tx
            .query_row(
                "SELECT serial, created_by, expires_at, used_at FROM otps WHERE hash = ?1",
                params![hash],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        let (serial, owner, expires_at, used_at) = row.ok_or(StoreError::OtpUnknown)?;
        if used_at.is_some() {
            return Err(StoreError::OtpUsed);
        }
        if (expires_at as u64) <= now() {
            return Err(StoreError::OtpExpired);
        }
        tx.execute(
            "UPDATE otps SET used_at = ?2 WHERE hash = ?1",
            params![hash, now() as i64],
        )?;
        let previous = match check_owner(&tx, &serial, &owner) {
            Ok(previous) => previous,
            Err(refused) => {
                // The password is spent either way.
                tx.commit()?;
                return Err(refused);
            }
        };
        let cert_der = issue(&serial).map_err(StoreError::Issue)?;
        tx.execute(
            "UPDATE certs SET revoked = 1 WHERE kind = 'service' AND subject = ?1",
            params![serial],
        )?;
        tx.execute(
            "INSERT OR REPLACE INTO certs (fingerprint, kind, subject, created_at) VALUES (?1, 'service', ?2, ?3)",
            params![Fingerprint::of(&cert_der).0.as_slice(), serial, now() as i64],
        )?;
        tx.execute(
            "INSERT OR REPLACE INTO services (serial, fingerprint, advertise, enrolled_at, owner) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![serial, request.fingerprint.as_slice(), request.advertise, now() as i64, owner],
        )?;
        let action = if previous.is_some() {
            "reenroll"
        } else {
            "enroll"
        };
        insert_audit(
            &tx,
            &serial,
            action,
            &owner,
            &owner,
            previous.as_deref(),
            Some(&request.fingerprint),
        )?;
        tx.commit()?;
        drop(db);
        self.changed();
        Ok(Enrolled {
            serial,
            owner,
            action,
            cert_der,
        })
    }

    /// Gives `serial` to user `to` (an administrator's act, recorded with
    /// actor `admin`). The service keeps its certificates; from now on only
    /// `to` may enroll it again. Returns the previous owner.
    pub fn transfer_service(&self, serial: &str, to: &str) -> Result<Option<String>, StoreError> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let user: Option<String> = tx
            .query_row(
                "SELECT email FROM users WHERE email = ?1",
                params![to],
                |r| r.get(0),
            )
            .optional()?;
        if user.is_none() {
            return Err(StoreError::NoSuchUser(to.into()));
        }
        let row: Option<(Option<String>, Vec<u8>)> = tx
            .query_row(
                "SELECT owner, fingerprint FROM services WHERE serial = ?1",
                params![serial],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let (previous, fingerprint) =
            row.ok_or_else(|| StoreError::NoSuchService(serial.into()))?;
        tx.execute(
            "UPDATE services SET owner = ?2 WHERE serial = ?1",
            params![serial, to],
        )?;
        let fingerprint: Option<[u8; 32]> = fingerprint.try_into().ok();
        insert_audit(
            &tx,
            serial,
            "transfer",
            "admin",
            to,
            previous.as_deref(),
            fingerprint.as_ref(),
        )?;
        tx.commit()?;
        Ok(previous)
    }

    /// The audit trail, oldest first; only `serial`'s rows when given.
    pub fn enrollment_audit(&self, serial: Option<&str>) -> Result<Vec<AuditRecord>, StoreError> {
        let db = self.db();
        let mut stmt = db.prepare(
            "SELECT at, serial, action, actor, owner, previous_owner, fingerprint \
             FROM enrollment_audit WHERE ?1 IS NULL OR serial = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map(params![serial], |r| {
            let fingerprint: Option<Vec<u8>> = r.get(6)?;
            Ok(AuditRecord {
                at: r.get::<_, i64>(0)? as u64,
                serial: r.get(1)?,
                action: r.get(2)?,
                actor: r.get(3)?,
                owner: r.get(4)?,
                previous_owner: r.get(5)?,
                fingerprint: fingerprint.and_then(|f| f.try_into().ok()),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every enrolled service, by serial.
    pub fn services(&self) -> Result<Vec<ServiceRecord>, StoreError> {
        let db = self.db();
        let mut stmt = db.prepare(
            "SELECT serial, fingerprint, advertise, owner FROM services ORDER BY serial",
        )?;
        let rows = stmt.query_map([], service_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn record_cert(
        &self,
        fingerprint: &[u8; 32],
        kind: &str,
        subject: &str,
    ) -> Result<(), StoreError> {
        self.db().execute(
            "INSERT OR REPLACE INTO certs (fingerprint, kind, subject, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![fingerprint.as_slice(), kind, subject, now() as i64],
        )?;
        Ok(())
    }

    /// The subject of a certificate this relay issued as `kind` (and did
    /// not revoke).
    pub fn cert_subject(
        &self,
        fingerprint: &[u8; 32],
        kind: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(self
            .db()
            .query_row(
                "SELECT subject FROM certs WHERE fingerprint = ?1 AND kind = ?2 AND revoked = 0",
                params![fingerprint.as_slice(), kind],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub fn service(&self, serial: &str) -> Result<Option<ServiceRecord>, StoreError> {
        Ok(self
            .db()
            .query_row(
                "SELECT serial, fingerprint, advertise, owner FROM services WHERE serial = ?1",
                params![serial],
                service_row,
            )
            .optional()?)
    }

    /// Every certificate the CA issued, oldest first.
    pub fn certs(&self) -> Result<Vec<CertRecord>, StoreError> {
        let db = self.db();
        let mut stmt = db.prepare(
            "SELECT fingerprint, kind, subject, revoked, created_at FROM certs ORDER BY created_at, subject",
        )?;
        let rows = stmt.query_map([], |r| {
            let fp: Vec<u8> = r.get(0)?;
            Ok(CertRecord {
                fingerprint: fp.try_into().unwrap_or([0; 32]),
                kind: r.get(1)?,
                subject: r.get(2)?,
                revoked: r.get::<_, i64>(3)? != 0,
                created_at: r.get::<_, i64>(4)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Revokes a certificate: logins with it are refused, and a relay
    /// running on this database closes the connections that used it.
    pub fn revoke_cert(&self, fingerprint: &[u8; 32]) -> Result<(), StoreError> {
        let changed = self.db().execute(
            "UPDATE certs SET revoked = 1 WHERE fingerprint = ?1",
            params![fingerprint.as_slice()],
        )?;
        if changed == 0 {
            return Err(StoreError::NoSuchCert(
                Fingerprint(*fingerprint).to_string(),
            ));
        }
        self.changed();
        Ok(())
    }

    /// Stores a new device grant unless `max_pending` unexpired ones are
    /// open, first deleting grants expired longer than [`EXPIRED_KEPT`]
    /// ago. `now` in Unix milliseconds.
    pub fn start_grant(
        &self,
        grant: &GrantRecord,
        max_pending: usize,
        now: u64,
    ) -> Result<GrantStart, StoreError> {
        let mut db = self.db();
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "DELETE FROM device_grants WHERE expires_at <= ?1",
            params![now.saturating_sub(EXPIRED_KEPT.as_millis() as u64) as i64],
        )?;
        let open: i64 = tx.query_row(
            "SELECT count(*) FROM device_grants WHERE expires_at > ?1",
            params![now as i64],
            |r| r.get(0),
        )?;
        if open as usize >= max_pending {
            tx.commit()?;
            return Ok(GrantStart::TooManyPending);
        }
        let (state, approved_by) = grant.decision.to_columns();
        let inserted = tx.execute(
            "INSERT OR IGNORE INTO device_grants (device_hash, user_code, login_hint, expires_at, \
             poll_interval_ms, last_poll, state, approved_by, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                grant.device_hash.as_slice(),
                grant.user_code,
                grant.login_hint,
                grant.expires_at as i64,
                grant.interval as i64,
                grant.last_poll.map(|t| t as i64),
                state,
                approved_by,
                now as i64
            ],
        )?;
        tx.commit()?;
        Ok(if inserted == 0 {
            GrantStart::CodeTaken
        } else {
            GrantStart::Started
        })
    }

    /// Runs a device-flow rule on the grant `key` names (`None`: no such
    /// grant) inside one transaction holding the database's write lock,
    /// then saves or deletes the row as the rule says.
    pub fn update_grant<R>(
        &self,
        key: GrantKey<'_>,
        rule: impl FnOnce(Option<&mut GrantRecord>) -> (R, GrantWrite),
    ) -> Result<R, StoreError> {
        let mut db = self.db();
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut grant = match key {
            GrantKey::UserCode(code) => tx
                .query_row(
                    &format!("{GRANT_SELECT} WHERE user_code = ?1"),
                    params![super::device_flow::normalize_user_code(code)],
                    grant_row,
                )
                .optional()?,
            GrantKey::Device(hash) => tx
                .query_row(
                    &format!("{GRANT_SELECT} WHERE device_hash = ?1"),
                    params![hash.as_slice()],
                    grant_row,
                )
                .optional()?,
        };
        let (result, write) = rule(grant.as_mut());
        if let Some(grant) = &grant {
            match write {
                GrantWrite::Keep => {}
                GrantWrite::Save => {
                    let (state, approved_by) = grant.decision.to_columns();
                    tx.execute(
                        "UPDATE device_grants SET poll_interval_ms = ?2, last_poll = ?3, \
                         state = ?4, approved_by = ?5 WHERE device_hash = ?1",
                        params![
                            grant.device_hash.as_slice(),
                            grant.interval as i64,
                            grant.last_poll.map(|t| t as i64),
                            state,
                            approved_by
                        ],
                    )?;
                }
                GrantWrite::Delete => {
                    tx.execute(
                        "DELETE FROM device_grants WHERE device_hash = ?1",
                        params![grant.device_hash.as_slice()],
                    )?;
                }
            }
        }
        tx.commit()?;
        Ok(result)
    }

    /// Device grants not yet expired at `now` (Unix milliseconds).
    pub fn pending_grants(&self, now: u64) -> Result<usize, StoreError> {
        let n: i64 = self.db().query_row(
            "SELECT count(*) FROM device_grants WHERE expires_at > ?1",
            params![now as i64],
            |r| r.get(0),
        )?;
        Ok(n as usize)
    }
}

const GRANT_SELECT: &str = "SELECT device_hash, user_code, login_hint, expires_at, \
     poll_interval_ms, last_poll, state, approved_by FROM device_grants";

fn grant_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<GrantRecord> {
    let hash: Vec<u8> = r.get(0)?;
    Ok(GrantRecord {
        device_hash: hash.try_into().unwrap_or([0; 32]),
        user_code: r.get(1)?,
        login_hint: r.get(2)?,
        expires_at: r.get::<_, i64>(3)? as u64,
        interval: r.get::<_, i64>(4)? as u64,
        last_poll: r.get::<_, Option<i64>>(5)?.map(|t| t as u64),
        decision: Decision::from_columns(&r.get::<_, String>(6)?, r.get(7)?),
    })
}

/// The serial's current owner if `user` may enroll it (`None`: new serial).
fn check_owner(db: &Connection, serial: &str, user: &str) -> Result<Option<String>, StoreError> {
    let owner: Option<Option<String>> = db
        .query_row(
            "SELECT owner FROM services WHERE serial = ?1",
            params![serial],
            |r| r.get(0),
        )
        .optional()?;
    match owner {
        None => Ok(None),
        Some(Some(owner)) if owner == user => Ok(Some(owner)),
        Some(Some(_)) => Err(StoreError::SerialOwned {
            serial: serial.into(),
        }),
        Some(None) => Err(StoreError::SerialUnowned {
            serial: serial.into(),
        }),
    }
}

#[allow(clippy::too_many_arguments)]
fn insert_audit(
    db: &Connection,
    serial: &str,
    action: &str,
    actor: &str,
    owner: &str,
    previous_owner: Option<&str>,
    fingerprint: Option<&[u8; 32]>,
) -> Result<(), StoreError> {
    db.execute(
        "INSERT INTO enrollment_audit (at, serial, action, actor, owner, previous_owner, fingerprint) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            now() as i64,
            serial,
            action,
            actor,
            owner,
            previous_owner,
            fingerprint.map(|f| f.to_vec())
        ],
    )?;
    Ok(())
}

fn service_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ServiceRecord> {
    let fp: Vec<u8> = r.get(1)?;
    Ok(ServiceRecord {
        serial: r.get(0)?,
        fingerprint: fp.try_into().unwrap_or([0; 32]),
        advertise: r.get(2)?,
        owner: r.get(3)?,
    })
}

fn token_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRecord> {
    Ok(TokenRecord {
        id: r.get(0)?,
        email: r.get(1)?,
        kind: r.get(2)?,
        expires_at: r.get::<_, i64>(3)? as u64,
        revoked: r.get::<_, i64>(4)? != 0,
    })
}

fn otp_hash(otp: &Secret) -> Vec<u8> {
    Sha256::digest(otp.expose().trim().as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::device_flow::{
        DecideError, DeviceFlowConfig, PollError, device_code_hash, new_grant,
    };

    fn store() -> (tempfile::TempDir, RelayStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = RelayStore::open(&dir.path().join("relay.db")).unwrap();
        (dir, store)
    }

    #[test]
    fn users_sign_in_only_with_their_password_while_enabled() {
        let (_dir, store) = store();
        store.add_user("a@x", &Secret::new("pw-a")).unwrap();
        assert!(matches!(
            store.add_user("a@x", &Secret::new("other")),
            Err(StoreError::UserExists(_))
        ));
        assert!(store.verify_user("a@x", &Secret::new("pw-a")).unwrap());
        assert!(!store.verify_user("a@x", &Secret::new("wrong")).unwrap());
        assert!(!store.verify_user("b@x", &Secret::new("pw-a")).unwrap());
        store.set_user_enabled("a@x", false).unwrap();
        assert!(!store.verify_user("a@x", &Secret::new("pw-a")).unwrap());
        assert_eq!(
            store.users().unwrap(),
            vec![RelayUser {
                email: "a@x".into(),
                enabled: false
            }]
        );
    }

    fn request(byte: u8) -> EnrollRequest {
        EnrollRequest {
            fingerprint: [byte; 32],
            advertise: None,
        }
    }

    /// A stand-in for the CA: a distinct "certificate" per call.
    fn issue(serial: &str) -> Result<Vec<u8>, String> {
        Ok(format!("cert-{serial}-{}", rand::random::<u64>()).into_bytes())
    }

    #[test]
    fn an_otp_works_once_and_not_after_expiry() {
        let (_dir, store) = store();
        let otp = Secret::new("otp-1");
        store.add_otp(&otp, "SN1", "a@x", now() + 60).unwrap();
        let enrolled = store.enroll_with_otp(&otp, &request(1), issue).unwrap();
        assert_eq!(
            (enrolled.serial.as_str(), enrolled.owner.as_str()),
            ("SN1", "a@x")
        );
        assert!(matches!(
            store.enroll_with_otp(&otp, &request(1), issue),
            Err(StoreError::OtpUsed)
        ));
        let old = Secret::new("otp-2");
        store.add_otp(&old, "SN2", "a@x", now() - 1).unwrap();
        assert!(matches!(
            store.enroll_with_otp(&old, &request(1), issue),
            Err(StoreError::OtpExpired)
        ));
        assert!(matches!(
            store.enroll_with_otp(&Secret::new("nope"), &request(1), issue),
            Err(StoreError::OtpUnknown)
        ));
    }

    #[test]
    fn a_serial_belongs_to_its_first_enroller_until_an_admin_transfers_it() {
        let (_dir, store) = store();
        store.add_user("a@x", &Secret::new("pw")).unwrap();
        store.add_user("m@x", &Secret::new("pw")).unwrap();
        // Both mint before anyone enrolls: the first redemption claims it.
        let alice = Secret::new("otp-a");
        let mallory = Secret::new("otp-m");
        store.add_otp(&alice, "SN1", "a@x", now() + 60).unwrap();
        store.add_otp(&mallory, "SN1", "m@x", now() + 60).unwrap();
        let first = store.enroll_with_otp(&alice, &request(1), issue).unwrap();
        assert_eq!(first.action, "enroll");
        let err = store
            .enroll_with_otp(&mallory, &request(2), issue)
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::SerialOwned { serial } if serial == "SN1"),
            "{err}"
        );
        assert!(err.to_string().contains("another user"), "{err}");
        // Spent: it cannot be retried after a transfer either.
        assert!(matches!(
            store.enroll_with_otp(&mallory, &request(2), issue),
            Err(StoreError::OtpUsed)
        ));
        assert!(store.check_may_enroll("SN1", "m@x").is_err());
        store.check_may_enroll("SN1", "a@x").unwrap();
        store.check_may_enroll("SN-NEW", "m@x").unwrap();
        let record = store.service("SN1").unwrap().unwrap();
        assert_eq!(
            (record.owner.as_deref(), record.fingerprint),
            (Some("a@x"), [1; 32])
        );

        // Re-enrollment by the owner revokes the older certificate.
        let again = Secret::new("otp-a2");
        store.add_otp(&again, "SN1", "a@x", now() + 60).unwrap();
        let second = store.enroll_with_otp(&again, &request(3), issue).unwrap();
        assert_eq!(second.action, "reenroll");
        let old = Fingerprint::of(&first.cert_der).0;
        let new = Fingerprint::of(&second.cert_der).0;
        assert_eq!(store.cert_subject(&old, "service").unwrap(), None);
        assert_eq!(
            store.cert_subject(&new, "service").unwrap().as_deref(),
            Some("SN1")
        );

        // The administrator gives it to m@x: now only m@x may enroll it.
        assert!(matches!(
            store.transfer_service("SN1", "nobody@x"),
            Err(StoreError::NoSuchUser(_))
        ));
        assert!(matches!(
            store.transfer_service("SN-NONE", "m@x"),
            Err(StoreError::NoSuchService(_))
        ));
        assert_eq!(
            store.transfer_service("SN1", "m@x").unwrap().as_deref(),
            Some("a@x")
        );
        store.check_may_enroll("SN1", "m@x").unwrap();
        assert!(store.check_may_enroll("SN1", "a@x").is_err());
        let trail: Vec<(String, String, String)> = store
            .enrollment_audit(Some("SN1"))
            .unwrap()
            .into_iter()
            .map(|a| (a.action, a.actor, a.owner))
            .collect();
        assert_eq!(
            trail,
            [
                ("enroll".into(), "a@x".into(), "a@x".into()),
                ("reenroll".into(), "a@x".into(), "a@x".into()),
                ("transfer".into(), "admin".into(), "m@x".into()),
            ]
        );
    }

    #[test]
    fn an_older_database_gets_owners_from_the_otps_that_enrolled_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(SCHEMA[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute_batch(
                "INSERT INTO otps VALUES (x'00', 'SN1', 'a@x', 0, 5);
                 INSERT INTO services VALUES ('SN1', x'01', NULL, 5);
                 INSERT INTO services VALUES ('SN2', x'02', NULL, 5);",
            )
            .unwrap();
        }
        let store = RelayStore::open(&path).unwrap();
        assert_eq!(
            store.service("SN1").unwrap().unwrap().owner.as_deref(),
            Some("a@x")
        );
        assert_eq!(store.service("SN2").unwrap().unwrap().owner, None);
        assert!(matches!(
            store.check_may_enroll("SN2", "a@x"),
            Err(StoreError::SerialUnowned { .. })
        ));
    }

    #[test]
    fn revocations_through_this_handle_change_the_generation() {
        let (_dir, store) = store();
        store.add_user("a@x", &Secret::new("pw")).unwrap();
        let before = store.generation().unwrap();
        store.set_user_enabled("a@x", false).unwrap();
        let after_local = store.generation().unwrap();
        assert_ne!(after_local, before);
        // An admin command is another connection to the same file.
        let admin = RelayStore::open(&_dir.path().join("relay.db")).unwrap();
        admin.set_user_enabled("a@x", true).unwrap();
        assert_ne!(store.generation().unwrap(), after_local);
    }

    fn grant_record(config: &DeviceFlowConfig, now: u64) -> (String, GrantRecord) {
        let (new, record) = new_grant(config, None, now);
        (new.device_code, record)
    }

    /// Grants live in the database: a second handle on the file (another
    /// process) approves and redeems what the first started; a user code
    /// is decided once; starts are capped; expired grants are told so once
    /// and deleted, and older ones are deleted by the next start.
    #[test]
    fn device_grants_are_shared_decided_once_and_purged() {
        let (dir, store) = store();
        let other = RelayStore::open(&dir.path().join("relay.db")).unwrap();
        let config = DeviceFlowConfig {
            lifetime: std::time::Duration::from_secs(60),
            ..Default::default()
        };
        let t0 = 1_000_000_000;
        let (code, grant) = grant_record(&config, t0);
        assert_eq!(
            store.start_grant(&grant, 2, t0).unwrap(),
            GrantStart::Started
        );
        let stored: Vec<u8> = store
            .db()
            .query_row("SELECT device_hash FROM device_grants", [], |r| r.get(0))
            .unwrap();
        assert_eq!(stored, device_code_hash(&code).to_vec());
        assert_ne!(stored, code.as_bytes(), "only the hash is stored");
        // The same user code again is refused (the caller makes another).
        let (_, mut twin) = grant_record(&config, t0);
        twin.user_code = grant.user_code.clone();
        assert_eq!(
            store.start_grant(&twin, 2, t0).unwrap(),
            GrantStart::CodeTaken
        );

        let typed = grant.user_code.to_lowercase();
        let decide = |s: &RelayStore| {
            s.update_grant(GrantKey::UserCode(&typed), |g| {
                GrantRecord::decide(g, "a@x", true, t0 + 1)
            })
            .unwrap()
        };
        assert_eq!(decide(&other), Ok(()));
        assert_eq!(decide(&store), Err(DecideError::AlreadyDecided));
        let hash = device_code_hash(&code);
        let poll = |s: &RelayStore, at| {
            s.update_grant(GrantKey::Device(&hash), |g| GrantRecord::poll(g, at))
                .unwrap()
        };
        assert_eq!(poll(&other, t0 + 2), Ok("a@x".to_string()));
        assert_eq!(poll(&store, t0 + 10_000), Err(PollError::InvalidGrant));

        // The cap counts unexpired grants only.
        let (late, expiring) = grant_record(&config, t0);
        store.start_grant(&expiring, 2, t0).unwrap();
        store
            .start_grant(&grant_record(&config, t0).1, 2, t0)
            .unwrap();
        assert_eq!(
            store
                .start_grant(&grant_record(&config, t0).1, 2, t0)
                .unwrap(),
            GrantStart::TooManyPending
        );
        let expired = t0 + 60_000;
        assert_eq!(store.pending_grants(expired).unwrap(), 0);
        let late_hash = device_code_hash(&late);
        assert_eq!(
            store
                .update_grant(GrantKey::Device(&late_hash), |g| GrantRecord::poll(
                    g, expired
                ))
                .unwrap(),
            Err(PollError::ExpiredToken)
        );
        let rows = |s: &RelayStore| -> i64 {
            s.db()
                .query_row("SELECT count(*) FROM device_grants", [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(rows(&store), 1, "the expired grant told so is deleted");
        // A start after EXPIRED_KEPT deletes the rest.
        let later = expired + EXPIRED_KEPT.as_millis() as u64;
        store
            .start_grant(&grant_record(&config, later).1, 2, later)
            .unwrap();
        assert_eq!(rows(&store), 1, "only the new grant is left");
    }

    #[test]
    fn revoked_tokens_stay_listed_as_revoked() {
        let (_dir, store) = store();
        let record = TokenRecord {
            id: "t1".into(),
            email: "a@x".into(),
            kind: "api".into(),
            expires_at: now() + 60,
            revoked: false,
        };
        store.record_token(&record).unwrap();
        store.revoke_token("t1").unwrap();
        assert!(store.token("t1").unwrap().unwrap().revoked);
        assert_eq!(store.api_tokens().unwrap().len(), 1);
        assert!(matches!(
            store.revoke_token("t2"),
            Err(StoreError::NoSuchToken(_))
        ));
    }
}
