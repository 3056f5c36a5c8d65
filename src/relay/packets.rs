//! The relay's packet port: forwards end-to-end QUIC datagrams between the
//! two ends of a tunnel without decrypting them (format in
//! [`crate::wire::packet_relay`]).
//!
//! Owns one UDP socket and the table of open tunnels. `open_tunnel`
//! registers a tunnel ([`PacketRelay::register`]) and holds the returned
//! [`PacketTunnel`] for the tunnel's life; dropping it removes the entry,
//! after which the tunnel's datagrams are dropped. The forwarding task
//! stops with the [`PacketRelay`]. Datagrams are received in GRO batches
//! and sent on as GSO batches, untouched: no copy, no crypto.
//!
//! In a tier, a tunnel whose broker and service are on different nodes
//! has one entry on each node under the same id: on the service's node
//! (`register_across`) the client end is the other node's packet port, on
//! the broker's node (`join_forwarded`) the service end is. Datagrams
//! cross between the two packet ports as plain UDP with the node hop's
//! header (the tunnel's [`HopToken`], agreed over the nodes' mutual-TLS
//! link, in place of its id; see [`crate::wire::packet_relay`]): one
//! receive, a table lookup, the 18 header bytes rewritten in place and
//! one send per batch on each node, as on a single relay.
//!
//! **Threat model of the hop.** A stranger who can send UDP to a packet
//! port (anyone on the network) does not know a tunnel's hop token: it is
//! made per tunnel from 128 random bits, travels only inside the nodes'
//! authenticated link, and is never sent to the tunnel's ends (which know
//! only the tunnel id). So a stranger, including a tunnel's own broker or
//! service or anyone who sees the ends' traffic, can neither inject into
//! the hop nor move an end across it (a node end's address is fixed when
//! the tunnel is registered, never learned from a datagram; an end-header
//! datagram naming an end across the hop is dropped). An attacker on the
//! path *between the nodes* sees the token and could send datagrams with
//! it; those are forwarded like any of the tunnel's and then dropped by
//! the tunnel's end-to-end QUIC (AEAD with keys the nodes never hold), so
//! what it can do is what it can do anyway there: drop or delay packets.
//! A MAC per datagram would stop only that on-path forgery, which cannot
//! reach plaintext, at a cryptographic cost per byte on both nodes
//! (`openssl speed` on the 2-core test machine: HMAC-SHA256 1.1 GB/s,
//! AES-GCM 1.8 GB/s on 1,200-byte datagrams, a fifth to a third of a
//! core per node on a bulk tunnel, README): not taken. Every datagram dropped is counted by reason ([`Dropped`]).
//!
//! **Invariant:** a datagram is forwarded only to the other end of the
//! tunnel its header names, and only once that end has spoken from its
//! address; nothing unknown is ever answered (no amplification). An end
//! across the node hop speaks only with the hop's header and its tunnel's
//! token (an end header naming it is dropped), and a hop datagram goes
//! only to a local UDP end (never on to a third node).

use std::collections::HashMap;
use std::collections::hash_map::Entry as Slot;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use quinn::udp::{RecvMeta, Transmit, UdpSocketState};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::task::AbortOnDrop;
use crate::wire::packet_relay::{
    self, HEADER_LEN, Header, HopToken, Malformed, NodeHop, PacketPath, PeerRole, TunnelId,
};

/// Datagrams read per receive call (each may be a GRO batch).
const BATCH: usize = 16;
/// Room per receive buffer: a full GRO batch of the largest datagrams.
const BUF: usize = 64 * 1024;

/// Where one end of a tunnel is.
#[derive(Debug, Clone, Copy)]
enum End {
    /// Speaks UDP from `addr`; replies leave from `via`, the relay address
    /// it sent to.
    Udp {
        addr: SocketAddr,
        via: Option<IpAddr>,
    },
    /// Across the node hop: the packet port of the other node at `addr`,
    /// speaking (and spoken to) with the hop header carrying `token`.
    Node { addr: SocketAddr, token: HopToken },
}

#[derive(Default)]
struct Entry {
    client: Option<End>,
    service: Option<End>,
    /// Tells `open_tunnel` that the service's address is known.
    service_known: Option<watch::Sender<bool>>,
}

impl Entry {
    fn end(&mut self, role: PeerRole) -> &mut Option<End> {
        match role {
            PeerRole::Client => &mut self.client,
            PeerRole::Service => &mut self.service,
        }
    }

    /// The hop token of the tunnel's end across the node hop, if any.
    fn hop(&self) -> Option<HopToken> {
        [self.client, self.service]
            .into_iter()
            .find_map(|e| match e {
                Some(End::Node { token, .. }) => Some(token),
                _ => None,
            })
    }
}

/// The tunnels by id, and the forwarded ones by hop token.
#[derive(Default)]
struct Tables {
    tunnels: HashMap<TunnelId, Entry>,
    hops: HashMap<HopToken, TunnelId>,
}

type Table = Arc<Mutex<Tables>>;

/// Why a received datagram was dropped (each counted, see
/// [`PacketRelay::dropped`] and `switchyard_relay_packets_dropped_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// Not a relayed datagram: too short, or a wrong first or role byte.
    Malformed = 0,
    /// A GRO batch whose segments name more than one header.
    Mixed = 1,
    /// An end header naming no open tunnel.
    UnknownTunnel = 2,
    /// A node hop header with a token no open tunnel has for that end.
    UnknownHop = 3,
    /// An end header naming an end that is across the node hop (which
    /// speaks only with the hop's header).
    EndAcrossNodes = 4,
    /// The other end has not spoken yet (its address is unknown).
    OtherEndUnknown = 5,
}

impl Dropped {
    const ALL: [Dropped; 6] = [
        Self::Malformed,
        Self::Mixed,
        Self::UnknownTunnel,
        Self::UnknownHop,
        Self::EndAcrossNodes,
        Self::OtherEndUnknown,
    ];

    /// The `reason` label of the metric.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Mixed => "mixed_batch",
            Self::UnknownTunnel => "unknown_tunnel",
            Self::UnknownHop => "unknown_hop",
            Self::EndAcrossNodes => "end_across_nodes",
            Self::OtherEndUnknown => "other_end_unknown",
        }
    }
}

impl From<Malformed> for Dropped {
    fn from(_: Malformed) -> Self {
        Self::Malformed
    }
}

/// What the forwarding task shares with the [`PacketRelay`] handle.
struct Port {
    socket: UdpSocket,
    state: UdpSocketState,
    table: Table,
    tap: Option<mpsc::Sender<Bytes>>,
    /// Bytes forwarded since start (headers included).
    bytes: AtomicU64,
    /// Datagrams sent to or received from other nodes' packet ports.
    node_datagrams: AtomicU64,
    /// Datagrams dropped, by [`Dropped`] reason.
    dropped: [AtomicU64; Dropped::ALL.len()],
}

impl Port {
    fn lock(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count(&self, data: &[u8]) {
        if let Some(tap) = &self.tap {
            let _ = tap.try_send(Bytes::copy_from_slice(data));
        }
        self.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        metrics::counter!("switchyard_relay_tunnel_bytes_total").increment(data.len() as u64);
    }

    fn drop_one(&self, why: Dropped) {
        self.dropped[why as usize].fetch_add(1, Ordering::Relaxed);
        metrics::counter!("switchyard_relay_packets_dropped_total", "reason" => why.as_str())
            .increment(1);
    }

    fn hop_segments(&self, data: &[u8], stride: usize, way: &'static str) {
        let n = data.len().div_ceil(stride.max(1)) as u64;
        self.node_datagrams.fetch_add(n, Ordering::Relaxed);
        metrics::counter!("switchyard_relay_node_datagrams_total", "way" => way).increment(n);
    }
}

/// The packet port and its forwarding task.
pub struct PacketRelay {
    local: SocketAddr,
    port: Arc<Port>,
    _task: AbortOnDrop<()>,
}

/// One registered tunnel; dropping it closes the tunnel's packet path.
pub struct PacketTunnel {
    /// What the two ends are told: the packet port and the tunnel's id.
    pub path: PacketPath,
    table: Table,
    service_known: watch::Receiver<bool>,
}

impl PacketTunnel {
    /// Waits until the service end has announced its address (so the
    /// client's first packet is not dropped); false after `timeout`.
    pub async fn service_ready(&mut self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.service_known.wait_for(|known| *known))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

impl Drop for PacketTunnel {
    fn drop(&mut self) {
        let mut tables = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = tables.tunnels.remove(&self.path.id)
            && let Some(token) = entry.hop()
        {
            tables.hops.remove(&token);
        }
    }
}

impl PacketRelay {
    /// Binds the packet port and starts forwarding until `cancel`.
    pub fn start(
        bind: SocketAddr,
        tap: Option<mpsc::Sender<Bytes>>,
        cancel: CancellationToken,
    ) -> io::Result<Self> {
        let std_socket = crate::wire::conn::udp_socket(bind)?;
        std_socket.set_nonblocking(true)?;
        let state = UdpSocketState::new((&std_socket).into())?;
        let socket = UdpSocket::from_std(std_socket)?;
        let local = socket.local_addr()?;
        let port = Arc::new(Port {
            socket,
            state,
            table: Table::default(),
            tap,
            bytes: AtomicU64::new(0),
            node_datagrams: AtomicU64::new(0),
            dropped: Default::default(),
        });
        let task = tokio::spawn(forward(port.clone(), cancel));
        Ok(Self {
            local,
            port,
            _task: AbortOnDrop::new(task),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Bytes forwarded since start (headers included).
    pub fn bytes_forwarded(&self) -> u64 {
        self.port.bytes.load(Ordering::Relaxed)
    }

    /// Datagrams exchanged with other nodes since start (both ways; a GRO
    /// or GSO batch counts its segments).
    pub fn node_datagrams(&self) -> u64 {
        self.port.node_datagrams.load(Ordering::Relaxed)
    }

    /// Datagrams (batches) dropped since start for reason `why`.
    pub fn dropped(&self, why: Dropped) -> u64 {
        self.port.dropped[why as usize].load(Ordering::Relaxed)
    }

    /// Opens the packet path of a new tunnel.
    pub fn register(&self) -> PacketTunnel {
        self.insert_new(None)
    }

    /// Opens the packet path of a tunnel another node forwarded here: the
    /// service end is local (UDP), the client end is across the node hop,
    /// at that node's packet port `node` with the hop the forwarding node
    /// chose. None if its token is already taken here (128 random bits:
    /// never in practice).
    pub fn register_across(&self, node: SocketAddr, hop: NodeHop) -> Option<PacketTunnel> {
        if self.port.lock().hops.contains_key(&hop.token) {
            return None;
        }
        Some(self.insert_new(Some(End::Node {
            addr: node,
            token: hop.token,
        })))
    }

    /// The client-side half of a tunnel this node forwarded: the node
    /// whose packet port is `node` opened tunnel `id` (its service end is
    /// there), the client end is local; `token` is the hop token this node
    /// chose for it. None if `id` or `token` is already taken here.
    pub fn join_forwarded(
        &self,
        id: TunnelId,
        node: SocketAddr,
        token: HopToken,
    ) -> Option<PacketTunnel> {
        let (_, service_known) = watch::channel(true);
        let mut tables = self.port.lock();
        if tables.hops.contains_key(&token) {
            return None;
        }
        match tables.tunnels.entry(id) {
            Slot::Occupied(_) => return None,
            Slot::Vacant(slot) => {
                slot.insert(Entry {
                    service: Some(End::Node { addr: node, token }),
                    ..Entry::default()
                });
            }
        }
        tables.hops.insert(token, id);
        drop(tables);
        Some(self.tunnel(id, service_known))
    }

    fn insert_new(&self, client: Option<End>) -> PacketTunnel {
        let (tx, rx) = watch::channel(false);
        let mut tables = self.port.lock();
        let id = loop {
            let id = TunnelId::random();
            if !tables.tunnels.contains_key(&id) {
                break id;
            }
        };
        if let Some(End::Node { token, .. }) = client {
            tables.hops.insert(token, id);
        }
        tables.tunnels.insert(
            id,
            Entry {
                client,
                service_known: Some(tx),
                ..Entry::default()
            },
        );
        drop(tables);
        self.tunnel(id, rx)
    }

    fn tunnel(&self, id: TunnelId, service_known: watch::Receiver<bool>) -> PacketTunnel {
        PacketTunnel {
            path: PacketPath {
                port: self.local.port(),
                id,
            },
            table: self.port.table.clone(),
            service_known,
        }
    }
}

async fn forward(port: Arc<Port>, cancel: CancellationToken) {
    let socket = &port.socket;
    let mut storage = vec![vec![0u8; BUF]; BATCH];
    let mut meta = [RecvMeta::default(); BATCH];
    loop {
        let received = tokio::select! {
            _ = cancel.cancelled() => return,
            ready = socket.readable() => match ready {
                Ok(()) => {
                    let mut bufs: Vec<IoSliceMut<'_>> =
                        storage.iter_mut().map(|b| IoSliceMut::new(&mut b[..])).collect();
                    socket.try_io(Interest::READABLE, || {
                        port.state.recv(socket.into(), &mut bufs, &mut meta)
                    })
                }
                Err(e) => {
                    warn!(error = %e, "packet port failed; tunnels through it stop");
                    return;
                }
            },
        };
        let n = match received {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                debug!(error = %e, "packet port receive failed");
                continue;
            }
        };
        for (buf, m) in storage.iter_mut().zip(meta.iter()).take(n) {
            let data = &mut buf[..m.len];
            let route = match route(&port, data, m) {
                Ok(Some(route)) => route,
                Ok(None) => continue,
                Err(why) => {
                    port.drop_one(why);
                    continue;
                }
            };
            port.count(data);
            if let Some(header) = &route.rewrite {
                packet_relay::rewrite(data, m.stride, header);
            }
            if let Some(way) = route.hop {
                port.hop_segments(data, m.stride, way);
            }
            send(socket, &port.state, route.to, route.via, data, m.stride).await;
        }
    }
}

/// Where a received batch goes, and the header it leaves with when it
/// enters or leaves the node hop.
#[derive(Debug, PartialEq, Eq)]
struct Route {
    to: SocketAddr,
    via: Option<IpAddr>,
    rewrite: Option<[u8; HEADER_LEN]>,
    /// "in" or "out" when the batch crosses the node hop.
    hop: Option<&'static str>,
}

/// Where a received batch (of `meta.stride`-byte segments) goes. An end's
/// batch records its sender as the end its header names, and goes to the
/// other end once known (across the node hop: with the hop header). A
/// node hop's batch goes to the local end only if its token is the one
/// its tunnel has for the sending end. `Ok(None)`: nothing to forward (an
/// announcement).
fn route(port: &Port, data: &[u8], meta: &RecvMeta) -> Result<Option<Route>, Dropped> {
    let header = packet_relay::classify(data)?;
    // A GRO batch is one sender's; it must be one tunnel's too.
    if !packet_relay::one_tunnel(data, meta.stride) {
        return Err(Dropped::Mixed);
    }
    let mut tables = port.lock();
    match header {
        Header::End { role, id } => {
            let entry = tables.tunnels.get_mut(&id).ok_or(Dropped::UnknownTunnel)?;
            let changed = match entry.end(role) {
                Some(End::Node { .. }) => return Err(Dropped::EndAcrossNodes),
                Some(End::Udp { addr, .. }) => *addr != meta.addr,
                None => true,
            };
            if changed {
                debug!(tunnel = ?id, ?role, addr = %meta.addr, "packet path end registered");
                *entry.end(role) = Some(End::Udp {
                    addr: meta.addr,
                    via: meta.dst_ip,
                });
                if let (PeerRole::Service, Some(known)) = (role, &entry.service_known) {
                    let _ = known.send(true);
                }
            }
            if data.len() == HEADER_LEN {
                return Ok(None); // an announcement only
            }
            match *entry.end(role.other()) {
                Some(End::Udp { addr, via }) => Ok(Some(Route {
                    to: addr,
                    via,
                    rewrite: None,
                    hop: None,
                })),
                Some(End::Node { addr, token }) => Ok(Some(Route {
                    to: addr,
                    via: None,
                    rewrite: Some(packet_relay::hop_header(role, token)),
                    hop: Some("out"),
                })),
                None => Err(Dropped::OtherEndUnknown),
            }
        }
        Header::Hop { role, token } => {
            let id = *tables.hops.get(&token).ok_or(Dropped::UnknownHop)?;
            let entry = tables.tunnels.get_mut(&id).ok_or(Dropped::UnknownHop)?;
            // The token must be the one of the end the header names.
            match *entry.end(role) {
                Some(End::Node { token: t, .. }) if t == token => {}
                _ => return Err(Dropped::UnknownHop),
            }
            if data.len() == HEADER_LEN {
                return Ok(None);
            }
            match *entry.end(role.other()) {
                // Never on to a third node: only to a local end.
                Some(End::Udp { addr, via }) => Ok(Some(Route {
                    to: addr,
                    via,
                    rewrite: Some(packet_relay::header(role, id)),
                    hop: Some("in"),
                })),
                _ => Err(Dropped::OtherEndUnknown),
            }
        }
    }
}

/// Sends a batch on (as GSO segments of `stride`), waiting for socket room.
async fn send(
    socket: &UdpSocket,
    state: &UdpSocketState,
    to: SocketAddr,
    via: Option<IpAddr>,
    data: &[u8],
    stride: usize,
) {
    let per_send = stride.max(1) * state.max_gso_segments().max(1);
    for part in data.chunks(per_send) {
        let transmit = Transmit {
            destination: to,
            ecn: None,
            contents: part,
            segment_size: (part.len() > stride).then_some(stride),
            src_ip: via,
        };
        loop {
            let sent = socket.try_io(Interest::WRITABLE, || {
                state.try_send(socket.into(), &transmit)
            });
            match sent {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if socket.writable().await.is_err() {
                        return;
                    }
                }
                // Other errors (peer unreachable, ...): the datagram is
                // lost, as on any network; QUIC recovers.
                _ => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::packet_relay::{header, hop_header};

    async fn socket() -> UdpSocket {
        UdpSocket::bind("127.0.0.1:0").await.unwrap()
    }

    fn datagram(role: PeerRole, id: TunnelId, payload: &[u8]) -> Vec<u8> {
        let mut d = header(role, id).to_vec();
        d.extend_from_slice(payload);
        d
    }

    async fn next(socket: &UdpSocket) -> Vec<u8> {
        let mut buf = vec![0u8; 2048];
        let n = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buf))
            .await
            .expect("a datagram within 5 s")
            .unwrap();
        buf.truncate(n);
        buf
    }

    #[tokio::test]
    async fn forwards_between_the_two_ends_untouched_and_nothing_else() {
        let cancel = CancellationToken::new();
        let relay =
            PacketRelay::start("127.0.0.1:0".parse().unwrap(), None, cancel.clone()).unwrap();
        let port = relay.local_addr();
        let (client, service) = (socket().await, socket().await);
        let mut tunnel = relay.register();
        let id = tunnel.path.id;

        // Before the service has spoken, the client's packets go nowhere.
        client
            .send_to(&datagram(PeerRole::Client, id, b"early"), port)
            .await
            .unwrap();
        service
            .send_to(&header(PeerRole::Service, id), port)
            .await
            .unwrap();
        assert!(tunnel.service_ready(Duration::from_secs(5)).await);

        // Unknown tunnels and non-headers are dropped; the next good one
        // is what arrives first (and exactly as sent, header included).
        client
            .send_to(
                &datagram(PeerRole::Client, TunnelId::random(), b"stray"),
                port,
            )
            .await
            .unwrap();
        client
            .send_to(b"\xc3not a relayed packet", port)
            .await
            .unwrap();
        let hello = datagram(PeerRole::Client, id, b"hello");
        client.send_to(&hello, port).await.unwrap();
        assert_eq!(next(&service).await, hello);
        let world = datagram(PeerRole::Service, id, b"world");
        service.send_to(&world, port).await.unwrap();
        assert_eq!(next(&client).await, world);

        // Once the tunnel is dropped its datagrams stop; another tunnel's
        // still flow.
        drop(tunnel);
        let mut other = relay.register();
        service
            .send_to(&header(PeerRole::Service, other.path.id), port)
            .await
            .unwrap();
        assert!(other.service_ready(Duration::from_secs(5)).await);
        client
            .send_to(&datagram(PeerRole::Client, id, b"late"), port)
            .await
            .unwrap();
        let marker = datagram(PeerRole::Client, other.path.id, b"marker");
        client.send_to(&marker, port).await.unwrap();
        assert_eq!(next(&service).await, marker);
        cancel.cancel();
    }

    /// A tunnel across two packet ports (node B holds the client end,
    /// node A the service end): datagrams cross as the hop header and
    /// arrive at each end with the end header, payload untouched; a
    /// stranger's hop datagram with a wrong token, an end datagram naming
    /// the end across the hop, short packets and unknown ids are dropped
    /// and counted, and the service receives none of them.
    #[tokio::test]
    async fn a_tunnel_crosses_two_ports_and_strangers_cannot_inject_into_the_hop() {
        let cancel = CancellationToken::new();
        let start = || PacketRelay::start("127.0.0.1:0".parse().unwrap(), None, cancel.clone());
        let (a, b) = (start().unwrap(), start().unwrap());
        let token = HopToken::random();
        let hop = NodeHop {
            port: b.local_addr().port(),
            token,
        };
        let mut on_a = a.register_across(b.local_addr(), hop).unwrap();
        let id = on_a.path.id;
        assert!(
            a.register_across(b.local_addr(), hop).is_none(),
            "token taken"
        );
        let on_b = b.join_forwarded(id, a.local_addr(), token).unwrap();
        let (client, service, stranger) = (socket().await, socket().await, socket().await);
        service
            .send_to(&header(PeerRole::Service, id), a.local_addr())
            .await
            .unwrap();
        assert!(on_a.service_ready(Duration::from_secs(5)).await);

        let hello = datagram(PeerRole::Client, id, b"hello");
        client.send_to(&hello, b.local_addr()).await.unwrap();
        assert_eq!(next(&service).await, hello, "end header restored on A");
        let world = datagram(PeerRole::Service, id, b"world");
        service.send_to(&world, a.local_addr()).await.unwrap();
        assert_eq!(next(&client).await, world, "end header restored on B");
        assert_eq!((a.node_datagrams(), b.node_datagrams()), (2, 2));

        // The stranger: a wrong token, the right token naming the wrong
        // end, the tunnel id claiming the client end (which is across the
        // hop), an unknown id, short and garbage packets.
        let hostile = [
            (
                hop_header(PeerRole::Client, HopToken::random()),
                Dropped::UnknownHop,
            ),
            (hop_header(PeerRole::Service, token), Dropped::UnknownHop),
            (header(PeerRole::Client, id), Dropped::EndAcrossNodes),
            (
                header(PeerRole::Client, TunnelId::random()),
                Dropped::UnknownTunnel,
            ),
        ];
        for (h, _) in &hostile {
            let mut d = h.to_vec();
            d.extend_from_slice(b"injected");
            stranger.send_to(&d, a.local_addr()).await.unwrap();
        }
        for junk in [&[0x01u8][..], &[0x01, 1, 2], b"\xc3quic", &[]] {
            stranger.send_to(junk, a.local_addr()).await.unwrap();
        }
        let marker = datagram(PeerRole::Client, id, b"marker");
        client.send_to(&marker, b.local_addr()).await.unwrap();
        assert_eq!(next(&service).await, marker, "nothing injected arrived");
        // (Counted before the marker was read: one task, in arrival order.)
        assert_eq!(a.dropped(Dropped::UnknownHop), 2);
        assert_eq!(a.dropped(Dropped::EndAcrossNodes), 1);
        assert_eq!(a.dropped(Dropped::UnknownTunnel), 1);
        assert_eq!(a.dropped(Dropped::Malformed), 4);
        // The client end was not moved to the stranger: the service's next
        // datagram still reaches the client, and the stranger got nothing.
        service.send_to(&world, a.local_addr()).await.unwrap();
        assert_eq!(next(&client).await, world);
        let mut buf = [0u8; 64];
        assert!(
            stranger.try_recv(&mut buf).is_err(),
            "the stranger was answered"
        );

        // Closed on A: B's datagrams stop there, and the token with it.
        drop(on_a);
        client.send_to(&hello, b.local_addr()).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while a.dropped(Dropped::UnknownHop) < 3 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(a.dropped(Dropped::UnknownHop), 3);
        drop(on_b);
        cancel.cancel();
    }
}
