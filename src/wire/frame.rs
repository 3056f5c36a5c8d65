//! Frames: `[version: u8][body length: u32 BE][payload length: u32 BE]
//! [body][payload]`.
//!
//! The version byte lets either side reject a peer speaking another protocol
//! revision (or garbage) before reading a body; both lengths are checked
//! against the receiver's limit before any allocation, and a body or
//! payload is gathered by an [`Assembler`], which holds at most twice what
//! arrived (a header claiming 1 MiB followed by 3 bytes costs 3 bytes). The body is the
//! encoded message; the payload is bulk bytes the message carries (command
//! output), sent as they are after the body so the sender hands them to the
//! transport without copying them into the encoding (see [`Payload`]).

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::codec::{self, CodecError};

/// The protocol revision this build speaks (2: frames carry a payload).
pub const PROTOCOL_VERSION: u8 = 2;
/// Bytes before the body.
pub const HEADER_LEN: usize = 9;
/// Default largest frame (body and payload) accepted (1 MiB); output is
/// chunked below it.
pub const DEFAULT_MAX_FRAME: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("peer speaks protocol version {got}, this build speaks {PROTOCOL_VERSION}")]
    Version { got: u8 },
    #[error("frame of {size} bytes exceeds the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
    #[error("a {len}-byte payload came with a message that carries none")]
    UnexpectedPayload { len: usize },
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// Bulk bytes a message carries beside its encoded body. Messages carry
/// none unless they say otherwise.
pub trait Payload {
    /// The bytes to send after the body.
    fn payload(&self) -> Option<&Bytes> {
        None
    }
    /// Takes the bytes that came after the body; `false` if this message
    /// carries none (the frame is then malformed).
    fn set_payload(&mut self, _payload: Bytes) -> bool {
        false
    }
}

/// The lengths a frame header announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub body: usize,
    pub payload: usize,
}

/// Parses a header; returns the lengths after checking that the frame
/// fits `limit`.
pub fn parse_header(header: [u8; HEADER_LEN], limit: usize) -> Result<FrameHeader, FrameError> {
    if header[0] != PROTOCOL_VERSION {
        return Err(FrameError::Version { got: header[0] });
    }
    let body = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    let payload = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) as usize;
    let size = body + payload;
    if size > limit {
        return Err(FrameError::TooLarge { size, limit });
    }
    Ok(FrameHeader { body, payload })
}

/// Gathers the `want` bytes of a body or payload as they arrive into one
/// buffer that grows with them (at most twice what arrived, never past
/// `want`), so memory follows the bytes received, never the length a
/// header claims. Each piece is copied and released at once: holding the
/// transport's pieces instead would keep whole packets alive for a byte
/// each. A piece that is the whole of `want` is kept as it is (no copy).
#[derive(Debug, Default)]
pub struct Assembler {
    want: usize,
    buf: Vec<u8>,
    whole: Option<Bytes>,
}

impl Assembler {
    /// An assembler of `want` bytes (allocates nothing yet).
    pub fn new(want: usize) -> Self {
        Self {
            want,
            buf: Vec::new(),
            whole: None,
        }
    }

    fn got(&self) -> usize {
        self.whole.as_ref().map_or(self.buf.len(), Bytes::len)
    }

    /// Bytes still missing.
    pub fn missing(&self) -> usize {
        self.want - self.got()
    }

    /// Adds the next piece; a piece longer than what is missing is cut
    /// (the rest belongs to the next frame: callers ask for at most
    /// [`Self::missing`]).
    pub fn push(&mut self, mut piece: Bytes) {
        piece.truncate(self.missing());
        if piece.is_empty() {
            return;
        }
        if self.buf.is_empty() && self.whole.is_none() && piece.len() == self.want {
            self.whole = Some(piece);
            return;
        }
        let need = self.buf.len() + piece.len();
        if need > self.buf.capacity() {
            let grown = need.max(2 * self.buf.len()).min(self.want);
            self.buf.reserve_exact(grown - self.buf.len());
        }
        self.buf.extend_from_slice(&piece);
    }

    /// Bytes this assembler holds or has reserved, for tests and accounting.
    pub fn held(&self) -> usize {
        self.whole.as_ref().map_or(self.buf.capacity(), Bytes::len)
    }

    /// The bytes, once all have come (`None` before).
    pub fn finish(self) -> Option<Bytes> {
        if self.got() < self.want {
            return None;
        }
        Some(match self.whole {
            Some(whole) => whole,
            None => Bytes::from(self.buf),
        })
    }
}

/// One encoded frame: header and body in one buffer, the payload beside it
/// (the caller's bytes, not copied).
pub struct Encoded {
    pub head: Vec<u8>,
    pub payload: Option<Bytes>,
}

/// Encodes `msg` as one frame. Refuses to build a frame over `limit`, so a
/// sender learns of the problem instead of its peer cutting it off.
pub fn encode<T: Serialize + Payload>(msg: &T, limit: usize) -> Result<Encoded, FrameError> {
    let mut head = vec![PROTOCOL_VERSION, 0, 0, 0, 0, 0, 0, 0, 0];
    let body = codec::encode_into(msg, &mut head)?;
    let payload = msg.payload().filter(|p| !p.is_empty()).cloned();
    let payload_len = payload.as_ref().map_or(0, Bytes::len);
    let size = body + payload_len;
    if size > limit || size > u32::MAX as usize {
        return Err(FrameError::TooLarge { size, limit });
    }
    head[1..5].copy_from_slice(&(body as u32).to_be_bytes());
    head[5..HEADER_LEN].copy_from_slice(&(payload_len as u32).to_be_bytes());
    Ok(Encoded { head, payload })
}

/// Decodes a frame from its body and payload.
pub fn decode<T: DeserializeOwned + Payload>(body: &[u8], payload: Bytes) -> Result<T, FrameError> {
    let mut msg: T = codec::decode(body)?;
    if !payload.is_empty() {
        let len = payload.len();
        if !msg.set_payload(payload) {
            return Err(FrameError::UnexpectedPayload { len });
        }
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Note(String, u32);
    impl Payload for Note {}

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Blob {
        tag: u32,
        #[serde(skip)]
        data: Bytes,
    }
    impl Payload for Blob {
        fn payload(&self) -> Option<&Bytes> {
            Some(&self.data)
        }
        fn set_payload(&mut self, payload: Bytes) -> bool {
            self.data = payload;
            true
        }
    }

    /// Splits an encoded frame the way a reader does.
    fn split(e: &Encoded, limit: usize) -> Result<(FrameHeader, Vec<u8>, Bytes), FrameError> {
        let header = parse_header(e.head[..HEADER_LEN].try_into().unwrap(), limit)?;
        Ok((
            header,
            e.head[HEADER_LEN..].to_vec(),
            e.payload.clone().unwrap_or_default(),
        ))
    }

    #[test]
    fn encode_then_parse() {
        let frame = encode(&Note("hello".into(), 42), 1024).unwrap();
        assert!(frame.payload.is_none());
        let (header, body, payload) = split(&frame, 1024).unwrap();
        assert_eq!(header.body, frame.head.len() - HEADER_LEN);
        assert_eq!(header.payload, 0);
        let note: Note = decode(&body, payload).unwrap();
        assert_eq!(note, Note("hello".into(), 42));
    }

    #[test]
    fn payload_travels_beside_the_body_uncopied() {
        let data = Bytes::from(vec![7u8; 5000]);
        let frame = encode(
            &Blob {
                tag: 3,
                data: data.clone(),
            },
            8192,
        )
        .unwrap();
        let sent = frame.payload.clone().expect("a payload");
        assert_eq!(
            sent.as_ptr(),
            data.as_ptr(),
            "the caller's bytes, not a copy"
        );
        assert!(frame.head.len() < 16, "the body does not hold the data");
        let (header, body, payload) = split(&frame, 8192).unwrap();
        assert_eq!(header.payload, 5000);
        let blob: Blob = decode(&body, payload).unwrap();
        assert_eq!(blob, Blob { tag: 3, data });
    }

    #[test]
    fn a_payload_on_a_message_that_carries_none_is_refused() {
        let body = codec::encode(&Note("x".into(), 1)).unwrap();
        assert!(matches!(
            decode::<Note>(&body, Bytes::from_static(b"smuggled")),
            Err(FrameError::UnexpectedPayload { len: 8 })
        ));
    }

    #[test]
    fn an_assembler_holds_what_arrived_not_what_the_header_claims() {
        // A header claiming the whole 1 MiB limit, then 7 bytes.
        let header = parse_header([PROTOCOL_VERSION, 0, 0x10, 0, 0, 0, 0, 0, 0], 1 << 20).unwrap();
        assert_eq!(header.body, 1 << 20);
        let mut body = Assembler::new(header.body);
        assert_eq!(body.held(), 0, "nothing reserved before bytes come");
        body.push(Bytes::from_static(b"\x01\x02\x03\x04\x05\x06\x07"));
        assert!(
            body.held() <= 14,
            "holds {} bytes after 7 arrived",
            body.held()
        );
        // Byte by byte, the buffer stays within twice what came.
        for i in 0..10_000 {
            body.push(Bytes::from_static(b"x"));
            let got = 8 + i;
            assert!(body.held() <= 2 * got, "holds {} after {got}", body.held());
        }
        assert_eq!(body.missing(), (1 << 20) - 10_007);
        assert!(body.finish().is_none(), "incomplete");
    }

    #[test]
    fn an_assembler_joins_pieces_in_order_and_keeps_a_single_piece_uncopied() {
        let one = Bytes::from(vec![9u8; 100]);
        let mut a = Assembler::new(100);
        a.push(one.clone());
        let out = a.finish().unwrap();
        assert_eq!(out.as_ptr(), one.as_ptr(), "one piece is passed through");
        let mut a = Assembler::new(6);
        a.push(Bytes::from_static(b"ab"));
        a.push(Bytes::from_static(b"cd"));
        a.push(Bytes::from_static(b"efgh"));
        assert_eq!(a.missing(), 0);
        assert_eq!(&a.finish().unwrap()[..], b"abcdef");
    }

    #[test]
    fn oversized_and_wrong_version_are_refused_before_reading_the_body() {
        let big = [PROTOCOL_VERSION, 0, 0x10, 0, 1, 0, 0, 0, 0];
        assert!(matches!(
            parse_header(big, 1024 * 1024),
            Err(FrameError::TooLarge {
                size: 1_048_577,
                ..
            })
        ));
        // Body and payload count together.
        let split_big = [PROTOCOL_VERSION, 0, 0, 0, 6, 0, 0, 0, 5];
        assert!(matches!(
            parse_header(split_big, 10),
            Err(FrameError::TooLarge { size: 11, .. })
        ));
        assert!(matches!(
            parse_header([1, 0, 0, 0, 1, 0, 0, 0, 0], 10),
            Err(FrameError::Version { got: 1 })
        ));
        assert!(matches!(
            encode(&Note("x".repeat(2000), 0), 1000),
            Err(FrameError::TooLarge { .. })
        ));
        let blob = Blob {
            tag: 0,
            data: Bytes::from(vec![0u8; 2000]),
        };
        assert!(matches!(
            encode(&blob, 1000),
            Err(FrameError::TooLarge { .. })
        ));
    }
}
