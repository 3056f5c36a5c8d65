//! Port forwarding, service side: a TCP connection to a device's port,
//! carried on one link stream.
//!
//! Owns: one forwarded connection per [`Request::Forward`](crate::wire::messages::Request::Forward)
//! — its socket to the device and its link stream — for as long as the
//! call runs.
//!
//! Takes: a forward request from the RPC socket ([`serve`]), or from the
//! broker's integrated mode ([`ServiceOps::open_forward`], which hands back
//! the device end itself, a [`PortStream`]).
//!
//! Checks, in order: the caller's device globs (a device outside them gets
//! the same `no device NAME that you may use` as an unknown one); the
//! device's driver (a simulated device has no network ports); the device's
//! `forward_ports` setting (`inventory::forwarding`: by default only the
//! device's own SSH port); then a connect within [`CONNECT_TIMEOUT`] (or
//! the caller's deadline, if sooner): a TCP connection of ours, or, for a
//! device with a `jump_host`, a `direct-tcpip` channel (RFC 4254 §7.2) on
//! the jump's pooled SSH connection — the one the device's own SSH
//! handshake rides, never a second one; chains of jumps are followed by
//! the pool ([`crate::service::drivers::ssh_tunnel`]).
//!
//! On failure: a refusal or a failed connect is one `Response::Error`
//! naming the device (and, for a port, the setting; through a jump host,
//! the jump and what to check on it, e.g. `AllowTcpForwarding`), and the
//! stream ends.
//! Once connected, bytes flow both ways through [`crate::pump`]; each
//! side's end of file is passed on as a half-close; an error on either side
//! (the device resets, the caller resets or goes away) resets the other
//! side, so a broken connection never looks complete.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use crate::wire::mux::{RecvHalf, SendHalf};
use tokio::net::TcpStream;
use tokio_util::either::Either;
use tracing::debug;

use super::drivers::ssh_subsystem::SubsystemStream;
use super::drivers::ssh_tunnel::TunnelStream;
use super::inventory::{DriverKind, ForwardTarget, InventoryError};
use super::ops::{OpsError, Principal, ServiceOps};
use crate::wire::conn::write_frame;
use crate::wire::messages::{ErrorCode, Response, WireError};

/// Longest wait for a device's port to accept a forwarded connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Application error code of a forwarded stream reset because the other
/// side failed.
pub const RESET_CODE: u32 = 1;

/// Why a forward was refused or could not connect.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// Unknown device, outside the caller's globs, or an inventory error.
    #[error(transparent)]
    Ops(#[from] OpsError),
    #[error("device {device} is simulated: it has no network ports to forward to")]
    Simulated { device: String },
    #[error(
        "port {port} of device {device} may not be forwarded to: the device's \
         forward_ports setting allows {allowed} (set by the service's administrator: \
         `switchyard service device set {device} --forward-ports PORT,...`)"
    )]
    PortNotAllowed {
        device: String,
        port: u16,
        allowed: String,
    },
    #[error("cannot connect to port {port} of device {device} ({host}): {reason}")]
    Connect {
        device: String,
        host: String,
        port: u16,
        reason: String,
    },
    #[error("port {port} of device {device} ({host}) did not accept within {secs} s")]
    Timeout {
        device: String,
        host: String,
        port: u16,
        secs: u64,
    },
    #[error(
        "port {port} of device {device} could not be reached through its jump host {jump} \
         within {secs} s"
    )]
    JumpTimeout {
        device: String,
        jump: String,
        port: u16,
        secs: u64,
    },
}

impl ForwardError {
    /// The error category (a gRPC code at the front door).
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Ops(e) => e.code(),
            Self::Simulated { .. } | Self::PortNotAllowed { .. } => ErrorCode::PermissionDenied,
            Self::Connect { .. } => ErrorCode::Unavailable,
            Self::Timeout { .. } | Self::JumpTimeout { .. } => ErrorCode::DeadlineExceeded,
        }
    }

    pub fn to_wire(&self) -> WireError {
        WireError::new(self.code(), self.to_string())
    }
}

impl ServiceOps {
    /// Checks that `principal` may forward to `port` of `device` and
    /// connects to it (within `deadline` if it is sooner than
    /// [`CONNECT_TIMEOUT`]): a TCP connection of ours, or, for a device
    /// with a jump host, a `direct-tcpip` channel on the jump's pooled
    /// SSH connection ([`TunnelStream`]).
    pub async fn open_forward(
        &self,
        principal: &Principal,
        device: &str,
        port: u16,
        deadline: Option<Duration>,
    ) -> Result<PortStream, ForwardError> {
        if !principal.scope.allows(device) {
            return Err(OpsError::NoDevice(device.to_string()).into());
        }
        let target = self
            .inventory()
            .forward_target(device)
            .map_err(|e| match e {
                InventoryError::UnknownDevice(n) => OpsError::NoDevice(n),
                other => other.into(),
            })?;
        if target.driver == DriverKind::Simulator {
            return Err(ForwardError::Simulated {
                device: target.name,
            });
        }
        if !target.allows(port) {
            return Err(ForwardError::PortNotAllowed {
                allowed: allowed_text(&target),
                device: target.name,
                port,
            });
        }
        let limit = deadline.map_or(CONNECT_TIMEOUT, |d| d.min(CONNECT_TIMEOUT));
        let stream = match &target.jump_host {
            None => Either::Left(connect_tcp(&target, port, limit).await?),
            Some(jump) => Either::Right(Box::new(
                self.connect_through(&target, jump, port, limit).await?,
            )),
        };
        metrics::counter!("switchyard_service_forwards_total").increment(1);
        Ok(stream)
    }

    /// A `direct-tcpip` channel to `port` of `target` on the pooled
    /// connection of its jump host `jump`, within `limit` (the jump's
    /// connect included); records the jump hosts' first-seen host keys.
    async fn connect_through(
        &self,
        target: &ForwardTarget,
        jump: &str,
        port: u16,
        limit: Duration,
    ) -> Result<TunnelStream, ForwardError> {
        let jump_target = self.target(jump, &[target.name.as_str()])?;
        let opening =
            self.drivers()
                .open_tunnel(&jump_target, (&target.host, port), &target.name, limit);
        let opened = tokio::time::timeout(limit, opening).await;
        self.record_jump_keys(Some(&jump_target));
        opened
            .map_err(|_| ForwardError::JumpTimeout {
                device: target.name.clone(),
                jump: jump.to_string(),
                port,
                secs: limit.as_secs(),
            })?
            .map_err(|e| OpsError::from(e).into())
    }
}

/// What `target`'s `forward_ports` allows, for a refusal.
fn allowed_text(target: &ForwardTarget) -> String {
    match (&target.allowed[..], target.explicit) {
        ([], _) => "no ports".to_string(),
        (list, explicit) => format!(
            "only {}{}",
            list.iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            if explicit {
                ""
            } else {
                " (the default: its SSH port)"
            }
        ),
    }
}

/// A TCP connection of ours to `port` of `target`, within `limit`.
async fn connect_tcp(
    target: &ForwardTarget,
    port: u16,
    limit: Duration,
) -> Result<TcpStream, ForwardError> {
    let stream = tokio::time::timeout(limit, TcpStream::connect((target.host.as_str(), port)))
        .await
        .map_err(|_| ForwardError::Timeout {
            device: target.name.clone(),
            host: target.host.clone(),
            port,
            secs: limit.as_secs(),
        })?
        .map_err(|e| ForwardError::Connect {
            device: target.name.clone(),
            host: target.host.clone(),
            port,
            reason: e.to_string(),
        })?;
    // Forwarded traffic is often interactive (a shell, a web UI): small
    // writes leave at once.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// A forwarded connection's device end: our TCP connection to the
/// device's port, or (device behind a jump host) a `direct-tcpip` channel
/// on the jump's SSH connection (boxed: a channel stream is several times
/// a socket's size).
pub type PortStream = Either<TcpStream, Box<TunnelStream>>;

/// The device end of a raw link stream: a port of the device
/// ([`Request::Forward`](crate::wire::messages::Request::Forward)) or an
/// SSH subsystem on it
/// ([`Request::Subsystem`](crate::wire::messages::Request::Subsystem)).
pub type DeviceStream = Either<PortStream, Box<SubsystemStream>>;

/// Ends the device side abruptly: a TCP reset (zero linger) for our own
/// socket; a channel (tunnel or subsystem) is closed when its stream is
/// dropped.
pub fn reset(device: &DeviceStream) {
    if let Either::Left(Either::Left(tcp)) = device {
        let _ = tcp.set_zero_linger();
    }
}

/// Serves one forward request on its link stream (see [`serve_stream`]).
pub async fn serve(
    ops: &ServiceOps,
    principal: &Principal,
    (device, port): (&str, u16),
    deadline: Option<Duration>,
    send: SendHalf,
    recv: RecvHalf,
    max_frame: usize,
) {
    let opened = ops
        .open_forward(principal, device, port, deadline)
        .await
        .map(Either::Left)
        .map_err(|e| e.to_wire());
    serve_stream(opened, principal, send, recv, max_frame).await;
}

/// Answers a raw-stream request on its link stream: its refusal as one
/// `Error` frame, or `ForwardReady` and then bytes pumped between the link
/// stream and `opened` until both sides have ended (resetting both if
/// either fails).
pub async fn serve_stream(
    opened: Result<DeviceStream, WireError>,
    principal: &Principal,
    mut send: SendHalf,
    mut recv: RecvHalf,
    max_frame: usize,
) {
    let mut device = match opened {
        Ok(device) => device,
        Err(e) => {
            debug!(user = %principal.user, error = %e, "raw stream refused");
            let _ = write_frame(&mut send, &Response::Error(e), max_frame).await;
            let _ = send.finish();
            return;
        }
    };
    if write_frame(&mut send, &Response::ForwardReady, max_frame)
        .await
        .is_err()
    {
        return;
    }
    let (up, down) = (AtomicU64::new(0), AtomicU64::new(0));
    let (mut device_read, mut device_write) = tokio::io::split(&mut device);
    let pumped = crate::pump::splice(
        (&mut recv, &mut send),
        (&mut device_read, &mut device_write),
        &up,
        &down,
    )
    .await;
    if let Err(e) = pumped {
        debug!(error = %e, "raw stream broke; resetting both sides");
        send.reset(RESET_CODE);
        recv.stop(RESET_CODE);
        reset(&device);
    }
}
