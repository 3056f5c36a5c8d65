//! End-to-end encryption through the relay: a QUIC connection carried
//! inside one relayed stream.
//!
//! The relay bridges one of the broker's streams to one of the service's.
//! Over that byte pipe the two ends run an ordinary quinn endpoint — the
//! service RPC protocol unchanged: TLS 1.3 with the service's own identity,
//! pinned by fingerprint, one QUIC stream per request — whose "UDP socket"
//! (`TunnelSocket`) writes each packet as a length-prefixed frame into the
//! stream and reads the peer's packets from it. The relay sees only those
//! frames: QUIC packets it has no keys for.
//!
//! Because the carrier is reliable and ordered, the inner connection never
//! sees loss; it uses packets far larger than a network's MTU
//! ([`TUNNEL_MTU`]) so each crosses the relay with little overhead.
//!
//! When the relay offers a packet path ([`Carrier::Packets`], see
//! [`super::packet_relay`]), the same inner endpoint sends real UDP
//! datagrams through the relay's packet port instead, and the stream only
//! marks the tunnel's life: the relay then forwards ciphertext without
//! decrypting and re-encrypting it, and the inner connection does its own
//! congestion control and loss recovery over the real path.
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
use quinn::{AsyncUdpSocket, Endpoint, EndpointConfig, UdpPoller};

use super::mux::{Conn, RecvHalf, SendHalf};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;

use super::conn::{ConnError, TransportLimits, transport_config};
use super::packet_relay::{self, PacketPath, PeerRole, TunnelId};
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

/// Transport settings for the inner connection on the relay's packet path:
/// the usual ones, with path MTU discovery capped so a packet plus the
/// packet-path header still fits a 1500-byte Ethernet frame.
pub fn packet_path_transport(limits: &TransportLimits) -> Arc<quinn::TransportConfig> {
    let mut transport = transport_config(limits);
    let mut mtud = quinn::MtuDiscoveryConfig::default();
    mtud.upper_bound(1452 - packet_relay::HEADER_LEN as u16);
    transport.mtu_discovery_config(Some(mtud));
    Arc::new(transport)
}

/// How a tunnel's inner packets travel.
#[derive(Debug, Clone, Copy)]
pub enum Carrier {
    /// Inside the relayed stream itself.
    Stream,
    /// As UDP datagrams through the relay's packet port at `relay`.
    Packets { relay: SocketAddr, path: PacketPath },
}

impl Carrier {
    /// Packets through the relay's packet port (on the address we reach
    /// the relay at over `relay`) when it offers one, else in the stream.
    /// A relay reached over TCP carries the tunnel in the stream always
    /// (UDP may well be what is blocked).
    pub fn through(relay: &Conn, packet: Option<PacketPath>) -> Self {
        match packet {
            Some(path) if relay.carrier() == super::mux::Carrier::Quic => Self::Packets {
                relay: SocketAddr::new(relay.remote_address().ip(), path.port),
                path,
            },
            _ => Self::Stream,
        }
    }
}

/// An inner endpoint running over one relayed tunnel.
pub struct TunnelEndpoint {
    pub endpoint: Endpoint,
    /// Where the client end connects to.
    pub peer: SocketAddr,
    /// Transport settings for connections on this endpoint.
    pub transport: Arc<quinn::TransportConfig>,
    closed: CancellationToken,
    /// Packet path only: the control stream (finished when this drops, so
    /// the relay ends the tunnel) and the task watching its end.
    _control: Option<(SendHalf, AbortOnDrop<()>)>,
}

impl TunnelEndpoint {
    /// Starts an endpoint for the tunnel whose control stream is
    /// `send`/`recv`. A service passes its server configuration (its
    /// transport is set here); a client passes `None` and connects to
    /// [`TunnelEndpoint::peer`].
    pub fn start(
        role: TunnelRole,
        send: SendHalf,
        recv: RecvHalf,
        server: Option<quinn::ServerConfig>,
        carrier: Carrier,
        limits: &TransportLimits,
    ) -> Result<Self, ConnError> {
        let closed = CancellationToken::new();
        let (socket, transport, peer, control, mut config): (Arc<dyn AsyncUdpSocket>, _, _, _, _) =
            match carrier {
                Carrier::Stream => {
                    let mut config = EndpointConfig::default();
                    config
                        .max_udp_payload_size(TUNNEL_MTU)
                        .map_err(|e| ConnError::Tls(e.to_string()))?;
                    let peer = match role {
                        TunnelRole::Client => SERVICE_ADDR,
                        TunnelRole::Service => CLIENT_ADDR,
                    };
                    let socket = TunnelSocket::start(role, send, recv, closed.clone());
                    (socket, tunnel_transport(limits), peer, None, config)
                }
                Carrier::Packets { relay, path } => {
                    let socket = PacketPathSocket::bind(role, relay, path.id)?;
                    let watch = AbortOnDrop::new(tokio::spawn(watch_control(recv, closed.clone())));
                    let transport = packet_path_transport(limits);
                    let config = EndpointConfig::default();
                    (socket, transport, relay, Some((send, watch)), config)
                }
            };
        config.grease_quic_bit(false);
        let server = server.map(|mut s| {
            s.transport_config(transport.clone());
            s
        });
        let endpoint = Endpoint::new_with_abstract_socket(
            config,
            server,
            socket,
            Arc::new(quinn::TokioRuntime),
        )?;
        Ok(Self {
            endpoint,
            peer,
            transport,
            closed,
            _control: control,
        })
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

/// Packet path: the control stream carries nothing; its end (either side,
/// or the relay, went away) ends the tunnel.
async fn watch_control(mut recv: RecvHalf, closed: CancellationToken) {
    while let Ok(Some(_)) = recv.read_chunk(usize::MAX).await {}
    closed.cancel();
}

/// The inner endpoint's socket on the packet path: a real UDP socket whose
/// datagrams carry the packet-path header to and from the relay.
struct PacketPathSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    relay: SocketAddr,
    /// Our header, put in front of every datagram we send.
    ours: [u8; packet_relay::HEADER_LEN],
    /// The other end's header, expected on every datagram we accept.
    theirs: [u8; packet_relay::HEADER_LEN],
    scratch: Mutex<Vec<u8>>,
    /// Set once the relay has forwarded anything: our address is known.
    heard: Arc<std::sync::atomic::AtomicBool>,
    _register: Option<AbortOnDrop<()>>,
}

impl fmt::Debug for PacketPathSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PacketPathSocket")
            .field("relay", &self.relay)
            .finish()
    }
}

/// How often the service end announces its address until the relay
/// forwards it something (the first announcement normally suffices).
const REGISTER_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

impl PacketPathSocket {
    fn bind(role: TunnelRole, relay: SocketAddr, id: TunnelId) -> Result<Arc<Self>, ConnError> {
        let bind: SocketAddr = if relay.is_ipv6() {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        };
        let udp = super::conn::udp_socket(bind)?;
        let inner = quinn::Runtime::wrap_udp_socket(&quinn::TokioRuntime, udp)?;
        let (me, peer) = match role {
            TunnelRole::Client => (PeerRole::Client, PeerRole::Service),
            TunnelRole::Service => (PeerRole::Service, PeerRole::Client),
        };
        let ours = packet_relay::header(me, id);
        let heard = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // The service end speaks second, so it tells the relay where it is
        // first; the client's first packet does that for the client.
        let register = (role == TunnelRole::Service).then(|| {
            let (inner, heard) = (inner.clone(), heard.clone());
            AbortOnDrop::new(tokio::spawn(async move {
                while !heard.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = inner.try_send(&Transmit {
                        destination: relay,
                        ecn: None,
                        contents: &ours,
                        segment_size: None,
                        src_ip: None,
                    });
                    tokio::time::sleep(REGISTER_EVERY).await;
                }
            }))
        });
        Ok(Arc::new(Self {
            inner,
            relay,
            ours,
            theirs: packet_relay::header(peer, id),
            scratch: Mutex::new(Vec::new()),
            heard,
            _register: register,
        }))
    }

    /// Strips the header from every datagram in `buf` (GRO: datagrams at
    /// `meta.stride` steps), in place; keeps datagrams up to the first one
    /// that is not the other end's.
    fn strip(&self, buf: &mut [u8], meta: &mut RecvMeta) {
        const H: usize = packet_relay::HEADER_LEN;
        let stride = meta.stride.max(1);
        if meta.addr != self.relay || stride <= H {
            meta.len = 0;
            return;
        }
        let mut out = 0;
        let mut at = 0;
        while at < meta.len {
            let end = (at + stride).min(meta.len);
            if end - at <= H || buf[at..at + H] != self.theirs {
                break;
            }
            buf.copy_within(at + H..end, out);
            out += end - at - H;
            at = end;
        }
        meta.len = out;
        meta.stride = stride - H;
        if out > 0 {
            self.heard.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl AsyncUdpSocket for PacketPathSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        let size = transmit
            .segment_size
            .unwrap_or(transmit.contents.len())
            .max(1);
        let mut buf = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        buf.clear();
        for segment in transmit.contents.chunks(size) {
            buf.extend_from_slice(&self.ours);
            buf.extend_from_slice(segment);
        }
        self.inner.try_send(&Transmit {
            destination: self.relay,
            ecn: transmit.ecn,
            contents: &buf,
            segment_size: transmit.segment_size.map(|s| s + packet_relay::HEADER_LEN),
            src_ip: None,
        })
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let n = match self.inner.poll_recv(cx, bufs, meta) {
            Poll::Ready(Ok(n)) => n,
            other => return other,
        };
        for (buf, meta) in bufs.iter_mut().zip(meta.iter_mut()).take(n) {
            self.strip(buf, meta);
        }
        Poll::Ready(Ok(n))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

/// The inner endpoint's "UDP socket" when packets ride the stream.
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
        send: SendHalf,
        recv: RecvHalf,
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
    mut send: SendHalf,
    mut queue: mpsc::Receiver<Bytes>,
    closed: CancellationToken,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while queue.recv_many(&mut batch, BATCH).await > 0 {
        if send.write_chunks(&mut batch).await.is_err() {
            break;
        }
        batch.clear();
    }
    let _ = send.finish();
    closed.cancel();
}

/// The framing of inner packets carried in a relayed stream: a 2-byte
/// big-endian length, then the packet; lengths over [`TUNNEL_MTU`] are
/// refused before anything is buffered for them. Public for the fuzz
/// targets, which decode exactly what a relayed stream is decoded with.
pub fn packet_codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(2)
        .max_frame_length(usize::from(TUNNEL_MTU))
        .new_codec()
}

/// Reads the peer's packets from the carrier. Awaiting queue space pushes
/// back on the carrier's flow control instead of dropping packets.
async fn read_packets(recv: RecvHalf, queue: mpsc::Sender<Bytes>, closed: CancellationToken) {
    let codec = packet_codec();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(addr: SocketAddr, len: usize, stride: usize) -> RecvMeta {
        RecvMeta {
            addr,
            len,
            stride,
            ecn: None,
            dst_ip: None,
        }
    }

    #[tokio::test]
    async fn packet_path_strips_headers_from_gro_batches_and_refuses_strangers() {
        let relay: SocketAddr = "127.0.0.1:4434".parse().unwrap();
        let id = TunnelId::random();
        let socket = PacketPathSocket::bind(TunnelRole::Client, relay, id).unwrap();
        let theirs = packet_relay::header(PeerRole::Service, id);
        // Three datagrams of stride 18 + 4, the last one shorter.
        let mut buf = Vec::new();
        for payload in [&b"aaaa"[..], b"bbbb", b"cc"] {
            buf.extend_from_slice(&theirs);
            buf.extend_from_slice(payload);
        }
        let mut m = meta(relay, buf.len(), packet_relay::HEADER_LEN + 4);
        socket.strip(&mut buf, &mut m);
        assert_eq!((&buf[..m.len], m.stride), (&b"aaaabbbbcc"[..], 4));

        // A datagram that is not the other end's ends the batch there.
        let mut buf = theirs.to_vec();
        buf.extend_from_slice(b"good");
        buf.extend_from_slice(&packet_relay::header(PeerRole::Client, id));
        buf.extend_from_slice(b"echo");
        let mut m = meta(relay, buf.len(), packet_relay::HEADER_LEN + 4);
        socket.strip(&mut buf, &mut m);
        assert_eq!(&buf[..m.len], b"good");

        // Anything not from the relay is dropped whole.
        let mut buf = theirs.to_vec();
        buf.extend_from_slice(b"spoofed");
        let stranger = "127.0.0.1:9".parse().unwrap();
        let mut m = meta(stranger, buf.len(), buf.len());
        socket.strip(&mut buf, &mut m);
        assert_eq!(m.len, 0);
    }
}
