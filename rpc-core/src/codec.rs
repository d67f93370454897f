//! Turning arguments, results and headers into bytes and back.
//!
//! The [`Codec`] trait is the seam; [`Bincode`] (bincode 2 through serde) is the one the
//! framework ships and uses by default.
//!
//! # Decoding never trusts a length
//!
//! bincode reserves memory for a string or byte buffer from the length written in front of
//! it, before it reads the bytes. A forged length would let a 20-byte frame ask for
//! gigabytes. Every decode here therefore runs with a bincode size limit chosen from the size
//! of the input: the smallest power of 16 (at least 64 KiB) that is at least 16 times the
//! input. Sixteen times is the most memory honest input can expand to (a varint-encoded
//! `u128` takes one byte on the wire and sixteen in memory), so valid input always decodes,
//! while forged input can reserve at most 256 times the bytes actually received, and never
//! more than 16 times the largest frame a connection accepts.

use bytes::{BufMut, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Encodes values into bytes and decodes them back.
///
/// Implementations must be deterministic and must bound the memory a decode may reserve by
/// the size of its input; see the [module docs](self).
pub trait Codec: Clone + Send + Sync + 'static {
    /// Appends the encoding of `value` to `dst`.
    fn encode<T: Serialize + ?Sized>(
        &self,
        value: &T,
        dst: &mut BytesMut,
    ) -> Result<(), CodecError>;

    /// Decodes a value from the front of `src`, returning it and the number of bytes used.
    fn decode_prefix<T: DeserializeOwned>(&self, src: &[u8]) -> Result<(T, usize), CodecError>;

    /// Decodes a value that must fill `src` exactly.
    fn decode<T: DeserializeOwned>(&self, src: &[u8]) -> Result<T, CodecError> {
        let (value, used) = self.decode_prefix(src)?;
        if used != src.len() {
            return Err(CodecError::TrailingBytes {
                trailing: src.len() - used,
            });
        }
        Ok(value)
    }
}

/// Why a value could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The value could not be encoded (for example, a map whose keys fail to serialize).
    #[error("could not encode value: {reason}")]
    Encode {
        /// What the encoder reported.
        reason: String,
    },
    /// The bytes are not a valid encoding of the expected type.
    #[error("could not decode value: {reason}")]
    Decode {
        /// What the decoder reported.
        reason: String,
    },
    /// The input holds more bytes than the value used: the two sides disagree on the type.
    #[error("{trailing} bytes left over after decoding; do both sides use the same types?")]
    TrailingBytes {
        /// How many bytes were left.
        trailing: usize,
    },
    /// The input claims to hold more data than its size allows (a forged length).
    #[error("input of {input} bytes claims more than {limit} bytes of decoded data")]
    LimitExceeded {
        /// The size of the input.
        input: usize,
        /// The limit that applied.
        limit: usize,
    },
}

/// bincode 2 (standard configuration: little endian, varint integers) through serde.
///
/// ```
/// use bytes::BytesMut;
/// use rpc_core::{Bincode, Codec};
///
/// let mut buf = BytesMut::new();
/// Bincode.encode(&("hello", 42u32), &mut buf).unwrap();
/// let (text, n): (String, u32) = Bincode.decode(&buf).unwrap();
/// assert_eq!((text.as_str(), n), ("hello", 42));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Bincode;

/// How much decoded data one byte of honest input can become, at most.
const EXPANSION: usize = 16;

/// Lets bincode append straight into a `BytesMut`, with no intermediate buffer.
struct BytesWriter<'a>(&'a mut BytesMut);

impl bincode::enc::write::Writer for BytesWriter<'_> {
    #[inline]
    fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
        self.0.put_slice(bytes);
        Ok(())
    }
}

impl Codec for Bincode {
    #[inline]
    fn encode<T: Serialize + ?Sized>(
        &self,
        value: &T,
        dst: &mut BytesMut,
    ) -> Result<(), CodecError> {
        let start = dst.len();
        let result = bincode::serde::encode_into_writer(
            value,
            BytesWriter(dst),
            bincode::config::standard(),
        );
        result.map_err(|err| {
            dst.truncate(start);
            CodecError::Encode {
                reason: err.to_string(),
            }
        })
    }

    #[inline]
    fn decode_prefix<T: DeserializeOwned>(&self, src: &[u8]) -> Result<(T, usize), CodecError> {
        decode_limited(src)
    }
}

/// Decodes with a bincode limit picked from a fixed ladder of powers of 16 (see module docs).
fn decode_limited<T: DeserializeOwned>(src: &[u8]) -> Result<(T, usize), CodecError> {
    let need = src.len().saturating_mul(EXPANSION);
    macro_rules! ladder {
        ($($limit:literal),*) => {
            $(
                if need <= $limit {
                    return decode_with::<T, $limit>(src);
                }
            )*
        };
    }
    ladder!(
        0x1_0000,       // 64 KiB: inputs up to 4 KiB
        0x10_0000,      // 1 MiB: inputs up to 64 KiB
        0x100_0000,     // 16 MiB: inputs up to 1 MiB
        0x1000_0000,    // 256 MiB: inputs up to 16 MiB (the default frame limit)
        0x1_0000_0000,  // 4 GiB: inputs up to 256 MiB
        0x10_0000_0000  // 64 GiB: inputs up to 4 GiB, the most a u32 length prefix allows
    );
    Err(CodecError::LimitExceeded {
        input: src.len(),
        limit: 0x10_0000_0000,
    })
}

fn decode_with<T: DeserializeOwned, const LIMIT: usize>(
    src: &[u8],
) -> Result<(T, usize), CodecError> {
    let config = bincode::config::standard().with_limit::<LIMIT>();
    bincode::serde::decode_from_slice(src, config).map_err(|err| match err {
        bincode::error::DecodeError::LimitExceeded => CodecError::LimitExceeded {
            input: src.len(),
            limit: LIMIT,
        },
        other => CodecError::Decode {
            reason: other.to_string(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(value: T) {
        let mut buf = BytesMut::new();
        Bincode.encode(&value, &mut buf).expect("encode");
        let back: T = Bincode.decode(&buf).expect("decode");
        assert_eq!(back, value);
    }

    #[test]
    fn round_trips_common_types() {
        round_trip(());
        round_trip(42u64);
        round_trip(-7i128);
        round_trip(String::from("héllo"));
        round_trip(vec![1u8, 2, 3]);
        round_trip(Some(vec![String::new(), "x".into()]));
        round_trip(HashMap::from([(1u32, "a".to_string()), (2, "b".into())]));
        round_trip((1u8, 2u16, 3u32, 4u64));
        // Many small u128 values: one byte each on the wire, sixteen in memory.
        round_trip(vec![1u128; 10_000]);
    }

    /// A varint length prefix claiming 2^60 elements, as bincode's standard config writes it.
    fn forged_len_prefix() -> Vec<u8> {
        let mut bytes = vec![253u8]; // marker: u64 follows, little endian
        bytes.extend_from_slice(&(1u64 << 60).to_le_bytes());
        bytes
    }

    #[test]
    fn forged_string_length_is_refused_without_allocating() {
        let bytes = forged_len_prefix();
        let err = Bincode.decode::<String>(&bytes).expect_err("must fail");
        assert!(matches!(err, CodecError::LimitExceeded { .. }), "{err:?}");
    }

    #[test]
    fn forged_vec_lengths_are_refused() {
        let bytes = forged_len_prefix();
        assert!(Bincode.decode::<Vec<u8>>(&bytes).is_err());
        assert!(Bincode.decode::<Vec<u64>>(&bytes).is_err());
        assert!(Bincode.decode::<Vec<String>>(&bytes).is_err());
        assert!(Bincode.decode::<HashMap<String, Vec<u8>>>(&bytes).is_err());
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let mut buf = BytesMut::new();
        Bincode.encode(&(1u32, 2u32), &mut buf).expect("encode");
        let err = Bincode.decode::<u32>(&buf).expect_err("trailing");
        assert_eq!(err, CodecError::TrailingBytes { trailing: 1 });
    }

    #[test]
    fn decode_prefix_reports_bytes_used() {
        let mut buf = BytesMut::new();
        Bincode.encode(&7u32, &mut buf).expect("encode");
        buf.extend_from_slice(b"rest");
        let (v, used): (u32, usize) = Bincode.decode_prefix(&buf).expect("decode");
        assert_eq!((v, &buf[used..]), (7, &b"rest"[..]));
    }

    #[test]
    fn failed_encode_leaves_buffer_untouched() {
        struct Fails;
        impl Serialize for Fails {
            fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("nope"))
            }
        }
        let mut buf = BytesMut::from(&b"keep"[..]);
        let err = Bincode.encode(&(1u64, Fails), &mut buf).expect_err("fails");
        assert!(matches!(err, CodecError::Encode { .. }));
        assert_eq!(&buf[..], b"keep");
    }
}
