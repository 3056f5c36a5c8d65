//! The one place that knows the binary encoding of wire messages.
//!
//! Messages are serde types encoded with `bincode` 2.0.1 (pinned: 3.0.0 is a
//! tombstone release). Swapping the encoding means changing this file only.
//! Decoding is bounded: a peer cannot make us allocate more than `limit`.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a message could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("cannot encode message: {0}")]
    Encode(String),
    #[error("malformed message: {0}")]
    Decode(String),
    #[error("message has {extra} trailing bytes")]
    Trailing { extra: usize },
}

fn config<const LIMIT: usize>() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_little_endian()
        .with_variable_int_encoding()
        .with_limit::<LIMIT>()
}

/// The largest message body the codec will decode (16 MiB). Framing enforces
/// its own, usually smaller, limit before bytes reach here.
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// Encodes `value` into a new buffer.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, config::<MAX_MESSAGE>())
        .map_err(|e| CodecError::Encode(e.to_string()))
}

/// Encodes `value` at the end of `buf` (so a caller can put a header in
/// front without a second buffer); returns the bytes written.
pub fn encode_into<T: Serialize>(value: &T, buf: &mut Vec<u8>) -> Result<usize, CodecError> {
    let start = buf.len();
    bincode::serde::encode_into_std_write(value, buf, config::<MAX_MESSAGE>())
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    Ok(buf.len() - start)
}

/// Decodes exactly one value from `bytes`; trailing bytes are an error, so a
/// frame cannot smuggle extra data.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, used) = bincode::serde::decode_from_slice(bytes, config::<MAX_MESSAGE>())
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    if used != bytes.len() {
        return Err(CodecError::Trailing {
            extra: bytes.len() - used,
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Probe {
        id: u64,
        name: String,
        data: Vec<u8>,
    }

    #[test]
    fn round_trip() {
        let p = Probe {
            id: 7,
            name: "r1".into(),
            data: vec![1, 2, 3],
        };
        let bytes = encode(&p).unwrap();
        assert_eq!(decode::<Probe>(&bytes).unwrap(), p);
    }

    #[test]
    fn truncated_trailing_and_garbage_are_errors() {
        let bytes = encode(&Probe {
            id: 1,
            name: "x".into(),
            data: vec![9; 10],
        })
        .unwrap();
        assert!(decode::<Probe>(&bytes[..bytes.len() - 1]).is_err());
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(matches!(
            decode::<Probe>(&extra),
            Err(CodecError::Trailing { extra: 1 })
        ));
        // A length prefix claiming a huge vector must not allocate it.
        let huge = [
            0u8, 1, b'x', 0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
        ];
        assert!(decode::<Probe>(&huge).is_err());
    }
}
