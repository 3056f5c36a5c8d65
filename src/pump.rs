//! Byte pumps between two duplex streams: a forwarded connection's local
//! socket and its link stream (broker), or its link stream and the device's
//! socket (service).
//!
//! Each direction copies through one bounded buffer ([`BUFFER`]) and waits
//! for its write before reading again, so a slow reader holds back its
//! writer all the way to the far end (back-pressure: TCP windows at the
//! ends, QUIC flow control between). A read that returns gathers whatever
//! else is ready at once (never waiting) before the write: a source that
//! hands out one piece per read (an SSH channel: one packet, at most 32
//! KiB) becomes fewer, larger writes (fewer QUIC writes and task wakeups
//! per byte), and a lone small piece (an SFTP request) goes on at once. A
//! direction's end of file becomes the other side's half-close
//! (`shutdown`: TCP FIN, QUIC finish); the other direction goes on until
//! its own end. **Invariant:** an error in either direction ends both at
//! once and is returned, so the caller resets both ends (a broken
//! connection never looks like a complete one).

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{BufMut, Bytes, BytesMut};
use futures::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes each direction holds at most between its read and its write.
pub const BUFFER: usize = 128 * 1024;

/// Reads into `buf` until something came or `from` ended, then adds
/// whatever else `from` has ready now, without waiting, while `buf` has
/// room (`buf` is bounded: a slice, or a [`bytes::buf::Limit`]). Returns
/// whether `from` ended (after the bytes read); an end is never read past.
async fn gather<R, B>(from: &mut R, buf: &mut B) -> io::Result<bool>
where
    R: AsyncRead + Unpin + ?Sized,
    B: BufMut + ?Sized,
{
    if from.read_buf(buf).await? == 0 {
        return Ok(true);
    }
    while buf.has_remaining_mut() {
        // `read_buf` is cancel-safe: a `None` (pending) loses nothing.
        match from.read_buf(buf).now_or_never() {
            Some(Ok(0)) => return Ok(true),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e),
            None => break,
        }
    }
    Ok(false)
}

/// Copies `from` into `to` until `from` ends, then half-closes `to`.
/// `count` grows by each chunk written (live, for `status`).
pub async fn copy_half<R, W>(from: &mut R, to: &mut W, count: &AtomicU64) -> io::Result<()>
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    let mut buf = vec![0u8; BUFFER];
    loop {
        let mut room = &mut buf[..];
        let ended = gather(from, &mut room).await?;
        let len = BUFFER - room.len();
        if len > 0 {
            to.write_all(&buf[..len]).await?;
            count.fetch_add(len as u64, Ordering::Relaxed);
        }
        if ended {
            return to.shutdown().await;
        }
    }
}

/// Runs both directions between `a` and `b` (each a read half and a write
/// half) until both have ended; the first error ends both.
pub async fn splice<AR, AW, BR, BW>(
    a: (&mut AR, &mut AW),
    b: (&mut BR, &mut BW),
    a_to_b: &AtomicU64,
    b_to_a: &AtomicU64,
) -> io::Result<()>
where
    AR: AsyncRead + Unpin + ?Sized,
    AW: AsyncWrite + Unpin + ?Sized,
    BR: AsyncRead + Unpin + ?Sized,
    BW: AsyncWrite + Unpin + ?Sized,
{
    tokio::try_join!(copy_half(a.0, b.1, a_to_b), copy_half(b.0, a.1, b_to_a)).map(|_| ())
}

/// A writer that takes owned chunks and keeps them as they are (an SSH
/// channel's data: each chunk is sliced into packets, never copied), with
/// back-pressure: `send` returns once the chunk is queued within the
/// peer's window.
pub trait ChunkSink {
    /// Queues `chunk` (not empty) after the ones before.
    fn send(&mut self, chunk: Bytes) -> impl Future<Output = io::Result<()>> + Send;
    /// Ends this direction (the half-close: an SSH channel's EOF).
    fn finish(&mut self) -> impl Future<Output = io::Result<()>> + Send;
}

/// As [`copy_half`], into a [`ChunkSink`]: each gathered chunk (at most
/// [`BUFFER`] bytes) is handed over as it is, so the sink copies nothing.
/// The buffer's memory is reused once the sink has let go of the chunk
/// before (else a new one is taken), and never zeroed.
pub async fn copy_half_owned<R, W>(from: &mut R, to: &mut W, count: &AtomicU64) -> io::Result<()>
where
    R: AsyncRead + Unpin + ?Sized,
    W: ChunkSink + ?Sized,
{
    let mut buf = BytesMut::new();
    loop {
        buf.reserve(BUFFER);
        let ended = gather(from, &mut (&mut buf).limit(BUFFER)).await?;
        let len = buf.len();
        if len > 0 {
            to.send(buf.split().freeze()).await?;
            count.fetch_add(len as u64, Ordering::Relaxed);
        }
        if ended {
            return to.finish().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// Hands out `pieces` pieces of `size` bytes, one per read, each ready
    /// at once (as an SSH channel's packets queued by its session), then
    /// its end of file.
    struct Pieces {
        pieces: usize,
        size: usize,
    }

    impl AsyncRead for Pieces {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if self.pieces > 0 {
                let n = self.size.min(buf.remaining());
                buf.put_slice(&vec![1u8; n]);
                self.pieces -= 1;
            }
            Poll::Ready(Ok(()))
        }
    }

    /// Records the size of every write, and whether it was shut down.
    #[derive(Default)]
    struct Writes {
        sizes: Vec<usize>,
        finished: bool,
    }

    impl AsyncWrite for Writes {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.sizes.push(buf.len());
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.finished = true;
            Poll::Ready(Ok(()))
        }
    }

    impl ChunkSink for Writes {
        async fn send(&mut self, chunk: Bytes) -> io::Result<()> {
            self.sizes.push(chunk.len());
            Ok(())
        }
        async fn finish(&mut self) -> io::Result<()> {
            self.finished = true;
            Ok(())
        }
    }

    #[tokio::test]
    async fn pieces_that_are_ready_together_go_in_one_write() {
        // Ten 32 KiB SSH packets already queued: 128 KiB writes, not ten.
        let count = AtomicU64::new(0);
        let mut to = Writes::default();
        let mut from = Pieces {
            pieces: 10,
            size: 32 * 1024,
        };
        copy_half(&mut from, &mut to, &count).await.unwrap();
        assert_eq!(to.sizes, [BUFFER, BUFFER, 2 * 32 * 1024]);
        assert!(to.finished);
        assert_eq!(count.load(Ordering::Relaxed), 10 * 32 * 1024);

        let mut to = Writes::default();
        let mut from = Pieces {
            pieces: 10,
            size: 32 * 1024,
        };
        copy_half_owned(&mut from, &mut to, &count).await.unwrap();
        assert_eq!(to.sizes, [BUFFER, BUFFER, 2 * 32 * 1024], "owned chunks");
        assert!(to.finished);
    }

    #[tokio::test]
    async fn a_lone_piece_goes_on_without_waiting_for_more() {
        // One SFTP request, and the source stays open: written at once.
        let (mut near, far) = tokio::io::duplex(1024);
        let (mut far_read, _far_write) = tokio::io::split(far);
        let (mut out, mut out_far) = tokio::io::duplex(1024);
        let count = AtomicU64::new(0);
        let pump = copy_half(&mut far_read, &mut out, &count);
        let check = async {
            near.write_all(b"request").await.unwrap();
            let mut got = [0u8; 7];
            out_far.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"request");
        };
        tokio::select! {
            r = pump => panic!("the pump ended early: {r:?}"),
            () = tokio::time::timeout(std::time::Duration::from_secs(10), check)
                .map(|r| r.expect("the piece was passed on")) => {}
        }
    }

    #[tokio::test]
    async fn half_close_passes_and_the_other_direction_goes_on() {
        let (mut a, mut a_far) = tokio::io::duplex(16);
        let (mut b, mut b_far) = tokio::io::duplex(16);
        let (up, down) = (AtomicU64::new(0), AtomicU64::new(0));
        let pump = async {
            let (mut ar, mut aw) = tokio::io::split(&mut a);
            let (mut br, mut bw) = tokio::io::split(&mut b);
            splice((&mut ar, &mut aw), (&mut br, &mut bw), &up, &down).await
        };
        let far = async {
            a_far.write_all(b"hello").await.unwrap();
            a_far.shutdown().await.unwrap();
            let mut got = Vec::new();
            b_far.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"hello", "a's end of file reached b");
            // b still talks after a's half-close.
            let mut back = Vec::new();
            let write = async {
                b_far.write_all(&[7u8; 100_000]).await.unwrap();
                b_far.shutdown().await.unwrap();
            };
            let (_, read) = tokio::join!(write, a_far.read_to_end(&mut back));
            read.unwrap();
            assert_eq!(back.len(), 100_000);
        };
        let both = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            tokio::join!(pump, far)
        });
        let (pumped, ()) = both.await.expect("the end of file was passed on");
        pumped.unwrap();
        assert_eq!(up.load(Ordering::Relaxed), 5);
        assert_eq!(down.load(Ordering::Relaxed), 100_000);
    }
}
