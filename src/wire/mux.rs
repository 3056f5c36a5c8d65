//! Transport-neutral connections: one connection ([`Conn`]) carrying many
//! bidirectional streams ([`SendHalf`], [`RecvHalf`]), over QUIC (quinn)
//! or over HTTP/2 on TLS 1.3/TCP ([`super::tcp`]). Every request of the
//! service protocol rides its own stream either way, so one slow caller
//! never blocks another; everything above (`read_frame`, `write_frame`,
//! the service's request handling, the broker's links, the liveness
//! watcher) sees only these types.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use bytes::Bytes;
use quinn::VarInt;

use super::conn::ConnError;
use super::tcp::{H2Conn, H2Recv, H2Send};

/// Which transport a connection uses (`status`, metrics, logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrier {
    Quic,
    Tcp,
}

impl Carrier {
    /// `quic` or `tcp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Quic => "quic",
            Self::Tcp => "tcp",
        }
    }
}

/// One connection of the service protocol. Cheap to clone; every clone is
/// the same connection.
#[derive(Clone, Debug)]
pub enum Conn {
    Quic(quinn::Connection),
    /// HTTP/2 over TLS on TCP: each stream is one POST.
    H2(H2Conn),
}

impl From<quinn::Connection> for Conn {
    fn from(conn: quinn::Connection) -> Self {
        Self::Quic(conn)
    }
}

impl Conn {
    /// Opens a stream (the caller's side).
    pub async fn open_bi(&self) -> Result<(SendHalf, RecvHalf), ConnError> {
        match self {
            Self::Quic(c) => {
                let (send, recv) = c.open_bi().await?;
                Ok((SendHalf::Quic(send), RecvHalf::Quic(recv)))
            }
            Self::H2(c) => {
                let (send, recv) = c.open_bi().await?;
                Ok((SendHalf::H2(send), RecvHalf::H2(recv)))
            }
        }
    }

    /// The peer has logged in: a server's end grows its receive windows
    /// from the pre-login ones (`conn::PRELOGIN_CONNECTION_WINDOW`) to the
    /// full ones (`conn::CONNECTION_WINDOW`).
    pub fn open_windows(&self) {
        match self {
            Self::Quic(c) => c.set_receive_window(VarInt::from_u32(super::conn::CONNECTION_WINDOW)),
            Self::H2(c) => c.open_windows(),
        }
    }

    /// Waits for the peer's next stream (the server's side).
    pub async fn accept_bi(&self) -> Result<(SendHalf, RecvHalf), ConnError> {
        match self {
            Self::Quic(c) => {
                let (send, recv) = c.accept_bi().await?;
                Ok((SendHalf::Quic(send), RecvHalf::Quic(recv)))
            }
            Self::H2(c) => {
                let (send, recv) = c.accept_bi().await?;
                Ok((SendHalf::H2(send), RecvHalf::H2(recv)))
            }
        }
    }

    /// Closes the connection with `code` (`messages::close_code`) and a
    /// reason for the peer; every stream on it fails.
    pub fn close(&self, code: u32, reason: &[u8]) {
        match self {
            Self::Quic(c) => c.close(VarInt::from_u32(code), reason),
            Self::H2(c) => c.close(code, reason),
        }
    }

    /// Waits until the connection is closed, by either end or the network;
    /// says why.
    pub fn closed(&self) -> impl Future<Output = String> + Send + 'static {
        let this = self.clone();
        async move {
            match this {
                Self::Quic(c) => c.closed().await.to_string(),
                Self::H2(c) => c.closed().await,
            }
        }
    }

    /// True once the connection is closed.
    pub fn is_closed(&self) -> bool {
        match self {
            Self::Quic(c) => c.close_reason().is_some(),
            Self::H2(c) => c.is_closed(),
        }
    }

    /// A counter that grows whenever anything arrives from the peer
    /// (datagrams for QUIC, bytes for TCP): what the liveness watcher
    /// samples.
    pub fn received(&self) -> u64 {
        match self {
            Self::Quic(c) => c.stats().udp_rx.datagrams,
            Self::H2(c) => c.received(),
        }
    }

    /// The peer's address.
    pub fn remote_address(&self) -> SocketAddr {
        match self {
            Self::Quic(c) => c.remote_address(),
            Self::H2(c) => c.remote_address(),
        }
    }

    /// The first certificate the peer presented in TLS (DER), on the
    /// accepting end: a client certificate, when the listener asked for
    /// one and the peer gave it.
    pub fn peer_certificate(&self) -> Option<Vec<u8>> {
        match self {
            Self::Quic(c) => c
                .peer_identity()?
                .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                .ok()?
                .first()
                .map(|c| c.to_vec()),
            Self::H2(c) => c.peer_certificate().map(<[u8]>::to_vec),
        }
    }

    /// Which transport this is.
    pub fn carrier(&self) -> Carrier {
        match self {
            Self::Quic(_) => Carrier::Quic,
            Self::H2(_) => Carrier::Tcp,
        }
    }

    /// True when `self` and `other` are the same connection.
    pub fn same(&self, other: &Conn) -> bool {
        match (self, other) {
            (Self::Quic(a), Self::Quic(b)) => a.stable_id() == b.stable_id(),
            (Self::H2(a), Self::H2(b)) => a.same(b),
            _ => false,
        }
    }
}

/// The sending half of one stream.
pub enum SendHalf {
    Quic(quinn::SendStream),
    H2(H2Send),
}

/// The receiving half of one stream.
pub enum RecvHalf {
    Quic(quinn::RecvStream),
    H2(H2Recv),
}

/// Resolves when the peer stopped reading a stream (it went away or
/// cancelled its call); owned, so it can be awaited while the stream is
/// written.
pub type Stopped = Pin<Box<dyn Future<Output = ()> + Send>>;

impl SendHalf {
    /// Writes `chunks` in order, waiting for flow-control credit (memory
    /// held for a slow reader stays bounded by the stream's window).
    pub async fn write_chunks(&mut self, chunks: &mut [Bytes]) -> Result<(), ConnError> {
        match self {
            Self::Quic(s) => ChunkWrite::write_all(s, chunks).await,
            Self::H2(s) => {
                for chunk in chunks.iter_mut() {
                    s.write(std::mem::take(chunk)).await?;
                }
                Ok(())
            }
        }
    }

    /// Ends the stream cleanly (the peer reads its end after the data).
    pub fn finish(&mut self) -> Result<(), ConnError> {
        match self {
            Self::Quic(s) => Ok(s.finish()?),
            Self::H2(s) => s.finish(),
        }
    }

    /// What resolves when the peer stops reading (see [`Stopped`]), or the
    /// stream has ended. Poll it in the task that writes the stream (HTTP/2
    /// keeps one waker per stream for both).
    pub fn stopped(&mut self) -> Stopped {
        match self {
            Self::Quic(s) => {
                let stopped = s.stopped();
                Box::pin(async move {
                    let _ = stopped.await;
                })
            }
            Self::H2(s) => s.stopped(),
        }
    }

    /// After a last reply on a connection about to be closed: waits (at
    /// most `bound`) until the peer has read it. HTTP/2 flushes what is
    /// queued when it closes, so only QUIC needs to wait.
    pub async fn delivered(&self, bound: std::time::Duration) {
        if let Self::Quic(s) = self {
            let _ = tokio::time::timeout(bound, s.stopped()).await;
        }
    }
}

impl RecvHalf {
    /// Fills the front of `chunks` with what has arrived (at least one
    /// chunk; QUIC may give several at once, HTTP/2 gives one) and says
    /// how many; `Ok(None)` at the stream's clean end.
    pub async fn read_chunks(&mut self, chunks: &mut [Bytes]) -> Result<Option<usize>, ConnError> {
        match self {
            Self::Quic(r) => Ok(r.read_chunks(chunks).await?),
            Self::H2(r) => match (r.read_chunk(usize::MAX).await?, chunks.first_mut()) {
                (Some(chunk), Some(slot)) => {
                    *slot = chunk;
                    Ok(Some(1))
                }
                (Some(_), None) => Ok(Some(0)),
                (None, _) => Ok(None),
            },
        }
    }

    /// The next bytes of the stream, at most `max`; `Ok(None)` at its clean
    /// end.
    pub async fn read_chunk(&mut self, max: usize) -> Result<Option<Bytes>, ConnError> {
        match self {
            Self::Quic(r) => Ok(r.read_chunk(max, true).await?.map(|c| c.bytes)),
            Self::H2(r) => r.read_chunk(max).await,
        }
    }
}

/// A source of stream bytes that [`super::conn::read_frame`] reads frames
/// from.
pub trait ChunkRead {
    /// The next bytes, at most `max`; `Ok(None)` at the stream's clean end.
    fn read_chunk_max(
        &mut self,
        max: usize,
    ) -> impl Future<Output = Result<Option<Bytes>, ConnError>> + Send;
}

/// A stream that [`super::conn::write_frame`] writes frames to.
pub trait ChunkWrite {
    /// Writes every chunk, in order.
    fn write_all(
        &mut self,
        chunks: &mut [Bytes],
    ) -> impl Future<Output = Result<(), ConnError>> + Send;
}

impl ChunkRead for quinn::RecvStream {
    async fn read_chunk_max(&mut self, max: usize) -> Result<Option<Bytes>, ConnError> {
        Ok(self.read_chunk(max, true).await?.map(|c| c.bytes))
    }
}

impl ChunkRead for RecvHalf {
    async fn read_chunk_max(&mut self, max: usize) -> Result<Option<Bytes>, ConnError> {
        self.read_chunk(max).await
    }
}

impl ChunkWrite for quinn::SendStream {
    async fn write_all(&mut self, chunks: &mut [Bytes]) -> Result<(), ConnError> {
        // Handed to quinn as they are, not copied into its send buffer.
        match chunks {
            [one] => {
                self.write_chunk(std::mem::take(one)).await?;
            }
            many => {
                self.write_all_chunks(many).await?;
            }
        }
        Ok(())
    }
}

impl ChunkWrite for SendHalf {
    async fn write_all(&mut self, chunks: &mut [Bytes]) -> Result<(), ConnError> {
        self.write_chunks(chunks).await
    }
}

/// Byte-stream view of a stream's halves, for pumps that copy between a
/// socket and a stream (forwarded connections: [`crate::pump`]).
impl tokio::io::AsyncRead for RecvHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Quic(r) => Pin::new(r).poll_read(cx, buf),
            Self::H2(r) => r.poll_read_into(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for SendHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Quic(s) => Pin::new(s)
                .poll_write(cx, buf)
                .map_err(std::io::Error::from),
            Self::H2(s) => s.poll_write_some(cx, buf),
        }
    }

    fn poll_flush(
        self: Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    /// Half-close: the peer reads the stream's end after the data.
    fn poll_shutdown(
        self: Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(self.get_mut().finish().map_err(std::io::Error::other))
    }
}

impl SendHalf {
    /// Resets the stream with application error `code` (QUIC; HTTP/2
    /// sends `RST_STREAM` CANCEL): the peer sees it broken, not ended.
    pub fn reset(&mut self, code: u32) {
        match self {
            Self::Quic(s) => {
                let _ = s.reset(VarInt::from_u32(code));
            }
            Self::H2(s) => s.reset(),
        }
    }
}

impl RecvHalf {
    /// Tells the peer to stop sending (QUIC `STOP_SENDING`); on HTTP/2 the
    /// send side's reset covers both directions.
    pub fn stop(&mut self, code: u32) {
        if let Self::Quic(r) = self {
            let _ = r.stop(VarInt::from_u32(code));
        }
    }
}
