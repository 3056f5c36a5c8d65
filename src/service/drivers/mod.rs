//! Device drivers: how the service runs commands on a device.
//!
//! [`Drivers`] picks the driver named in the inventory: `ssh` (a real SSH
//! client with a warm-connection pool) or `simulator` (the simulated CLI,
//! in-process, no network). Results are per command, so one slow or failing
//! command never hides the others' output.

pub mod platform;
pub mod shell_session;
pub mod simulated;
pub mod ssh;
pub mod ssh_algorithms;
mod ssh_auth;
mod ssh_shell;
pub mod terminal;

use std::time::Duration;

use serde::Serialize;

use crate::service::inventory::{DeviceCredentials, DriverKind, SessionKind};

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

/// A command's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommandOutput {
    /// stdout and stderr as the device interleaved them (UTF-8, lossy).
    pub output: String,
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
}

/// One command's result.
#[derive(Debug, Clone)]
pub struct CommandResult {
    pub command: String,
    pub duration: Duration,
    pub outcome: Result<CommandOutput, CommandError>,
}

/// The results of running commands on one device.
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
}

/// The driver set a service uses: one SSH pool, plus the simulator.
#[derive(Debug)]
pub struct Drivers {
    ssh: ssh::SshPool,
    default_timeout: Duration,
}

impl Drivers {
    /// Must be called inside a tokio runtime (the SSH pool starts its reaper).
    pub fn new(config: ssh::SshDriverConfig) -> Self {
        Self {
            default_timeout: config.command_timeout,
            ssh: ssh::SshPool::new(config),
        }
    }

    /// Runs `commands` in order on one device; `timeout` applies to each
    /// command (the configured default when `None`).
    pub async fn exec(
        &self,
        target: &DeviceTarget,
        commands: &[String],
        timeout: Option<Duration>,
    ) -> Result<DeviceExec, DriverError> {
        let timeout = timeout.unwrap_or(self.default_timeout);
        match target.driver {
            DriverKind::Ssh => self.ssh.exec(target, commands, timeout).await,
            DriverKind::Simulator => Ok(simulated::exec(
                target,
                commands,
                self.ssh.config().max_output_bytes,
            )),
        }
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
            DriverKind::Simulator => Ok((terminal::simulated(&target.name), None)),
        }
    }
}
