//! Messages of the service RPC protocol (ALPN `switchyard/1`).
//!
//! A connection's first bidirectional stream carries one [`AuthRequest`]
//! and one [`AuthResponse`]. Every later request opens its own stream: the
//! client sends one [`RequestEnvelope`] (and, for a terminal, then
//! [`TerminalInput`] frames); the service answers with [`Response`] frames
//! and finishes the stream. An exec's output streams as `ExecOutput` chunks
//! as the device sends it; each device ends with one `ExecDevice` frame
//! (exit statuses, and any output small enough to ride inline).

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::frame::Payload;

/// ALPN protocol id of the service RPC socket.
pub const ALPN: &[u8] = b"switchyard/1";

/// QUIC application close codes.
pub mod close_code {
    /// Normal close.
    pub const DONE: u32 = 0;
    /// Authentication failed or was not attempted in time.
    pub const UNAUTHENTICATED: u32 = 1;
    /// A frame was oversized, malformed, or out of order.
    pub const PROTOCOL_VIOLATION: u32 = 2;
    /// The service is shutting down.
    pub const SHUTTING_DOWN: u32 = 3;
    /// The peer answered nothing while it was waited on (`wire::liveness`).
    pub const PEER_SILENT: u32 = 4;
}

/// First message on a connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthRequest {
    pub credentials: Credentials,
    /// Free-form client description, for the service's logs.
    pub client: String,
}

/// How a caller proves who it is.
#[derive(Clone, Serialize, Deserialize)]
pub enum Credentials {
    /// A remote user of the service, by password.
    Password { username: String, password: String },
    /// A cloud identity, by an assertion the relay signed for this
    /// service (relayed connections and `service_direct_with_sso`).
    Assertion { token: String },
}

impl Credentials {
    /// The claimed name, for logs and lockouts.
    pub fn claimed_user(&self) -> &str {
        match self {
            Self::Password { username, .. } => username,
            Self::Assertion { .. } => "(relay assertion)",
        }
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Password { username, .. } => f
                .debug_struct("Password")
                .field("username", username)
                .field("password", &"[redacted]")
                .finish(),
            Self::Assertion { .. } => f.write_str("Assertion([redacted])"),
        }
    }
}

impl Drop for Credentials {
    fn drop(&mut self) {
        match self {
            Self::Password { password, .. } => zeroize::Zeroize::zeroize(password),
            Self::Assertion { token } => zeroize::Zeroize::zeroize(token),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum AuthResponse {
    Accepted { service: String },
    Rejected(WireError),
}

/// Error categories, mapped one-to-one onto gRPC codes at the front door.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    InvalidArgument,
    Unauthenticated,
    PermissionDenied,
    NotFound,
    ResourceExhausted,
    Unavailable,
    DeadlineExceeded,
    Cancelled,
    Internal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct WireError {
    pub code: ErrorCode,
    pub message: String,
}

impl WireError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// A request and the time the caller is still willing to wait.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestEnvelope {
    /// Milliseconds left of the caller's deadline, if it set one.
    pub deadline_ms: Option<u64>,
    pub request: Request,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// The devices this user may reach.
    Inventory,
    /// Run `commands` in order on each of `devices` (concurrently across
    /// devices). `timeout_ms` bounds each command.
    Exec {
        devices: Vec<String>,
        commands: Vec<String>,
        timeout_ms: Option<u64>,
    },
    /// An interactive shell on a device; then [`TerminalInput`] frames flow
    /// from the client and `Terminal*` responses from the service.
    Terminal {
        device: String,
        cols: u16,
        rows: u16,
    },
    /// Liveness check.
    Ping,
    /// A TCP connection to `port` of `device` (port forwarding, the SOCKS
    /// proxy). The service answers [`Response::ForwardReady`] once it is
    /// connected (or one `Error`); after that the stream carries the
    /// connection's raw bytes both ways, unframed, and each side's finish
    /// is the TCP half-close. A reset stream is a reset connection.
    Forward { device: String, port: u16 },
    /// [`Request::Exec`] with the caller's options ([`ExecFlags`]): what
    /// the broker sends. With `flags.stdin` the caller then sends its
    /// standard input as [`TerminalInput::Data`] frames and ends it by
    /// finishing its side of the stream (`Resize` is ignored).
    ExecWith {
        devices: Vec<String>,
        commands: Vec<String>,
        timeout_ms: Option<u64>,
        flags: ExecFlags,
    },
    /// Copy a file from `device` (file transfer, `switchyard cp`). The
    /// service answers one [`Response::FileReady`] (the protocol used and
    /// the file's size), then [`Response::FileData`] chunks in order, then
    /// one [`Response::FileDone`]; or an `Error` at any point (the copy is
    /// then incomplete). `max_bytes`: refuse a larger file (`None`: no cap).
    FileGet {
        device: String,
        path: String,
        protocol: TransferProtocol,
        max_bytes: Option<u64>,
    },
    /// Copy a file of exactly `size` bytes to `path` on `device`. The
    /// service answers [`Response::FileReady`] when it can take the bytes;
    /// the caller then sends them as [`TerminalInput::Data`] frames and
    /// finishes its side; the service answers [`Response::FileDone`] once
    /// the file is in place under its name (or an `Error`). Fewer or more
    /// bytes than `size` fail the copy. `mode`: the new file's permission
    /// bits (e.g. `0o644`).
    FilePut {
        device: String,
        path: String,
        protocol: TransferProtocol,
        size: u64,
        mode: u32,
    },
    /// [`Request::ExecWith`] with fresh shells around it ([`ShellReset`]).
    /// A new variant rather than a field of [`ExecFlags`], so that every
    /// exec without a reset keeps its encoding and services that predate
    /// it keep serving them (they cannot decode this one: it is a
    /// malformed frame to them, which closes the connection).
    ExecReset {
        devices: Vec<String>,
        commands: Vec<String>,
        timeout_ms: Option<u64>,
        flags: ExecFlags,
        reset: ShellReset,
    },
    /// An SSH subsystem (`name`, e.g. `sftp`, `netconf`) on `device`, run
    /// on a channel of the service's pooled connection to it (the SSH
    /// proxy's `subsystem` requests). Answered like [`Request::Forward`]:
    /// [`Response::ForwardReady`] once the device accepted the subsystem
    /// (or one `Error`, e.g. the device has no such subsystem); then the
    /// stream carries the subsystem's raw bytes both ways, unframed, each
    /// side's finish being the channel's end of file.
    Subsystem { device: String, name: String },
}

/// Fresh shell sessions around an exec, for devices whose commands run in
/// a warm shell (the SDK's `reset_before`/`reset_after`); devices whose
/// commands run on exec channels, or in the in-process simulator, start
/// fresh for every command anyway.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShellReset {
    /// Close the device's warm shells not in use and run in a newly opened
    /// one (logged in, paging off, `enable` done).
    pub before: bool,
    /// Close the shell the commands ran in instead of keeping it warm.
    pub after: bool,
}

impl ShellReset {
    /// Whether either reset is asked.
    pub fn any(self) -> bool {
        self.before || self.after
    }
}

/// How a file is copied to or from a device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransferProtocol {
    /// SFTP, else SCP when the device has no SFTP subsystem.
    #[default]
    Auto,
    /// SFTP only (the SSH `sftp` subsystem; draft-ietf-secsh-filexfer-02).
    Sftp,
    /// SCP only (`scp -f` / `scp -t` run on the device over an exec channel).
    Scp,
}

impl TransferProtocol {
    /// The name users give and see (`auto`, `sftp`, `scp`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Sftp => "sftp",
            Self::Scp => "scp",
        }
    }
}

/// A caller's exec options.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecFlags {
    /// Largest output (stdout and stderr together) one command may give,
    /// in bytes; past it the command is stopped and fails with "output
    /// exceeded". `None`: the service's default (`ssh.max_output_bytes`,
    /// 0 there meaning no cap). Output streams with bounded memory, so
    /// this is the caller's choice, not a memory guard.
    pub max_output_bytes: Option<u64>,
    /// Forward the caller's input to the command (one device, one command
    /// only). Without it the command's standard input ends at once.
    pub stdin: bool,
}

impl Request {
    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Inventory => "inventory",
            Self::Exec { .. } | Self::ExecWith { .. } | Self::ExecReset { .. } => "exec",
            Self::Terminal { .. } => "terminal",
            Self::Ping => "ping",
            Self::Forward { .. } => "forward",
            Self::FileGet { .. } => "file_get",
            Self::FilePut { .. } => "file_put",
            Self::Subsystem { .. } => "subsystem",
        }
    }

    /// Whether the caller sends more frames after the request (terminal
    /// input, an exec's forwarded stdin); every other request is the
    /// whole of its stream.
    pub fn takes_input(&self) -> bool {
        match self {
            Self::Terminal { .. }
            | Self::Forward { .. }
            | Self::FilePut { .. }
            | Self::Subsystem { .. } => true,
            Self::ExecWith { flags, .. } | Self::ExecReset { flags, .. } => flags.stdin,
            _ => false,
        }
    }
}

/// A device as callers see it (no credentials).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub device_type: String,
    pub attributes: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Inventory(Vec<DeviceInfo>),
    /// A piece of a command's output as it arrives from the device, sent
    /// before its device's `ExecDevice` (`device`/`command` index the
    /// request). Bytes exactly as the device sent them.
    ExecOutput {
        device: u32,
        command: u32,
        /// The command's standard error (SSH extended data), else its
        /// standard output. Drivers that cannot tell them apart (a shell)
        /// send everything as standard output.
        stderr: bool,
        /// Travels as the frame's payload, not in the encoded body.
        #[serde(skip)]
        data: Bytes,
    },
    /// One device finished: a result per command (the output not already
    /// sent in chunks), or the device's failure.
    ExecDevice {
        device: u32,
        commands: Vec<CommandDone>,
        error: Option<WireError>,
    },
    TerminalReady,
    TerminalOutput(#[serde(with = "serde_bytes")] Vec<u8>),
    TerminalClosed,
    Pong,
    /// The request failed as a whole.
    Error(WireError),
    /// The device's port is connected: raw bytes follow (see
    /// [`Request::Forward`]).
    ForwardReady,
    /// A file transfer can start: the protocol in use (never `Auto`) and,
    /// for a download, the file's size in bytes.
    FileReady {
        protocol: TransferProtocol,
        size: Option<u64>,
    },
    /// The next bytes of a downloaded file, in order.
    FileData {
        /// Travels as the frame's payload, not in the encoded body.
        #[serde(skip)]
        data: Bytes,
    },
    /// The transfer is complete: `bytes` were copied (a download's file is
    /// whole; an upload's is in place under its name).
    FileDone {
        bytes: u64,
    },
}

/// One command's completion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandDone {
    pub command: u32,
    /// The output not already sent in chunks.
    /// Bulk data is encoded as bytes, not a sequence of integers: the
    /// same bincode layout, decoded with one copy instead of one call per byte.
    #[serde(with = "serde_bytes")]
    pub output: Vec<u8>,
    pub exit_status: Option<u32>,
    pub duration_us: u64,
    pub error: Option<String>,
    /// The standard error not already sent in chunks.
    #[serde(with = "serde_bytes")]
    pub stderr: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TerminalInput {
    Data(#[serde(with = "serde_bytes")] Vec<u8>),
    Resize { cols: u16, rows: u16 },
}

/// Exec output rides as the frame's payload: the service hands its bytes to
/// QUIC without encoding them, the broker passes them on without decoding.
impl Payload for Response {
    fn payload(&self) -> Option<&Bytes> {
        match self {
            Response::ExecOutput { data, .. } | Response::FileData { data } => Some(data),
            _ => None,
        }
    }

    fn set_payload(&mut self, payload: Bytes) -> bool {
        match self {
            Response::ExecOutput { data, .. } | Response::FileData { data } => {
                *data = payload;
                true
            }
            _ => false,
        }
    }
}

impl Payload for AuthRequest {}
impl Payload for AuthResponse {}
impl Payload for RequestEnvelope {}
impl Payload for TerminalInput {}
