//! Port forwards owned by the broker: a local listener (loopback TCP or a
//! Unix socket) whose connections ride the shared link to a device's TCP
//! port, one link stream each. A SOCKS5 proxy is a forward whose clients
//! name the device and port themselves (`socks`, `socks5`); it shares the
//! table, listener, limits and counters.
//!
//! Owns: the table of forwards (id → owner, target, counters, task). The
//! table is a mutex held only for map operations; each forward is its own
//! actor task (`actor`), owned by its table entry (`AbortOnDrop`) and
//! cancelled by a child of the broker's cancellation token, so `forward
//! stop`, its service going away, and broker shutdown all end it and its
//! connections.
//!
//! **Invariant:** a forward is seen, listed and stopped only by the uid
//! that started it (another uid's `stop` gets the same `no forward` as an
//! unknown id), and its listener admits only that uid (`listener`).
//! Forwards per uid are capped ([`MAX_PER_USER`]), connections per
//! forward too (`actor::MAX_CONNECTIONS`).

pub mod actor;
pub mod listener;
pub mod socks;
pub mod socks5;
pub mod stream;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::info;

use self::actor::{Destination, Stats, Target};
use self::listener::{Listen, LocalListener};
use super::error::BrokerError;
use super::peer::Peer;
use super::routes::{Routes, ServiceRef};
use crate::task::AbortOnDrop;

/// Forwards one uid may hold at once.
pub const MAX_PER_USER: usize = 64;

/// What `forward start` or `socks-proxy start` asks for.
pub struct ForwardRequest {
    pub peer: Peer,
    pub service: ServiceRef,
    /// The service as the caller named it, for listings.
    pub service_label: String,
    pub destination: Destination,
    pub listen: Listen,
}

/// What a forward is: `forward` (one device port) or `socks5` (a proxy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Forward,
    Socks5,
}

impl Kind {
    /// As `forward list` shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Forward => "forward",
            Self::Socks5 => "socks5",
        }
    }
}

/// A forward as listed (`forward list`, `status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardView {
    pub id: String,
    pub kind: Kind,
    pub service: String,
    /// The device and port of a `forward` (empty and 0 for a proxy).
    pub device: String,
    pub port: u16,
    /// A SOCKS5 proxy's username, if it asks for one.
    pub username: String,
    /// `ADDRESS:PORT` or `unix:PATH`.
    pub address: String,
    /// The bound TCP port (0 for a Unix socket).
    pub local_port: u16,
    pub open: u32,
    pub total: u64,
    pub failed: u64,
    pub bytes_to_device: u64,
    pub bytes_from_device: u64,
    pub last_error: String,
}

struct Entry {
    uid: u32,
    kind: Kind,
    service: String,
    device: String,
    port: u16,
    username: String,
    address: String,
    local_port: u16,
    stats: Arc<Stats>,
    /// Tells the forward to end (it then drops its listener).
    cancel: CancellationToken,
    task: AbortOnDrop<()>,
}

impl Entry {
    fn view(&self, id: &str) -> ForwardView {
        let s = &self.stats;
        ForwardView {
            id: id.to_string(),
            kind: self.kind,
            service: self.service.clone(),
            device: self.device.clone(),
            port: self.port,
            username: self.username.clone(),
            address: self.address.clone(),
            local_port: self.local_port,
            open: s.open.load(Ordering::Relaxed),
            total: s.total.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
            bytes_to_device: s.bytes_to_device.load(Ordering::Relaxed),
            bytes_from_device: s.bytes_from_device.load(Ordering::Relaxed),
            last_error: s
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}

#[derive(Default)]
struct Table {
    next: u64,
    entries: BTreeMap<String, Entry>,
}

/// Every forward of the broker.
pub struct Forwards {
    table: Mutex<Table>,
    routes: watch::Receiver<Arc<Routes>>,
    cancel: CancellationToken,
}

impl Forwards {
    /// An empty table; forwards route by `routes` and end with `cancel`.
    pub fn new(routes: watch::Receiver<Arc<Routes>>, cancel: CancellationToken) -> Arc<Self> {
        Arc::new(Self {
            table: Mutex::new(Table::default()),
            routes,
            cancel,
        })
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks the request, binds the listener and starts the forward.
    pub async fn start(
        self: &Arc<Self>,
        request: ForwardRequest,
    ) -> Result<ForwardView, BrokerError> {
        let (kind, device, port, username) = match &request.destination {
            Destination::Port { device, port } => {
                crate::label::check("a device name", device)
                    .map_err(|e| BrokerError::InvalidArgument(e.to_string()))?;
                if device.is_empty() {
                    return Err(BrokerError::InvalidArgument(
                        "a forward needs a device".into(),
                    ));
                }
                if *port == 0 {
                    return Err(BrokerError::InvalidArgument(
                        "a forward needs the device's port (1-65535)".into(),
                    ));
                }
                (Kind::Forward, device.clone(), *port, String::new())
            }
            Destination::Socks { login } => (
                Kind::Socks5,
                String::new(),
                0,
                login
                    .as_ref()
                    .map(|l| l.username().to_string())
                    .unwrap_or_default(),
            ),
        };
        // The service must exist now (it may be down: connections then
        // wait for it, like calls do).
        self.routes
            .borrow()
            .resolve(&request.peer, &request.service)?;
        let uid = request.peer.uid;
        let held = self
            .table()
            .entries
            .values()
            .filter(|e| e.uid == uid)
            .count();
        if held >= MAX_PER_USER {
            return Err(BrokerError::ResourceExhausted(format!(
                "uid {uid} already has {held} forwards (at most {MAX_PER_USER}); stop one with \
                 `switchyard forward stop ID`"
            )));
        }
        let listener = LocalListener::bind(&request.listen, uid).await?;
        let address = listener.address();
        let local_port = listener.port();
        let stats = Arc::new(Stats::default());
        let mut table = self.table();
        table.next += 1;
        let id = match kind {
            Kind::Forward => format!("fwd-{}", table.next),
            Kind::Socks5 => format!("socks-{}", table.next),
        };
        let target = Arc::new(Target {
            id: id.clone(),
            peer: request.peer,
            service: request.service,
            destination: request.destination,
        });
        let cancel = self.cancel.child_token();
        let forward = actor::run(
            listener,
            target,
            self.routes.clone(),
            stats.clone(),
            cancel.clone(),
        );
        let table_ref: Weak<Self> = Arc::downgrade(self);
        let task_id = id.clone();
        let task = tokio::spawn(async move {
            let why = forward.await;
            info!(forward = %task_id, why, "forward ended");
            if let Some(forwards) = table_ref.upgrade() {
                // The entry owns this task: taken out of the map and
                // dropped after the lock is released.
                let entry = forwards.table().entries.remove(&task_id);
                drop(entry);
            }
        });
        let entry = Entry {
            uid,
            kind,
            service: request.service_label,
            device,
            port,
            username,
            address,
            local_port,
            stats,
            cancel,
            task: AbortOnDrop::new(task),
        };
        let view = entry.view(&id);
        info!(forward = %id, kind = kind.as_str(), uid, address = %view.address, device = %view.device, port = view.port, "forward started");
        table.entries.insert(id, entry);
        Ok(view)
    }

    /// Stops `id` if `peer` owns it; returns once its listener is closed
    /// (its connections are reset).
    pub async fn stop(&self, peer: &Peer, id: &str) -> Result<(), BrokerError> {
        let entry = {
            let mut table = self.table();
            match table.entries.get(id) {
                Some(e) if e.uid == peer.uid => table.entries.remove(id),
                _ => None,
            }
        };
        match entry {
            Some(mut entry) => {
                entry.cancel.cancel();
                let _ = tokio::time::timeout(Duration::from_secs(5), entry.task.finished()).await;
                info!(forward = %id, "forward stopped");
                Ok(())
            }
            None => Err(BrokerError::NotFound(format!(
                "no forward {id:?} of yours (see `switchyard forward list`)"
            ))),
        }
    }

    /// The forwards of `uid`, by id.
    pub fn list(&self, uid: u32) -> Vec<ForwardView> {
        self.table()
            .entries
            .iter()
            .filter(|(_, e)| e.uid == uid)
            .map(|(id, e)| e.view(id))
            .collect()
    }

    /// Ends every forward (broker shutdown).
    pub fn stop_all(&self) {
        let entries = std::mem::take(&mut self.table().entries);
        drop(entries);
    }
}
