//! Device drivers: how the service runs commands on a device.
//!
//! [`Drivers`] picks the driver named in the inventory: `ssh` (a real SSH
//! client with a warm-connection pool), `telnet` (commands in warm shells
//! over Telnet) or `simulator` (the simulated CLI, in-process, no network). Results are per command, so one slow or failing
//! command never hides the others' output.
//!
//! The driver interface (what a new driver, e.g. a shell session,
//! implements): `run(target, commands, ExecOptions, &mut OutputSink) ->
//! Result<DeviceRun, DriverError>`. It calls `sink.start_command(i)` before
//! command `i`, `sink.write(stream, bytes)` with the device's bytes as they
//! arrive (unchanged: output is bytes, not text), `sink.flush()` before it
//! waits on the device (so a trickling command reaches the caller line by
//! line), and `sink.end_command()` when the command ends; a sink error
//! stops the command (the caller went away, or its output cap). A driver
//! that cannot tell stdout from stderr (a shell) writes everything as
//! stdout and reports no exit status. Standard input ([`ExecOptions::stdin`])
//! goes to the first command; without it the command's input ends at once.

pub mod output;
pub mod platform;
pub mod scp;
pub mod shell_login;
pub mod shell_session;
mod shell_store;
pub mod simulated;
pub mod ssh;
pub mod ssh_algorithms;
mod ssh_auth;
pub mod ssh_subsystem;
pub mod ssh_transfer;
pub mod ssh_tunnel;
pub mod telnet;
pub mod telnet_protocol;
pub mod terminal;

use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;

pub use self::output::{OutputSink, OutputStream, SinkError, Tail};
use crate::service::inventory::{DeviceCredentials, DriverKind, SessionKind};
use crate::wire::messages::{Response, ShellReset, TerminalInput};

/// A caller's standard input for a command: `Data` frames (other input is
/// ignored); the sender's end is the end of input.
pub type Stdin = mpsc::Receiver<TerminalInput>;

/// What a caller asks of one device's exec besides the commands.
#[derive(Debug, Default)]
pub struct ExecOptions {
    /// Bounds each command (`None`: the configured default).
    pub timeout: Option<Duration>,
    /// Input for the first command; `None`: its input ends at once.
    pub stdin: Option<Stdin>,
    /// Fresh shells before and/or after, for devices whose commands run
    /// in a warm shell (exec channels and the simulator start fresh
    /// anyway).
    pub reset: ShellReset,
}

/// How one command ended; its output went to the [`OutputSink`], except
/// `tail`, the small remainder that rides inline.
#[derive(Debug, Clone)]
pub struct CommandRun {
    pub command: String,
    pub duration: Duration,
    /// The exit status, where the device reports one.
    pub exit_status: Option<u32>,
    /// Why the command failed (its output up to then was kept).
    pub error: Option<CommandError>,
    pub tail: Tail,
}

/// One device's run: a result per command that ran.
#[derive(Debug, Clone)]
pub struct DeviceRun {
    pub results: Vec<CommandRun>,
    /// A host key seen for the first time; the caller records it.
    pub learned_host_key: Option<String>,
    /// Output bytes the device gave in all (both streams).
    pub output_bytes: u64,
}

/// Everything a driver needs to reach one device.
#[derive(Debug, Clone)]
pub struct DeviceTarget {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub driver: DriverKind,
    pub credentials: DeviceCredentials,
    /// The host key recorded at first contact (OpenSSH public-key form).
    pub known_host_key: Option<String>,
    /// Offer the legacy SSH algorithms (see [`ssh_algorithms`]): `Some` is
    /// the device's own choice, `None` follows `ssh.legacy_algorithms`.
    pub legacy_algorithms: Option<bool>,
    /// The device's type and where its commands run.
    pub profile: DeviceProfile,
    /// The inventory device this one is reached through (SSH
    /// `direct-tcpip`, RFC 4254 §7.2, on the jump's pooled connection);
    /// `None`: a TCP connection of our own. SSH driver only.
    pub jump: Option<Box<DeviceTarget>>,
}

impl DeviceTarget {
    /// A tag of the target's secrets (password, private key, enable
    /// secret) under a keyed hash whose key (`keys`) is the caller's,
    /// random per process: pooled connections and warm shells are keyed
    /// with it, so a changed secret is used by the next connection or
    /// shell instead of one logged in with the old secret. The secrets
    /// themselves are not kept in the key.
    pub(crate) fn credentials_tag(&self, keys: &std::hash::RandomState) -> u64 {
        use std::hash::{BuildHasher, Hash, Hasher};
        let mut h = keys.build_hasher();
        let c = &self.credentials;
        for secret in [&c.password, &c.private_key, &c.enable_password] {
            secret.as_ref().map(|s| s.expose()).hash(&mut h);
        }
        h.finish()
    }
}

/// What kind of device a target is and how its commands run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeviceProfile {
    /// Its prompt, paging, enable and error conventions.
    pub platform: platform::Platform,
    /// Exec channels or a warm shell (the device's setting, else the
    /// platform's default).
    pub session: SessionKind,
}

impl DeviceProfile {
    /// The profile of a stored device type and session setting.
    pub fn new(device_type: &str, session: Option<SessionKind>) -> Self {
        let platform = platform::Platform::for_device_type(device_type);
        Self {
            platform,
            session: session.unwrap_or(platform.default_session()),
        }
    }
}

/// A command's output, gathered in memory ([`gather`]: tests and tools).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommandOutput {
    /// stdout and stderr as the device interleaved them (UTF-8, lossy).
    pub output: String,
    /// The output bytes exactly (stdout then stderr within each chunk).
    #[serde(skip)]
    pub raw: Vec<u8>,
    /// The exit status, where the device reports one.
    pub exit_status: Option<u32>,
}

/// Why one command produced no output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("timed out after {0:?}")]
    TimedOut(Duration),
    #[error("output exceeded the {limit}-byte limit")]
    TooMuchOutput { limit: u64 },
    #[error("the device refused to run the command")]
    Refused,
    #[error("connection to the device was lost: {0}")]
    ConnectionLost(String),
    /// The device's shell stopped the command (an unanswered question).
    #[error("{0}")]
    Shell(String),
    #[error("the caller went away")]
    CallerGone,
    /// The command ended by a signal (RFC 4254 §6.10 `exit-signal`).
    #[error("the command was killed by signal {0}")]
    Killed(String),
}

impl From<SinkError> for CommandError {
    fn from(e: SinkError) -> Self {
        match e {
            SinkError::CallerGone => Self::CallerGone,
            SinkError::TooMuch { limit } => Self::TooMuchOutput { limit },
        }
    }
}

/// One command's result, gathered in memory ([`gather`]).
#[derive(Debug, Clone)]
pub struct CommandResult {
    pub command: String,
    pub duration: Duration,
    pub outcome: Result<CommandOutput, CommandError>,
}

/// The results of running commands on one device, gathered in memory.
#[derive(Debug, Clone)]
pub struct DeviceExec {
    pub results: Vec<CommandResult>,
    /// A host key seen for the first time; the caller records it.
    pub learned_host_key: Option<String>,
}

/// Why a device could not be used at all.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DriverError {
    #[error("cannot connect to {device} at {addr}: {reason}")]
    Connect {
        device: String,
        addr: String,
        reason: String,
    },
    #[error("connecting to {device} timed out after {after:?}")]
    ConnectTimeout { device: String, after: Duration },
    #[error("authentication to {device} as {user:?} failed: check the device's credentials")]
    AuthenticationFailed { device: String, user: String },
    #[error(
        "host key of {device} has changed (recorded {expected}, device presented {presented}); \
         if the change is expected, clear it with `switchyard service device forget-host-key {device}`"
    )]
    HostKeyChanged {
        device: String,
        expected: String,
        presented: String,
    },
    #[error("recorded host key of {device} is unreadable: {reason}")]
    BadHostKey { device: String, reason: String },
    #[error("{device} has no username configured")]
    NoUsername { device: String },
    #[error("{device} has neither a password nor a private key configured")]
    NoCredentials { device: String },
    #[error("private key of {device} cannot be used: {reason}")]
    BadPrivateKey { device: String, reason: String },
    #[error(
        "{device} is busy: no channel on its {connections} allowed connection(s) came free \
         within {waited:?} (ssh.max_connections_per_device)"
    )]
    Busy {
        device: String,
        /// The per-device connection limit.
        connections: usize,
        /// How long the caller queued.
        waited: Duration,
    },
    #[error(
        "{device} and Switchyard share no {family} algorithm: we offered [{}], the device \
         offered [{}]; {hint}",
        ours.join(", "),
        theirs.join(", ")
    )]
    NoCommonAlgorithm {
        device: String,
        /// "key-exchange", "host-key", "cipher", "MAC" or "compression".
        family: &'static str,
        /// What we offered, in order of preference.
        ours: Vec<String>,
        /// What the device offered (from its KEXINIT, RFC 4253 §7.1).
        theirs: Vec<String>,
        /// Names the `legacy_algorithms` setting and whether it would help.
        hint: String,
    },
    #[error(
        "{device} asked {prompt:?} during keyboard-interactive authentication; only password \
         prompts can be answered"
    )]
    UnexpectedPrompt {
        device: String,
        /// The device's prompt (control characters removed, at most 128).
        prompt: String,
    },
    #[error("SSH error talking to {device}: {reason}")]
    Ssh { device: String, reason: String },
    #[error(
        "{device} did not answer within {after:?}: its connection went silent and was dropped \
         (the next call connects afresh)"
    )]
    Silent { device: String, after: Duration },
    #[error("the shell of {device} could not be set up: {reason}")]
    Shell { device: String, reason: String },
    /// The jump host could not be used (its connect, authentication or
    /// host key failed): `reason` is its own error, naming it.
    #[error("cannot reach {device} through the jump host {jump}: {reason}")]
    Jump {
        device: String,
        jump: String,
        reason: String,
    },
    /// The jump host refused to open the `direct-tcpip` channel (RFC 4254
    /// §7.2; OpenSSH does so when `AllowTcpForwarding` is off, or when it
    /// cannot connect to the target).
    #[error("the jump host {jump} refused direct-tcpip to {addr} for {device} ({reason}){hint}")]
    JumpRefused {
        device: String,
        jump: String,
        /// The target's `host:port` as asked of the jump.
        addr: String,
        /// The jump's reason code (RFC 4254 §5.1).
        reason: String,
        /// What to check on the jump host.
        hint: &'static str,
        /// Refused by the jump's policy (`SSH_OPEN_ADMINISTRATIVELY_PROHIBITED`,
        /// e.g. `AllowTcpForwarding no`), not for want of a connection:
        /// a permission refusal (SOCKS5 reply 02, RFC 1928 §6).
        by_policy: bool,
    },
    /// The jump host did not answer a `direct-tcpip` open in time. OpenSSH
    /// answers only once its own connect to the target is done, so this is
    /// most often a target the jump cannot reach; the jump's connection
    /// stays (a ping checks it, off the caller's time).
    #[error(
        "the jump host {jump} did not open direct-tcpip to {addr} for {device} within {after:?} \
         (can the jump host reach {addr}?)"
    )]
    JumpSlow {
        device: String,
        jump: String,
        /// The target's `host:port` as asked of the jump.
        addr: String,
        after: Duration,
    },
}

/// The driver set a service uses: one SSH pool, the Telnet driver, plus
/// the simulator.
#[derive(Debug)]
pub struct Drivers {
    ssh: ssh::SshPool,
    telnet: telnet::TelnetDriver,
    default_timeout: Duration,
}

impl Drivers {
    /// Must be called inside a tokio runtime (the SSH pool starts its reaper).
    pub fn new(config: ssh::SshDriverConfig) -> Self {
        Self {
            default_timeout: config.command_timeout,
            telnet: telnet::TelnetDriver::new(config.clone()),
            ssh: ssh::SshPool::new(config),
        }
    }

    /// The per-command output cap for callers who set none
    /// (`ssh.max_output_bytes`; 0 there means none).
    pub fn default_output_cap(&self) -> Option<u64> {
        Some(self.ssh.config().max_output_bytes).filter(|n| *n > 0)
    }

    /// Runs `commands` in order on one device, output streaming into
    /// `sink` (see the module docs); `options.timeout` applies to each
    /// command (the configured default when `None`).
    pub async fn run(
        &self,
        target: &DeviceTarget,
        commands: &[String],
        options: ExecOptions,
        sink: &mut OutputSink,
    ) -> Result<DeviceRun, DriverError> {
        let timeout = options.timeout.unwrap_or(self.default_timeout);
        match target.driver {
            DriverKind::Ssh => {
                self.ssh
                    .run(
                        target,
                        commands,
                        timeout,
                        options.stdin,
                        options.reset,
                        sink,
                    )
                    .await
            }
            DriverKind::Telnet => {
                self.telnet
                    .run(target, commands, timeout, options.reset, sink)
                    .await
            }
            DriverKind::Simulator => Ok(simulated::run(target, commands, sink).await),
        }
    }

    /// [`Drivers::run`] with the output gathered in memory (tests, tools).
    pub async fn exec(
        &self,
        target: &DeviceTarget,
        commands: &[String],
        timeout: Option<Duration>,
    ) -> Result<DeviceExec, DriverError> {
        let cap = self.default_output_cap();
        gather(commands.len(), cap, |mut sink| async move {
            let options = ExecOptions {
                timeout,
                ..Default::default()
            };
            self.run(target, commands, options, &mut sink).await
        })
        .await
    }

    /// A host key first seen on a connection to `device` that no caller
    /// has recorded yet (a jump host's; see [`ssh::SshPool::take_host_key`]).
    pub fn take_host_key(&self, device: &str) -> Option<String> {
        self.ssh.take_host_key(device)
    }

    /// Opens an interactive shell on a device. Returns the terminal and, on
    /// first contact, the host key to record.
    pub async fn terminal(
        &self,
        target: &DeviceTarget,
        cols: u16,
        rows: u16,
    ) -> Result<(terminal::Terminal, Option<String>), DriverError> {
        match target.driver {
            DriverKind::Ssh => self.ssh.terminal(target, cols, rows).await,
            DriverKind::Telnet => Ok((self.telnet.terminal(target, cols, rows).await?, None)),
            DriverKind::Simulator => Ok((terminal::simulated(&target.name), None)),
        }
    }
}

impl Drivers {
    /// Copies a file from the device (see [`ssh::SshPool::download`]);
    /// simulated devices have no files. `idle` defaults to the command
    /// timeout.
    pub async fn download(
        &self,
        target: &DeviceTarget,
        request: ssh_transfer::TransferRequest<'_>,
        max_bytes: Option<u64>,
        out: &mpsc::Sender<Response>,
    ) -> Result<ssh_transfer::Transferred, ssh_transfer::TransferError> {
        self.ssh_only(target)?;
        self.ssh.download(target, request, max_bytes, out).await
    }

    /// Copies a file to the device (see [`ssh::SshPool::upload`]).
    pub async fn upload(
        &self,
        target: &DeviceTarget,
        request: ssh_transfer::TransferRequest<'_>,
        size: u64,
        mode: u32,
        input: Stdin,
        out: &mpsc::Sender<Response>,
    ) -> Result<ssh_transfer::Transferred, ssh_transfer::TransferError> {
        self.ssh_only(target)?;
        self.ssh
            .upload(target, request, size, mode, input, out)
            .await
    }

    /// Starts SSH subsystem `name` on the device (see
    /// [`ssh::SshPool::open_subsystem`]); SSH devices only.
    pub async fn open_subsystem(
        &self,
        target: &DeviceTarget,
        name: &str,
        timeout: Duration,
    ) -> Result<(ssh_subsystem::SubsystemStream, Option<String>), ssh_subsystem::SubsystemError>
    {
        let device = target.name.clone();
        match target.driver {
            DriverKind::Ssh => self.ssh.open_subsystem(target, name, timeout).await,
            DriverKind::Simulator => Err(ssh_subsystem::SubsystemError::Simulated { device }),
            DriverKind::Telnet => Err(ssh_subsystem::SubsystemError::Telnet {
                device,
                name: name.to_string(),
            }),
        }
    }

    /// Opens a connection to port `port` of device `behind` (at `host`)
    /// through its jump host `jump` (see [`ssh::SshPool::open_tunnel`]);
    /// jump hosts are SSH devices (the inventory's rule).
    pub async fn open_tunnel(
        &self,
        jump: &DeviceTarget,
        (host, port): (&str, u16),
        behind: &str,
        timeout: Duration,
    ) -> Result<ssh_tunnel::TunnelStream, DriverError> {
        self.ssh
            .open_tunnel(jump, (host, port), behind, timeout)
            .await
    }

    /// The idle bound of a transfer: the command timeout.
    pub fn transfer_idle(&self) -> Duration {
        self.default_timeout
    }

    fn ssh_only(&self, target: &DeviceTarget) -> Result<(), ssh_transfer::TransferError> {
        match target.driver {
            DriverKind::Ssh => Ok(()),
            DriverKind::Simulator => Err(ssh_transfer::TransferError::Simulated {
                device: target.name.clone(),
            }),
            DriverKind::Telnet => Err(ssh_transfer::TransferError::Telnet {
                device: target.name.clone(),
            }),
        }
    }
}

/// A driver run whose output is gathered in memory: the run gets a sink
/// (per-command `cap`) and `gather` keeps every chunk, then joins each
/// command's chunks and tail. For tests and tools that want whole results;
/// the service streams instead.
pub async fn gather<F, Fut>(
    commands: usize,
    cap: Option<u64>,
    run: F,
) -> Result<DeviceExec, DriverError>
where
    F: FnOnce(OutputSink) -> Fut,
    Fut: std::future::Future<Output = Result<DeviceRun, DriverError>>,
{
    let (tx, mut rx) = mpsc::channel(16);
    let mut outputs = vec![Vec::new(); commands];
    let mut keep = |event: Response| {
        if let Response::ExecOutput { command, data, .. } = event
            && let Some(out) = outputs.get_mut(command as usize)
        {
            out.extend_from_slice(&data);
        }
    };
    // The run owns the sink: once it ends, the channel's sender is gone.
    let running = run(OutputSink::new(tx, 0, cap));
    tokio::pin!(running);
    let result = loop {
        tokio::select! {
            result = &mut running => break result,
            Some(event) = rx.recv() => keep(event),
        }
    };
    while let Ok(event) = rx.try_recv() {
        keep(event);
    }
    let run = result?;
    Ok(DeviceExec {
        results: run
            .results
            .into_iter()
            .zip(outputs)
            .map(|(r, mut raw)| {
                raw.extend_from_slice(&r.tail.stdout);
                raw.extend_from_slice(&r.tail.stderr);
                CommandResult {
                    command: r.command,
                    duration: r.duration,
                    outcome: match r.error {
                        Some(e) => Err(e),
                        None => Ok(CommandOutput {
                            output: String::from_utf8_lossy(&raw).into_owned(),
                            raw,
                            exit_status: r.exit_status,
                        }),
                    },
                }
            })
            .collect(),
        learned_host_key: run.learned_host_key,
    })
}
