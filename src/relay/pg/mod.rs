//! The relay's durable state on PostgreSQL, shared by every node of a
//! relay tier: the same records and rules as the SQLite store
//! ([`RelayStore`](super::store::RelayStore)), over `tokio-postgres`.
//!
//! Owns: a `conn::Pool` of connections and, once a running relay asks
//! for it ([`PgStore::start_change_feed`]), the `LISTEN` connection.
//!
//! **Invariant:** every change that can end a live credential (a token
//! revoked, a user disabled, a certificate revoked, a serial re-enrolled)
//! sends `NOTIFY` on [`conn::CHANGES_CHANNEL`] in the same transaction, so
//! every node learns of it at commit.
//!
//! **Invariant:** a one-time password is redeemed in one transaction that
//! holds its row lock (`SELECT ... FOR UPDATE`) and the serial's advisory
//! lock: of two redemptions on any nodes at once exactly one wins; the
//! other sees it used.
//!
//! **Invariant:** a device grant's rule runs in one transaction holding
//! its row (`FOR UPDATE`): of two approvals on any nodes at once exactly
//! one decides it, and it is redeemed once; starts hold an advisory lock
//! so the tier's open grants stay within `max_pending`.

pub mod conn;
pub mod presence;

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use tokio_postgres::GenericClient;
use tokio_postgres::types::ToSql;

use self::conn::{CHANGES_CHANNEL, ChangeFeed, Pool, Target};
use super::device_flow::{Decision, EXPIRED_KEPT, GrantKey, GrantRecord, GrantWrite};
use super::store::{
    AuditRecord, CertRecord, EnrollRequest, Enrolled, GrantStart, RelayUser, ServiceRecord,
    StoreError, TokenRecord,
};
use crate::secret::Secret;
use crate::wire::pin::Fingerprint;

/// What can go wrong talking to PostgreSQL.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("PostgreSQL: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("the database URL: {0}")]
    Url(String),
    #[error(
        "the database was migrated to version {database} by a newer relay; this relay knows \
         versions up to {known} (upgrade it)"
    )]
    Newer { database: i32, known: i32 },
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        StoreError::Pg(PgError::Db(e))
    }
}

/// The relay store on PostgreSQL.
pub struct PgStore {
    target: Target,
    pool: Pool,
    /// Changes this handle made (see [`PgStore::generation`]).
    local_changes: AtomicU64,
    feed: Mutex<Option<ChangeFeed>>,
}

fn now() -> i64 {
    crate::relay::unix_now() as i64
}

fn otp_hash(otp: &Secret) -> Vec<u8> {
    Sha256::digest(otp.expose().trim().as_bytes()).to_vec()
}

impl PgStore {
    /// Connects to `url` (`postgres://...`) and applies the migrations
    /// this relay has and the database lacks.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let target = Target::parse(url)?;
        let pool = Pool::new(target.clone());
        pool.migrate().await?;
        Ok(Self {
            target,
            pool,
            local_changes: AtomicU64::new(0),
            feed: Mutex::new(None),
        })
    }

    /// Starts listening for other nodes' changes (idempotent); a running
    /// relay calls this, one-shot admin commands need not.
    pub fn start_change_feed(&self) -> std::sync::Arc<tokio::sync::Notify> {
        let mut feed = self.feed.lock().unwrap_or_else(|p| p.into_inner());
        feed.get_or_insert_with(|| ChangeFeed::start(self.target.clone()))
            .wake
            .clone()
    }

    /// Changes when anything that can end a live credential may have
    /// changed on any node (notifications received, and a count for each
    /// time the feed reconnected), or through this handle.
    pub fn generation(&self) -> (u64, u64) {
        let notified = self
            .feed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map_or(0, |f| f.counter.load(Ordering::Relaxed));
        (notified, self.local_changes.load(Ordering::Relaxed))
    }

    fn changed(&self) {
        self.local_changes.fetch_add(1, Ordering::Relaxed);
    }

    /// Runs one change statement and, when it changed a row, announces
    /// it to every node, in one transaction. Returns the rows changed.
    async fn announce(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        what: &str,
    ) -> Result<u64, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let changed = tx.execute(sql, params).await?;
        if changed > 0 {
            tx.execute("SELECT pg_notify($1, $2)", &[&CHANGES_CHANNEL, &what])
                .await?;
        }
        tx.commit().await?;
        if changed > 0 {
            self.changed();
        }
        Ok(changed)
    }

    /// Adds a user with an Argon2id `password_hash`.
    pub async fn add_user(&self, email: &str, password_hash: &str) -> Result<(), StoreError> {
        let inserted = self
            .pool
            .get()
            .await?
            .execute(
                "INSERT INTO users (email, password_hash, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (email) DO NOTHING",
                &[&email, &password_hash, &now()],
            )
            .await?;
        if inserted == 0 {
            return Err(StoreError::UserExists(email.into()));
        }
        Ok(())
    }

    pub async fn users(&self) -> Result<Vec<RelayUser>, StoreError> {
        let rows = self
            .pool
            .get()
            .await?
            .query("SELECT email, enabled FROM users ORDER BY email", &[])
            .await?;
        Ok(rows
            .iter()
            .map(|r| RelayUser {
                email: r.get(0),
                enabled: r.get(1),
            })
            .collect())
    }

    pub async fn set_user_enabled(&self, email: &str, enabled: bool) -> Result<(), StoreError> {
        let changed = self
            .announce(
                "UPDATE users SET enabled = $2 WHERE email = $1",
                &[&email, &enabled],
                "user",
            )
            .await?;
        if changed == 0 {
            return Err(StoreError::NoSuchUser(email.into()));
        }
        Ok(())
    }

    pub async fn user_enabled(&self, email: &str) -> Result<bool, StoreError> {
        Ok(self
            .pool
            .get()
            .await?
            .query_opt("SELECT enabled FROM users WHERE email = $1", &[&email])
            .await?
            .is_some_and(|r| r.get::<_, bool>(0)))
    }

    /// The user's password hash and whether they are enabled.
    pub async fn password_row(&self, email: &str) -> Result<Option<(String, bool)>, StoreError> {
        Ok(self
            .pool
            .get()
            .await?
            .query_opt(
                "SELECT password_hash, enabled FROM users WHERE email = $1",
                &[&email],
            )
            .await?
            .map(|r| (r.get(0), r.get(1))))
    }

    pub async fn record_token(&self, record: &TokenRecord) -> Result<(), StoreError> {
        self.pool
            .get()
            .await?
            .execute(
                "INSERT INTO tokens (id, email, kind, expires_at, created_at) VALUES ($1, $2, $3, $4, $5)",
                &[&record.id, &record.email, &record.kind, &(record.expires_at as i64), &now()],
            )
            .await?;
        Ok(())
    }

    pub async fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        Ok(self
            .pool
            .get()
            .await?
            .query_opt(
                "SELECT id, email, kind, expires_at, revoked FROM tokens WHERE id = $1",
                &[&id],
            )
            .await?
            .map(|r| token_row(&r)))
    }

    pub async fn api_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let rows = self
            .pool
            .get()
            .await?
            .query(
                "SELECT id, email, kind, expires_at, revoked FROM tokens WHERE kind = 'api' \
                 ORDER BY created_at, id",
                &[],
            )
            .await?;
        Ok(rows.iter().map(token_row).collect())
    }

    pub async fn revoke_token(&self, id: &str) -> Result<(), StoreError> {
        let changed = self
            .announce(
                "UPDATE tokens SET revoked = TRUE WHERE id = $1",
                &[&id],
                "token",
            )
            .await?;
        if changed == 0 {
            return Err(StoreError::NoSuchToken(id.into()));
        }
        Ok(())
    }

    pub async fn add_otp(
        &self,
        otp: &Secret,
        serial: &str,
        created_by: &str,
        expires_at: u64,
    ) -> Result<(), StoreError> {
        self.pool
            .get()
            .await?
            .execute(
                "INSERT INTO otps (hash, serial, created_by, expires_at) VALUES ($1, $2, $3, $4)",
                &[&otp_hash(otp), &serial, &created_by, &(expires_at as i64)],
            )
            .await?;
        Ok(())
    }

    pub async fn check_may_enroll(&self, serial: &str, user: &str) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        check_owner(&*client, serial, user).await.map(|_| ())
    }

    /// As [`RelayStore::enroll_with_otp`](super::store::RelayStore::enroll_with_otp),
    /// across nodes: the password's row is locked for the transaction, so a
    /// concurrent redemption waits and then finds it used.
    pub async fn enroll_with_otp(
        &self,
        otp: &Secret,
        request: &EnrollRequest,
        issue: impl FnOnce(&str) -> Result<Vec<u8>, String>,
    ) -> Result<Enrolled, StoreError> {
        let hash = otp_hash(otp);
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let row = tx
            .query_opt(
                "SELECT serial, created_by, expires_at, used_at FROM otps WHERE hash = $1 FOR UPDATE",
                &[&hash],
            )
            .await?
            .ok_or(StoreError::OtpUnknown)?;
        let (serial, owner, expires_at, used_at): (String, String, i64, Option<i64>) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        if used_at.is_some() {
            return Err(StoreError::OtpUsed);
        }
        if expires_at <= now() {
            return Err(StoreError::OtpExpired);
        }
        tx.execute(
            "UPDATE otps SET used_at = $2 WHERE hash = $1",
            &[&hash, &now()],
        )
        .await?;
        // Two passwords for one new serial: one claims it, the other then
        // sees its owner.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            &[&serial],
        )
        .await?;
        let previous = match check_owner(&tx, &serial, &owner).await {
            Ok(previous) => previous,
            Err(refused) => {
                // The password is spent either way.
                tx.commit().await?;
                return Err(refused);
            }
        };
        let cert_der = issue(&serial).map_err(StoreError::Issue)?;
        tx.execute(
            "UPDATE certs SET revoked = TRUE WHERE kind = 'service' AND subject = $1",
            &[&serial],
        )
        .await?;
        tx.execute(
            "INSERT INTO certs (fingerprint, kind, subject, created_at) VALUES ($1, 'service', $2, $3) \
             ON CONFLICT (fingerprint) DO UPDATE SET kind = EXCLUDED.kind, subject = EXCLUDED.subject, \
             revoked = FALSE, created_at = EXCLUDED.created_at",
            &[&Fingerprint::of(&cert_der).0.as_slice(), &serial, &now()],
        )
        .await?;
        tx.execute(
            "INSERT INTO services (serial, fingerprint, advertise, enrolled_at, owner) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (serial) DO UPDATE SET \
             fingerprint = EXCLUDED.fingerprint, advertise = EXCLUDED.advertise, \
             enrolled_at = EXCLUDED.enrolled_at, owner = EXCLUDED.owner",
            &[
                &serial,
                &request.fingerprint.as_slice(),
                &request.advertise,
                &now(),
                &owner,
            ],
        )
        .await?;
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
        )
        .await?;
        tx.execute("SELECT pg_notify($1, $2)", &[&CHANGES_CHANNEL, &"enroll"])
            .await?;
        tx.commit().await?;
        self.changed();
        Ok(Enrolled {
            serial,
            owner,
            action,
            cert_der,
        })
    }

    pub async fn transfer_service(
        &self,
        serial: &str,
        to: &str,
    ) -> Result<Option<String>, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        if tx
            .query_opt("SELECT email FROM users WHERE email = $1", &[&to])
            .await?
            .is_none()
        {
            return Err(StoreError::NoSuchUser(to.into()));
        }
        let row = tx
            .query_opt(
                "SELECT owner, fingerprint FROM services WHERE serial = $1 FOR UPDATE",
                &[&serial],
            )
            .await?
            .ok_or_else(|| StoreError::NoSuchService(serial.into()))?;
        let previous: Option<String> = row.get(0);
        let fingerprint: Option<[u8; 32]> = row.get::<_, Vec<u8>>(1).try_into().ok();
        tx.execute(
            "UPDATE services SET owner = $2 WHERE serial = $1",
            &[&serial, &to],
        )
        .await?;
        insert_audit(
            &tx,
            serial,
            "transfer",
            "admin",
            to,
            previous.as_deref(),
            fingerprint.as_ref(),
        )
        .await?;
        tx.commit().await?;
        Ok(previous)
    }

    pub async fn enrollment_audit(
        &self,
        serial: Option<&str>,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = self
            .pool
            .get()
            .await?
            .query(
                "SELECT at, serial, action, actor, owner, previous_owner, fingerprint \
                 FROM enrollment_audit WHERE $1::TEXT IS NULL OR serial = $1 ORDER BY id",
                &[&serial],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| AuditRecord {
                at: r.get::<_, i64>(0) as u64,
                serial: r.get(1),
                action: r.get(2),
                actor: r.get(3),
                owner: r.get(4),
                previous_owner: r.get(5),
                fingerprint: r
                    .get::<_, Option<Vec<u8>>>(6)
                    .and_then(|f| f.try_into().ok()),
            })
            .collect())
    }

    pub async fn services(&self) -> Result<Vec<ServiceRecord>, StoreError> {
        let rows = self
            .pool
            .get()
            .await?
            .query(
                "SELECT serial, fingerprint, advertise, owner FROM services ORDER BY serial",
                &[],
            )
            .await?;
        Ok(rows.iter().map(service_row).collect())
    }

    pub async fn service(&self, serial: &str) -> Result<Option<ServiceRecord>, StoreError> {
        Ok(self
            .pool
            .get()
            .await?
            .query_opt(
                "SELECT serial, fingerprint, advertise, owner FROM services WHERE serial = $1",
                &[&serial],
            )
            .await?
            .map(|r| service_row(&r)))
    }

    pub async fn record_cert(
        &self,
        fingerprint: &[u8; 32],
        kind: &str,
        subject: &str,
    ) -> Result<(), StoreError> {
        self.pool
            .get()
            .await?
            .execute(
                "INSERT INTO certs (fingerprint, kind, subject, created_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (fingerprint) DO UPDATE SET kind = EXCLUDED.kind, \
                 subject = EXCLUDED.subject, revoked = FALSE, created_at = EXCLUDED.created_at",
                &[&fingerprint.as_slice(), &kind, &subject, &now()],
            )
            .await?;
        Ok(())
    }

    pub async fn cert_subject(
        &self,
        fingerprint: &[u8; 32],
        kind: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(self
            .pool
            .get()
            .await?
            .query_opt(
                "SELECT subject FROM certs WHERE fingerprint = $1 AND kind = $2 AND NOT revoked",
                &[&fingerprint.as_slice(), &kind],
            )
            .await?
            .map(|r| r.get(0)))
    }

    pub async fn certs(&self) -> Result<Vec<CertRecord>, StoreError> {
        let rows = self
            .pool
            .get()
            .await?
            .query(
                "SELECT fingerprint, kind, subject, revoked, created_at FROM certs \
                 ORDER BY created_at, subject",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| CertRecord {
                fingerprint: r.get::<_, Vec<u8>>(0).try_into().unwrap_or([0; 32]),
                kind: r.get(1),
                subject: r.get(2),
                revoked: r.get(3),
                created_at: r.get::<_, i64>(4) as u64,
            })
            .collect())
    }

    pub async fn revoke_cert(&self, fingerprint: &[u8; 32]) -> Result<(), StoreError> {
        let changed = self
            .announce(
                "UPDATE certs SET revoked = TRUE WHERE fingerprint = $1",
                &[&fingerprint.as_slice()],
                "cert",
            )
            .await?;
        if changed == 0 {
            return Err(StoreError::NoSuchCert(
                Fingerprint(*fingerprint).to_string(),
            ));
        }
        Ok(())
    }
}

impl PgStore {
    /// As [`RelayStore::start_grant`](super::store::RelayStore::start_grant),
    /// for the whole tier: starts hold an advisory lock, so concurrent
    /// starts on several nodes never exceed `max_pending` together.
    pub async fn start_grant(
        &self,
        grant: &GrantRecord,
        max_pending: usize,
        now: u64,
    ) -> Result<GrantStart, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&GRANT_START_LOCK])
            .await?;
        tx.execute(
            "DELETE FROM device_grants WHERE expires_at <= $1",
            &[&(now.saturating_sub(EXPIRED_KEPT.as_millis() as u64) as i64)],
        )
        .await?;
        let open: i64 = tx
            .query_one(
                "SELECT count(*) FROM device_grants WHERE expires_at > $1",
                &[&(now as i64)],
            )
            .await?
            .get(0);
        if open as usize >= max_pending {
            tx.commit().await?;
            return Ok(GrantStart::TooManyPending);
        }
        let (state, approved_by) = grant.decision.to_columns();
        let inserted = tx
            .execute(
                "INSERT INTO device_grants (device_hash, user_code, login_hint, expires_at, \
                 poll_interval_ms, last_poll, state, approved_by, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
                &[
                    &grant.device_hash.as_slice(),
                    &grant.user_code,
                    &grant.login_hint,
                    &(grant.expires_at as i64),
                    &(grant.interval as i64),
                    &grant.last_poll.map(|t| t as i64),
                    &state,
                    &approved_by,
                    &(now as i64),
                ],
            )
            .await?;
        tx.commit().await?;
        Ok(if inserted == 0 {
            GrantStart::CodeTaken
        } else {
            GrantStart::Started
        })
    }

    /// As [`RelayStore::update_grant`](super::store::RelayStore::update_grant):
    /// the grant's row is locked (`FOR UPDATE`) while `rule` runs, so a
    /// concurrent call on any node waits and then sees the outcome.
    pub async fn update_grant<R>(
        &self,
        key: GrantKey<'_>,
        rule: impl FnOnce(Option<&mut GrantRecord>) -> (R, GrantWrite),
    ) -> Result<R, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let row = match key {
            GrantKey::UserCode(code) => {
                let code = super::device_flow::normalize_user_code(code);
                tx.query_opt(
                    &format!("{GRANT_SELECT} WHERE user_code = $1 FOR UPDATE"),
                    &[&code],
                )
                .await?
            }
            GrantKey::Device(hash) => {
                tx.query_opt(
                    &format!("{GRANT_SELECT} WHERE device_hash = $1 FOR UPDATE"),
                    &[&hash.as_slice()],
                )
                .await?
            }
        };
        let mut grant = row.map(|r| grant_row(&r));
        let (result, write) = rule(grant.as_mut());
        if let Some(grant) = &grant {
            match write {
                GrantWrite::Keep => {}
                GrantWrite::Save => {
                    let (state, approved_by) = grant.decision.to_columns();
                    tx.execute(
                        "UPDATE device_grants SET poll_interval_ms = $2, last_poll = $3, \
                         state = $4, approved_by = $5 WHERE device_hash = $1",
                        &[
                            &grant.device_hash.as_slice(),
                            &(grant.interval as i64),
                            &grant.last_poll.map(|t| t as i64),
                            &state,
                            &approved_by,
                        ],
                    )
                    .await?;
                }
                GrantWrite::Delete => {
                    tx.execute(
                        "DELETE FROM device_grants WHERE device_hash = $1",
                        &[&grant.device_hash.as_slice()],
                    )
                    .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(result)
    }

    /// Device grants not yet expired at `now` (Unix milliseconds).
    pub async fn pending_grants(&self, now: u64) -> Result<usize, StoreError> {
        let n: i64 = self
            .pool
            .get()
            .await?
            .query_one(
                "SELECT count(*) FROM device_grants WHERE expires_at > $1",
                &[&(now as i64)],
            )
            .await?
            .get(0);
        Ok(n as usize)
    }
}

/// Key of the advisory lock grant starts hold ("swgr" in ASCII).
const GRANT_START_LOCK: i64 = 0x7377_6772;

const GRANT_SELECT: &str = "SELECT device_hash, user_code, login_hint, expires_at, \
     poll_interval_ms, last_poll, state, approved_by FROM device_grants";

fn grant_row(r: &tokio_postgres::Row) -> GrantRecord {
    GrantRecord {
        device_hash: r.get::<_, Vec<u8>>(0).try_into().unwrap_or([0; 32]),
        user_code: r.get(1),
        login_hint: r.get(2),
        expires_at: r.get::<_, i64>(3) as u64,
        interval: r.get::<_, i64>(4) as u64,
        last_poll: r.get::<_, Option<i64>>(5).map(|t| t as u64),
        decision: Decision::from_columns(r.get(6), r.get(7)),
    }
}

/// The serial's current owner if `user` may enroll it (`None`: new serial).
async fn check_owner(
    db: &impl GenericClient,
    serial: &str,
    user: &str,
) -> Result<Option<String>, StoreError> {
    let owner: Option<Option<String>> = db
        .query_opt("SELECT owner FROM services WHERE serial = $1", &[&serial])
        .await?
        .map(|r| r.get(0));
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

async fn insert_audit(
    db: &impl GenericClient,
    serial: &str,
    action: &str,
    actor: &str,
    owner: &str,
    previous_owner: Option<&str>,
    fingerprint: Option<&[u8; 32]>,
) -> Result<(), StoreError> {
    db.execute(
        "INSERT INTO enrollment_audit (at, serial, action, actor, owner, previous_owner, fingerprint) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &now(),
            &serial,
            &action,
            &actor,
            &owner,
            &previous_owner,
            &fingerprint.map(|f| f.to_vec()),
        ],
    )
    .await?;
    Ok(())
}

fn token_row(r: &tokio_postgres::Row) -> TokenRecord {
    TokenRecord {
        id: r.get(0),
        email: r.get(1),
        kind: r.get(2),
        expires_at: r.get::<_, i64>(3) as u64,
        revoked: r.get(4),
    }
}

fn service_row(r: &tokio_postgres::Row) -> ServiceRecord {
    ServiceRecord {
        serial: r.get(0),
        fingerprint: r.get::<_, Vec<u8>>(1).try_into().unwrap_or([0; 32]),
        advertise: r.get(2),
        owner: r.get(3),
    }
}
