//! Connections to PostgreSQL: the URL, TLS, a small pool, the migrations
//! and the `LISTEN` connection.
//!
//! Owns: `Pool` owns its client connections (each with the task that
//! drives its socket, aborted with it); `ChangeFeed` owns the `LISTEN`
//! connection and its task. A connection that fails is replaced the next
//! time its slot is used; the feed reconnects after [`FEED_RETRY`] and
//! counts the gap as a change (the relay re-checks every live credential).
//!
//! TLS: a Unix-socket host needs none; a TCP host gets rustls (the `ring`
//! provider, the system's roots) and `sslmode=prefer` (the default) is
//! raised to `require`, so a credential never crosses a network in the
//! clear unless the URL says `sslmode=disable`.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Mutex, MutexGuard, Notify};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::{AsyncMessage, Client, Config, NoTls};
use tracing::{info, warn};

use super::PgError;
use crate::task::AbortOnDrop;

/// The channel every change that can end a live credential is announced
/// on (`NOTIFY`, sent inside the changing transaction).
pub const CHANGES_CHANNEL: &str = "switchyard_relay_changes";

/// Wait before the change feed reconnects.
pub const FEED_RETRY: Duration = Duration::from_secs(1);

/// Connections a store keeps (each can pipeline queries; a transaction
/// holds one for its length).
const POOL_SIZE: usize = 4;

/// Key of the advisory lock held while migrating (any constant shared by
/// every node: "swyd" in ASCII).
const MIGRATION_LOCK: i64 = 0x7377_7964;

/// The migrations, in order; kept in `migrations/postgres/` and applied
/// at start under an advisory lock, each in its own transaction.
const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        include_str!("../../../migrations/postgres/0001_relay.sql"),
    ),
    (
        2,
        include_str!("../../../migrations/postgres/0002_presence.sql"),
    ),
    (
        3,
        include_str!("../../../migrations/postgres/0003_node_load.sql"),
    ),
    (
        4,
        include_str!("../../../migrations/postgres/0004_device_grants.sql"),
    ),
];

/// How to reach the database: the parsed URL and the TLS it needs.
#[derive(Clone)]
pub struct Target {
    config: Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
}

impl Target {
    /// Parses a `postgres://` or `postgresql://` URL (libpq's syntax; a
    /// Unix socket directory as `?host=/path`). The error never repeats
    /// the URL (it may hold a password).
    pub fn parse(url: &str) -> Result<Self, PgError> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(PgError::Url(
                "expected a postgres:// or postgresql:// URL".into(),
            ));
        }
        let mut config: Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| PgError::Url(e.to_string()))?;
        if config.get_hosts().is_empty() {
            return Err(PgError::Url(
                "the URL names no host (a Unix socket directory is ?host=/path)".into(),
            ));
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        config.application_name("switchyard-relay");
        let tcp = config.get_hosts().iter().any(|h| matches!(h, Host::Tcp(_)));
        let tls = if tcp && config.get_ssl_mode() != SslMode::Disable {
            if config.get_ssl_mode() == SslMode::Prefer {
                config.ssl_mode(SslMode::Require);
            }
            let roots = crate::tls::root_store(None).map_err(|e| PgError::Url(e.to_string()))?;
            let client = rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth();
            Some(tokio_postgres_rustls::MakeRustlsConnect::new(client))
        } else {
            None
        };
        Ok(Self { config, tls })
    }

    /// One new connection and the task driving it.
    async fn connect(&self) -> Result<Conn, PgError> {
        match &self.tls {
            None => {
                let (client, conn) = self.config.connect(NoTls).await?;
                Ok(Conn::new(client, conn))
            }
            Some(tls) => {
                let (client, conn) = self.config.connect(tls.clone()).await?;
                Ok(Conn::new(client, conn))
            }
        }
    }

    /// A connection that delivers notifications on `channel` (after
    /// `LISTEN`) by bumping `counter` and waking `wake`; returns when the
    /// connection ends.
    async fn listen(&self, counter: &AtomicU64, wake: &Notify) -> Result<(), PgError> {
        match &self.tls {
            None => {
                let (client, conn) = self.config.connect(NoTls).await?;
                deliver(client, conn, counter, wake).await
            }
            Some(tls) => {
                let (client, conn) = self.config.connect(tls.clone()).await?;
                deliver(client, conn, counter, wake).await
            }
        }
    }
}

async fn deliver<S, T>(
    client: Client,
    mut conn: tokio_postgres::Connection<S, T>,
    counter: &AtomicU64,
    wake: &Notify,
) -> Result<(), PgError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    let statement = format!("LISTEN {CHANGES_CHANNEL}");
    let listen = client.batch_execute(&statement);
    tokio::pin!(listen);
    let mut listening = false;
    loop {
        let message = futures::future::poll_fn(|cx| {
            if !listening && let std::task::Poll::Ready(r) = listen.as_mut().poll(cx) {
                listening = true;
                if let Err(e) = r {
                    return std::task::Poll::Ready(Some(Err(e)));
                }
                // Subscribed: anything missed before now is covered by
                // the re-check the caller does on (re)connection.
                counter.fetch_add(1, Ordering::Relaxed);
                wake.notify_one();
            }
            conn.poll_message(cx)
        })
        .await;
        match message {
            Some(Ok(AsyncMessage::Notification(_))) => {
                counter.fetch_add(1, Ordering::Relaxed);
                wake.notify_one();
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => return Ok(()),
        }
    }
}

/// A client and the task that drives its socket.
pub(super) struct Conn {
    pub client: Client,
    _driver: AbortOnDrop<()>,
}

impl Conn {
    fn new<S, T>(client: Client, conn: tokio_postgres::Connection<S, T>) -> Self
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let driver = tokio::spawn(async move {
            if let Err(e) = conn.await {
                warn!(error = %e, "relay database connection lost");
            }
        });
        Self {
            client,
            _driver: AbortOnDrop::new(driver),
        }
    }
}

/// A fixed set of connection slots, each (re)connected on use.
pub(super) struct Pool {
    target: Target,
    slots: Vec<Mutex<Option<Conn>>>,
    next: AtomicUsize,
}

/// A connected client, exclusively, until dropped.
pub(super) struct Pooled<'a>(MutexGuard<'a, Option<Conn>>);

impl std::ops::Deref for Pooled<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        // `Pool::get` only hands out connected slots.
        &self.0.as_ref().expect("a pooled slot is connected").client
    }
}

impl std::ops::DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.0.as_mut().expect("a pooled slot is connected").client
    }
}

impl Pool {
    pub fn new(target: Target) -> Self {
        Self {
            target,
            slots: (0..POOL_SIZE).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// A free connected slot (or the next in turn, once free).
    pub async fn get(&self) -> Result<Pooled<'_>, PgError> {
        let guard = match self.slots.iter().find_map(|s| s.try_lock().ok()) {
            Some(guard) => guard,
            None => {
                let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
                self.slots[i].lock().await
            }
        };
        let mut guard = guard;
        if guard.as_ref().is_none_or(|c| c.client.is_closed()) {
            *guard = Some(self.target.connect().await?);
        }
        Ok(Pooled(guard))
    }

    /// Applies the migrations this binary has and the database lacks,
    /// holding an advisory lock so that nodes starting together migrate
    /// once. Refuses a database migrated by a newer relay.
    pub async fn migrate(&self) -> Result<(), PgError> {
        let mut client = self.get().await?;
        client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        let result = apply(&mut client).await;
        let unlocked = client
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await;
        result?;
        unlocked?;
        Ok(())
    }
}

async fn apply(client: &mut Client) -> Result<(), PgError> {
    // Quietly: "already exists, skipping" is the usual case.
    client
        .batch_execute(
            "SET client_min_messages = warning; \
             CREATE TABLE IF NOT EXISTS switchyard_migrations (\
                version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)",
        )
        .await?;
    let applied: Vec<i32> = client
        .query("SELECT version FROM switchyard_migrations", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let known = MIGRATIONS.last().map_or(0, |m| m.0);
    if let Some(newer) = applied.iter().copied().filter(|v| *v > known).max() {
        return Err(PgError::Newer {
            database: newer,
            known,
        });
    }
    for (version, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        let tx = client.transaction().await?;
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO switchyard_migrations (version, applied_at) VALUES ($1, $2)",
            &[version, &(crate::relay::unix_now() as i64)],
        )
        .await?;
        tx.commit().await?;
        info!(version, "relay database migrated");
    }
    Ok(())
}

/// The `LISTEN` side: counts notifications on [`CHANGES_CHANNEL`] and
/// wakes whoever waits for a change.
pub(super) struct ChangeFeed {
    pub counter: Arc<AtomicU64>,
    pub wake: Arc<Notify>,
    _task: AbortOnDrop<()>,
}

impl ChangeFeed {
    pub fn start(target: Target) -> Self {
        let counter = Arc::new(AtomicU64::new(0));
        let wake = Arc::new(Notify::new());
        let task = {
            let (counter, wake) = (counter.clone(), wake.clone());
            tokio::spawn(async move {
                loop {
                    match target.listen(&counter, &wake).await {
                        Ok(()) => warn!("relay database change feed closed; reconnecting"),
                        Err(e) => {
                            warn!(error = %e, "relay database change feed lost; reconnecting")
                        }
                    }
                    // Whatever happened while it was down is re-checked.
                    counter.fetch_add(1, Ordering::Relaxed);
                    wake.notify_one();
                    tokio::time::sleep(FEED_RETRY).await;
                }
            })
        };
        Self {
            counter,
            wake,
            _task: AbortOnDrop::new(task),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_pick_tls_by_host_and_never_echo_the_url() {
        crate::tls::install_crypto_provider();
        let err = Target::parse("mysql://u:hunter2@db/x").err().unwrap();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let unix = Target::parse("postgres://relay@/switchyard?host=/run/postgresql").unwrap();
        assert!(unix.tls.is_none());
        let tcp = Target::parse("postgres://relay:pw@db.example.net/switchyard").unwrap();
        assert!(tcp.tls.is_some());
        assert_eq!(tcp.config.get_ssl_mode(), SslMode::Require);
        let plain =
            Target::parse("postgres://relay:pw@db.example.net/switchyard?sslmode=disable").unwrap();
        assert!(plain.tls.is_none());
        let err = Target::parse("postgres://relay:hunter2@db/x?bogus=1")
            .err()
            .unwrap();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}
