//! The SSH proxy: a local SSH server in the broker where `ssh -p PORT
//! DEVICE@SERVICE@127.0.0.1` reaches a device of one of the owner's named
//! services through its shared link (shell with a pty, or exec with its
//! exit status); the device's credentials stay on the service.
//!
//! Owns: the table of proxies (owner uid → address, counters, task), at
//! most one per uid, and the host key (loaded from or made in the broker's
//! state directory on first use, `host_key`). The table is a mutex held
//! only for map operations; each proxy is its own actor task (`server`),
//! owned by its table entry (`AbortOnDrop`) and cancelled by a child of the
//! broker's cancellation token, so `ssh-proxy stop` and broker shutdown
//! end it and its sessions.
//!
//! **Invariant:** a proxy is seen and stopped only by the uid that started
//! it; its listener admits only that uid's connections (`forward::listener`:
//! loopback TCP, the kernel's socket table) and then only clients holding
//! an authorized key or the password (`auth`); a login reaches only the
//! owner's named services, as a call from the owner would.

pub mod auth;
pub mod channel;
pub mod host_key;
pub mod server;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use russh::keys::{HashAlg, PrivateKey};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::info;

use self::auth::ClientAuth;
use super::error::BrokerError;
use super::forward::listener::{Listen, LocalListener};
use super::peer::Peer;
use super::routes::Routes;
use crate::task::AbortOnDrop;

/// Where a proxy listens when no address is given.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:2222";

/// What `ssh-proxy start` asks for.
pub struct SshProxyRequest {
    pub peer: Peer,
    /// `""` for [`DEFAULT_LISTEN`], else a loopback `ADDRESS:PORT`.
    pub listen: String,
    pub auth: ClientAuth,
    /// A session of the caller's that the proxy lives and dies with (its
    /// services become targets too); `None`: until stopped.
    pub session_id: Option<String>,
}

/// A proxy as shown (`status`, the start answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshProxyView {
    pub address: String,
    pub local_port: u16,
    /// `SHA256:...`, as `ssh` prints host keys.
    pub host_key_fingerprint: String,
    pub authorized_keys: u32,
    pub password: bool,
    pub open: u32,
    pub total: u64,
    pub failed: u64,
    pub last_error: String,
}

/// A proxy's live counters.
#[derive(Default)]
pub struct Stats {
    pub open: AtomicU32,
    pub total: AtomicU64,
    /// Connections that never logged in (refused uid, wrong credentials,
    /// timeout, too many).
    pub failed: AtomicU64,
    pub last_error: Mutex<String>,
}

/// Counts a connection open while it lives.
pub struct Open<'a>(&'a AtomicU32);

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Stats {
    /// A connection was accepted; it counts as open until the guard drops.
    pub fn opened(&self) -> Open<'_> {
        self.open.fetch_add(1, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
        Open(&self.open)
    }

    /// A connection failed before logging in.
    pub fn failed(&self, error: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.set_last_error(&error);
    }

    /// Keeps `error` (tidied, capped) as the last error.
    pub fn set_last_error(&self, error: &str) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) =
            crate::label::tidy_max(error, 512);
    }
}

/// What a proxy's sessions share.
pub struct Shared {
    /// The uid that started the proxy: logins act as it.
    pub owner: Peer,
    pub routes: watch::Receiver<Arc<Routes>>,
    pub auth: ClientAuth,
    pub stats: Stats,
    /// The session whose services are targets too (`SshProxyRequest`).
    pub session_id: Option<String>,
}

struct Entry {
    address: String,
    local_port: u16,
    fingerprint: String,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    task: AbortOnDrop<()>,
}

impl Entry {
    fn view(&self) -> SshProxyView {
        let s = &self.shared.stats;
        SshProxyView {
            address: self.address.clone(),
            local_port: self.local_port,
            host_key_fingerprint: self.fingerprint.clone(),
            authorized_keys: self.shared.auth.key_count() as u32,
            password: self.shared.auth.has_password(),
            open: s.open.load(Ordering::Relaxed),
            total: s.total.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
            last_error: s
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}

/// Every SSH proxy of the broker.
pub struct SshProxies {
    table: Mutex<BTreeMap<u32, Entry>>,
    routes: watch::Receiver<Arc<Routes>>,
    cancel: CancellationToken,
    state_dir: Option<PathBuf>,
    /// Loaded on the first start, then shared by every proxy.
    host_key: tokio::sync::OnceCell<PrivateKey>,
}

impl SshProxies {
    /// An empty table; proxies route by `routes`, end with `cancel`, and
    /// keep their host key in `state_dir`.
    pub fn new(
        routes: watch::Receiver<Arc<Routes>>,
        cancel: CancellationToken,
        state_dir: Option<PathBuf>,
    ) -> Arc<Self> {
        Arc::new(Self {
            table: Mutex::new(BTreeMap::new()),
            routes,
            cancel,
            state_dir,
            host_key: tokio::sync::OnceCell::new(),
        })
    }

    fn table(&self) -> std::sync::MutexGuard<'_, BTreeMap<u32, Entry>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn host_key(&self) -> Result<PrivateKey, BrokerError> {
        let dir = self.state_dir.clone();
        self.host_key
            .get_or_try_init(|| async move {
                tokio::task::spawn_blocking(move || host_key::load_or_create(dir.as_deref()))
                    .await
                    .map_err(|e| BrokerError::Internal(e.to_string()))?
                    .map_err(|e| BrokerError::Internal(e.to_string()))
            })
            .await
            .cloned()
    }

    /// Binds the listener and starts the caller's proxy.
    pub async fn start(
        self: &Arc<Self>,
        request: SshProxyRequest,
    ) -> Result<SshProxyView, BrokerError> {
        let uid = request.peer.uid;
        if let Some(entry) = self.table().get(&uid) {
            return Err(BrokerError::AlreadyExists(format!(
                "your SSH proxy already listens on {}; stop it with `switchyard ssh-proxy stop`",
                entry.address
            )));
        }
        let listen = match request.listen.trim() {
            "" => DEFAULT_LISTEN,
            text if text.starts_with("unix:") => {
                return Err(BrokerError::InvalidArgument(
                    "the SSH proxy listens on a loopback ADDRESS:PORT, not a Unix socket".into(),
                ));
            }
            text => text,
        };
        let listen = Listen::parse(listen)?;
        // A session-bound proxy ends when its session does.
        let session_cancel = match &request.session_id {
            Some(id) => {
                let routes = self.routes.borrow();
                let session = routes.sessions.get(id).filter(|s| s.uid == uid);
                Some(
                    session
                        .ok_or_else(|| {
                            BrokerError::NotFound(format!(
                                "no session {id:?} of yours (it may have ended)"
                            ))
                        })?
                        .cancel
                        .clone(),
                )
            }
            None => None,
        };
        let key = self.host_key().await?;
        let fingerprint = key.public_key().fingerprint(HashAlg::Sha256).to_string();
        let listener = LocalListener::bind(&listen, uid).await?;
        let address = listener.address();
        let local_port = listener.port();
        let shared = Arc::new(Shared {
            owner: request.peer,
            routes: self.routes.clone(),
            auth: request.auth,
            stats: Stats::default(),
            session_id: request.session_id,
        });
        let config = Arc::new(server::config(key, &shared));
        let cancel = self.cancel.child_token();
        let proxy = server::run(listener, config, shared.clone(), cancel.clone());
        let proxy = async move {
            match session_cancel {
                Some(session) => tokio::select! {
                    why = proxy => why,
                    _ = session.cancelled() => "its session ended",
                },
                None => proxy.await,
            }
        };
        let table_ref: Weak<Self> = Arc::downgrade(self);
        let mut table = self.table();
        if table.contains_key(&uid) {
            // Another start won the race; this listener is dropped.
            return Err(BrokerError::AlreadyExists(
                "your SSH proxy has just been started".into(),
            ));
        }
        let task = tokio::spawn(async move {
            let why = proxy.await;
            info!(uid, why, "SSH proxy ended");
            if let Some(proxies) = table_ref.upgrade() {
                // The entry owns this task: taken out and dropped after the
                // lock is released.
                let entry = proxies.table().remove(&uid);
                drop(entry);
            }
        });
        let entry = Entry {
            address,
            local_port,
            fingerprint,
            shared,
            cancel,
            task: AbortOnDrop::new(task),
        };
        let view = entry.view();
        info!(uid, address = %view.address, keys = view.authorized_keys, password = view.password, "SSH proxy started");
        table.insert(uid, entry);
        Ok(view)
    }

    /// Stops the proxy of `peer`; returns once its listener is closed.
    pub async fn stop(&self, peer: &Peer) -> Result<(), BrokerError> {
        let entry = self.table().remove(&peer.uid);
        match entry {
            Some(mut entry) => {
                entry.cancel.cancel();
                let _ = tokio::time::timeout(Duration::from_secs(5), entry.task.finished()).await;
                info!(uid = peer.uid, "SSH proxy stopped");
                Ok(())
            }
            None => Err(BrokerError::NotFound(
                "you have no SSH proxy running (start one with `switchyard ssh-proxy start`)"
                    .into(),
            )),
        }
    }

    /// The proxy of `uid`, if one runs.
    pub fn view(&self, uid: u32) -> Option<SshProxyView> {
        self.table().get(&uid).map(Entry::view)
    }

    /// Ends every proxy (broker shutdown).
    pub fn stop_all(&self) {
        let entries = std::mem::take(&mut *self.table());
        drop(entries);
    }
}
