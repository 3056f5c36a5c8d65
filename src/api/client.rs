//! Connecting a gRPC client to the broker's Unix socket (the CLI, tests
//! and benchmarks use it).

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::{Channel, Endpoint, Uri};

use super::pb::broker_client::BrokerClient;
use crate::uds::ReadWokenUnixStream;

/// The largest HTTP/2 frame this client accepts.
const MAX_FRAME: u32 = 256 * 1024;

/// A channel to the broker at `socket`.
///
/// Failures say what happened to the broker, as `UNAVAILABLE` statuses
/// naming the socket: a connect that fails says why (not running, no
/// permission: `broker::socket::diagnose`), and a broker that goes away
/// while calls are in flight (stopped, killed) fails them at once with
/// "lost the broker" (not tonic's `Unknown: transport error`). The channel
/// reconnects on the next call, so a client outlives a broker restart.
pub async fn channel(socket: &Path) -> Result<Channel, tonic::transport::Error> {
    let path = socket.to_path_buf();
    // The URI is a placeholder: the connector ignores it, and "localhost"
    // is a valid HTTP/2 authority.
    Endpoint::from_static("http://localhost")
        .max_frame_size(MAX_FRAME)
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                let stream = ReadWokenUnixStream::connect(&path).await.map_err(|e| {
                    let problem = crate::broker::socket::diagnose(&path);
                    io::Error::new(e.kind(), problem.to_string())
                })?;
                Ok::<_, io::Error>(TokioIo::new(BrokerIo {
                    inner: stream.coalescing(),
                    socket: Arc::new(path),
                    gone: false,
                }))
            }
        }))
        .await
}

/// The broker connection's stream: an end of stream or a reset while the
/// connection is open (the broker closes its clients' connections only
/// when it exits) becomes an error carrying an `UNAVAILABLE` status, which
/// tonic finds in the error's chain and hands to every call in flight.
///
/// Only the read side reports it. h2 hands a read error to every open
/// stream, but a write error ends the connection without telling the
/// streams why, and they then end with h2's own "stream closed because of
/// a broken pipe" (h2 0.4: `Connection::poll` returns `poll_complete`'s
/// error as is; dropping the connection closes its streams with that
/// text). So a write that finds the broker gone (`EPIPE`, `ECONNRESET`:
/// its end of the socket is closed) is taken as written and dropped, and
/// the read side, which sees the same end of stream next, reports it.
struct BrokerIo {
    inner: ReadWokenUnixStream,
    socket: Arc<PathBuf>,
    /// A write found the broker's end closed: later writes are dropped.
    gone: bool,
}

/// An I/O error whose source is the status callers get.
#[derive(Debug)]
struct BrokerGone(tonic::Status);

impl std::fmt::Display for BrokerGone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.message())
    }
}

impl std::error::Error for BrokerGone {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

impl BrokerIo {
    fn gone(&self, what: &str) -> io::Error {
        let status = tonic::Status::unavailable(format!(
            "lost the broker at {}: {what} (it stopped or was killed); calls in flight did not finish",
            self.socket.display()
        ));
        io::Error::new(io::ErrorKind::ConnectionReset, BrokerGone(status))
    }

    fn check(&self, result: io::Result<()>) -> io::Result<()> {
        match result {
            Err(e) if is_gone(&e) => Err(self.gone(&format!("{e}"))),
            other => other,
        }
    }

    /// A write's result: the broker's end found closed means `written`
    /// bytes taken (and dropped), so the read side reports the loss.
    fn wrote(&mut self, result: io::Result<usize>, written: usize) -> io::Result<usize> {
        match result {
            Err(e) if is_gone(&e) => {
                self.gone = true;
                Ok(written)
            }
            other => other,
        }
    }
}

/// Whether `e` says the other end of the socket is closed.
fn is_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
    )
}

impl AsyncRead for BrokerIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let wanted = buf.remaining() > 0;
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if wanted && buf.filled().len() == before => {
                Poll::Ready(Err(self.gone("it closed the connection")))
            }
            Poll::Ready(result) => Poll::Ready(self.check(result)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for BrokerIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.gone {
            return Poll::Ready(Ok(buf.len()));
        }
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Ready(result) => Poll::Ready(self.wrote(result, buf.len())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let len = bufs.iter().map(|b| b.len()).sum();
        if self.gone {
            return Poll::Ready(Ok(len));
        }
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(result) => Poll::Ready(self.wrote(result, len)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.gone {
            return Poll::Ready(Ok(()));
        }
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Ready(result) => Poll::Ready(self.wrote(result.map(|()| 0), 0).map(|_| ())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.gone {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A broker API client on `socket`.
pub async fn connect(socket: &Path) -> Result<BrokerClient<Channel>, tonic::transport::Error> {
    Ok(BrokerClient::new(channel(socket).await?))
}
