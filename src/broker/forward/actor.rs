//! One forward: an actor task per forward.
//!
//! Owns: the forward's local listener ([`LocalListener`]) and every
//! connection accepted on it (a `JoinSet`: when the forward ends, its
//! connections end with it and the Unix socket, if any, is removed).
//!
//! Takes: connections on its listener, routing snapshots (to notice its
//! service going away), and its cancellation token (`forward stop`, the
//! broker shutting down).
//!
//! Each connection: its uid checked against the owner's (reset if not),
//! for a SOCKS5 proxy the client's handshake (`socks`: the device and port
//! it asks for, within a bound), then routed like a call from the owner (the latest snapshot, the live
//! channel or an `Acquire` that starts a reconnect), one `Forward` stream
//! opened on the link, and bytes pumped until both sides end.
//!
//! On failure: a connection whose link is down, whose service refuses it,
//! or whose link breaks mid-way is reset (never closed as if complete);
//! the error is kept as the forward's `last_error` (a SOCKS5 client gets
//! the matching reply code first, and the refusal is logged at info) and
//! the forward goes on
//! accepting, so it recovers as soon as the link is back. The forward
//! itself ends only when stopped, when its service is gone from the
//! routing table, or with the broker.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::listener::{LocalListener, LocalStream, reset};
use super::socks::{self, ProxyLogin};
use super::socks5::Reply;
use crate::broker::error::BrokerError;
use crate::broker::peer::{Peer, owner_for};
use crate::broker::routes::{Routes, ServiceRef};

/// Connections one forward carries at once, at most; more are reset.
pub const MAX_CONNECTIONS: usize = 1024;

/// How long a new connection waits for the service to connect it. Its
/// request can wait behind other streams' bulk data when the link's
/// connection-level flow-control window (32 MiB) is full, so this is
/// generous; a dead link is found sooner by the liveness bound.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(30);

/// What a forward reaches, for whom.
pub struct Target {
    /// The forward's id, for logs.
    pub id: String,
    pub peer: Peer,
    pub service: ServiceRef,
    pub destination: Destination,
}

/// Where a forward's connections go.
pub enum Destination {
    /// Always this port of this device (`forward start`).
    Port { device: String, port: u16 },
    /// Where each SOCKS5 client asks (`socks-proxy start`), after its
    /// login if the proxy has one.
    Socks { login: Option<ProxyLogin> },
}

/// A forward's live counters (read by `status` and `forward list`).
#[derive(Default)]
pub struct Stats {
    pub open: AtomicU32,
    pub total: AtomicU64,
    /// Connections reset before reaching the device (wrong uid, link
    /// down, refused by the service, too many).
    pub failed: AtomicU64,
    pub bytes_to_device: AtomicU64,
    pub bytes_from_device: AtomicU64,
    pub last_error: Mutex<String>,
}

impl Stats {
    fn failed(&self, error: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = error;
    }
}

/// Whether `service` is still in the routing table for `peer` (without
/// touching its last-use time).
fn service_exists(routes: &Routes, peer: &Peer, service: &ServiceRef) -> bool {
    match service {
        ServiceRef::Named(name) => routes
            .named
            .contains_key(&(owner_for(peer, routes.share_group), name.clone())),
        ServiceRef::InSession {
            session_id,
            service_id,
        } => routes
            .sessions
            .get(session_id)
            .is_some_and(|s| s.services.contains_key(service_id)),
    }
}

/// Runs a forward until it is cancelled or its service goes; returns why
/// it ended.
pub async fn run(
    listener: LocalListener,
    target: Arc<Target>,
    mut routes: watch::Receiver<Arc<Routes>>,
    stats: Arc<Stats>,
    cancel: CancellationToken,
) -> &'static str {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return "stopped",
            changed = routes.changed() => {
                if changed.is_err() {
                    return "the broker is stopping";
                }
                if !service_exists(&routes.borrow_and_update(), &target.peer, &target.service) {
                    return "its service is gone";
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, Ok(()))) if connections.len() < MAX_CONNECTIONS => {
                    connections.spawn(connection(stream, target.clone(), routes.clone(), stats.clone()));
                }
                Ok((stream, Ok(()))) => {
                    stats.failed(format!("more than {MAX_CONNECTIONS} connections at once"));
                    reset(&stream);
                }
                Ok((stream, Err(why))) => {
                    warn!(listener = %listener.address(), %why, "forward connection refused");
                    stats.failed(format!("a connection was refused: {why}"));
                    reset(&stream);
                }
                Err(e) => {
                    // Out of descriptors, most likely: let some close.
                    warn!(error = %e, "cannot accept on a forward");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Counts a connection open while it lives.
struct Open<'a>(&'a AtomicU32);

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn connection(
    mut local: LocalStream,
    target: Arc<Target>,
    routes: watch::Receiver<Arc<Routes>>,
    stats: Arc<Stats>,
) {
    stats.open.fetch_add(1, Ordering::Relaxed);
    let _open = Open(&stats.open);
    stats.total.fetch_add(1, Ordering::Relaxed);
    let (device, port, socks, early) = match &target.destination {
        Destination::Port { device, port } => (device.clone(), *port, false, Vec::new()),
        Destination::Socks { login } => match socks::accept(&mut local, login.as_ref()).await {
            Ok(r) => (r.device, r.port, true, r.early),
            Err(e) => {
                // Told to the client already where SOCKS5 has a reply for
                // it; closed (not reset) so the reply is read.
                info!(proxy = %target.id, error = %e, "SOCKS5 client turned away");
                stats.failed(crate::label::tidy_max(&e.to_string(), 512));
                return;
            }
        },
    };
    let resolved = routes.borrow().resolve(&target.peer, &target.service);
    let opened = async {
        let link = resolved?.open().await?;
        let remote = link
            .channel
            .open_forward(&device, port, OPEN_TIMEOUT)
            .await?;
        Ok::<_, BrokerError>((link, remote))
    }
    .await;
    let (link, mut remote) = match opened {
        Ok(opened) => opened,
        Err(e) => {
            stats.failed(crate::label::tidy_max(&e.to_string(), 512));
            if socks {
                let code = socks::reply_for(&e);
                info!(proxy = %target.id, %device, port, reply = ?code, error = %e, "SOCKS5 CONNECT refused");
                let _ = socks::answer(&mut local, code).await;
            } else {
                debug!(%device, port, error = %e, "forwarded connection not opened");
                reset(&local);
            }
            return;
        }
    };
    if socks {
        let started = async {
            socks::answer(&mut local, Reply::Succeeded).await?;
            remote.send_early(&early).await?;
            stats
                .bytes_to_device
                .fetch_add(early.len() as u64, Ordering::Relaxed);
            Ok::<_, std::io::Error>(())
        };
        if let Err(e) = started.await {
            debug!(proxy = %target.id, error = %e, "SOCKS5 client gone before its connection started");
            remote.reset();
            reset(&local);
            return;
        }
    }
    let pumped = tokio::select! {
        r = remote.splice(&mut local, &stats.bytes_to_device, &stats.bytes_from_device) => r,
        _ = link.cancel.cancelled() => {
            remote.reset();
            Err(std::io::Error::other("the service's session ended"))
        }
    };
    if let Err(e) = pumped {
        debug!(%device, error = %e, "forwarded connection broke; reset");
        *stats.last_error.lock().unwrap_or_else(|p| p.into_inner()) =
            format!("a connection broke: {e}");
        reset(&local);
    }
    drop(link);
}
