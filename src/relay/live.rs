//! Live relay connections (QUIC or TCP) and the credential each was admitted with, so a
//! revocation ends the sessions it concerns.
//!
//! Owns: the table of authenticated connections (an entry lives as long as
//! its `LiveEntry` guard) and the watcher task that re-checks them.
//!
//! The watcher polls the store's [`generation`](super::db::Database::generation)
//! every [`POLL`]: a token revoked, a user disabled, a certificate revoked
//! (by an admin command on the same database, or through the relay's own
//! handle, as a re-enrollment does) changes it, and every live credential
//! is checked again at once. On PostgreSQL (a tier) every such change is
//! also a `NOTIFY` that every node's change feed receives at commit and
//! that wakes the watcher at once (a lost feed reconnects and counts as a
//! change). A full re-check also runs every [`RECHECK`] regardless. A
//! connection whose credential no longer holds is closed with
//! `UNAUTHENTICATED` and the reason.
//!
//! **Invariant:** a revoked credential's connections are closed within
//! [`REVOCATION_BOUND`] of the revocation's commit, on every node sharing
//! the database (poll interval or notification, plus the re-check itself,
//! which reads two rows per connection).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::db::Database;
use super::{AuthError, RelayCore};
use crate::wire::messages::close_code;
use crate::wire::mux::Conn as Connection;
use crate::wire::pin::Fingerprint;

/// How often the watcher looks for a change in the database.
pub const POLL: Duration = Duration::from_millis(250);
/// How often every live credential is re-checked even with no change seen.
pub const RECHECK: Duration = Duration::from_secs(30);
/// The documented bound between a revocation and the end of the sessions
/// it concerns.
pub const REVOCATION_BOUND: Duration = Duration::from_secs(2);

/// What a live connection was admitted with.
#[derive(Clone)]
pub(crate) enum Credential {
    /// An access token (by id) of `user`.
    Token { jti: String, user: String },
    /// A client certificate of `user`.
    ClientCert { fingerprint: [u8; 32], user: String },
    /// A service's certificate for `serial`.
    ServiceCert {
        fingerprint: [u8; 32],
        serial: String,
    },
    /// Another relay node's certificate (`nodes`).
    NodeCert { fingerprint: [u8; 32], node: String },
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Token { jti, user } => write!(f, "token {jti} of {user}"),
            Self::ClientCert { fingerprint, user } => {
                write!(
                    f,
                    "client certificate {} of {user}",
                    Fingerprint(*fingerprint)
                )
            }
            Self::ServiceCert {
                fingerprint,
                serial,
            } => write!(
                f,
                "service certificate {} of {serial}",
                Fingerprint(*fingerprint)
            ),
            Self::NodeCert { fingerprint, node } => write!(
                f,
                "node certificate {} of relay node {node}",
                Fingerprint(*fingerprint)
            ),
        }
    }
}

impl Credential {
    /// Whether the credential still holds (expiry is checked per request,
    /// where a client can still present a refreshed token).
    pub async fn check(&self, store: &Database) -> Result<(), AuthError> {
        match self {
            Self::Token { jti, user } => {
                match store.token(jti).await? {
                    Some(record) if record.revoked => {
                        return Err(AuthError::Revoked { id: jti.clone() });
                    }
                    Some(_) => {}
                    None => return Err(AuthError::Invalid),
                }
                enabled(store, user).await
            }
            Self::ClientCert { fingerprint, user } => {
                store
                    .cert_subject(fingerprint, "client")
                    .await?
                    .ok_or(AuthError::UnknownCertificate)?;
                enabled(store, user).await
            }
            Self::ServiceCert { fingerprint, .. } => store
                .cert_subject(fingerprint, "service")
                .await?
                .map(|_| ())
                .ok_or(AuthError::UnknownCertificate),
            Self::NodeCert { fingerprint, .. } => store
                .cert_subject(fingerprint, super::nodes::NODE_CERT_KIND)
                .await?
                .map(|_| ())
                .ok_or(AuthError::UnknownCertificate),
        }
    }
}

async fn enabled(store: &Database, user: &str) -> Result<(), AuthError> {
    if store.user_enabled(user).await? {
        Ok(())
    } else {
        Err(AuthError::UserDisabled(user.to_string()))
    }
}

type Table = Mutex<HashMap<usize, (Connection, Credential)>>;

/// The live authenticated connections.
#[derive(Default)]
pub(crate) struct LiveConnections {
    table: Arc<Table>,
    /// Client connections (token or client certificate) admitted since
    /// start-up: how many times brokers dialled in.
    clients_admitted: std::sync::atomic::AtomicU64,
    /// The next entry's key.
    next: std::sync::atomic::AtomicUsize,
}

/// A connection's place in the table; removed on drop.
pub(crate) struct LiveEntry {
    table: Arc<Table>,
    id: usize,
}

impl LiveEntry {
    /// The connection now holds `credential` (a client's `Reauth`).
    pub fn replace(&self, credential: Credential) {
        if let Some(entry) = lock(&self.table).get_mut(&self.id) {
            entry.1 = credential;
        }
    }
}

impl Drop for LiveEntry {
    fn drop(&mut self) {
        lock(&self.table).remove(&self.id);
    }
}

fn lock(table: &Table) -> std::sync::MutexGuard<'_, HashMap<usize, (Connection, Credential)>> {
    table.lock().unwrap_or_else(|p| p.into_inner())
}

impl LiveConnections {
    /// Records an authenticated connection until the returned entry drops.
    pub fn register(&self, conn: &Connection, credential: Credential) -> LiveEntry {
        if matches!(
            credential,
            Credential::Token { .. } | Credential::ClientCert { .. }
        ) {
            self.clients_admitted
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        lock(&self.table).insert(id, (conn.clone(), credential));
        LiveEntry {
            table: self.table.clone(),
            id,
        }
    }

    /// Client connections admitted since start-up (closed ones included).
    pub fn clients_admitted(&self) -> u64 {
        self.clients_admitted
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Connections recorded now.
    pub fn len(&self) -> usize {
        lock(&self.table).len()
    }

    /// Checks every live credential; closes the connections whose
    /// credential no longer holds. Returns how many were closed.
    async fn recheck(&self, store: &Database) -> usize {
        let snapshot: Vec<(Connection, Credential)> = lock(&self.table).values().cloned().collect();
        let mut closed = 0;
        for (conn, credential) in snapshot {
            let why = match credential.check(store).await {
                Ok(()) => continue,
                // A database error is no proof of revocation: keep serving.
                Err(AuthError::Store(e)) => {
                    warn!(error = %e, "cannot re-check a live credential");
                    continue;
                }
                Err(why) => why,
            };
            info!(credential = ?credential, reason = %why, "closing a live relay connection: its credential no longer holds");
            conn.close(close_code::UNAUTHENTICATED, why.to_string().as_bytes());
            metrics::counter!("switchyard_relay_sessions_revoked_total").increment(1);
            closed += 1;
        }
        closed
    }
}

/// The watcher: re-checks live credentials when the database changes, and
/// every [`RECHECK`] regardless, until `cancel`.
pub(crate) async fn watch(core: Arc<RelayCore>, cancel: CancellationToken) {
    // A tier's nodes hear each other's changes at once.
    let wake = core.db.start_change_feed();
    let mut seen = core.db.generation().ok();
    let mut last_full = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
            // `notify_one` keeps a wake that comes while re-checking.
            _ = changed(wake.as_deref()) => {}
        }
        let now = tokio::time::Instant::now();
        let generation = core.db.generation().ok();
        if generation == seen && now.duration_since(last_full) < RECHECK {
            continue;
        }
        seen = generation;
        last_full = now;
        match &core.db {
            // SQLite reads block: off the runtime's threads (its calls
            // never wait on the runtime, so a plain executor runs them).
            Database::Sqlite(_) => {
                let core = core.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    futures::executor::block_on(core.live.recheck(&core.db))
                })
                .await;
            }
            Database::Postgres(_) => {
                core.live.recheck(&core.db).await;
            }
        }
    }
}

/// Resolves when the change feed wakes (never without one).
async fn changed(wake: Option<&tokio::sync::Notify>) {
    match wake {
        Some(wake) => wake.notified().await,
        None => std::future::pending().await,
    }
}
