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
//! **The node hop.** In a relay tier a tunnel whose ends are on two nodes
//! crosses between the nodes' packet ports as plain UDP, with a header of
//! the same size: `[0x01][role: u8][hop token: 16 bytes]`. The hop token
//! ([`HopToken`]) is 128 random bits the forwarding node makes per
//! tunnel and hands the other node over their mutually authenticated node
//! link ([`NodeHop`] in the forward request); it is never sent to either
//! end. A node rewrites the 18 header bytes in place as a datagram enters
//! or leaves the hop ([`rewrite`]): no copy, no size change (so the
//! tunnel's own path MTU holds across the hop), no encryption (the
//! tunnel's QUIC is end to end; the nodes never hold its keys).
//!
//! This module is sans-IO: header encoding, parsing and rewriting only.
//!
//! **Invariant:** the first byte is 0x00 (an end's datagram) or 0x01 (the
//! node hop's); no QUIC packet starts with either (QUIC's fixed bit 0x40
//! is set), so a QUIC packet sent to the wrong port can never be taken
//! for a relayed one.

use serde::{Deserialize, Serialize};

/// Bytes in front of every relayed packet (an end's and the node hop's).
pub const HEADER_LEN: usize = 18;
const MARKER: u8 = 0x00;
const HOP_MARKER: u8 = 0x01;

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

/// A forwarded tunnel's secret on the node hop: 128 random bits, known
/// only to the two nodes (agreed over their mutual-TLS link), never to the
/// tunnel's ends. A datagram between packet ports is taken only with the
/// token of a tunnel whose end it claims to come from.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HopToken(pub [u8; 16]);

impl HopToken {
    pub fn random() -> Self {
        Self(rand::random())
    }
}

impl std::fmt::Debug for HopToken {
    // A secret: nothing of it goes into logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HopToken(…)")
    }
}

/// What the forwarding node tells the node it forwards a tunnel to (over
/// their authenticated link) so the tunnel's datagrams can cross between
/// their packet ports: its own packet port (on the address its link comes
/// from) and the tunnel's hop token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeHop {
    pub port: u16,
    pub token: HopToken,
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

/// A datagram's header, as [`classify`] reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// From an end of tunnel `id` (or from a node to an end).
    End { role: PeerRole, id: TunnelId },
    /// Across the node hop, from the node holding `role`'s end.
    Hop { role: PeerRole, token: HopToken },
}

/// Why a datagram is not a relayed one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("shorter than the {HEADER_LEN}-byte header")]
    Short,
    #[error("first byte is neither 0x00 nor 0x01")]
    Marker,
    #[error("unknown role byte")]
    Role,
}

/// The header of `role`'s datagrams on tunnel `id`.
pub fn header(role: PeerRole, id: TunnelId) -> [u8; HEADER_LEN] {
    build(MARKER, role, &id.0)
}

/// The header of `role`'s datagrams on the node hop of the tunnel whose
/// hop token is `token`.
pub fn hop_header(role: PeerRole, token: HopToken) -> [u8; HEADER_LEN] {
    build(HOP_MARKER, role, &token.0)
}

fn build(marker: u8, role: PeerRole, rest: &[u8; 16]) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0] = marker;
    h[1] = role as u8;
    h[2..].copy_from_slice(rest);
    h
}

/// Reads a datagram's header (an end's or the node hop's).
pub fn classify(datagram: &[u8]) -> Result<Header, Malformed> {
    let h: &[u8; HEADER_LEN] = datagram
        .get(..HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(Malformed::Short)?;
    let role = match h[1] {
        1 => PeerRole::Client,
        2 => PeerRole::Service,
        _ => return Err(Malformed::Role),
    };
    let mut rest = [0u8; 16];
    rest.copy_from_slice(&h[2..]);
    match h[0] {
        MARKER => Ok(Header::End {
            role,
            id: TunnelId(rest),
        }),
        HOP_MARKER => Ok(Header::Hop {
            role,
            token: HopToken(rest),
        }),
        _ => Err(Malformed::Marker),
    }
}

/// Reads an end's datagram header; `None` for anything else (a node hop's
/// header included: ends never see those).
pub fn parse(datagram: &[u8]) -> Option<(PeerRole, TunnelId)> {
    match classify(datagram) {
        Ok(Header::End { role, id }) => Some((role, id)),
        _ => None,
    }
}

/// Whether every `stride`-byte segment of a received batch (GRO) has a
/// whole header and the same one as the first: a batch is one sender's,
/// and must be one tunnel's too. False for an empty batch.
pub fn one_tunnel(batch: &[u8], stride: usize) -> bool {
    let Some(first) = batch.get(..HEADER_LEN) else {
        return false;
    };
    batch
        .chunks(stride.max(1))
        .all(|d| d.len() >= HEADER_LEN && d[..HEADER_LEN] == *first)
}

/// Overwrites the header of every `stride`-byte segment of `batch` with
/// `header` (as a datagram enters or leaves the node hop). Segments
/// shorter than a header (none, after [`one_tunnel`]) are left alone.
pub fn rewrite(batch: &mut [u8], stride: usize, header: &[u8; HEADER_LEN]) {
    for d in batch.chunks_mut(stride.max(1)) {
        if let Some(h) = d.get_mut(..HEADER_LEN) {
            h.copy_from_slice(header);
        }
    }
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
        let token = HopToken::random();
        let hop = hop_header(PeerRole::Client, token);
        assert_eq!(
            classify(&hop),
            Ok(Header::Hop {
                role: PeerRole::Client,
                token
            })
        );
        assert_eq!(parse(&hop), None, "ends never take a hop header");
    }

    #[test]
    fn garbage_and_quic_packets_are_not_headers() {
        let id = TunnelId::random();
        let h = header(PeerRole::Client, id);
        assert_eq!(parse(&h[..HEADER_LEN - 1]), None, "short");
        assert_eq!(classify(&h[..HEADER_LEN - 1]), Err(Malformed::Short));
        assert_eq!(classify(&[]), Err(Malformed::Short));
        assert_eq!(classify(&[0x01]), Err(Malformed::Short));
        let mut quic = h;
        quic[0] = 0xc3; // a QUIC long header
        assert_eq!(parse(&quic), None);
        assert_eq!(classify(&quic), Err(Malformed::Marker));
        quic[0] = 0x43; // a QUIC short header
        assert_eq!(classify(&quic), Err(Malformed::Marker));
        for role in [0u8, 3, 0xff] {
            let mut bad = h;
            bad[1] = role;
            assert_eq!(parse(&bad), None);
            assert_eq!(classify(&bad), Err(Malformed::Role));
            bad[0] = HOP_MARKER;
            assert_eq!(classify(&bad), Err(Malformed::Role));
        }
    }

    #[test]
    fn every_byte_string_is_classified_without_panicking() {
        // Hostile input of every length around the header, random bytes.
        for len in 0..(3 * HEADER_LEN) {
            for _ in 0..64 {
                let d: Vec<u8> = (0..len).map(|_| rand::random()).collect();
                let _ = classify(&d);
                for stride in 0..len + 2 {
                    let _ = one_tunnel(&d, stride);
                    let mut d = d.clone();
                    rewrite(&mut d, stride, &[7; HEADER_LEN]);
                }
            }
        }
    }

    #[test]
    fn a_batch_is_one_tunnels_and_is_rewritten_segment_by_segment() {
        let (id, token) = (TunnelId::random(), HopToken::random());
        let end = header(PeerRole::Client, id);
        let stride = HEADER_LEN + 4;
        let mut batch = Vec::new();
        for payload in [b"aaaa".as_slice(), b"bbbb", b"cc"] {
            batch.extend_from_slice(&end);
            batch.extend_from_slice(payload);
        }
        assert!(one_tunnel(&batch, stride));
        let hop = hop_header(PeerRole::Client, token);
        rewrite(&mut batch, stride, &hop);
        let segments: Vec<&[u8]> = batch.chunks(stride).collect();
        assert_eq!(segments.len(), 3);
        for (s, payload) in segments.iter().zip([b"aaaa".as_slice(), b"bbbb", b"cc"]) {
            assert_eq!(s[..HEADER_LEN], hop, "header replaced");
            assert_eq!(&s[HEADER_LEN..], payload, "payload untouched");
        }
        assert!(one_tunnel(&batch, stride));

        // Another tunnel's segment, or one too short for a header, in the
        // batch: not one tunnel's.
        let mut mixed = batch.clone();
        mixed[stride + 2] ^= 1;
        assert!(!one_tunnel(&mixed, stride));
        let mut short = batch[..2 * stride].to_vec();
        short.extend_from_slice(&hop[..HEADER_LEN - 1]);
        assert!(!one_tunnel(&short, stride));
        assert!(!one_tunnel(&[], stride));
    }

    #[test]
    fn ids_and_tokens_do_not_leak_into_logs() {
        let id = TunnelId([0xab; 16]);
        assert_eq!(format!("{id:?}"), "TunnelId(abababab…)");
        let hop = NodeHop {
            port: 1,
            token: HopToken([0xcd; 16]),
        };
        assert!(!format!("{hop:?}").contains("cd"), "{hop:?}");
    }
}
