//! A TCP connection made by a jump host: a `direct-tcpip` channel (RFC
//! 4254 §7.2) on the jump's pooled SSH connection, to a port of a device
//! reached through it, as a byte stream. Port forwards and SOCKS5 proxies
//! to a device with a `jump_host` ride this instead of a socket of ours.
//!
//! Owns: for as long as a [`TunnelStream`] lives, one channel slot on the
//! jump's connection (`Lease`) and the channel on it; dropping the stream
//! closes the channel and frees the slot. The jump's connection is the
//! pool's own (the one a device's SSH handshake through that jump uses
//! too), opened on first use; a chain of jump hosts is followed by the
//! pool.
//!
//! On failure: [`DriverError::JumpRefused`] when the jump host says no
//! (`AllowTcpForwarding no`, or it cannot connect to the port),
//! [`DriverError::JumpSlow`] when it does not answer in time (it may still
//! be connecting there: the jump's connection, shared by others, stays
//! unless a ping finds it silent too), else [`DriverError::Jump`]; all
//! name the jump and the device.
//!
//! Bytes: writes are channel data (the peer's window and russh's bounded
//! channel buffer give back-pressure); shutting the write side down sends
//! the channel's EOF, which the jump passes on as a TCP half-close; reading
//! ends at the jump's EOF.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use russh::ChannelStream;
use russh::client::Msg;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::ssh::{Lease, SshPool};
use super::{DeviceTarget, DriverError};

/// A channel on a pooled SSH connection as a byte stream, holding its slot
/// on that connection (`Lease`) for as long as it lives: a port reached
/// through a jump host ([`TunnelStream`]) or a device's subsystem
/// (`ssh_subsystem::SubsystemStream`). Dropping it closes the channel and
/// frees the slot; shutting its write side down sends the channel's EOF.
pub struct LeasedChannel {
    stream: ChannelStream<Msg>,
    _lease: Lease,
}

/// A port of a device, reached through its jump host's SSH connection.
pub type TunnelStream = LeasedChannel;

impl LeasedChannel {
    /// `channel` as a stream, keeping `lease` (its slot) with it.
    pub(super) fn new(channel: russh::Channel<Msg>, lease: Lease) -> Self {
        Self {
            stream: channel.into_stream(),
            _lease: lease,
        }
    }
}

impl AsyncRead for LeasedChannel {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for LeasedChannel {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl SshPool {
    /// Opens a connection to `addr` (the device's host and a port) through
    /// `jump`, the jump host of device `behind`: a `direct-tcpip` channel
    /// on the jump's pooled connection, within `timeout` (the channel
    /// open; with `connect_timeout` also the wait for a slot, the jump's
    /// connect included).
    pub async fn open_tunnel(
        &self,
        jump: &DeviceTarget,
        addr: (&str, u16),
        behind: &str,
        timeout: Duration,
    ) -> Result<TunnelStream, DriverError> {
        let (lease, channel) = self.open_direct_tcpip(jump, addr, behind, timeout).await?;
        Ok(LeasedChannel::new(channel, lease))
    }
}
