//! A Unix stream registered with the reactor for read readiness only: the
//! broker's gRPC socket, at both ends (the front door and `api::client`).
//!
//! Why: tokio registers every stream for reads *and* writes, edge-triggered.
//! A Unix socket turns writable again each time the peer *reads* (the bytes
//! stop counting against the writer's buffer), so every answer a caller
//! takes off the socket woke the broker's thread for nothing, and every
//! request the broker took woke the caller's: one extra sleep and wake-up
//! per call at each end, just when the other end has work to do (measured
//! with strace: an `epoll_wait` returning `EPOLLOUT` alone after each
//! answer). Here writes go straight to the non-blocking socket; only a
//! write that would block asks for write readiness, on a duplicate of the
//! descriptor registered for that wait alone and dropped once the write
//! goes through.
//!
//! **Invariant**: the stream's own registration never carries write
//! interest; a write waiting for room is the only thing that registers it.

use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

/// A connected Unix stream woken only when there is something to read (or
/// when a blocked write gets room). Implements tokio's `AsyncRead` and
/// `AsyncWrite`, so hyper/tonic serve and call over it as over
/// `tokio::net::UnixStream`.
#[derive(Debug)]
pub struct ReadWokenUnixStream {
    io: AsyncFd<StdUnixStream>,
    /// Registered for write readiness while a write waits for room.
    write_wait: Option<AsyncFd<OwnedFd>>,
}

impl ReadWokenUnixStream {
    /// Wraps a connected stream (made non-blocking here). Must be called
    /// within a tokio runtime.
    pub fn new(stream: StdUnixStream) -> io::Result<Self> {
        stream.set_nonblocking(true)?;
        Ok(Self {
            io: register(stream, Interest::READABLE)?,
            write_wait: None,
        })
    }

    /// Takes over a tokio stream (an accepted one, say).
    pub fn from_tokio(stream: tokio::net::UnixStream) -> io::Result<Self> {
        Self::new(stream.into_std()?)
    }

    /// Connects to the socket at `path`.
    pub async fn connect(path: &Path) -> io::Result<Self> {
        Self::from_tokio(tokio::net::UnixStream::connect(path).await?)
    }

    /// The connected socket, for socket options such as the peer's
    /// credentials.
    pub fn get_ref(&self) -> &StdUnixStream {
        self.io.get_ref()
    }

    /// Runs `write` until it does not block, waiting for room in between.
    fn poll_write_with<R>(
        &mut self,
        cx: &mut Context<'_>,
        write: impl Fn(&StdUnixStream) -> io::Result<R>,
    ) -> Poll<io::Result<R>> {
        loop {
            match write(self.io.get_ref()) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                done => {
                    // Deregisters the write wait, if any: room is back.
                    self.write_wait = None;
                    return Poll::Ready(done);
                }
            }
            let wait = match &mut self.write_wait {
                Some(wait) => wait,
                None => {
                    // Registering reports the current state, so room that
                    // came back since the failed write is not missed.
                    let dup = self.io.get_ref().as_fd().try_clone_to_owned()?;
                    self.write_wait.insert(register(dup, Interest::WRITABLE)?)
                }
            };
            // Cleared before retrying: the retry sees the socket's actual
            // state, and an edge after it wakes us again.
            ready!(wait.poll_write_ready(cx))?.clear_ready();
        }
    }
}

/// Registers `fd` with the reactor for `interest`.
fn register<T: AsRawFd + Into<OwnedFd>>(fd: T, interest: Interest) -> io::Result<AsyncFd<T>> {
    // SAFETY: `T` owns its descriptor (it converts into an `OwnedFd`), so
    // `as_raw_fd` names one open descriptor for as long as `T` lives, and
    // the `AsyncFd` owns `T`.
    unsafe { AsyncFd::register_with_interest(fd, interest) }.map_err(|e| e.into_parts().1)
}

impl AsyncRead for ReadWokenUnixStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let mut guard = ready!(this.io.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            let room = unfilled.len();
            match guard.try_io(|io| io.get_ref().read(unfilled)) {
                Ok(Ok(n)) => {
                    // A short read emptied the socket (as tokio's own
                    // streams assume): skip the read that would only say
                    // "would block"; the next arrival is a new edge.
                    if n > 0 && n < room {
                        guard.clear_ready();
                    }
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for ReadWokenUnixStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_with(cx, |mut io| io.write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_write_with(cx, |mut io| io.write_vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.io.get_ref().shutdown(Shutdown::Write))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const BOUND: Duration = Duration::from_secs(10);

    fn pair() -> (ReadWokenUnixStream, ReadWokenUnixStream) {
        let (a, b) = StdUnixStream::pair().unwrap();
        (
            ReadWokenUnixStream::new(a).unwrap(),
            ReadWokenUnixStream::new(b).unwrap(),
        )
    }

    #[tokio::test]
    async fn bytes_cross_both_ways_and_shutdown_ends_the_reader() {
        let (mut a, mut b) = pair();
        a.write_all(b"ping").await.unwrap();
        let mut got = [0; 4];
        tokio::time::timeout(BOUND, b.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&got, b"ping");
        b.write_all(b"pong").await.unwrap();
        b.shutdown().await.unwrap();
        let mut rest = Vec::new();
        tokio::time::timeout(BOUND, a.read_to_end(&mut rest))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rest, b"pong");
    }

    /// A write bigger than the socket buffer blocks, waits for room on
    /// the duplicate registration, and finishes once the peer reads;
    /// nothing is lost or reordered.
    #[tokio::test]
    async fn a_write_that_fills_the_buffer_resumes_when_the_peer_reads() {
        let (mut a, mut b) = pair();
        let data: Vec<u8> = (0..8 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
        let expected = data.clone();
        let writer = tokio::spawn(async move {
            a.write_all(&data).await.unwrap();
            assert!(a.write_wait.is_none(), "the write wait outlived the write");
            a.shutdown().await.unwrap();
        });
        let mut got = Vec::new();
        tokio::time::timeout(BOUND, b.read_to_end(&mut got))
            .await
            .unwrap()
            .unwrap();
        tokio::time::timeout(BOUND, writer).await.unwrap().unwrap();
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "bytes arrived changed or out of order");
    }

    #[tokio::test]
    async fn writing_to_a_closed_peer_is_an_error_not_a_hang() {
        let (mut a, b) = pair();
        drop(b);
        let err = tokio::time::timeout(BOUND, a.write_all(b"anyone?"))
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }
}
