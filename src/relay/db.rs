//! The relay's durable state as the running relay and the admin commands
//! use it: one interface, two implementations.
//!
//! * [`Database::Sqlite`] — [`RelayStore`], the file `relay.db` in the
//!   state directory: one node, nothing else to install (the default).
//! * [`Database::Postgres`] — [`PgStore`]: a tier of nodes sharing one
//!   PostgreSQL database (`relay run --database postgres://...`).
//!
//! Both keep the same records under the same rules (see their modules);
//! the SQLite calls are short and run in place, as they always have.
//! Which one is chosen by [`Database::open`].

use std::sync::Arc;

use super::device_flow::{GrantKey, GrantRecord, GrantWrite};
use super::pg::PgStore;
use super::pg::presence::NodeRecord;
use super::store::{
    AuditRecord, CertRecord, EnrollRequest, Enrolled, GrantStart, RelayStore, RelayUser,
    ServiceRecord, StoreError, TokenRecord,
};
use crate::password;
use crate::secret::Secret;

/// The relay store: SQLite (one node) or PostgreSQL (a tier).
#[derive(Clone)]
pub enum Database {
    Sqlite(Arc<RelayStore>),
    Postgres(Arc<PgStore>),
}

impl Database {
    /// `url` given: PostgreSQL (connecting and migrating); else the SQLite
    /// file `relay.db` in the state directory `dir`.
    pub async fn open(dir: &std::path::Path, url: Option<&str>) -> Result<Self, StoreError> {
        match url {
            Some(url) => Ok(Self::Postgres(Arc::new(PgStore::open(url).await?))),
            None => Ok(Self::Sqlite(Arc::new(RelayStore::open(
                &dir.join("relay.db"),
            )?))),
        }
    }

    /// `postgresql` or `sqlite`, for logs and `relay nodes`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgresql",
        }
    }

    /// Starts following other nodes' changes (PostgreSQL `LISTEN`); the
    /// returned notify wakes on each. `None` for SQLite, where
    /// [`Database::generation`] is polled instead.
    pub fn start_change_feed(&self) -> Option<Arc<tokio::sync::Notify>> {
        match self {
            Self::Sqlite(_) => None,
            Self::Postgres(p) => Some(p.start_change_feed()),
        }
    }

    /// Changes when anything that can end a live credential may have
    /// changed (see each store's `generation`).
    pub fn generation(&self) -> Result<(u64, u64), StoreError> {
        match self {
            Self::Sqlite(s) => s.generation(),
            Self::Postgres(p) => Ok(p.generation()),
        }
    }

    /// Adds a user (the password hashed with Argon2id first).
    pub async fn add_user(&self, email: &str, password: &Secret) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(s) => s.add_user(email, password),
            Self::Postgres(p) => {
                let hash = password::hash_password(password)?;
                p.add_user(email, &hash).await
            }
        }
    }

    pub async fn users(&self) -> Result<Vec<RelayUser>, StoreError> {
        match self {
            Self::Sqlite(s) => s.users(),
            Self::Postgres(p) => p.users().await,
        }
    }

    pub async fn set_user_enabled(&self, email: &str, enabled: bool) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(s) => s.set_user_enabled(email, enabled),
            Self::Postgres(p) => p.set_user_enabled(email, enabled).await,
        }
    }

    pub async fn user_enabled(&self, email: &str) -> Result<bool, StoreError> {
        match self {
            Self::Sqlite(s) => s.user_enabled(email),
            Self::Postgres(p) => p.user_enabled(email).await,
        }
    }

    /// Checks a sign-in on the hashing pool ([`password::hashing`]): one
    /// Argon2id verification whether or not the user exists.
    pub async fn verify_user(&self, email: &str, password: Secret) -> Result<bool, StoreError> {
        let hashing_stopped = |e: tokio::task::JoinError| StoreError::Hashing(e.to_string());
        match self {
            Self::Sqlite(s) => {
                let (s, email) = (s.clone(), email.to_string());
                password::hashing(move || s.verify_user(&email, &password))
                    .await
                    .map_err(hashing_stopped)?
            }
            Self::Postgres(p) => {
                let (hash, enabled) = p
                    .password_row(email)
                    .await?
                    .unwrap_or_else(|| (password::DUMMY_HASH.to_string(), false));
                let ok = password::hashing(move || {
                    password::verify_password(&hash, &password).unwrap_or(false)
                })
                .await
                .map_err(hashing_stopped)?;
                Ok(ok && enabled)
            }
        }
    }

    pub async fn record_token(&self, record: &TokenRecord) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(s) => s.record_token(record),
            Self::Postgres(p) => p.record_token(record).await,
        }
    }

    pub async fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        match self {
            Self::Sqlite(s) => s.token(id),
            Self::Postgres(p) => p.token(id).await,
        }
    }

    /// Long-lived access tokens (not the short SSO access/refresh pairs).
    pub async fn api_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        match self {
            Self::Sqlite(s) => s.api_tokens(),
            Self::Postgres(p) => p.api_tokens().await,
        }
    }

    pub async fn revoke_token(&self, id: &str) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(s) => s.revoke_token(id),
            Self::Postgres(p) => p.revoke_token(id).await,
        }
    }

    pub async fn add_otp(
        &self,
        otp: &Secret,
        serial: &str,
        created_by: &str,
        expires_at: u64,
    ) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(s) => s.add_otp(otp, serial, created_by, expires_at),
            Self::Postgres(p) => p.add_otp(otp, serial, created_by, expires_at).await,
        }
    }

    /// Whether `user` may mint a one-time password for `serial`.
    pub async fn check_may_enroll(&self, serial: &str, user: &str) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(s) => s.check_may_enroll(serial, user),
            Self::Postgres(p) => p.check_may_enroll(serial, user).await,
        }
    }

    /// Redeems a one-time password and enrolls its serial in one
    /// transaction (see [`RelayStore::enroll_with_otp`]); of two
    /// redemptions at once, on any nodes, exactly one wins.
    pub async fn enroll_with_otp(
        &self,
        otp: &Secret,
        request: &EnrollRequest,
        issue: impl FnOnce(&str) -> Result<Vec<u8>, String>,
    ) -> Result<Enrolled, StoreError> {
        match self {
            Self::Sqlite(s) => s.enroll_with_otp(otp, request, issue),
            Self::Postgres(p) => p.enroll_with_otp(otp, request, issue).await,
        }
    }

    /// Gives `serial` to user `to` (an administrator's act); returns the
    /// previous owner.
    pub async fn transfer_service(
        &self,
        serial: &str,
        to: &str,
    ) -> Result<Option<String>, StoreError> {
        match self {
            Self::Sqlite(s) => s.transfer_service(serial, to),
            Self::Postgres(p) => p.transfer_service(serial, to).await,
        }
    }

    pub async fn enrollment_audit(
        &self,
        serial: Option<&str>,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        match self {
            Self::Sqlite(s) => s.enrollment_audit(serial),
            Self::Postgres(p) => p.enrollment_audit(serial).await,
        }
    }

    pub async fn services(&self) -> Result<Vec<ServiceRecord>, StoreError> {
        match self {
            Self::Sqlite(s) => s.services(),
            Self::Postgres(p) => p.services().await,
        }
    }

    pub async fn service(&self, serial: &str) -> Result<Option<ServiceRecord>, StoreError> {
        match self {
            Self::Sqlite(s) => s.service(serial),
            Self::Postgres(p) => p.service(serial).await,
        }
    }

    pub async fn record_cert(
        &self,
        fingerprint: &[u8; 32],
        kind: &str,
        subject: &str,
    ) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(s) => s.record_cert(fingerprint, kind, subject),
            Self::Postgres(p) => p.record_cert(fingerprint, kind, subject).await,
        }
    }

    /// The subject of a certificate issued as `kind` and not revoked.
    pub async fn cert_subject(
        &self,
        fingerprint: &[u8; 32],
        kind: &str,
    ) -> Result<Option<String>, StoreError> {
        match self {
            Self::Sqlite(s) => s.cert_subject(fingerprint, kind),
            Self::Postgres(p) => p.cert_subject(fingerprint, kind).await,
        }
    }

    pub async fn certs(&self) -> Result<Vec<CertRecord>, StoreError> {
        match self {
            Self::Sqlite(s) => s.certs(),
            Self::Postgres(p) => p.certs().await,
        }
    }

    pub async fn revoke_cert(&self, fingerprint: &[u8; 32]) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(s) => s.revoke_cert(fingerprint),
            Self::Postgres(p) => p.revoke_cert(fingerprint).await,
        }
    }

    // Device grants (RFC 8628), shared by every node of a tier.

    /// Stores a new device grant unless `max_pending` are open (see
    /// [`RelayStore::start_grant`]); `now` in Unix milliseconds.
    pub async fn start_grant(
        &self,
        grant: &GrantRecord,
        max_pending: usize,
        now: u64,
    ) -> Result<GrantStart, StoreError> {
        match self {
            Self::Sqlite(s) => s.start_grant(grant, max_pending, now),
            Self::Postgres(p) => p.start_grant(grant, max_pending, now).await,
        }
    }

    /// Runs a `device_flow` rule on grant `key` holding its row, then
    /// saves or deletes it as the rule says (see [`RelayStore::update_grant`]).
    pub async fn update_grant<R: Send>(
        &self,
        key: GrantKey<'_>,
        rule: impl FnOnce(Option<&mut GrantRecord>) -> (R, GrantWrite) + Send,
    ) -> Result<R, StoreError> {
        match self {
            Self::Sqlite(s) => s.update_grant(key, rule),
            Self::Postgres(p) => p.update_grant(key, rule).await,
        }
    }

    /// Device grants open (not expired) at `now` (Unix milliseconds).
    pub async fn pending_grants(&self, now: u64) -> Result<usize, StoreError> {
        match self {
            Self::Sqlite(s) => s.pending_grants(now),
            Self::Postgres(p) => p.pending_grants(now).await,
        }
    }

    // Presence (a tier's; nothing to record for a single SQLite node).

    /// Stamps this node's heartbeat with its load; true when its row was
    /// (re)created and its services must be recorded again.
    pub async fn heartbeat(
        &self,
        node: &str,
        quic: &str,
        load: super::pg::presence::NodeLoadReport,
    ) -> Result<bool, StoreError> {
        match self {
            Self::Sqlite(_) => Ok(false),
            Self::Postgres(p) => p.heartbeat(node, quic, load).await,
        }
    }

    /// Records node `id`'s certificate again unless it is recorded
    /// (PostgreSQL; see `pg::presence`).
    pub async fn keep_node_cert(&self, fingerprint: &[u8; 32], id: &str) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(_) => Ok(()),
            Self::Postgres(p) => p.keep_node_cert(fingerprint, id).await,
        }
    }

    /// Service `serial` is connected to node `node`.
    pub async fn set_present(&self, serial: &str, node: &str) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(_) => Ok(()),
            Self::Postgres(p) => p.set_present(serial, node).await,
        }
    }

    /// Service `serial` left node `node`.
    pub async fn clear_present(&self, serial: &str, node: &str) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(_) => Ok(()),
            Self::Postgres(p) => p.clear_present(serial, node).await,
        }
    }

    /// The live node another node must forward to for `serial`: (id, QUIC
    /// address); always `None` on SQLite (one node).
    pub async fn locate(&self, serial: &str) -> Result<Option<(String, String)>, StoreError> {
        match self {
            Self::Sqlite(_) => Ok(None),
            Self::Postgres(p) => p.locate(serial).await,
        }
    }

    /// The tier's nodes (empty on SQLite).
    pub async fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        match self {
            Self::Sqlite(_) => Ok(Vec::new()),
            Self::Postgres(p) => p.nodes().await,
        }
    }
}
