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
//! (`register_across`) the client end is the node link the tunnel was
//! forwarded over, on the broker's node (`join_forwarded`) the service end
//! is. Datagrams cross between the two as QUIC datagrams on that link
//! (mutual TLS, see `nodes`), still untouched: the nodes add their link's
//! encryption around the tunnel's, they never remove the tunnel's.
//! [`NodeInbox`] reads a link's datagrams (one reader per link, owned by
//! whoever owns the link).
//!
//! **Invariant:** a datagram is forwarded only to the other end of the
//! tunnel its header names, and only once that end has spoken from its
//! address; nothing unknown is ever answered (no amplification). An end
//! across a node link speaks only over that link (a UDP sender naming it
//! is ignored), and a datagram from a link goes only to a local UDP end
//! (never on to a third node).

use std::collections::HashMap;
use std::collections::hash_map::Entry as Slot;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use quinn::Connection;
use quinn::udp::{RecvMeta, Transmit, UdpSocketState};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::task::AbortOnDrop;
use crate::wire::packet_relay::{self, HEADER_LEN, PacketPath, PeerRole, TunnelId};

/// Datagrams read per receive call (each may be a GRO batch).
const BATCH: usize = 16;
/// Room per receive buffer: a full GRO batch of the largest datagrams.
const BUF: usize = 64 * 1024;

/// The smallest datagram a node link must carry for a tunnel's packet
/// path to cross it: a QUIC Initial (1,200 bytes, RFC 9000 §14.1) and the
/// packet-path header.
pub const MIN_LINK_DATAGRAM: usize = 1200 + HEADER_LEN;

/// Where one end of a tunnel is.
#[derive(Debug, Clone)]
enum End {
    /// Speaks UDP from `addr`; replies leave from `via`, the relay address
    /// it sent to.
    Udp {
        addr: SocketAddr,
        via: Option<IpAddr>,
    },
    /// Across the link to another node of the tier: its datagrams arrive
    /// as QUIC datagrams on that link (and only there), and go back the
    /// same way.
    Node(Connection),
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
}

type Table = Arc<Mutex<HashMap<TunnelId, Entry>>>;

/// What the forwarding task and the node links' readers share.
struct Port {
    socket: UdpSocket,
    state: UdpSocketState,
    table: Table,
    tap: Option<mpsc::Sender<Bytes>>,
    /// Bytes forwarded since start (headers included).
    bytes: AtomicU64,
    /// Datagrams sent to or received from other nodes' links.
    node_datagrams: AtomicU64,
}

impl Port {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TunnelId, Entry>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count(&self, data: &[u8]) {
        if let Some(tap) = &self.tap {
            let _ = tap.try_send(Bytes::copy_from_slice(data));
        }
        self.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        metrics::counter!("switchyard_relay_tunnel_bytes_total").increment(data.len() as u64);
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
        self.table
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.path.id);
    }
}

/// Reads the QUIC datagrams another node sends over one node link and
/// forwards each to the local end of its tunnel (see
/// [`PacketRelay::register_across`] and [`PacketRelay::join_forwarded`]).
#[derive(Clone)]
pub struct NodeInbox(Arc<Port>);

impl NodeInbox {
    /// Serves `link`'s datagrams until it closes.
    pub async fn serve(self, link: Connection) {
        while let Ok(data) = link.read_datagram().await {
            let Some((to, via)) = route_from_node(&self.0, &link, &data) else {
                continue;
            };
            self.0.count(&data);
            self.0.node_datagrams.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("switchyard_relay_node_datagrams_total", "way" => "in").increment(1);
            send(&self.0.socket, &self.0.state, to, via, &data, data.len()).await;
        }
    }
}

/// Whether `link` carries a tunnel's datagrams ([`MIN_LINK_DATAGRAM`]),
/// waiting up to `wait` for its path MTU discovery to get there (a fresh
/// link starts at QUIC's 1,200-byte minimum and grows within a few round
/// trips where the network allows).
pub async fn link_carries_tunnels(link: &Connection, wait: Duration) -> bool {
    let fits = || {
        link.max_datagram_size()
            .is_some_and(|m| m >= MIN_LINK_DATAGRAM)
    };
    let deadline = tokio::time::Instant::now() + wait;
    while !fits() {
        if tokio::time::Instant::now() >= deadline || link.close_reason().is_some() {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
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

    /// Datagrams exchanged with other nodes since start (both ways).
    pub fn node_datagrams(&self) -> u64 {
        self.port.node_datagrams.load(Ordering::Relaxed)
    }

    /// What serves node links' datagrams into this port.
    pub fn node_inbox(&self) -> NodeInbox {
        NodeInbox(self.port.clone())
    }

    /// Opens the packet path of a new tunnel.
    pub fn register(&self) -> PacketTunnel {
        self.insert_new(None)
    }

    /// Opens the packet path of a tunnel another node forwarded here over
    /// `link`: the service end is local (UDP), the client end is across
    /// the link.
    pub fn register_across(&self, link: Connection) -> PacketTunnel {
        self.insert_new(Some(End::Node(link)))
    }

    /// The client-side half of a tunnel this node forwarded over `link`:
    /// the node across it opened tunnel `id` (its service end is there),
    /// the client end is local. None if `id` is already taken here (128
    /// random bits: never in practice).
    pub fn join_forwarded(&self, id: TunnelId, link: Connection) -> Option<PacketTunnel> {
        let (_, service_known) = watch::channel(true);
        match self.port.lock().entry(id) {
            Slot::Occupied(_) => return None,
            Slot::Vacant(slot) => {
                slot.insert(Entry {
                    service: Some(End::Node(link)),
                    ..Entry::default()
                });
            }
        }
        Some(self.tunnel(id, service_known))
    }

    fn insert_new(&self, client: Option<End>) -> PacketTunnel {
        let (tx, rx) = watch::channel(false);
        let mut table = self.port.lock();
        let id = loop {
            let id = TunnelId::random();
            if !table.contains_key(&id) {
                break id;
            }
        };
        table.insert(
            id,
            Entry {
                client,
                service_known: Some(tx),
                ..Entry::default()
            },
        );
        drop(table);
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
        for (buf, m) in storage.iter().zip(meta.iter()).take(n) {
            let data = &buf[..m.len];
            let Some(to) = route(&port, data, m) else {
                continue;
            };
            port.count(data);
            match to {
                End::Udp { addr, via } => {
                    send(socket, &port.state, addr, via, data, m.stride).await;
                }
                End::Node(link) => to_node(&port, &link, data, m.stride),
            }
        }
    }
}

/// Sends a batch's datagrams over a node link, one QUIC datagram each. One
/// that does not fit the link is dropped, as a router drops a packet over
/// its MTU (the tunnel's own path MTU discovery then settles below it).
fn to_node(port: &Port, link: &Connection, data: &[u8], stride: usize) {
    for datagram in data.chunks(stride.max(1)) {
        match link.send_datagram(Bytes::copy_from_slice(datagram)) {
            Ok(()) => {
                port.node_datagrams.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("switchyard_relay_node_datagrams_total", "way" => "out")
                    .increment(1);
            }
            Err(e) => {
                debug!(error = %e, "datagram to relay node dropped");
                metrics::counter!("switchyard_relay_node_datagrams_dropped_total").increment(1);
            }
        }
    }
}

/// Where a received batch goes: records its sender as the end its header
/// names, and answers the other end once known. An end that is across a
/// node link speaks only over that link, never from a UDP address.
fn route(port: &Port, data: &[u8], meta: &RecvMeta) -> Option<End> {
    let (role, id) = packet_relay::parse(data)?;
    // A GRO batch is one sender's; it must be one tunnel's too.
    if data
        .chunks(meta.stride.max(1))
        .any(|d| d.len() < HEADER_LEN || d[..HEADER_LEN] != data[..HEADER_LEN])
    {
        return None;
    }
    let mut table = port.lock();
    let entry = table.get_mut(&id)?;
    let changed = match entry.end(role) {
        Some(End::Node(_)) => return None,
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
        return None; // an announcement only
    }
    entry.end(role.other()).clone()
}

/// Where a datagram from node link `link` goes: only a tunnel whose end
/// its header names is across that very link, and only to that tunnel's
/// local (UDP) end.
fn route_from_node(
    port: &Port,
    link: &Connection,
    data: &[u8],
) -> Option<(SocketAddr, Option<IpAddr>)> {
    let (role, id) = packet_relay::parse(data)?;
    if data.len() == HEADER_LEN {
        return None;
    }
    let mut table = port.lock();
    let entry = table.get_mut(&id)?;
    match entry.end(role) {
        Some(End::Node(across)) if across.stable_id() == link.stable_id() => {}
        _ => return None,
    }
    match entry.end(role.other()) {
        Some(End::Udp { addr, via }) => Some((*addr, *via)),
        _ => None,
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
    use crate::wire::packet_relay::header;

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
}
