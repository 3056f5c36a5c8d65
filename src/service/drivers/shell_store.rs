//! Commands in warm shells: the I/O glue between a shell's byte transport
//! (a pty + shell on a pooled SSH channel, or a Telnet connection) and a
//! sans-IO [`ShellSession`], for devices whose profile says `shell`
//! (devices that refuse exec requests, or whose type runs commands in a
//! shell by default) and for every Telnet device. The transports differ
//! only in [`ShellLink`]'s send and receive; prompts, login, enable and
//! paging are the session's.
//!
//! Owns: the [`ShellStore`] of warm shells not in use (each holds its
//! connection slot: a channel slot on a pooled SSH connection, or a Telnet
//! connection permit, so shells count against the device's connection
//! limit) and the task that closes those idle longer than `idle_timeout`.
//! Takes: [`ShellStore::run`] calls from the SSH pool and the Telnet
//! driver. A shell runs one command at a time: a caller takes a warm shell
//! (or opens one), runs its commands in order and puts it back.
//!
//! On failure: a shell that cannot be set up (no prompt within
//! `connect_timeout` or the caller's deadline, login or enable refused,
//! shell refused) fails the device with [`DriverError::Shell`] (a refused
//! login: [`DriverError::AuthenticationFailed`]); a command that times out,
//! loses its transport or meets an unanswered question fails alone and its
//! shell is closed (after a Ctrl-C on SSH, so the device stops the work; a
//! closed Telnet connection hangs the device's line up), never put back; a
//! warm shell found dead on its first use is replaced once. A caller that
//! goes away mid-command drops its shell the same way.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use russh::client::Msg;
use russh::{Channel, ChannelMsg};

use super::platform::Platform;
use super::shell_login::{Login, LoginError};
use super::shell_session::{ShellError, ShellEvent, ShellOutput, ShellSession};
use super::ssh::{Lease, SshDriverConfig, SshPool};
use super::telnet::{TelnetDriver, TelnetLink};
use super::{
    CommandError, CommandRun, DeviceRun, DeviceTarget, DriverError, OutputSink, OutputStream, Tail,
};
use crate::task::AbortOnDrop;
use crate::wire::messages::ShellReset;

/// The terminal a shell is opened with: wide, so devices do not wrap the
/// echoed command or long output lines.
const COLUMNS: u32 = 511;
const ROWS: u32 = 24;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ShellKey {
    device: String,
    host: String,
    port: u16,
    username: Option<String>,
    platform: Platform,
    /// [`DeviceTarget::credentials_tag`]: a shell logged in (or enabled)
    /// with secrets since changed is not used again (it closes when idle).
    credentials: u64,
    /// The jump host, for SSH shells behind one.
    jump: Option<String>,
}

impl ShellKey {
    fn of(target: &DeviceTarget, keys: &std::hash::RandomState) -> Self {
        Self {
            device: target.name.clone(),
            host: target.host.clone(),
            port: target.port,
            username: target.credentials.username.clone(),
            platform: target.profile.platform,
            credentials: target.credentials_tag(keys),
            jump: target.jump.as_ref().map(|j| j.name.clone()),
        }
    }
}

/// A shell with its connection slot, ready for a command.
struct WarmShell {
    link: ShellLink,
    session: ShellSession,
    idle_since: Instant,
}

/// A shell's byte transport: the one thing SSH and Telnet shells differ in.
pub(super) enum ShellLink {
    /// A pty + shell on a pooled SSH connection, with its channel slot.
    Ssh {
        channel: ShellChannel,
        _lease: Lease,
    },
    /// A Telnet connection (it holds its connection permit).
    Telnet(Box<TelnetLink>),
}

impl ShellLink {
    /// Writes bytes to the device's terminal.
    async fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        match self {
            Self::Ssh { channel, .. } => channel.get().data(bytes).await.map_err(|e| e.to_string()),
            Self::Telnet(link) => link.send(bytes).await.map_err(|e| e.to_string()),
        }
    }

    /// The device's next output; `Ok(None)` when it closed the shell.
    async fn recv(&mut self) -> Result<Option<Vec<u8>>, String> {
        match self {
            Self::Ssh { channel, .. } => loop {
                match channel.get().wait().await {
                    Some(ChannelMsg::Data { data })
                    | Some(ChannelMsg::ExtendedData { data, .. }) => {
                        return Ok(Some(data.to_vec()));
                    }
                    Some(ChannelMsg::Failure) => {
                        return Err("the device refused to start a shell".into());
                    }
                    Some(ChannelMsg::Eof) | Some(ChannelMsg::Close) | None => return Ok(None),
                    Some(_) => {}
                }
            },
            Self::Telnet(link) => link.recv().await.map_err(|e| e.to_string()),
        }
    }
}

/// Where new shells come from.
#[derive(Clone, Copy)]
pub(super) enum Opener<'a> {
    Ssh(&'a SshPool),
    Telnet(&'a TelnetDriver),
}

impl Opener<'_> {
    fn config(&self) -> &SshDriverConfig {
        match self {
            Self::Ssh(pool) => pool.config(),
            Self::Telnet(telnet) => telnet.config(),
        }
    }
}

/// A shell channel that, dropped while open, gets a Ctrl-C and a close:
/// a command whose caller left stops on the device, and an idle shell
/// ends.
pub(super) struct ShellChannel(Option<Channel<Msg>>);

impl ShellChannel {
    fn get(&mut self) -> &mut Channel<Msg> {
        self.0.as_mut().expect("present until dropped")
    }
}

impl Drop for ShellChannel {
    fn drop(&mut self) {
        let Some(channel) = self.0.take() else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = channel.data(&b"\x03"[..]).await;
                let _ = channel.close().await;
            });
        }
    }
}

struct StoreInner {
    idle: Mutex<HashMap<ShellKey, Vec<WarmShell>>>,
    idle_timeout: Duration,
    /// The key of the shells' [`DeviceTarget::credentials_tag`].
    tag_keys: std::hash::RandomState,
}

impl StoreInner {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ShellKey, Vec<WarmShell>>> {
        // Every update is one insert or removal: consistent after a panic.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The warm shells not in use, by device (see the module docs).
pub(super) struct ShellStore {
    inner: Arc<StoreInner>,
    _reaper: AbortOnDrop<()>,
}

impl ShellStore {
    /// A store whose shells close after `idle_timeout` unused (at once when
    /// zero). Needs a tokio runtime (starts the reaper).
    pub(super) fn new(idle_timeout: Duration) -> Self {
        let inner = Arc::new(StoreInner {
            idle: Mutex::new(HashMap::new()),
            idle_timeout,
            tag_keys: std::hash::RandomState::new(),
        });
        let period = (idle_timeout / 2).clamp(Duration::from_millis(100), Duration::from_secs(30));
        let reaper = tokio::spawn(reap(Arc::downgrade(&inner), period));
        Self {
            inner,
            _reaper: AbortOnDrop::new(reaper),
        }
    }

    fn take(&self, key: &ShellKey) -> Option<WarmShell> {
        let mut idle = self.inner.lock();
        let shells = idle.get_mut(key)?;
        let shell = shells.pop();
        if shells.is_empty() {
            idle.remove(key);
        }
        shell
    }

    fn put(&self, key: ShellKey, mut shell: WarmShell) {
        if self.inner.idle_timeout.is_zero() {
            return;
        }
        shell.idle_since = Instant::now();
        self.inner.lock().entry(key).or_default().push(shell);
    }

    /// Runs `commands` in order in one shell of the device, each one's
    /// cleaned output going to `sink` when the command ends (a shell's
    /// output is known to be the command's only once its prompt is back;
    /// all of it is stdout, and the exit status is 1 when it holds one of
    /// the platform's error lines, else 0); `timeout` bounds each command,
    /// `connect_timeout` (and the first command's deadline) the shell's
    /// set-up. `reset.before`: the device's warm shells not in use are
    /// closed and the commands run in a newly opened one; `reset.after`:
    /// the shell is closed at the end instead of kept warm.
    pub(super) async fn run(
        &self,
        opener: Opener<'_>,
        target: &DeviceTarget,
        commands: &[String],
        timeout: Duration,
        reset: ShellReset,
        sink: &mut OutputSink,
    ) -> Result<DeviceRun, DriverError> {
        let key = ShellKey::of(target, &self.inner.tag_keys);
        let mut learned_host_key = None;
        let mut results = Vec::with_capacity(commands.len());
        let mut output_bytes = 0u64;
        let mut shell = if reset.before {
            // Dropped outside the lock: each closes its channel or
            // connection.
            let stale = self.inner.lock().remove(&key);
            drop(stale);
            None
        } else {
            self.take(&key)
        };
        for (index, command) in commands.iter().enumerate() {
            let started = Instant::now();
            sink.start_command(index as u32);
            let deadline = tokio::time::Instant::now() + timeout;
            let mut attempt = 0;
            let outcome = loop {
                attempt += 1;
                let reused = shell.is_some();
                let mut warm = match shell.take() {
                    Some(warm) => warm,
                    None => {
                        match open(opener, target, timeout, deadline, &mut learned_host_key).await {
                            Ok(warm) => warm,
                            Err(e) if results.is_empty() => return Err(e),
                            Err(e) => break Err(CommandError::ConnectionLost(e.to_string())),
                        }
                    }
                };
                match tokio::time::timeout_at(deadline, run_in_shell(&mut warm, command)).await {
                    Ok(Ok(out)) => {
                        shell = Some(warm);
                        break Ok(out);
                    }
                    // A warm shell the device closed while it sat idle.
                    Ok(Err(CommandError::ConnectionLost(_))) if reused && attempt == 1 => {}
                    Ok(Err(e)) => break Err(e),
                    Err(_) => break Err(CommandError::TimedOut(timeout)),
                }
            };
            let (exit_status, mut error) = match outcome {
                Ok(out) => {
                    output_bytes += out.output.len() as u64;
                    match sink.write(OutputStream::Stdout, &out.output).await {
                        // A shell has no exit status: the platform's
                        // error lines decide.
                        Ok(()) => (Some(u32::from(out.failed)), None),
                        Err(e) => (None, Some(CommandError::from(e))),
                    }
                }
                Err(e) => (None, Some(e)),
            };
            let tail = match sink.end_command().await {
                Ok(tail) => tail,
                Err(e) => {
                    error = error.or(Some(e.into()));
                    Tail::default()
                }
            };
            let gone = matches!(error, Some(CommandError::CallerGone));
            results.push(CommandRun {
                command: command.clone(),
                duration: started.elapsed(),
                exit_status,
                error,
                tail,
            });
            if gone {
                // The shell may be mid-command: it is not kept.
                shell = None;
                break;
            }
        }
        if let Some(warm) = shell.filter(|_| !reset.after) {
            self.put(key, warm);
        }
        Ok(DeviceRun {
            results,
            learned_host_key,
            output_bytes,
        })
    }
}

/// A shell command's output is held until its prompt comes back (only
/// then is it known to be the command's), so it always has a bound:
/// `ssh.max_output_bytes`, or [`SHELL_OUTPUT_LIMIT`] where that is 0 (no
/// cap for exec channels, which stream).
fn shell_output_limit(configured: u64) -> u64 {
    if configured == 0 {
        SHELL_OUTPUT_LIMIT
    } else {
        configured
    }
}

/// The bound on one shell command's held output when no cap is set:
/// 64 MiB.
pub const SHELL_OUTPUT_LIMIT: u64 = 64 << 20;

/// Opens a shell (an SSH pty + shell, or a Telnet connection) and sets
/// the session up (login, prompt, enable, paging off) within
/// `connect_timeout` and the caller's `deadline`.
async fn open(
    opener: Opener<'_>,
    target: &DeviceTarget,
    timeout: Duration,
    deadline: tokio::time::Instant,
    learned_host_key: &mut Option<String>,
) -> Result<WarmShell, DriverError> {
    let shell_error = |reason: String| DriverError::Shell {
        device: target.name.clone(),
        reason,
    };
    let started = tokio::time::Instant::now();
    let by = deadline.min(started + opener.config().connect_timeout);
    let limit = shell_output_limit(opener.config().max_output_bytes);
    let session = ShellSession::new(
        target.profile.platform,
        target.credentials.enable_password.clone(),
        limit,
    );
    let (mut link, mut session) = match opener {
        Opener::Ssh(pool) => {
            let (mut lease, channel) = pool.open_channel(target, timeout).await?;
            if learned_host_key.is_none() {
                *learned_host_key = lease.host_key.take();
            }
            let mut channel = ShellChannel(Some(channel));
            let ch = channel.get();
            ch.request_pty(false, "vt100", COLUMNS, ROWS, 0, 0, &[])
                .await
                .map_err(|e| shell_error(e.to_string()))?;
            ch.request_shell(true)
                .await
                .map_err(|e| shell_error(e.to_string()))?;
            let link = ShellLink::Ssh {
                channel,
                _lease: lease,
            };
            (link, session)
        }
        Opener::Telnet(telnet) => {
            let link = telnet
                .connect(target, by, COLUMNS as u16, ROWS as u16)
                .await?;
            let login = Login::new(
                target.credentials.username.clone(),
                target.credentials.password.clone(),
            );
            let session = session.with_login(login).with_newline(b"\r\n");
            (ShellLink::Telnet(Box::new(link)), session)
        }
    };
    let setup = async {
        loop {
            let Some(data) = link.recv().await.map_err(&shell_error)? else {
                return Err(shell_error("the device closed the shell".into()));
            };
            for event in session.feed(&data).map_err(|e| match e {
                ShellError::Login(LoginError::Refused { .. }) => {
                    DriverError::AuthenticationFailed {
                        device: target.name.clone(),
                        user: target.credentials.username.clone().unwrap_or_default(),
                    }
                }
                other => shell_error(other.to_string()),
            })? {
                match event {
                    ShellEvent::Send(bytes) => link.send(&bytes).await.map_err(&shell_error)?,
                    ShellEvent::Ready => return Ok(()),
                    ShellEvent::Done(_) => {}
                }
            }
        }
    };
    match tokio::time::timeout_at(by, setup).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            return Err(shell_error(format!(
                "no {} prompt within {:?} (last line seen: {:?})",
                target.profile.platform,
                by.saturating_duration_since(started),
                session.last_line().unwrap_or_default()
            )));
        }
    }
    Ok(WarmShell {
        link,
        session,
        idle_since: Instant::now(),
    })
}

/// Runs one command in a ready shell; its cleaned output. The one place a
/// shell's output leaves as bytes.
async fn run_in_shell(warm: &mut WarmShell, command: &str) -> Result<ShellOutput, CommandError> {
    let shell_error = |e: ShellError| match e {
        ShellError::TooMuchOutput { limit } => CommandError::TooMuchOutput { limit },
        other => CommandError::Shell(other.to_string()),
    };
    let send = warm.session.run(command).map_err(shell_error)?;
    let link = &mut warm.link;
    link.send(&send)
        .await
        .map_err(CommandError::ConnectionLost)?;
    loop {
        let Some(data) = link.recv().await.map_err(CommandError::ConnectionLost)? else {
            return Err(CommandError::ConnectionLost(
                "the device closed the shell".into(),
            ));
        };
        for event in warm.session.feed(&data).map_err(shell_error)? {
            match event {
                ShellEvent::Send(bytes) => link
                    .send(&bytes)
                    .await
                    .map_err(CommandError::ConnectionLost)?,
                ShellEvent::Done(out) => return Ok(out),
                ShellEvent::Ready => {}
            }
        }
    }
}

async fn reap(inner: Weak<StoreInner>, period: Duration) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let idle = inner.idle_timeout;
        // Dropped outside the lock: each drop spawns the channel's close.
        let mut expired = Vec::new();
        {
            let mut shells = inner.lock();
            for list in shells.values_mut() {
                let (old, fresh): (Vec<_>, Vec<_>) = std::mem::take(list)
                    .into_iter()
                    .partition(|s| s.idle_since.elapsed() >= idle);
                *list = fresh;
                expired.extend(old);
            }
            shells.retain(|_, list| !list.is_empty());
        }
        drop(expired);
    }
}
