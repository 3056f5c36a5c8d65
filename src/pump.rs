//! Byte pumps between two duplex streams: a forwarded connection's local
//! socket and its link stream (broker), or its link stream and the device's
//! socket (service).
//!
//! Each direction copies through one bounded buffer ([`BUFFER`]) and waits
//! for its write before reading again, so a slow reader holds back its
//! writer all the way to the far end (back-pressure: TCP windows at the
//! ends, QUIC flow control between). A direction's end of file becomes the
//! other side's half-close (`shutdown`: TCP FIN, QUIC finish); the other
//! direction goes on until its own end. **Invariant:** an error in either
//! direction ends both at once and is returned, so the caller resets both
//! ends (a broken connection never looks like a complete one).

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes each direction holds at most between its read and its write.
pub const BUFFER: usize = 64 * 1024;

/// Copies `from` into `to` until `from` ends, then half-closes `to`.
/// `count` grows by each chunk written (live, for `status`).
pub async fn copy_half<R, W>(from: &mut R, to: &mut W, count: &AtomicU64) -> io::Result<()>
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    let mut buf = vec![0u8; BUFFER];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        to.write_all(&buf[..n]).await?;
        count.fetch_add(n as u64, Ordering::Relaxed);
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

#[cfg(test)]
mod tests {
    use super::*;

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
