//! The relay's packet path: how an end-to-end QUIC connection's datagrams
//! cross the relay without being decrypted and re-encrypted there.
//!
//! Each datagram sent to the relay's packet port carries a fixed header
//! in front of the QUIC packet: `[0x00][role: u8][tunnel id: 16 bytes]`.
//! The id is a random capability the relay hands to the two ends over
//! their authenticated control connections; the role says which end sent
//! it. The relay learns each end's address from its first datagram and
//! sends every datagram on to the other end unchanged (header included),
//! so it never copies or rewrites a byte. A datagram with no payload only
//! registers its sender's address.
//!
//! This module is sans-IO: header encoding and checks only.
//!
//! **Invariant:** the first byte is 0x00, which no QUIC packet starts with
//! (QUIC's fixed bit 0x40 is set), so a QUIC packet sent to the wrong port
//! can never be taken for a relayed one.

use serde::{Deserialize, Serialize};

/// Bytes in front of every relayed packet.
pub const HEADER_LEN: usize = 18;
const MARKER: u8 = 0x00;

/// A tunnel's identity on the packet path: 128 random bits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TunnelId(pub [u8; 16]);

impl TunnelId {
    pub fn random() -> Self {
        Self(rand::random())
    }
}

impl std::fmt::Debug for TunnelId {
    // A capability: only a prefix goes into logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TunnelId({}…)", hex::encode(&self.0[..4]))
    }
}

/// Which end of a tunnel a datagram comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerRole {
    Client = 1,
    Service = 2,
}

impl PeerRole {
    pub fn other(self) -> Self {
        match self {
            Self::Client => Self::Service,
            Self::Service => Self::Client,
        }
    }
}

/// What the relay tells each end about the packet path of its tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PacketPath {
    /// The relay's packet port (on the address the end reached the relay at).
    pub port: u16,
    pub id: TunnelId,
}

/// The header of `role`'s datagrams on tunnel `id`.
pub fn header(role: PeerRole, id: TunnelId) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0] = MARKER;
    h[1] = role as u8;
    h[2..].copy_from_slice(&id.0);
    h
}

/// Reads a datagram's header; `None` for anything that is not one.
pub fn parse(datagram: &[u8]) -> Option<(PeerRole, TunnelId)> {
    if datagram.len() < HEADER_LEN || datagram[0] != MARKER {
        return None;
    }
    let role = match datagram[1] {
        1 => PeerRole::Client,
        2 => PeerRole::Service,
        _ => return None,
    };
    let mut id = [0u8; 16];
    id.copy_from_slice(&datagram[2..HEADER_LEN]);
    Some((role, TunnelId(id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let id = TunnelId::random();
        let mut datagram = header(PeerRole::Service, id).to_vec();
        datagram.extend_from_slice(b"quic packet");
        assert_eq!(parse(&datagram), Some((PeerRole::Service, id)));
        assert_eq!(PeerRole::Service.other(), PeerRole::Client);
    }

    #[test]
    fn garbage_and_quic_packets_are_not_headers() {
        let id = TunnelId::random();
        let h = header(PeerRole::Client, id);
        assert_eq!(parse(&h[..HEADER_LEN - 1]), None, "short");
        let mut quic = h;
        quic[0] = 0xc3; // a QUIC long header
        assert_eq!(parse(&quic), None);
        let mut role = h;
        role[1] = 7;
        assert_eq!(parse(&role), None);
    }

    #[test]
    fn ids_do_not_leak_into_logs() {
        let id = TunnelId([0xab; 16]);
        assert_eq!(format!("{id:?}"), "TunnelId(abababab…)");
    }
}
