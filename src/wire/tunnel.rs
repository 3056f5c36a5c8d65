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
use super::tcp::H2Send;
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
///
/// Owns the carrier stream's halves. The endpoint's own driver reads the
/// receiving half in place (`poll_recv` decodes frames straight from it),
/// and over HTTP/2 `try_send` queues frames on the sending half in place
/// too (h2's connection task sends them): no task or channel sits
/// between the inner endpoint and the carrier, so a packet costs no extra
/// task wake-up (on a busy runtime each one may be a thread hand-off).
/// A QUIC stream can only be written by awaiting it, so there one pump
/// task writes what `try_send` queues.
struct TunnelSocket {
    local: SocketAddr,
    peer: SocketAddr,
    incoming: Mutex<Incoming>,
    outgoing: Outgoing,
    /// Cancelled when the carrier ends (read or write side).
    closed: CancellationToken,
}

/// The carrier's receiving half, decoded in place by `poll_recv`.
struct Incoming {
    frames: FramedRead<RecvHalf, LengthDelimitedCodec>,
    /// The stream ended (or failed): nothing more will come.
    ended: bool,
}

/// The carrier's sending half.
enum Outgoing {
    /// HTTP/2: frames queued in place (`H2Send::try_send_whole`); a
    /// transmit the stream has no credit for yet waits in quinn, which
    /// asks the poller when to retry.
    InPlace(Arc<Mutex<H2Send>>),
    /// QUIC: frames go through a bounded queue to a task writing them.
    Pump {
        queue: mpsc::Sender<Bytes>,
        _task: AbortOnDrop<()>,
    },
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
        let outgoing = match send {
            SendHalf::H2(send) => Outgoing::InPlace(Arc::new(Mutex::new(send))),
            quic => {
                let (queue, rx) = mpsc::channel(QUEUE);
                let task = tokio::spawn(write_packets(quic, rx, closed.clone()));
                Outgoing::Pump {
                    queue,
                    _task: AbortOnDrop::new(task),
                }
            }
        };
        // Room for several whole packets, so reads are not cut at 8 KiB.
        let frames = FramedRead::with_capacity(recv, packet_codec(), 4 * usize::from(TUNNEL_MTU));
        Arc::new(Self {
            local,
            peer,
            incoming: Mutex::new(Incoming {
                frames,
                ended: false,
            }),
            outgoing,
            closed,
        })
    }

    /// The frames of `transmit`'s packets (2-byte length before each), in
    /// one buffer: the one copy out of quinn's buffer also writes the
    /// headers, and a batch of packets leaves as one carrier write.
    fn frames(transmit: &Transmit) -> (BytesMut, usize) {
        let size = transmit
            .segment_size
            .unwrap_or(transmit.contents.len())
            .max(1);
        let segments = transmit.contents.len().div_ceil(size);
        let mut frames = BytesMut::with_capacity(transmit.contents.len() + 2 * segments);
        for segment in transmit.contents.chunks(size) {
            frames.put_u16(segment.len() as u16);
            frames.put_slice(segment);
        }
        (frames, segments)
    }
}

impl Drop for TunnelSocket {
    /// The endpoint is gone: the carrier ends (the pump finishes its
    /// stream itself when its queue closes).
    fn drop(&mut self) {
        if let Outgoing::InPlace(send) = &self.outgoing {
            let _ = send.lock().unwrap_or_else(|p| p.into_inner()).finish();
        }
        self.closed.cancel();
    }
}

/// Writes queued packets (already framed by `try_send`) into a QUIC
/// carrier, batching what is ready; quinn takes the buffers without
/// copying them.
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

impl AsyncUdpSocket for TunnelSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(TunnelPoller {
            socket: self,
            waiting: Mutex::new(None),
        })
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        if self.closed.is_cancelled() {
            // Like UDP to a vanished host: the packet is lost, and the
            // carrier's `closed` signal ends the connection.
            return Ok(());
        }
        match &self.outgoing {
            Outgoing::InPlace(send) => {
                let (frames, _) = Self::frames(transmit);
                let mut send = send.lock().unwrap_or_else(|p| p.into_inner());
                match send.try_send_whole(frames.freeze()) {
                    Ok(None) => Ok(()),
                    Ok(Some(_)) => Err(io::ErrorKind::WouldBlock.into()),
                    Err(_) => {
                        self.closed.cancel();
                        Ok(())
                    }
                }
            }
            Outgoing::Pump { queue, .. } => {
                if queue.is_closed() {
                    return Ok(());
                }
                let (frames, segments) = Self::frames(transmit);
                let Ok(permit) = queue.try_reserve_many(segments) else {
                    return Err(io::ErrorKind::WouldBlock.into());
                };
                // One queue entry per packet: the pump hands whole batches
                // to quinn without copying.
                let mut frames = frames.freeze();
                for permit in permit {
                    let len = 2 + usize::from(u16::from_be_bytes([frames[0], frames[1]]));
                    permit.send(frames.split_to(len));
                }
                Ok(())
            }
        }
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut incoming = self.incoming.lock().unwrap_or_else(|p| p.into_inner());
        let mut filled = 0;
        while !incoming.ended && filled < bufs.len().min(meta.len()) {
            let packet = match incoming.frames.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(packet))) => packet,
                // The carrier ended or sent a bad frame: nothing more will
                // come; the owner closes the endpoint on `closed`.
                Poll::Ready(Some(Err(_)) | None) => {
                    incoming.ended = true;
                    self.closed.cancel();
                    break;
                }
                Poll::Pending => break,
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
        if filled == 0 {
            return Poll::Pending;
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

/// Wakes the endpoint when the carrier can take a transmit again: the
/// HTTP/2 stream has credit again, or the pump's queue has room for a
/// batch.
struct TunnelPoller {
    socket: Arc<TunnelSocket>,
    /// Pump only; `Mutex` only to make the boxed future `Sync`; never
    /// contended.
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
        let queue = match &this.socket.outgoing {
            Outgoing::InPlace(send) => {
                let mut send = send.lock().unwrap_or_else(|p| p.into_inner());
                if std::task::ready!(send.poll_credit(cx)).is_err() {
                    // The next `try_send` finds the stream dead.
                    this.socket.closed.cancel();
                }
                return Poll::Ready(Ok(()));
            }
            Outgoing::Pump { queue, .. } => queue,
        };
        let waiting = this.waiting.get_mut().unwrap_or_else(|p| p.into_inner());
        if waiting.is_none() {
            let queue = queue.clone();
            *waiting = Some(Box::pin(async move {
                // Permits taken and given back: there is room now.
                let _ = queue.reserve_many(BATCH).await;
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

    /// Both ends of one HTTP/2 stream on loopback TLS (the relay's
    /// carrier for a TCP login's tunnel).
    async fn h2_stream_pair() -> ((SendHalf, RecvHalf), (SendHalf, RecvHalf), [Conn; 2]) {
        crate::tls::install_crypto_provider();
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = certified.cert.der().to_vec();
        let fp = super::super::pin::Fingerprint::of(&cert);
        let server_tls =
            super::super::tcp::server_tls(cert, &certified.signing_key.serialize_der()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let url =
            super::super::tcp::RpcUrl::parse(&format!("https://127.0.0.1:{}/rpc", addr.port()))
                .unwrap();
        let limits = TransportLimits::default();
        let client_tls =
            super::super::tcp::client_tls(super::super::pin::PinnedServerVerifier::new(Some(fp)));
        let accept = async {
            let (tcp, _) = listener.accept().await.unwrap();
            let tls = tokio_rustls::TlsAcceptor::from(Arc::new(server_tls));
            super::super::tcp::accept(tcp, tls, &limits).await.unwrap()
        };
        let connect = async {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            super::super::tcp::connect(tcp, addr, &url, Arc::new(client_tls), &limits)
                .await
                .unwrap()
        };
        let (server, client) = tokio::join!(accept, connect);
        let (client, server) = (Conn::H2(client), Conn::H2(server));
        let caller = client.open_bi().await.unwrap();
        let service = server.accept_bi().await.unwrap();
        (caller, service, [client, server])
    }

    fn recv_meta() -> RecvMeta {
        meta(CLIENT_ADDR, 0, 0)
    }

    /// Over HTTP/2 the socket writes and reads the carrier in place: no
    /// task between the inner endpoint and the stream (each was a wake-up
    /// per packet); a GSO batch crosses as its packets; dropping one end
    /// ends the carrier for the other.
    #[tokio::test(flavor = "current_thread")]
    async fn an_http2_carried_tunnel_socket_runs_no_task_and_carries_batches_whole() {
        let ((c_send, c_recv), (s_send, s_recv), _conns) = h2_stream_pair().await;
        let metrics = tokio::runtime::Handle::current().metrics();
        let tasks = metrics.num_alive_tasks();
        let (c_closed, s_closed) = (CancellationToken::new(), CancellationToken::new());
        let client = TunnelSocket::start(TunnelRole::Client, c_send, c_recv, c_closed.clone());
        let service = TunnelSocket::start(TunnelRole::Service, s_send, s_recv, s_closed.clone());
        assert_eq!(metrics.num_alive_tasks(), tasks, "pump tasks were spawned");

        // Three packets in one transmit (the last one shorter).
        let contents: Vec<u8> = (0..2500u32).map(|i| i as u8).collect();
        client
            .try_send(&Transmit {
                destination: SERVICE_ADDR,
                ecn: None,
                contents: &contents,
                segment_size: Some(1000),
                src_ip: None,
            })
            .unwrap();
        let mut got: Vec<Vec<u8>> = Vec::new();
        let mut storage = vec![vec![0u8; usize::from(TUNNEL_MTU)]; 4];
        while got.len() < 3 {
            let mut bufs: Vec<IoSliceMut> =
                storage.iter_mut().map(|b| IoSliceMut::new(b)).collect();
            let mut metas = [recv_meta(); 4];
            let n = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                std::future::poll_fn(|cx| service.poll_recv(cx, &mut bufs, &mut metas)),
            )
            .await
            .expect("the packets never arrived")
            .unwrap();
            for (buf, m) in bufs.iter().zip(&metas).take(n) {
                assert_eq!(m.addr, CLIENT_ADDR);
                got.push(buf[..m.len].to_vec());
            }
        }
        let sent: Vec<Vec<u8>> = contents.chunks(1000).map(<[u8]>::to_vec).collect();
        assert_eq!(got, sent);

        drop(client);
        assert!(c_closed.is_cancelled());
        let mut bufs = [IoSliceMut::new(&mut storage[0])];
        let mut metas = [recv_meta()];
        let ended = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            loop {
                tokio::select! {
                    _ = s_closed.cancelled() => break,
                    _ = std::future::poll_fn(|cx| service.poll_recv(cx, &mut bufs, &mut metas)) => {}
                }
            }
        })
        .await;
        assert!(ended.is_ok(), "the service end never saw the carrier end");
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
