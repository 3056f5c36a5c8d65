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
//! **Invariant:** a datagram is forwarded only to the other end of the
//! tunnel its header names, and only once that end has spoken from its
//! address; nothing unknown is ever answered (no amplification).

use std::collections::HashMap;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
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
use crate::wire::packet_relay::{self, HEADER_LEN, PacketPath, PeerRole, TunnelId};

/// Datagrams read per receive call (each may be a GRO batch).
const BATCH: usize = 16;
/// Room per receive buffer: a full GRO batch of the largest datagrams.
const BUF: usize = 64 * 1024;

/// Where one end of a tunnel speaks from.
#[derive(Debug, Clone, Copy)]
struct End {
    addr: SocketAddr,
    /// The relay address it sent to: replies leave from there.
    via: Option<IpAddr>,
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

/// The packet port and its forwarding task.
pub struct PacketRelay {
    local: SocketAddr,
    table: Table,
    /// Bytes forwarded since start (headers included).
    bytes: Arc<std::sync::atomic::AtomicU64>,
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
        let table = Table::default();
        let bytes = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let task = tokio::spawn(forward(
            socket,
            state,
            table.clone(),
            tap,
            bytes.clone(),
            cancel,
        ));
        Ok(Self {
            local,
            table,
            bytes,
            _task: AbortOnDrop::new(task),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Bytes forwarded since start (headers included).
    pub fn bytes_forwarded(&self) -> u64 {
        self.bytes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Opens the packet path of a new tunnel.
    pub fn register(&self) -> PacketTunnel {
        let id = TunnelId::random();
        let (tx, rx) = watch::channel(false);
        self.table.lock().unwrap_or_else(|p| p.into_inner()).insert(
            id,
            Entry {
                service_known: Some(tx),
                ..Entry::default()
            },
        );
        PacketTunnel {
            path: PacketPath {
                port: self.local.port(),
                id,
            },
            table: self.table.clone(),
            service_known: rx,
        }
    }
}

async fn forward(
    socket: UdpSocket,
    state: UdpSocketState,
    table: Table,
    tap: Option<mpsc::Sender<Bytes>>,
    bytes: Arc<std::sync::atomic::AtomicU64>,
    cancel: CancellationToken,
) {
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
                        state.recv((&socket).into(), &mut bufs, &mut meta)
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
            let Some((to, via)) = route(&table, data, m) else {
                continue;
            };
            if let Some(tap) = &tap {
                let _ = tap.try_send(Bytes::copy_from_slice(data));
            }
            bytes.fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
            metrics::counter!("switchyard_relay_tunnel_bytes_total").increment(data.len() as u64);
            send(&socket, &state, to, via, data, m.stride).await;
        }
    }
}

/// Where a received batch goes: records its sender as the end its header
/// names, and answers the other end's address once known.
fn route(table: &Table, data: &[u8], meta: &RecvMeta) -> Option<(SocketAddr, Option<IpAddr>)> {
    let (role, id) = packet_relay::parse(data)?;
    // A GRO batch is one sender's; it must be one tunnel's too.
    if data
        .chunks(meta.stride.max(1))
        .any(|d| d.len() < HEADER_LEN || d[..HEADER_LEN] != data[..HEADER_LEN])
    {
        return None;
    }
    let mut table = table.lock().unwrap_or_else(|p| p.into_inner());
    let entry = table.get_mut(&id)?;
    let me = End {
        addr: meta.addr,
        via: meta.dst_ip,
    };
    let changed = entry.end(role).is_none_or(|e| e.addr != me.addr);
    if changed {
        debug!(tunnel = ?id, ?role, addr = %me.addr, "packet path end registered");
        *entry.end(role) = Some(me);
        if let (PeerRole::Service, Some(known)) = (role, &entry.service_known) {
            let _ = known.send(true);
        }
    }
    if data.len() == HEADER_LEN {
        return None; // an announcement only
    }
    let other = (*entry.end(role.other()))?;
    Some((other.addr, other.via))
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
