//! End-to-end encryption through the relay: a QUIC connection carried
//! inside one relayed stream.
//!
//! The relay bridges one of the broker's streams to one of the service's.
//! Over that byte pipe the two ends run an ordinary quinn endpoint — the
//! service RPC protocol unchanged: TLS 1.3 with the service's own identity,
//! pinned by fingerprint, one QUIC stream per request — whose "UDP socket"
//! ([`TunnelSocket`]) writes each packet as a length-prefixed frame into the
//! stream and reads the peer's packets from it. The relay sees only those
//! frames: QUIC packets it has no keys for.
//!
//! Because the carrier is reliable and ordered, the inner connection never
//! sees loss; it uses packets far larger than a network's MTU
//! ([`TUNNEL_MTU`]) so each crosses the relay with little overhead.
//!
//! **Invariant:** the socket's pump tasks are owned by the socket (aborted
//! when the endpoint drops it); [`TunnelEndpoint::closed`] fires when the
//! carrier stream ends, so owners can close the inner connection at once
//! instead of waiting for its idle timeout.

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, Endpoint, EndpointConfig, RecvStream, SendStream, UdpPoller};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;

use super::conn::{ConnError, TransportLimits, transport_config};
use crate::task::AbortOnDrop;

/// Inner QUIC packet size. quinn encodes a long-header packet's length as
/// a 2-byte varint, so packets must stay under 16 KiB (larger ones trip an
/// assertion in quinn-proto during the handshake).
pub const TUNNEL_MTU: u16 = 16_000;
/// Packets queued in each direction before the sender is told to wait.
const QUEUE: usize = 256;
/// Packets written to the carrier in one go (also the most quinn may hand
/// over in one `try_send`).
const BATCH: usize = 64;

/// Addresses the inner endpoints use for each other (never on a network).
pub const CLIENT_ADDR: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 255, 0, 1)),
    1,
);
pub const SERVICE_ADDR: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 255, 0, 2)),
    1,
);

/// Which end of the tunnel this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelRole {
    /// The broker: connects to [`SERVICE_ADDR`].
    Client,
    /// The service: accepts from [`CLIENT_ADDR`].
    Service,
}

/// Transport settings for the inner connection: large packets, no path MTU
/// probing, and a congestion window that does not start tiny (the relay's
/// own QUIC connections do the real congestion control).
pub fn tunnel_transport(limits: &TransportLimits) -> Arc<quinn::TransportConfig> {
    let mut transport = transport_config(limits);
    let mut cubic = quinn::congestion::CubicConfig::default();
    cubic.initial_window(64 * u64::from(TUNNEL_MTU));
    transport
        .initial_mtu(TUNNEL_MTU)
        .min_mtu(TUNNEL_MTU)
        .mtu_discovery_config(None)
        .congestion_controller_factory(Arc::new(cubic));
    Arc::new(transport)
}

/// An inner endpoint running over one relayed stream.
pub struct TunnelEndpoint {
    pub endpoint: Endpoint,
    closed: CancellationToken,
}

impl TunnelEndpoint {
    /// Starts an endpoint whose packets ride `send`/`recv`. A service passes
    /// its server configuration; a client passes `None` and connects to
    /// [`SERVICE_ADDR`].
    pub fn start(
        role: TunnelRole,
        send: SendStream,
        recv: RecvStream,
        server: Option<quinn::ServerConfig>,
    ) -> Result<Self, ConnError> {
        let closed = CancellationToken::new();
        let socket = TunnelSocket::start(role, send, recv, closed.clone());
        let mut config = EndpointConfig::default();
        config
            .max_udp_payload_size(TUNNEL_MTU)
            .map_err(|e| ConnError::Tls(e.to_string()))?;
        let endpoint = Endpoint::new_with_abstract_socket(
            config,
            server,
            socket,
            Arc::new(quinn::TokioRuntime),
        )?;
        Ok(Self { endpoint, closed })
    }

    /// Resolves when the carrier stream has ended (either side, or the
    /// relay connection, went away).
    pub fn closed(&self) -> impl Future<Output = ()> + Send + 'static {
        self.closed.clone().cancelled_owned()
    }

    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }
}

/// The inner endpoint's "UDP socket".
struct TunnelSocket {
    local: SocketAddr,
    peer: SocketAddr,
    outgoing: mpsc::Sender<Bytes>,
    incoming: Mutex<mpsc::Receiver<Bytes>>,
    _pumps: [AbortOnDrop<()>; 2],
}

impl fmt::Debug for TunnelSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TunnelSocket")
            .field("local", &self.local)
            .field("peer", &self.peer)
            .finish()
    }
}

impl TunnelSocket {
    fn start(
        role: TunnelRole,
        send: SendStream,
        recv: RecvStream,
        closed: CancellationToken,
    ) -> Arc<Self> {
        let (local, peer) = match role {
            TunnelRole::Client => (CLIENT_ADDR, SERVICE_ADDR),
            TunnelRole::Service => (SERVICE_ADDR, CLIENT_ADDR),
        };
        let (out_tx, out_rx) = mpsc::channel(QUEUE);
        let (in_tx, in_rx) = mpsc::channel(QUEUE);
        let writer = tokio::spawn(write_packets(send, out_rx, closed.clone()));
        let reader = tokio::spawn(read_packets(recv, in_tx, closed));
        Arc::new(Self {
            local,
            peer,
            outgoing: out_tx,
            incoming: Mutex::new(in_rx),
            _pumps: [AbortOnDrop::new(writer), AbortOnDrop::new(reader)],
        })
    }
}

/// Writes queued packets (already framed by `try_send`) into the carrier,
/// batching what is ready; quinn takes the buffers without copying them.
async fn write_packets(
    mut send: SendStream,
    mut queue: mpsc::Receiver<Bytes>,
    closed: CancellationToken,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while queue.recv_many(&mut batch, BATCH).await > 0 {
        if send.write_all_chunks(&mut batch).await.is_err() {
            break;
        }
        batch.clear();
    }
    let _ = send.finish();
    closed.cancel();
}

/// Reads the peer's packets from the carrier. Awaiting queue space pushes
/// back on the carrier's flow control instead of dropping packets.
async fn read_packets(recv: RecvStream, queue: mpsc::Sender<Bytes>, closed: CancellationToken) {
    let codec = LengthDelimitedCodec::builder()
        .length_field_length(2)
        .max_frame_length(usize::from(TUNNEL_MTU))
        .new_codec();
    // Room for several whole packets, so reads are not cut at 8 KiB.
    let mut frames = FramedRead::with_capacity(recv, codec, 4 * usize::from(TUNNEL_MTU));
    while let Some(Ok(packet)) = frames.next().await {
        if queue.send(packet.freeze()).await.is_err() {
            break;
        }
    }
    closed.cancel();
}

impl AsyncUdpSocket for TunnelSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(TunnelPoller {
            outgoing: self.outgoing.clone(),
            waiting: Mutex::new(None),
        })
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        let size = transmit
            .segment_size
            .unwrap_or(transmit.contents.len())
            .max(1);
        let segments = transmit.contents.len().div_ceil(size);
        if self.outgoing.is_closed() {
            // Like UDP to a vanished host: the packet is lost, and the
            // carrier's `closed` signal ends the connection.
            return Ok(());
        }
        if self.outgoing.capacity() < segments {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        for segment in transmit.contents.chunks(size) {
            // The one copy out of quinn's buffer also writes the frame
            // header, so the writer hands the frame on untouched.
            let mut frame = BytesMut::with_capacity(2 + segment.len());
            frame.put_u16(segment.len() as u16);
            frame.put_slice(segment);
            if self.outgoing.try_send(frame.freeze()).is_err() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut incoming = self.incoming.lock().unwrap_or_else(|p| p.into_inner());
        let mut filled = 0;
        while filled < bufs.len().min(meta.len()) {
            let packet = if filled == 0 {
                match incoming.poll_recv(cx) {
                    Poll::Ready(Some(p)) => p,
                    // The carrier ended: nothing more will come; the owner
                    // closes the endpoint on `closed`.
                    Poll::Ready(None) | Poll::Pending => return Poll::Pending,
                }
            } else {
                match incoming.try_recv() {
                    Ok(p) => p,
                    Err(_) => break,
                }
            };
            let buf = &mut bufs[filled];
            if packet.len() > buf.len() {
                // Larger than we told the peer we accept: drop it, as a
                // network would.
                continue;
            }
            buf[..packet.len()].copy_from_slice(&packet);
            meta[filled] = RecvMeta {
                addr: self.peer,
                len: packet.len(),
                stride: packet.len(),
                ecn: None,
                dst_ip: None,
            };
            filled += 1;
        }
        Poll::Ready(Ok(filled))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }

    fn max_transmit_segments(&self) -> usize {
        BATCH
    }

    fn may_fragment(&self) -> bool {
        false
    }
}

type Wait = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Wakes the endpoint when the outgoing queue has room again.
struct TunnelPoller {
    outgoing: mpsc::Sender<Bytes>,
    /// `Mutex` only to make the boxed future `Sync`; never contended.
    waiting: Mutex<Option<Wait>>,
}

impl fmt::Debug for TunnelPoller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TunnelPoller")
    }
}

impl UdpPoller for TunnelPoller {
    fn poll_writable(self: Pin<&mut Self>, cx: &mut Context) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let waiting = this.waiting.get_mut().unwrap_or_else(|p| p.into_inner());
        if waiting.is_none() {
            let outgoing = this.outgoing.clone();
            *waiting = Some(Box::pin(async move {
                // A permit taken and given back: there is room now.
                let _ = outgoing.reserve().await;
            }));
        }
        match waiting.as_mut().map(|w| w.as_mut().poll(cx)) {
            Some(Poll::Ready(())) => {
                *waiting = None;
                Poll::Ready(Ok(()))
            }
            _ => Poll::Pending,
        }
    }
}
