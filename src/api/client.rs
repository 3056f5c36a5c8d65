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
                }))
            }
        }))
        .await
}

/// The broker connection's stream: an end of stream or a reset while the
/// connection is open (the broker closes its clients' connections only
/// when it exits) becomes an error carrying an `UNAVAILABLE` status, which
/// tonic finds in the error's chain and hands to every call in flight.
struct BrokerIo {
    inner: ReadWokenUnixStream,
    socket: Arc<PathBuf>,
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
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                ) =>
            {
                Err(self.gone(&format!("{e}")))
            }
            other => other,
        }
    }
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
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(self.check(Err(e)).unwrap_err())),
            other => other,
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(self.check(Err(e)).unwrap_err())),
            other => other,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Ready(result) => Poll::Ready(self.check(result)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A broker API client on `socket`.
pub async fn connect(socket: &Path) -> Result<BrokerClient<Channel>, tonic::transport::Error> {
    Ok(BrokerClient::new(channel(socket).await?))
}
