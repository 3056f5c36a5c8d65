//! The relay's database (SQLite, WAL): its identity provider's users, every
//! token it issued (for listing and revocation), enrollment one-time
//! passwords, the certificates its CA issued, and enrolled services.
//!
//! **Invariant:** no secret is stored in the clear: passwords are Argon2id
//! hashes and one-time passwords are stored as SHA-256 hashes (they are
//! random and short-lived, so a slow hash buys nothing).

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};

use crate::password;
use crate::secret::Secret;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("relay database: {0}")]
    Db(#[from] rusqlite::Error),
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
}

const SCHEMA: &[&str] = &[r#"
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
"#];

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
}

pub struct RelayStore {
    conn: Mutex<Connection>,
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
        })
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

    /// Marks the one-time password used and returns its serial. Atomic: of
    /// two concurrent redemptions exactly one wins.
    pub fn redeem_otp(&self, otp: &Secret) -> Result<String, StoreError> {
        let hash = otp_hash(otp);
        let mut db = self.db();
        let tx = db.transaction()?;
        let row: Option<(String, i64, Option<i64>)> = tx
            .query_row(
                "SELECT serial, expires_at, used_at FROM otps WHERE hash = ?1",
                params![hash],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let (serial, expires_at, used_at) = row.ok_or(StoreError::OtpUnknown)?;
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
        tx.commit()?;
        Ok(serial)
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

    pub fn upsert_service(&self, record: &ServiceRecord) -> Result<(), StoreError> {
        self.db().execute(
            "INSERT OR REPLACE INTO services (serial, fingerprint, advertise, enrolled_at) VALUES (?1, ?2, ?3, ?4)",
            params![record.serial, record.fingerprint.as_slice(), record.advertise, now() as i64],
        )?;
        Ok(())
    }

    pub fn service(&self, serial: &str) -> Result<Option<ServiceRecord>, StoreError> {
        Ok(self
            .db()
            .query_row(
                "SELECT serial, fingerprint, advertise FROM services WHERE serial = ?1",
                params![serial],
                |r| {
                    let fp: Vec<u8> = r.get(1)?;
                    Ok(ServiceRecord {
                        serial: r.get(0)?,
                        fingerprint: fp.try_into().unwrap_or([0; 32]),
                        advertise: r.get(2)?,
                    })
                },
            )
            .optional()?)
    }
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

    #[test]
    fn an_otp_works_once_and_not_after_expiry() {
        let (_dir, store) = store();
        let otp = Secret::new("otp-1");
        store.add_otp(&otp, "SN1", "a@x", now() + 60).unwrap();
        assert_eq!(store.redeem_otp(&otp).unwrap(), "SN1");
        assert!(matches!(store.redeem_otp(&otp), Err(StoreError::OtpUsed)));
        let old = Secret::new("otp-2");
        store.add_otp(&old, "SN2", "a@x", now() - 1).unwrap();
        assert!(matches!(
            store.redeem_otp(&old),
            Err(StoreError::OtpExpired)
        ));
        assert!(matches!(
            store.redeem_otp(&Secret::new("nope")),
            Err(StoreError::OtpUnknown)
        ));
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
