//! The SSH driver: a real SSH client (russh) with a pool of warm connections.
//!
//! Owns: one [`SshPool`] of authenticated connections, keyed by device,
//! address and user; each connection carries up to
//! `max_sessions_per_connection` concurrent channels (one per command), and
//! a device that refuses a channel (its session limit) gets another
//! connection. Idle connections close after `idle_timeout`, reaped by a task
//! the pool owns. Host keys are trusted on first use and checked on every
//! later connect: a changed key is refused, never accepted.
//!
//! Bounded per device: at most `max_connections_per_device` connections,
//! and at most one connect (TCP + handshake + authentication) in flight at
//! a time (single flight). Callers that find no free channel slot queue for
//! one: a freed slot wakes one of them, a finished connect wakes all. So a
//! burst of first callers opens one connection, not one each (a device
//! whose SSH server admits few unauthenticated connections at once, e.g.
//! OpenSSH's `MaxStartups`, is never flooded), and a request naming one
//! device thousands of times never holds more than the limit. A connect
//! runs in a task of its own, so it outlives a caller who gives up (bounded
//! by `connect_timeout`) and the callers queued behind it still get it.
//!
//! On failure: a connect or auth failure fails the whole device exec with a
//! [`DriverError`] (every caller waiting on that connect gets the same
//! error); a command that times out or loses its connection fails alone
//! with a [`CommandError`]; a dead connection is dropped from the pool and
//! the next command opens a fresh one. A caller that waits longer than
//! `connect_timeout` plus its command timeout for a channel slot gets
//! [`DriverError::Busy`]. A command whose caller goes away has its channel
//! closed (after an interrupt signal), so the device stops the work.
//!
//! Devices whose profile says `shell` run their commands in warm shells
//! (`shell_store`) on channels of this pool; exec-channel output is judged by
//! the platform's error lines like shell output.
//!
//! Output: each command's stdout (channel data) and stderr (extended data)
//! go to the caller's [`OutputSink`] as they arrive, bytes unchanged; its
//! input ends at once (EOF) unless the caller forwards its own.
//!
//! Which algorithms a connect offers (modern, or with the device's
//! legacy opt-in also the legacy set) is [`ssh_algorithms`]'s choice; how
//! it authenticates (public key, password, keyboard-interactive) is
//! `ssh_auth`'s.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures::FutureExt;
use russh::client::{self, Handle, Msg};
use russh::keys::{HashAlg, PublicKey, PublicKeyOrCertificate};
use russh::{Channel, ChannelMsg, Sig};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc};
use tracing::{Instrument, debug, debug_span};

use super::platform::judge;
use super::shell_store::{Opener, ShellStore};
use super::ssh_algorithms::{self, ClientConfigs};
use super::ssh_auth;
use super::terminal::{TERMINAL_QUEUE, Terminal, TerminalInput};
use super::{
    CommandError, CommandRun, DeviceExec, DeviceRun, DeviceTarget, DriverError, OutputSink,
    OutputStream, Stdin, Tail,
};
use crate::service::inventory::SessionKind;
use crate::task::AbortOnDrop;
use crate::wire::messages::ShellReset;
use crate::wire::messages::TerminalInput as CallerInput;

/// Tunables of the SSH driver.
#[derive(Debug, Clone, PartialEq)]
pub struct SshDriverConfig {
    /// TCP connect + SSH handshake + authentication.
    pub connect_timeout: Duration,
    /// Default per-command timeout.
    pub command_timeout: Duration,
    /// How long an unused connection stays open (0 = close at once).
    pub idle_timeout: Duration,
    /// Channels per connection before another connection is opened
    /// (OpenSSH's `MaxSessions` defaults to 10).
    pub max_sessions_per_connection: usize,
    /// Connections one device may have at once, counting the one being
    /// opened (at least 1; default 4). Callers beyond
    /// `max_connections_per_device × max_sessions_per_connection` queue.
    pub max_connections_per_device: usize,
    /// Largest output (stdout and stderr together) one command may give,
    /// in bytes, for callers who set no cap of their own; 0: no cap. Not a
    /// memory guard: output streams with bounded memory.
    pub max_output_bytes: u64,
    /// Offer the legacy algorithms to devices that do not choose for
    /// themselves (see [`ssh_algorithms`]; default off).
    pub legacy_algorithms: bool,
}

impl Default for SshDriverConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            command_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_sessions_per_connection: 8,
            max_connections_per_device: 4,
            max_output_bytes: 0,
            legacy_algorithms: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    device: String,
    host: String,
    port: u16,
    username: String,
    /// The jump device the connection goes through (`None`: direct), so a
    /// changed `jump_host` gets a fresh connection.
    jump: Option<String>,
    /// [`DeviceTarget::credentials_tag`]: a changed password or key gets a
    /// fresh connection (the old ones close when idle).
    credentials: u64,
}

impl PoolKey {
    fn of(target: &DeviceTarget, keys: &std::hash::RandomState) -> Result<Self, DriverError> {
        let username =
            target
                .credentials
                .username
                .clone()
                .ok_or_else(|| DriverError::NoUsername {
                    device: target.name.clone(),
                })?;
        Ok(Self {
            device: target.name.clone(),
            host: target.host.clone(),
            port: target.port,
            username,
            jump: target.jump.as_ref().map(|j| j.name.clone()),
            credentials: target.credentials_tag(keys),
        })
    }
}

/// What kind of channel a caller opens (RFC 4254 §6.1 and §7.2).
#[derive(Clone, Copy)]
enum ChannelKind<'a> {
    /// A session channel, for a command, a shell or a file transfer.
    Session,
    /// A `direct-tcpip` channel to `host:port` through this device, the
    /// jump host of `behind`.
    DirectTcpip {
        host: &'a str,
        port: u16,
        behind: &'a str,
    },
}

type SshHandle = Handle<HostKeyCheck>;

struct PooledConn {
    id: u64,
    handle: Arc<SshHandle>,
    open_channels: usize,
    /// Lowered when the device refuses a channel below our configured limit.
    capacity: usize,
    idle_since: Instant,
    /// The host key the device presented on this connection (OpenSSH
    /// form), until one lease has taken it to be recorded: one report per
    /// connection, not one per command.
    host_key: Option<String>,
    /// For a device behind a jump host: the `direct-tcpip` channel slot on
    /// the jump's connection this connection runs over, freed with it.
    /// **Never dropped under the pool lock** (its drop takes the lock):
    /// removed connections leave through [`take_conns`].
    _via: Option<Lease>,
}

/// Removes the connections `keep` refuses from `conns` and hands them
/// back, for the caller to drop after releasing the pool lock.
fn take_conns(
    conns: &mut Vec<PooledConn>,
    mut keep: impl FnMut(&PooledConn) -> bool,
) -> Vec<PooledConn> {
    let (kept, gone) = std::mem::take(conns).into_iter().partition(|c| keep(c));
    *conns = kept;
    gone
}

/// One device's connections, its connect in flight and its queue.
#[derive(Default)]
struct DeviceConns {
    conns: Vec<PooledConn>,
    /// The connect in flight (its attempt number): at most one.
    connecting: Option<u64>,
    /// The last connect that failed, for the callers that waited on it.
    failed: Option<(u64, DriverError)>,
    /// Queued callers wait here: a freed slot wakes one, a connect that
    /// ends (or a connection that dies) wakes all. Each waiter holds a
    /// clone, so a strong count of 1 means nobody waits.
    wake: Arc<Notify>,
}

impl DeviceConns {
    /// Nothing open, opening or waiting: the entry can go.
    fn unused(&self) -> bool {
        self.conns.is_empty() && self.connecting.is_none() && Arc::strong_count(&self.wake) == 1
    }
}

#[derive(Default)]
struct PoolState {
    devices: HashMap<PoolKey, DeviceConns>,
    next_id: u64,
}

struct PoolShared {
    config: SshDriverConfig,
    client_configs: ClientConfigs,
    state: Mutex<PoolState>,
    connects: AtomicU64,
    /// The key of [`DeviceTarget::credentials_tag`] in pool keys.
    tag_keys: std::hash::RandomState,
}

/// Counters for status output and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Connections open now.
    pub connections: usize,
    /// Connections opened since the pool started (handshakes made).
    pub connects: u64,
}

/// The pool of warm SSH connections. Dropping it closes every connection
/// and stops its reaper (a connect in flight finishes first, within
/// `connect_timeout`, and is then closed).
pub struct SshPool {
    shared: Arc<PoolShared>,
    shells: ShellStore,
    _reaper: AbortOnDrop<()>,
}

impl std::fmt::Debug for SshPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshPool")
            .field("stats", &self.stats())
            .finish()
    }
}

/// A channel slot on one pooled connection; returns the slot when dropped.
pub(super) struct Lease {
    /// Weak: a jump connection's lease lives inside the pool's state.
    shared: Weak<PoolShared>,
    key: PoolKey,
    id: u64,
    handle: Arc<SshHandle>,
    /// The host key to record, for the first lease on a connection to a
    /// device whose key is not yet known.
    pub(super) host_key: Option<String>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(shared) = self.shared.upgrade() else {
            return; // the pool is gone, and its connections with it
        };
        // Declared before the guard: dropped after it is released.
        let mut closed = Vec::new();
        let mut state = lock(&shared.state);
        let close_now = shared.config.idle_timeout.is_zero();
        if let Some(dev) = state.devices.get_mut(&self.key) {
            if let Some(conn) = dev.conns.iter_mut().find(|c| c.id == self.id) {
                conn.open_channels = conn.open_channels.saturating_sub(1);
                conn.idle_since = Instant::now();
            }
            // With a zero idle timeout an unused connection closes at once,
            // unless a queued caller is about to use it.
            if close_now && Arc::strong_count(&dev.wake) == 1 {
                closed = take_conns(&mut dev.conns, |c| c.open_channels > 0);
            }
            dev.wake.notify_one();
            if dev.unused() {
                state.devices.remove(&self.key);
            }
        }
        drop(state);
        drop(closed);
    }
}

/// Closes a command's channel if it is dropped before the command ended
/// (its caller went away): an interrupt, then the close, so the device
/// stops the work. Dropping the channel alone leaves it open on the device.
struct ClosingChannel(Option<Channel<Msg>>);

impl ClosingChannel {
    fn get(&mut self) -> &mut Channel<Msg> {
        self.0.as_mut().expect("present until dropped")
    }

    /// The command ended (the device closed the channel or we did): no
    /// close on drop.
    fn finished(mut self) {
        self.0 = None;
    }
}

impl Drop for ClosingChannel {
    fn drop(&mut self) {
        let Some(channel) = self.0.take() else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = channel.signal(Sig::INT).await;
                let _ = channel.close().await;
            });
        }
    }
}

fn lock(m: &Mutex<PoolState>) -> std::sync::MutexGuard<'_, PoolState> {
    // The state stays consistent even if a holder panicked: every update is
    // a single assignment. Recover rather than cascade the panic.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SshPool {
    /// Creates a pool and its idle reaper. Needs a tokio runtime.
    pub fn new(config: SshDriverConfig) -> Self {
        let shells = ShellStore::new(config.idle_timeout);
        let client_configs = ClientConfigs::new(|| client::Config {
            inactivity_timeout: None,
            keepalive_interval: Some(Duration::from_secs(30)),
            keepalive_max: 3,
            nodelay: true,
            ..Default::default()
        });
        let shared = Arc::new(PoolShared {
            config,
            client_configs,
            state: Mutex::new(PoolState::default()),
            connects: AtomicU64::new(0),
            tag_keys: std::hash::RandomState::new(),
        });
        let period = (shared.config.idle_timeout / 2)
            .clamp(Duration::from_millis(100), Duration::from_secs(30));
        let reaper = tokio::spawn(reap(Arc::downgrade(&shared), period));
        Self {
            shared,
            shells,
            _reaper: AbortOnDrop::new(reaper),
        }
    }

    pub fn config(&self) -> &SshDriverConfig {
        &self.shared.config
    }

    pub fn stats(&self) -> PoolStats {
        let state = lock(&self.shared.state);
        PoolStats {
            connections: state.devices.values().map(|d| d.conns.len()).sum(),
            connects: self.shared.connects.load(Ordering::Relaxed),
        }
    }

    /// Runs each command on its own channel, in order, its output
    /// streaming into `sink` (the driver interface in [`super`]); `stdin`
    /// feeds the first command (else its input ends at once). A caller
    /// waits at most `connect_timeout + timeout` for each channel slot.
    /// `reset` applies to shell devices (a channel is fresh anyway).
    pub async fn run(
        &self,
        target: &DeviceTarget,
        commands: &[String],
        timeout: Duration,
        mut stdin: Option<Stdin>,
        reset: ShellReset,
        sink: &mut OutputSink,
    ) -> Result<DeviceRun, DriverError> {
        let span = debug_span!("ssh_exec", device = %target.name);
        if target.profile.session == SessionKind::Shell {
            return self
                .shells
                .run(Opener::Ssh(self), target, commands, timeout, reset, sink)
                .instrument(span)
                .await;
        }
        async {
            let mut learned_host_key = None;
            let mut results = Vec::with_capacity(commands.len());
            let mut output_bytes = 0;
            for (index, command) in commands.iter().enumerate() {
                let started = Instant::now();
                sink.start_command(index as u32);
                let (lease, channel) = match self.open_channel(target, timeout).await {
                    Ok(pair) => pair,
                    Err(e) if results.is_empty() => return Err(e),
                    Err(e) => {
                        results.push(CommandRun {
                            command: command.clone(),
                            duration: started.elapsed(),
                            exit_status: None,
                            error: Some(CommandError::ConnectionLost(e.to_string())),
                            tail: Tail::default(),
                        });
                        continue;
                    }
                };
                if learned_host_key.is_none() {
                    learned_host_key = lease.host_key.clone();
                }
                let mut channel = ClosingChannel(Some(channel));
                let input = stdin.take();
                let ran = tokio::time::timeout(
                    timeout,
                    run_command(channel.get(), command, input, sink, &mut output_bytes),
                )
                .await;
                let (exit_status, error) = match ran {
                    Ok(Ok(exit_status)) => (exit_status, None),
                    Ok(Err(CommandError::CallerGone)) => {
                        // Dropping the channel unfinished interrupts and
                        // closes it, so the device stops the work.
                        drop(channel);
                        results.push(CommandRun {
                            command: command.clone(),
                            duration: started.elapsed(),
                            exit_status: None,
                            error: Some(CommandError::CallerGone),
                            tail: Tail::default(),
                        });
                        break;
                    }
                    Ok(Err(e)) => {
                        // Free the device's session (cap reached, refused).
                        let _ = channel.get().close().await;
                        (None, Some(e))
                    }
                    Err(_) => {
                        // Free the device's session; the command may still run there.
                        let _ = channel.get().close().await;
                        (None, Some(CommandError::TimedOut(timeout)))
                    }
                };
                channel.finished();
                drop(lease);
                let (tail, error) = match sink.end_command().await {
                    Ok(tail) => (tail, error),
                    Err(e) => (Tail::default(), error.or(Some(e.into()))),
                };
                let exit_status = judge(target.profile.platform, exit_status, &tail);
                results.push(CommandRun {
                    command: command.clone(),
                    duration: started.elapsed(),
                    exit_status,
                    error,
                    tail,
                });
            }
            Ok(DeviceRun {
                results,
                learned_host_key,
                output_bytes,
            })
        }
        .instrument(span)
        .await
    }

    /// [`SshPool::run`] with the output gathered in memory (tests, tools):
    /// each command's stdout and stderr as the device interleaved them.
    pub async fn exec(
        &self,
        target: &DeviceTarget,
        commands: &[String],
        timeout: Duration,
    ) -> Result<DeviceExec, DriverError> {
        let cap = Some(self.shared.config.max_output_bytes).filter(|n| *n > 0);
        super::gather(commands.len(), cap, |mut sink| async move {
            self.run(
                target,
                commands,
                timeout,
                None,
                ShellReset::default(),
                &mut sink,
            )
            .await
        })
        .await
    }

    /// Opens an interactive shell (pty + shell) on a device. Returns the
    /// terminal and, on first contact, the host key to record.
    pub async fn terminal(
        &self,
        target: &DeviceTarget,
        cols: u16,
        rows: u16,
    ) -> Result<(Terminal, Option<String>), DriverError> {
        let (lease, channel) = self
            .open_channel(target, self.shared.config.command_timeout)
            .await?;
        let learned = lease.host_key.clone();
        let ssh_err = |e: russh::Error| DriverError::Ssh {
            device: target.name.clone(),
            reason: e.to_string(),
        };
        let mut channel = ClosingChannel(Some(channel));
        channel
            .get()
            .request_pty(false, "xterm", cols.into(), rows.into(), 0, 0, &[])
            .await
            .map_err(ssh_err)?;
        channel.get().request_shell(true).await.map_err(ssh_err)?;
        let (in_tx, in_rx) = mpsc::channel(TERMINAL_QUEUE);
        let (out_tx, out_rx) = mpsc::channel(TERMINAL_QUEUE);
        let bridge = tokio::spawn(bridge_terminal(lease, channel, in_rx, out_tx));
        Ok((Terminal::new(in_tx, out_rx, bridge), learned))
    }

    /// Finds a connection with a free channel slot (or waits for one, or
    /// makes one) and opens a session channel on it. `timeout` is the
    /// caller's command timeout: with `connect_timeout` it bounds the wait.
    pub(super) async fn open_channel(
        &self,
        target: &DeviceTarget,
        timeout: Duration,
    ) -> Result<(Lease, Channel<Msg>), DriverError> {
        self.shared
            .open_channel(target, timeout, ChannelKind::Session)
            .await
    }

    /// Opens a `direct-tcpip` channel (RFC 4254 §7.2) to `addr` (host,
    /// port) on a pooled connection of `jump`, the jump host of device
    /// `behind` (connecting to the jump, and through its own jump hosts,
    /// if need be): the channel and the slot it holds. `timeout` bounds the
    /// channel open and, with `connect_timeout`, the wait for a slot.
    /// Errors name the jump: [`DriverError::JumpRefused`] (the jump said
    /// no, e.g. `AllowTcpForwarding no`), [`DriverError::JumpSlow`] (no
    /// answer within `timeout`; the jump's connection stays unless a ping
    /// finds it silent too) or [`DriverError::Jump`].
    pub(super) async fn open_direct_tcpip(
        &self,
        jump: &DeviceTarget,
        addr: (&str, u16),
        behind: &str,
        timeout: Duration,
    ) -> Result<(Lease, Channel<Msg>), DriverError> {
        self.shared
            .open_direct_tcpip(jump, addr, behind, timeout)
            .await
    }

    /// Takes the host key first seen on a connection to `device` that no
    /// lease has reported (a jump host's: a connection used only for
    /// `direct-tcpip` reports nothing to its callers), to be recorded.
    pub fn take_host_key(&self, device: &str) -> Option<String> {
        let mut state = lock(&self.shared.state);
        state
            .devices
            .iter_mut()
            .filter(|(key, _)| key.device == device)
            .flat_map(|(_, dev)| dev.conns.iter_mut())
            .find_map(|conn| conn.host_key.take())
    }
}

impl PoolShared {
    /// [`SshPool::open_direct_tcpip`]: the one way through a jump host, for
    /// a device's SSH handshake and for forwards to its ports alike.
    async fn open_direct_tcpip(
        self: &Arc<Self>,
        jump: &DeviceTarget,
        (host, port): (&str, u16),
        behind: &str,
        timeout: Duration,
    ) -> Result<(Lease, Channel<Msg>), DriverError> {
        let kind = ChannelKind::DirectTcpip { host, port, behind };
        self.open_channel(jump, timeout, kind)
            .await
            .map_err(|e| match e {
                refused @ (DriverError::JumpRefused { .. } | DriverError::JumpSlow { .. }) => {
                    refused
                }
                other => DriverError::Jump {
                    device: behind.to_string(),
                    jump: jump.name.clone(),
                    reason: other.to_string(),
                },
            })
    }

    /// [`SshPool::open_channel`] for a channel of any kind. A jump host's
    /// refusal of a `direct-tcpip` channel is final
    /// ([`DriverError::JumpRefused`]), not a full connection.
    async fn open_channel(
        self: &Arc<Self>,
        target: &DeviceTarget,
        timeout: Duration,
        kind: ChannelKind<'_>,
    ) -> Result<(Lease, Channel<Msg>), DriverError> {
        let key = PoolKey::of(target, &self.tag_keys)?;
        let waited = self.config.connect_timeout.saturating_add(timeout);
        let deadline = tokio::time::Instant::now() + waited;
        // The host key is reported to the callers of session channels; a
        // jump's stays on its connection (see `SshPool::take_host_key`).
        let report_host_key = matches!(kind, ChannelKind::Session);
        // A few rounds: a pooled connection may have died or hit the
        // device's session limit since we last used it.
        let mut last_error = None;
        // A host key to record survives a retry on another lease.
        let mut host_key = None;
        for _ in 0..4 {
            let mut lease = self
                .acquire(&key, target, deadline, waited, report_host_key)
                .await?;
            host_key = host_key.or(lease.host_key.take());
            // A pooled connection whose path went silent never answers: the
            // open counts against the caller's timeout, and a connection
            // that lets it pass is dead (issue 15 input 6).
            let opening = async {
                match kind {
                    ChannelKind::Session => lease.handle.channel_open_session().await,
                    ChannelKind::DirectTcpip { host, port, .. } => {
                        lease
                            .handle
                            .channel_open_direct_tcpip(host, port.into(), "127.0.0.1", 0)
                            .await
                    }
                }
            };
            let opened = tokio::time::timeout(timeout, opening).await;
            if let (Err(_), ChannelKind::DirectTcpip { host, port, behind }) = (&opened, kind) {
                // A jump answers a direct-tcpip open only once its own
                // connect there is done: slowness is the target's, not
                // proof of a dead connection, which a ping tells apart.
                self.remove_if_silent(lease, timeout);
                return Err(DriverError::JumpSlow {
                    device: behind.to_string(),
                    jump: target.name.clone(),
                    addr: format!("{host}:{port}"),
                    after: timeout,
                });
            }
            let Ok(opened) = opened else {
                debug!("no answer to a channel open; dropping the silent connection");
                self.remove(&lease);
                return Err(DriverError::Silent {
                    device: target.name.clone(),
                    after: timeout,
                });
            };
            match (opened, kind) {
                (Ok(channel), _) => {
                    lease.host_key = host_key;
                    return Ok((lease, channel));
                }
                (
                    Err(russh::Error::ChannelOpenFailure(reason)),
                    ChannelKind::DirectTcpip { host, port, behind },
                ) => {
                    let hint = match reason {
                        russh::ChannelOpenFailure::AdministrativelyProhibited => {
                            "; AllowTcpForwarding on the jump host?"
                        }
                        russh::ChannelOpenFailure::ConnectFailed => {
                            "; the jump host could not connect there"
                        }
                        _ => "",
                    };
                    return Err(DriverError::JumpRefused {
                        device: behind.to_string(),
                        jump: target.name.clone(),
                        addr: format!("{host}:{port}"),
                        reason: format!("{reason:?}"),
                        hint,
                        by_policy: matches!(
                            reason,
                            russh::ChannelOpenFailure::AdministrativelyProhibited
                        ),
                    });
                }
                (Err(russh::Error::ChannelOpenFailure(reason)), ChannelKind::Session) => {
                    debug!(
                        ?reason,
                        "device refused a channel; treating the connection as full"
                    );
                    self.mark_full(&lease);
                    last_error = Some(format!("channel refused: {reason:?}"));
                }
                (Err(e), _) => {
                    debug!(error = %e, "pooled connection is dead; dropping it");
                    self.remove(&lease);
                    last_error = Some(e.to_string());
                }
            }
        }
        Err(DriverError::Ssh {
            device: target.name.clone(),
            reason: last_error.unwrap_or_else(|| "no usable connection".into()),
        })
    }

    /// A channel slot on one of the device's connections: a free one now,
    /// else a new connection if the device is below its limit and none is
    /// being opened, else the next slot that frees up (by `deadline`).
    /// `report_host_key`: the lease carries a first-seen host key.
    async fn acquire(
        self: &Arc<Self>,
        key: &PoolKey,
        target: &DeviceTarget,
        deadline: tokio::time::Instant,
        waited: Duration,
        report_host_key: bool,
    ) -> Result<Lease, DriverError> {
        let limit = self.config.max_connections_per_device.max(1);
        // The connect this caller waits on, to learn if it failed.
        let mut waiting_on = None;
        loop {
            let wake: Arc<Notify>;
            let mut woken;
            // Declared before the guard: dropped after it is released.
            let closed;
            {
                let mut guard = lock(&self.state);
                let state = &mut *guard;
                let dev = state.devices.entry(key.clone()).or_default();
                if let (Some(attempt), Some((failed, error))) = (waiting_on, &dev.failed)
                    && attempt == *failed
                {
                    return Err(error.clone());
                }
                closed = take_conns(&mut dev.conns, |c| !c.handle.is_closed());
                if let Some(conn) = dev
                    .conns
                    .iter_mut()
                    .filter(|c| c.open_channels < c.capacity)
                    .min_by_key(|c| c.open_channels)
                {
                    conn.open_channels += 1;
                    let host_key = if target.known_host_key.is_none() && report_host_key {
                        conn.host_key.take()
                    } else {
                        None
                    };
                    let lease = Lease {
                        shared: Arc::downgrade(self),
                        key: key.clone(),
                        id: conn.id,
                        handle: conn.handle.clone(),
                        host_key,
                    };
                    drop(guard);
                    drop(closed);
                    return Ok(lease);
                }
                if dev.connecting.is_none() && dev.conns.len() < limit {
                    state.next_id += 1;
                    let attempt = state.next_id;
                    dev.connecting = Some(attempt);
                    tokio::spawn(connect_task(
                        self.clone(),
                        key.clone(),
                        target.clone(),
                        attempt,
                    ));
                }
                waiting_on = dev.connecting;
                wake = dev.wake.clone();
                // Registered before the lock is released, so no wake-up
                // between here and the await is lost.
                woken = Box::pin(wake.notified());
                woken.as_mut().enable();
            }
            drop(closed);
            if tokio::time::timeout_at(deadline, woken).await.is_err() {
                return Err(DriverError::Busy {
                    device: target.name.clone(),
                    connections: limit,
                    waited,
                });
            }
        }
    }

    /// Pings the connection of `lease` (a jump host's, slow to open a
    /// channel) and drops it from the pool if no answer comes within
    /// `within`. Runs in a task of its own, bounded by `within`, so the
    /// caller is answered at once; holds the slot until done.
    fn remove_if_silent(self: &Arc<Self>, lease: Lease, within: Duration) {
        let shared = Arc::downgrade(self);
        tokio::spawn(async move {
            let answered = tokio::time::timeout(within, lease.handle.send_ping()).await;
            if !matches!(answered, Ok(Ok(())))
                && let Some(shared) = shared.upgrade()
            {
                debug!("no answer to a ping either; dropping the silent connection");
                shared.remove(&lease);
            }
        });
    }

    fn mark_full(&self, lease: &Lease) {
        let mut state = lock(&self.state);
        if let Some(conn) = state
            .devices
            .get_mut(&lease.key)
            .and_then(|d| d.conns.iter_mut().find(|c| c.id == lease.id))
        {
            // The refused channel is ours; the others that are open fit.
            conn.capacity = conn.open_channels.saturating_sub(1).max(1);
        }
    }

    fn remove(&self, lease: &Lease) {
        let mut closed = Vec::new();
        let mut state = lock(&self.state);
        if let Some(dev) = state.devices.get_mut(&lease.key) {
            closed = take_conns(&mut dev.conns, |c| c.id != lease.id);
            // Room for a new connection: a queued caller may open it.
            dev.wake.notify_waiters();
        }
        drop(state);
        drop(closed);
    }
}

/// [`connect_into_pool`] boxed, with its type written out: a connect may
/// open a jump host's connection, which spawns a connect of its own.
fn connect_task(
    shared: Arc<PoolShared>,
    key: PoolKey,
    target: DeviceTarget,
    attempt: u64,
) -> futures::future::BoxFuture<'static, ()> {
    Box::pin(connect_into_pool(shared, key, target, attempt))
}

/// The single connect in flight for one device: opens the connection, puts
/// it in the pool (or records why it failed) and wakes every queued caller.
async fn connect_into_pool(
    shared: Arc<PoolShared>,
    key: PoolKey,
    target: DeviceTarget,
    attempt: u64,
) {
    let result = connect(&shared, &target, &key).await;
    let mut guard = lock(&shared.state);
    let state = &mut *guard;
    state.next_id += 1;
    let id = state.next_id;
    let dev = state.devices.entry(key).or_default();
    if dev.connecting == Some(attempt) {
        dev.connecting = None;
    }
    match result {
        Ok(Connected {
            handle,
            host_key,
            via,
        }) => dev.conns.push(PooledConn {
            id,
            handle: Arc::new(handle),
            open_channels: 0,
            capacity: shared.config.max_sessions_per_connection,
            idle_since: Instant::now(),
            host_key,
            _via: via,
        }),
        Err(error) => dev.failed = Some((attempt, error)),
    }
    dev.wake.notify_waiters();
}

async fn reap(shared: Weak<PoolShared>, period: Duration) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let idle = shared.config.idle_timeout;
        let mut closed = Vec::new();
        let mut state = lock(&shared.state);
        for dev in state.devices.values_mut() {
            let gone = take_conns(&mut dev.conns, |c| {
                !c.handle.is_closed() && (c.open_channels > 0 || c.idle_since.elapsed() < idle)
            });
            if !gone.is_empty() {
                // Room below the limit: a queued caller may connect.
                dev.wake.notify_waiters();
            }
            closed.extend(gone);
        }
        state.devices.retain(|_, dev| !dev.unused());
        drop(state);
        drop(closed);
    }
}

/// Checks the server's host key against the recorded one and remembers
/// what was presented, for trust-on-first-use and for error messages.
struct HostKeyCheck {
    expected: Option<PublicKey>,
    presented: Arc<Mutex<Option<PublicKey>>>,
}

impl client::Handler for HostKeyCheck {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.clone(),
            PublicKeyOrCertificate::Certificate(cert) => PublicKey::from(cert.public_key().clone()),
        };
        let ok = self
            .expected
            .as_ref()
            .is_none_or(|expected| expected.key_data() == key.key_data());
        *self.presented.lock().unwrap_or_else(|p| p.into_inner()) = Some(key);
        Ok(ok)
    }
}

fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// A connection just opened and authenticated.
struct Connected {
    handle: SshHandle,
    /// The host key presented (OpenSSH form).
    host_key: Option<String>,
    /// The jump host's channel slot it runs over, if any.
    via: Option<Lease>,
}

/// Opens and authenticates one connection: over TCP, or through the
/// device's jump host (a `direct-tcpip` channel on the jump's pooled
/// connection, opened first if need be). All of it, the jump's connect and
/// channel open included, within `connect_timeout`.
async fn connect(
    shared: &Arc<PoolShared>,
    target: &DeviceTarget,
    key: &PoolKey,
) -> Result<Connected, DriverError> {
    let device = target.name.clone();
    let after = shared.config.connect_timeout;
    // Whether the jump host has given us its channel: a timeout before
    // that is the jump's.
    let through_jump = std::sync::atomic::AtomicBool::new(false);
    let attempt = async {
        match target.jump.as_deref() {
            None => {
                let addr = format!("{}:{}", key.host, key.port);
                let stream = TcpStream::connect(&addr)
                    .await
                    .map_err(|e| DriverError::Connect {
                        device: device.clone(),
                        addr: addr.clone(),
                        reason: e.to_string(),
                    })?;
                let _ = stream.set_nodelay(true);
                let (handle, host_key) = handshake(shared, target, key, stream).await?;
                Ok(Connected {
                    handle,
                    host_key,
                    via: None,
                })
            }
            Some(jump) => {
                let (via, channel) = shared
                    .open_direct_tcpip(jump, (&key.host, key.port), &device, after)
                    .await?;
                through_jump.store(true, Ordering::Relaxed);
                let (handle, host_key) =
                    handshake(shared, target, key, channel.into_stream()).await?;
                Ok(Connected {
                    handle,
                    host_key,
                    via: Some(via),
                })
            }
        }
    };
    let connected = tokio::time::timeout(after, attempt).await.map_err(|_| {
        match target.jump.as_deref() {
            Some(jump) if !through_jump.load(Ordering::Relaxed) => DriverError::Jump {
                device: device.clone(),
                jump: jump.name.clone(),
                reason: format!("no channel through the jump host within {after:?}"),
            },
            _ => DriverError::ConnectTimeout {
                device: device.clone(),
                after,
            },
        }
    })??;
    shared.connects.fetch_add(1, Ordering::Relaxed);
    debug!(device = %device, jump = ?key.jump, "ssh connection established");
    Ok(connected)
}

/// The SSH handshake and authentication on an open byte stream (a TCP
/// connection, or a jump host's `direct-tcpip` channel). Returns the
/// handle and the host key presented (OpenSSH form).
async fn handshake<S>(
    shared: &PoolShared,
    target: &DeviceTarget,
    key: &PoolKey,
    stream: S,
) -> Result<(SshHandle, Option<String>), DriverError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let device = target.name.clone();
    let expected = target
        .known_host_key
        .as_deref()
        .map(PublicKey::from_openssh)
        .transpose()
        .map_err(|e| DriverError::BadHostKey {
            device: device.clone(),
            reason: e.to_string(),
        })?;
    let presented = Arc::new(Mutex::new(None));
    let check = HostKeyCheck {
        expected: expected.clone(),
        presented: presented.clone(),
    };
    let legacy = target
        .legacy_algorithms
        .unwrap_or(shared.config.legacy_algorithms);
    let client_config = shared.client_configs.get(legacy);
    let mut handle = client::connect_stream(client_config, stream, check)
        .await
        .map_err(
            |e| match ssh_algorithms::negotiation_error(&device, e, legacy) {
                Ok(no_common) => no_common,
                Err(russh::Error::UnknownKey) => {
                    let seen = presented.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    DriverError::HostKeyChanged {
                        device: device.clone(),
                        expected: expected.as_ref().map(fingerprint).unwrap_or_default(),
                        presented: seen.as_ref().map(fingerprint).unwrap_or_default(),
                    }
                }
                Err(other) => DriverError::Ssh {
                    device: device.clone(),
                    reason: other.to_string(),
                },
            },
        )?;
    ssh_auth::authenticate(&mut handle, target, &key.username).await?;
    let seen = presented
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .and_then(|k| k.to_openssh().ok());
    Ok((handle, seen))
}

/// Moves bytes between a terminal's channels and an SSH shell channel until
/// either side ends. Holds the lease so the channel slot stays counted.
async fn bridge_terminal(
    _lease: Lease,
    mut closing: ClosingChannel,
    mut input: mpsc::Receiver<TerminalInput>,
    output: mpsc::Sender<Vec<u8>>,
) {
    let channel = closing.get();
    let mut input_open = true;
    loop {
        tokio::select! {
            msg = input.recv(), if input_open => match msg {
                Some(TerminalInput::Data(bytes)) => {
                    if channel.data(&bytes[..]).await.is_err() {
                        break;
                    }
                }
                Some(TerminalInput::Resize { cols, rows }) => {
                    let _ = channel.window_change(cols.into(), rows.into(), 0, 0).await;
                }
                None => {
                    // End of input: tell the device, keep reading its output.
                    input_open = false;
                    let _ = channel.eof().await;
                }
            },
            msg = channel.wait() => match msg {
                Some(ChannelMsg::Data { data }) | Some(ChannelMsg::ExtendedData { data, .. }) => {
                    if output.send(data.to_vec()).await.is_err() {
                        break;
                    }
                }
                Some(ChannelMsg::Eof) | Some(ChannelMsg::Close) | None => break,
                Some(_) => {}
            },
        }
    }
    let _ = channel.close().await;
    closing.finished();
}

/// Runs one command on an open channel, its output going to `sink` as it
/// arrives (flushed whenever the device has nothing more ready, so a
/// trickle reaches the caller as it comes). Input: `stdin` forwarded until
/// it ends, then EOF; without it, EOF at once (a command reading its input,
/// e.g. `cat`, then ends instead of waiting for the timeout). Returns the
/// exit status, if the device reported one. While the sink waits for a slow
/// caller, this does not read the channel, so russh's bounded channel
/// buffer fills and the connection stops reading from the device (TCP
/// back-pressure; other channels on that connection wait too).
async fn run_command(
    channel: &mut Channel<Msg>,
    command: &str,
    stdin: Option<Stdin>,
    sink: &mut OutputSink,
    output_bytes: &mut u64,
) -> Result<Option<u32>, CommandError> {
    channel
        .exec(true, command)
        .await
        .map_err(|e| CommandError::ConnectionLost(e.to_string()))?;
    let mut pumping = stdin.is_some();
    let pump = pump_stdin(stdin, channel.make_writer());
    tokio::pin!(pump);
    if !pumping {
        let _ = channel.eof().await;
    }
    let mut exit_status = None;
    let mut signal = None;
    let mut closed = false;
    loop {
        let msg = match channel.wait().now_or_never() {
            Some(msg) => msg,
            None => {
                sink.flush().await?;
                loop {
                    tokio::select! {
                        msg = channel.wait() => break msg,
                        () = &mut pump, if pumping => pumping = false,
                    }
                }
            }
        };
        let Some(msg) = msg else { break };
        match msg {
            ChannelMsg::Data { data } => {
                *output_bytes += data.len() as u64;
                sink.write(OutputStream::Stdout, &data).await?;
            }
            ChannelMsg::ExtendedData { data, .. } => {
                *output_bytes += data.len() as u64;
                sink.write(OutputStream::Stderr, &data).await?;
            }
            ChannelMsg::ExitStatus { exit_status: s } => exit_status = Some(s),
            ChannelMsg::ExitSignal { signal_name, .. } => signal = Some(format!("{signal_name:?}")),
            ChannelMsg::Failure => return Err(CommandError::Refused),
            ChannelMsg::Close => {
                closed = true;
                break;
            }
            _ => {}
        }
    }
    if let (None, Some(signal)) = (exit_status, signal) {
        return Err(CommandError::Killed(signal));
    }
    if !closed && exit_status.is_none() {
        return Err(CommandError::ConnectionLost(
            "the connection closed before the command finished".into(),
        ));
    }
    Ok(exit_status)
}

/// Forwards a caller's input to a command until it ends, then sends EOF.
/// With no input, never finishes (the caller sent EOF already).
async fn pump_stdin(stdin: Option<Stdin>, writer: impl tokio::io::AsyncWrite) {
    use tokio::io::AsyncWriteExt;
    let Some(mut stdin) = stdin else {
        return std::future::pending().await;
    };
    tokio::pin!(writer);
    while let Some(input) = stdin.recv().await {
        if let CallerInput::Data(bytes) = input
            && writer.write_all(&bytes).await.is_err()
        {
            return;
        }
    }
    let _ = writer.shutdown().await;
}
