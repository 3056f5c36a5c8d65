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
//!
//! The client end also coalesces writes ([`ReadWokenUnixStream::coalescing`]):
//! an HTTP/2 client sends a call's HEADERS and its DATA from two tasks (the
//! body waits for flow-control credit, which a new stream only gets once
//! its HEADERS are on their way), so each unary call left in two writes
//! and woke the broker twice (strace: 37 then 51 bytes, more than half the
//! time read apart). A coalescing stream keeps small writes until a flush,
//! and answers the first flush of a batch by yielding once to the
//! scheduler, so whatever the other tasks queue in that turn leaves in the
//! same write. Nothing waits on a timer; a batch leaves at the latest on
//! the second flush.

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
    /// Set on a coalescing stream: small writes kept until a flush.
    batch: Option<WriteBatch>,
}

/// Writes held back until the batch's second flush (see the module doc).
#[derive(Debug, Default)]
struct WriteBatch {
    bytes: Vec<u8>,
    /// The batch's first flush has yielded to the scheduler once.
    yielded: bool,
}

/// The most a batch holds: bigger writes go straight out (after the batch),
/// so bulk transfers are not copied.
const BATCH_LIMIT: usize = 16 * 1024;

impl ReadWokenUnixStream {
    /// Wraps a connected stream (made non-blocking here). Must be called
    /// within a tokio runtime.
    pub fn new(stream: StdUnixStream) -> io::Result<Self> {
        stream.set_nonblocking(true)?;
        Ok(Self {
            io: register(stream, Interest::READABLE)?,
            write_wait: None,
            batch: None,
        })
    }

    /// Makes this stream coalesce small writes until a flush (the client
    /// end; see the module doc).
    pub fn coalescing(mut self) -> Self {
        self.batch = Some(WriteBatch::default());
        self
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

    /// Writes out the held batch, if any.
    fn poll_write_batch(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(batch) = &mut self.batch else {
            return Poll::Ready(Ok(()));
        };
        while !batch.bytes.is_empty() {
            let bytes = &batch.bytes;
            let n = ready!(poll_write_with(
                &self.io,
                &mut self.write_wait,
                cx,
                |mut io| io.write(bytes)
            ))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            batch.bytes.drain(..n);
        }
        batch.yielded = false;
        Poll::Ready(Ok(()))
    }

    /// Writes `bufs`: into the batch when they fit, else straight to the
    /// socket once the batch is out.
    fn poll_write_bufs(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Some(batch) = &mut self.batch {
            let len = bufs.iter().map(|b| b.len()).sum();
            if batch.bytes.len() + len <= BATCH_LIMIT {
                bufs.iter().for_each(|b| batch.bytes.extend_from_slice(b));
                return Poll::Ready(Ok(len));
            }
            ready!(self.poll_write_batch(cx))?;
        }
        poll_write_with(&self.io, &mut self.write_wait, cx, |mut io| {
            io.write_vectored(bufs)
        })
    }
}

/// Runs `write` on `io` until it does not block, waiting for room on a
/// write registration kept in `write_wait` meanwhile.
fn poll_write_with<R>(
    io: &AsyncFd<StdUnixStream>,
    write_wait: &mut Option<AsyncFd<OwnedFd>>,
    cx: &mut Context<'_>,
    write: impl Fn(&StdUnixStream) -> io::Result<R>,
) -> Poll<io::Result<R>> {
    loop {
        match write(io.get_ref()) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            done => {
                // Deregisters the write wait, if any: room is back.
                *write_wait = None;
                return Poll::Ready(done);
            }
        }
        let wait = match write_wait {
            Some(wait) => wait,
            None => {
                // Registering reports the current state, so room that
                // came back since the failed write is not missed.
                let dup = io.get_ref().as_fd().try_clone_to_owned()?;
                write_wait.insert(register(dup, Interest::WRITABLE)?)
            }
        };
        // Cleared before retrying: the retry sees the socket's actual
        // state, and an edge after it wakes us again.
        ready!(wait.poll_write_ready(cx))?.clear_ready();
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
            // Read into the buffer's unfilled part as it is, as tokio's own
            // streams do: zeroing it first (`initialize_unfilled`) cost a
            // memset of the whole spare room per read, which HTTP/2 keeps
            // at a frame's size (a few percent of the CLI's and broker's
            // CPU for bulk output, seen with perf).
            // SAFETY: the kernel only writes into the slice (it never reads
            // it), and only the `n` bytes it reports written are marked
            // initialized below; the same cast tokio's `PollEvented` makes.
            let unfilled = unsafe {
                &mut *(buf.unfilled_mut() as *mut [std::mem::MaybeUninit<u8>] as *mut [u8])
            };
            let room = unfilled.len();
            match guard.try_io(|io| io.get_ref().read(unfilled)) {
                Ok(Ok(n)) => {
                    // A short read emptied the socket (as tokio's own
                    // streams assume): skip the read that would only say
                    // "would block"; the next arrival is a new edge.
                    if n > 0 && n < room {
                        guard.clear_ready();
                    }
                    // SAFETY: `read` wrote these `n` bytes.
                    unsafe { buf.assume_init(n) };
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
        self.get_mut().poll_write_bufs(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_bufs(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(batch) = &mut this.batch
            && !batch.bytes.is_empty()
            && !batch.yielded
        {
            // Lets the tasks this turn woke add their frames first; the
            // wake-up brings this flush back right after them.
            batch.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        this.poll_write_batch(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_batch(cx))?;
        Poll::Ready(this.io.get_ref().shutdown(Shutdown::Write))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const BOUND: Duration = Duration::from_secs(10);

    /// Everything `s` yields until its end, within `BOUND`.
    async fn read_to_end_bounded(s: &mut ReadWokenUnixStream) -> Vec<u8> {
        let mut got = Vec::new();
        tokio::time::timeout(BOUND, s.read_to_end(&mut got))
            .await
            .unwrap()
            .unwrap();
        got
    }

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
        let rest = read_to_end_bounded(&mut a).await;
        assert_eq!(rest, b"pong");
    }

    /// A write bigger than the socket buffer blocks, waits for room on
    /// the duplicate registration, and finishes once the peer reads;
    /// nothing is lost or reordered.
    #[tokio::test]
    async fn a_write_that_fills_the_buffer_resumes_when_the_peer_reads() {
        let (a, b) = pair();
        big_write_arrives_whole(a, b, b"").await;
    }

    /// On a coalescing stream a small write is held, then a write past the
    /// batch limit sends the batch first: order is kept.
    #[tokio::test]
    async fn a_big_write_after_a_held_one_keeps_the_order() {
        let (a, b) = pair();
        big_write_arrives_whole(a.coalescing(), b, b"held first").await;
    }

    async fn big_write_arrives_whole(
        mut a: ReadWokenUnixStream,
        mut b: ReadWokenUnixStream,
        first: &'static [u8],
    ) {
        let data: Vec<u8> = (0..8 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
        let expected = [first, &data].concat();
        let writer = tokio::spawn(async move {
            a.write_all(first).await.unwrap();
            a.write_all(&data).await.unwrap();
            assert!(a.write_wait.is_none(), "the write wait outlived the write");
            a.shutdown().await.unwrap();
        });
        let got = read_to_end_bounded(&mut b).await;
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

    /// Counts its wake-ups.
    struct CountingWaker(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for CountingWaker {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// The first flush of a batch yields (waking its task) and sends
    /// nothing; what is written before the next flush leaves with it.
    #[tokio::test]
    async fn a_coalescing_stream_sends_a_batch_on_its_second_flush() {
        let (a, mut b) = StdUnixStream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        let mut a = ReadWokenUnixStream::new(a).unwrap().coalescing();
        let wakes = std::sync::Arc::new(CountingWaker(Default::default()));
        let waker = std::task::Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let woken = || wakes.0.load(std::sync::atomic::Ordering::SeqCst);
        let mut got = [0u8; 64];

        let wrote = Pin::new(&mut a).poll_write(&mut cx, b"HEADERS");
        assert!(matches!(wrote, Poll::Ready(Ok(7))));
        assert!(Pin::new(&mut a).poll_flush(&mut cx).is_pending());
        assert_eq!(woken(), 1, "the yielding flush must wake its task");
        let early = b.read(&mut got).unwrap_err();
        assert_eq!(
            early.kind(),
            io::ErrorKind::WouldBlock,
            "sent before the batch closed"
        );

        let wrote = Pin::new(&mut a).poll_write(&mut cx, b"+DATA");
        assert!(matches!(wrote, Poll::Ready(Ok(5))));
        assert!(matches!(
            Pin::new(&mut a).poll_flush(&mut cx),
            Poll::Ready(Ok(()))
        ));
        let n = b.read(&mut got).unwrap();
        assert_eq!(&got[..n], b"HEADERS+DATA");

        // An empty batch flushes at once, without yielding.
        assert!(matches!(
            Pin::new(&mut a).poll_flush(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(woken(), 1);
    }

    /// Shutting down sends what is still held, then ends the stream.
    #[tokio::test]
    async fn shutdown_sends_the_held_batch() {
        let (a, mut b) = pair();
        let mut a = a.coalescing();
        a.write_all(b"last words").await.unwrap();
        a.shutdown().await.unwrap();
        let got = read_to_end_bounded(&mut b).await;
        assert_eq!(got, b"last words");
    }
}
