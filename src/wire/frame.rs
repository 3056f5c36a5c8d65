//! Frames: `[version: u8][length: u32 BE][body: length bytes]`.
//!
//! The version byte lets either side reject a peer speaking another protocol
//! revision (or garbage) before reading a body; the length is checked
//! against the receiver's limit before any allocation.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::codec::{self, CodecError};

/// The protocol revision this build speaks.
pub const PROTOCOL_VERSION: u8 = 1;
/// Bytes before the body.
pub const HEADER_LEN: usize = 5;
/// Default largest frame body accepted (1 MiB); output is chunked below it.
pub const DEFAULT_MAX_FRAME: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("peer speaks protocol version {got}, this build speaks {PROTOCOL_VERSION}")]
    Version { got: u8 },
    #[error("frame of {size} bytes exceeds the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// Parses a header; returns the body length after checking it against
/// `limit`.
pub fn parse_header(header: [u8; HEADER_LEN], limit: usize) -> Result<usize, FrameError> {
    if header[0] != PROTOCOL_VERSION {
        return Err(FrameError::Version { got: header[0] });
    }
    let size = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if size > limit {
        return Err(FrameError::TooLarge { size, limit });
    }
    Ok(size)
}

/// Encodes `msg` as one frame. Refuses to build a frame over `limit`, so a
/// sender learns of the problem instead of its peer cutting it off.
/// The body is encoded straight after a placeholder header, in one buffer
/// (bulk output is copied once here, not three times).
pub fn encode<T: Serialize>(msg: &T, limit: usize) -> Result<Vec<u8>, FrameError> {
    let mut frame = vec![PROTOCOL_VERSION, 0, 0, 0, 0];
    let size = codec::encode_into(msg, &mut frame)?;
    if size > limit || size > u32::MAX as usize {
        return Err(FrameError::TooLarge { size, limit });
    }
    frame[1..HEADER_LEN].copy_from_slice(&(size as u32).to_be_bytes());
    Ok(frame)
}

/// Decodes a frame body.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    Ok(codec::decode(body)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_then_parse() {
        let frame = encode(&("hello".to_string(), 42u32), 1024).unwrap();
        let header: [u8; HEADER_LEN] = frame[..HEADER_LEN].try_into().unwrap();
        let len = parse_header(header, 1024).unwrap();
        assert_eq!(len, frame.len() - HEADER_LEN);
        let (s, n): (String, u32) = decode(&frame[HEADER_LEN..]).unwrap();
        assert_eq!((s.as_str(), n), ("hello", 42));
    }

    #[test]
    fn oversized_and_wrong_version_are_refused_before_reading_the_body() {
        let big = [PROTOCOL_VERSION, 0, 0x10, 0, 1];
        assert!(matches!(
            parse_header(big, 1024 * 1024),
            Err(FrameError::TooLarge {
                size: 1_048_577,
                ..
            })
        ));
        assert!(matches!(
            parse_header([9, 0, 0, 0, 1], 10),
            Err(FrameError::Version { got: 9 })
        ));
        assert!(matches!(
            encode(&vec![0u8; 2000], 1000),
            Err(FrameError::TooLarge { .. })
        ));
    }
}
