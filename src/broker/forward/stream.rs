//! One forwarded connection's far end: a link stream carrying a
//! [`Request::Forward`] (or a [`Request::Subsystem`], the SSH proxy's
//! `sftp`), or (integrated mode) the device end itself: its socket, the
//! `direct-tcpip` channel through its jump host, or the subsystem channel.

use std::io;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::broker::link::{LinkChannel, LinkError};
use crate::pump::ChunkSink;
use crate::service::forward::DeviceStream;
use crate::service::ops::{Principal, ServiceOps};
use crate::wire::conn::{ConnError, Waiting, read_frame, write_frame};
use crate::wire::messages::{Request, RequestEnvelope, Response, WireError};
use crate::wire::mux::{RecvHalf, SendHalf};

/// Application error code a broken forwarded stream is reset with.
const RESET_CODE: u32 = 1;

/// The far end of one forwarded connection, connected to the device.
pub enum ForwardStream {
    /// A link stream after the service's `ForwardReady`: raw bytes.
    Remote {
        send: SendHalf,
        recv: RecvHalf,
        /// The connection is waited on while the stream lives (liveness).
        _waiting: Waiting,
    },
    /// Integrated mode: the service library connected in this process (a
    /// device's TCP port, directly or through its jump host's SSH
    /// connection, or an SSH subsystem on it).
    Local(DeviceStream),
}

impl LinkChannel {
    /// Asks the service for a TCP connection to `port` of `device` and
    /// waits for its answer (within `timeout`): the connected stream, or
    /// the service's refusal (`LinkError::Remote`, naming the device and,
    /// for a port, the setting).
    pub async fn open_forward(
        &self,
        device: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<ForwardStream, LinkError> {
        let request = Request::Forward {
            device: device.to_string(),
            port,
        };
        let what = format!("the forward to {device}:{port}");
        let device = device.to_string();
        self.open_raw(request, &what, timeout, |ops, principal| async move {
            ops.open_forward(&principal, &device, port, Some(timeout))
                .await
                .map(DeviceStream::Left)
                .map_err(|e| e.to_wire())
        })
        .await
    }

    /// Asks the service to start SSH subsystem `name` (e.g. `sftp`) on
    /// `device` and waits for its answer (within `timeout`): the
    /// subsystem's byte stream, or the service's refusal
    /// (`LinkError::Remote`, e.g. the device has no such subsystem).
    pub async fn open_subsystem(
        &self,
        device: &str,
        name: &str,
        timeout: Duration,
    ) -> Result<ForwardStream, LinkError> {
        let request = Request::Subsystem {
            device: device.to_string(),
            name: name.to_string(),
        };
        let what = format!("the {name} subsystem of {device}");
        let (device, name) = (device.to_string(), name.to_string());
        self.open_raw(request, &what, timeout, |ops, principal| async move {
            ops.open_subsystem(&principal, &device, &name, Some(timeout))
                .await
                .map(|channel| DeviceStream::Right(Box::new(channel)))
                .map_err(|e| e.to_wire())
        })
        .await
    }

    /// Sends a raw-stream `request` on a new link stream and waits (within
    /// `timeout`) for `ForwardReady` or the refusal; `what` names it in
    /// errors. In integrated mode `local` opens the device end in this
    /// process instead.
    async fn open_raw<F, Fut>(
        &self,
        request: Request,
        what: &str,
        timeout: Duration,
        local: F,
    ) -> Result<ForwardStream, LinkError>
    where
        F: FnOnce(Arc<ServiceOps>, Arc<Principal>) -> Fut,
        Fut: Future<Output = Result<DeviceStream, WireError>>,
    {
        let (conn, target, max_frame, liveness) = match self {
            Self::Local { ops, principal } => {
                return local(ops.clone(), principal.clone())
                    .await
                    .map(ForwardStream::Local)
                    .map_err(LinkError::Remote);
            }
            Self::Remote {
                conn,
                target,
                max_frame,
                liveness,
            } => (conn, target, max_frame, liveness),
        };
        let envelope = RequestEnvelope {
            deadline_ms: Some(timeout.as_millis() as u64),
            request,
        };
        let lost = |e: &dyn std::fmt::Display| LinkError::lost(target, liveness.explain(e));
        let waiting = liveness.waiting();
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| lost(&e))?;
        write_frame(&mut send, &envelope, *max_frame)
            .await
            .map_err(|e| lost(&e))?;
        let answer = tokio::time::timeout(timeout, read_frame::<Response>(&mut recv, *max_frame))
            .await
            .map_err(|_| {
                LinkError::Closed(format!(
                    "service {target} did not answer {what} within {} s",
                    timeout.as_secs()
                ))
            })?;
        match answer {
            Ok(Some(Response::ForwardReady)) => Ok(ForwardStream::Remote {
                send,
                recv,
                _waiting: waiting,
            }),
            Ok(Some(Response::Error(e))) => Err(LinkError::Remote(e)),
            Ok(other) => Err(LinkError::Protocol {
                target: target.clone(),
                reason: format!("unexpected answer to {what}: {other:?}"),
            }),
            Err(ConnError::Frame(e)) => Err(LinkError::Protocol {
                target: target.clone(),
                reason: e.to_string(),
            }),
            Err(e) => Err(lost(&e)),
        }
    }
}

impl ForwardStream {
    /// Pumps bytes between `local` and the device until both directions
    /// have ended ([`crate::pump`]: half-close passed on, back-pressure);
    /// `up` counts bytes to the device, `down` bytes from it. On an error
    /// the far end is reset here and the error returned, for the caller to
    /// reset `local`.
    pub async fn splice<L>(
        &mut self,
        local: &mut L,
        up: &AtomicU64,
        down: &AtomicU64,
    ) -> io::Result<()>
    where
        L: AsyncRead + AsyncWrite + Unpin,
    {
        let (mut local_read, mut local_write) = tokio::io::split(local);
        let local = (&mut local_read, &mut local_write);
        let result = match self {
            Self::Remote { send, recv, .. } => {
                crate::pump::splice(local, (recv, send), up, down).await
            }
            Self::Local(device) => {
                let (mut read, mut write) = tokio::io::split(device);
                crate::pump::splice(local, (&mut read, &mut write), up, down).await
            }
        };
        if result.is_err() {
            self.reset();
        }
        result
    }

    /// As [`Self::splice`], with an SSH channel of the proxy as the local
    /// end (`read` its incoming data, `write` its outgoing): bytes from
    /// the device go into the channel as owned chunks
    /// ([`crate::pump::copy_half_owned`]: read once from the link, sliced
    /// into SSH packets without another copy), and the device's end of
    /// file becomes the channel's EOF. The channel is not closed here.
    pub async fn splice_channel<R, W>(
        &mut self,
        read: &mut R,
        write: &mut W,
        up: &AtomicU64,
        down: &AtomicU64,
    ) -> io::Result<()>
    where
        R: AsyncRead + Unpin,
        W: ChunkSink,
    {
        use crate::pump::{copy_half, copy_half_owned};
        let result = match self {
            Self::Remote { send, recv, .. } => tokio::try_join!(
                copy_half(read, send, up),
                copy_half_owned(recv, write, down)
            ),
            Self::Local(device) => {
                let (mut device_read, mut device_write) = tokio::io::split(device);
                tokio::try_join!(
                    copy_half(read, &mut device_write, up),
                    copy_half_owned(&mut device_read, write, down)
                )
            }
        };
        if result.is_err() {
            self.reset();
        }
        result.map(|_| ())
    }

    /// Sends `bytes` to the device ahead of the pumped ones (a SOCKS5
    /// client's optimistic data); nothing for an empty slice.
    pub async fn send_early(&mut self, bytes: &[u8]) -> io::Result<()> {
        use tokio::io::AsyncWriteExt;
        if bytes.is_empty() {
            return Ok(());
        }
        match self {
            Self::Remote { send, .. } => send.write_all(bytes).await,
            Self::Local(device) => device.write_all(bytes).await,
        }
    }

    /// Resets the far end (the device sees a reset, not an end of file).
    pub fn reset(&mut self) {
        match self {
            Self::Remote { send, recv, .. } => {
                send.reset(RESET_CODE);
                recv.stop(RESET_CODE);
            }
            Self::Local(device) => crate::service::forward::reset(device),
        }
    }
}
