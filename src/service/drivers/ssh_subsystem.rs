//! An SSH subsystem on a device (`sftp`, `netconf`, ...) as a byte stream:
//! one channel of the device's pooled SSH connection with the subsystem
//! running on it (RFC 4254, 6.5). The SSH proxy relays its clients'
//! `subsystem` requests through this (`sftp`, `scp` in its default SFTP
//! mode); file transfer (`ssh_transfer`) asks for `sftp` the same way.
//!
//! Owns: for as long as a [`SubsystemStream`] lives, one channel slot
//! (`Lease`) and the channel on it; dropping the stream closes the channel
//! and frees the slot.
//!
//! On failure: a typed [`SubsystemError`] naming the device and the
//! subsystem (the device refused it, closed the channel, or did not answer
//! within the caller's bound); a name that is not a plain token is refused
//! before the device is asked.

use std::time::Duration;

use russh::ChannelMsg;
use russh::client::Msg;

use super::DeviceTarget;
use super::DriverError;
use super::ssh::SshPool;

/// Longest subsystem name accepted, in bytes.
pub const MAX_NAME: usize = 64;

/// Why a subsystem could not be started. Each names the device.
#[derive(Debug, thiserror::Error)]
pub enum SubsystemError {
    #[error("subsystem name {name:?} is not valid: 1 to {MAX_NAME} letters, digits and . _ - @")]
    BadName { name: String },
    #[error("{device} is simulated: it runs no SSH subsystems")]
    Simulated { device: String },
    #[error("{device} is reached over Telnet: SSH subsystems ({name}) need SSH")]
    Telnet { device: String, name: String },
    #[error("{device} has no {name} subsystem ({reason})")]
    Refused {
        device: String,
        name: String,
        reason: String,
    },
    #[error("{device} did not answer the {name} subsystem request within {after:?}")]
    Stalled {
        device: String,
        name: String,
        after: Duration,
    },
    #[error(transparent)]
    Driver(#[from] DriverError),
}

/// Whether `name` is a plain subsystem name (RFC 4250, 4.6.1: printable
/// US-ASCII, no spaces; here letters, digits and `. _ - @` only).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b))
}

/// A subsystem running on a device: its bytes both ways. Shutting down the
/// write side sends the channel's end of file; reading ends at the
/// device's.
pub type SubsystemStream = super::ssh_tunnel::LeasedChannel;

/// Asks for subsystem `name` on `channel` and waits for the device's
/// answer; `Err(reason)` if it refused or closed the channel.
pub(super) async fn request(channel: &mut russh::Channel<Msg>, name: &str) -> Result<(), String> {
    channel
        .request_subsystem(true, name)
        .await
        .map_err(|e| e.to_string())?;
    loop {
        match channel.wait().await {
            Some(ChannelMsg::Success) => return Ok(()),
            Some(ChannelMsg::Failure) => return Err("the device refused the subsystem".into()),
            Some(ChannelMsg::Eof | ChannelMsg::Close) | None => {
                return Err("the device closed the channel".into());
            }
            Some(_) => {}
        }
    }
}

impl SshPool {
    /// Opens a channel to the device and starts subsystem `name` on it,
    /// within `timeout` (the channel wait and the device's answer each);
    /// also returns a host key seen for the first time, for the caller to
    /// record.
    pub async fn open_subsystem(
        &self,
        target: &DeviceTarget,
        name: &str,
        timeout: Duration,
    ) -> Result<(SubsystemStream, Option<String>), SubsystemError> {
        if !valid_name(name) {
            return Err(SubsystemError::BadName {
                name: crate::label::tidy_max(name, 80),
            });
        }
        let (mut lease, mut channel) = self.open_channel(target, timeout).await?;
        let refused = |reason: String| SubsystemError::Refused {
            device: target.name.clone(),
            name: name.to_string(),
            reason,
        };
        match tokio::time::timeout(timeout, request(&mut channel, name)).await {
            Ok(Ok(())) => {}
            Ok(Err(reason)) => return Err(refused(reason)),
            Err(_) => {
                return Err(SubsystemError::Stalled {
                    device: target.name.clone(),
                    name: name.to_string(),
                    after: timeout,
                });
            }
        }
        let host_key = lease.host_key.take();
        let stream = SubsystemStream::new(channel, lease);
        Ok((stream, host_key))
    }
}

#[cfg(test)]
mod tests {
    use super::valid_name;

    #[test]
    fn names_are_plain_tokens() {
        for good in ["sftp", "netconf", "x@example.com", "a.b_c-d"] {
            assert!(valid_name(good), "{good}");
        }
        let long = "s".repeat(65);
        for bad in ["", "sftp server", "sftp\0", "../sftp", "sftp;", &long] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }
}
