//! The one place that knows the binary encoding of wire messages.
//!
//! Messages are serde types encoded with `bincode` 2.0.1 (pinned: 3.0.0 is a
//! tombstone release). Swapping the encoding means changing this file only.
//! Decoding is bounded by the bytes given: a string or byte field's length
//! prefix is checked against a limit of at most 32x the body (1 KiB for
//! small bodies) before its buffer is allocated, so a few bytes
//! claiming 16 MiB allocate nothing (bincode allocates a field's claimed
//! length before reading it, and checks claims only against its limit).

use std::cell::Cell;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::capped::Capped;

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

/// A slice reader that publishes how many bytes are left, for [`Capped`].
struct Counted<'a> {
    slice: &'a [u8],
    left: &'a Cell<usize>,
}

impl bincode::de::read::Reader for Counted<'_> {
    fn read(&mut self, bytes: &mut [u8]) -> Result<(), bincode::error::DecodeError> {
        let Some((head, rest)) = self.slice.split_at_checked(bytes.len()) else {
            return Err(bincode::error::DecodeError::UnexpectedEnd {
                additional: bytes.len() - self.slice.len(),
            });
        };
        bytes.copy_from_slice(head);
        self.slice = rest;
        self.left.set(rest.len());
        Ok(())
    }

    fn peek_read(&mut self, n: usize) -> Option<&[u8]> {
        self.slice.get(..n)
    }

    fn consume(&mut self, n: usize) {
        self.slice = self.slice.get(n..).unwrap_or_default();
        self.left.set(self.slice.len());
    }
}

/// Decodes one `T` from the front of `bytes` under `limit`; returns it and
/// the bytes used. Sequences' size hints are capped by the bytes left.
fn decode_under<T: DeserializeOwned, const LIMIT: usize>(
    bytes: &[u8],
) -> Result<(T, usize), CodecError> {
    let left = Cell::new(bytes.len());
    let mut reader = Counted {
        slice: bytes,
        left: &left,
    };
    let mut decoder =
        bincode::serde::OwnedSerdeDecoder::from_reader(&mut reader, config::<LIMIT>());
    let value = T::deserialize(Capped {
        inner: decoder.as_deserializer(),
        left: &left,
    })
    .map_err(|e| CodecError::Decode(e.to_string()))?;
    Ok((value, bytes.len() - reader.slice.len()))
}

/// How much bincode may claim per byte of a well-formed body: it claims
/// a value's in-memory size (8 for a `u64`, 4 for an enum's variant index)
/// however short its varint, and a string's or byte field's length; every
/// value takes at least one byte, and no wire type has 128-bit integers.
const CLAIM_PER_BYTE: usize = 8;

/// Decodes under the smallest limit of 1 KiB, 4 KiB, ... 16 MiB (powers
/// of 4) that admits [`CLAIM_PER_BYTE`] per byte of `bytes`, so the limit
/// never refuses a valid message and a lying length claims at most 32x
/// the body (1 KiB for bodies up to 128 bytes).
fn decode_limited<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, usize), CodecError> {
    let need = bytes.len().saturating_mul(CLAIM_PER_BYTE);
    macro_rules! ladder {
        ($($limit:expr),*) => {
            $(
                if need <= $limit {
                    return decode_under::<T, { $limit }>(bytes);
                }
            )*
        };
    }
    ladder!(
        1 << 10,
        1 << 12,
        1 << 14,
        1 << 16,
        1 << 18,
        1 << 20,
        1 << 22,
        1 << 24
    );
    decode_under::<T, { MAX_MESSAGE * CLAIM_PER_BYTE }>(bytes)
}

/// Decodes exactly one value from `bytes`; trailing bytes are an error, so a
/// frame cannot smuggle extra data. Allocates at most ~32x `bytes.len()`
/// (1 KiB for up to 128 bytes) for a field whose length prefix lies.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, used) = decode_limited(bytes)?;
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
    fn messages_of_many_small_integers_decode_under_their_limit() {
        // Each 1-byte varint makes bincode claim 8 bytes: a body of 1,003
        // bytes claims ~8 KiB, which the limit must admit.
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Counters(Vec<u64>, Vec<Option<u32>>);
        let value = Counters(vec![1; 1000], vec![Some(2); 300]);
        let bytes = encode(&value).unwrap();
        assert!(bytes.len() < 2000);
        assert_eq!(decode::<Counters>(&bytes).unwrap(), value);
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
