//! SSH subsystems, service side: a [`Request::Subsystem`] (the SSH
//! proxy's `sftp`, `scp` in SFTP mode, `netconf`, ...) runs the named
//! subsystem on a channel of the device's pooled connection
//! ([`super::drivers::ssh_subsystem`]) and carries its bytes on one link
//! stream, as a forward does ([`super::forward::serve_stream`]).
//!
//! Owns: one subsystem channel (and its pool slot) per request, for as
//! long as the call runs.
//!
//! Takes: a subsystem request from the RPC socket ([`serve`]), or from the
//! broker's integrated mode ([`ServiceOps::open_subsystem`], which hands
//! back the channel itself).
//!
//! Checks: the caller's device globs (a device outside them is `no device
//! NAME that you may use`), the name (a plain token), the device's driver
//! (SSH only). Subsystems need no setting of their own: a user who may run
//! commands on a device may run its subsystems (`sftp-server` is a
//! command).
//!
//! On failure: one `Error` naming the device and the subsystem (e.g.
//! `DEVICE has no sftp subsystem (the device refused the subsystem)`).
//!
//! [`Request::Subsystem`]: crate::wire::messages::Request::Subsystem

use std::time::Duration;

use crate::wire::mux::{RecvHalf, SendHalf};

use super::drivers::ssh_subsystem::SubsystemStream;
use super::forward::{DeviceStream, serve_stream};
use super::ops::{OpsError, Principal, ServiceOps};

impl ServiceOps {
    /// Checks that `principal` may use `device` and starts subsystem
    /// `name` on it, waiting at most the command timeout (or `deadline`,
    /// if sooner) for a channel and for the device's answer.
    pub async fn open_subsystem(
        &self,
        principal: &Principal,
        device: &str,
        name: &str,
        deadline: Option<Duration>,
    ) -> Result<SubsystemStream, OpsError> {
        let target = self.resolve(principal, device)?;
        let idle = self.drivers().transfer_idle();
        let limit = deadline.map_or(idle, |d| d.min(idle));
        let (stream, host_key) = self.drivers().open_subsystem(&target, name, limit).await?;
        if let Some(key) = &host_key {
            self.record_host_key(&target.name, key);
        }
        metrics::counter!("switchyard_service_subsystems_total").increment(1);
        Ok(stream)
    }
}

/// Serves one subsystem request on its link stream: one `Error` frame, or
/// `ForwardReady` and the subsystem's bytes both ways until both ends.
pub async fn serve(
    ops: &ServiceOps,
    principal: &Principal,
    (device, name): (&str, &str),
    deadline: Option<Duration>,
    send: SendHalf,
    recv: RecvHalf,
    max_frame: usize,
) {
    let opened = ops
        .open_subsystem(principal, device, name, deadline)
        .await
        .map(|channel| DeviceStream::Right(Box::new(channel)))
        .map_err(|e| e.to_wire());
    serve_stream(opened, principal, send, recv, max_frame).await;
}
