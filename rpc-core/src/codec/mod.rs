//! Turning arguments, results and stream items into bytes and back: bincode 2.
//!
//! Every body on the wire (a call's arguments, as one tuple; its result; each stream item)
//! is encoded with [`Bincode`]: bincode 2 through serde, with bincode's
//! `config::standard()` (little-endian, variable-length integers), and decoded with that
//! configuration plus a size limit chosen from the input (below). This is part of the
//! protocol, not a setting: there is no per-server or per-client choice of codec, and both
//! ends name [`Bincode`] wherever they encode or decode. Frame headers are not bincode; they
//! have a fixed layout of their own (see [`message`](crate::message)).
//!
//! The [`Codec`] trait is the seam bincode sits behind, so the encoding is written, tested
//! and fuzzed in one place; it is not a point where another encoding plugs in.
//!
//! # Decoding never trusts a length
//!
//! A forged length in front of a string, byte buffer, sequence or map must not let a 20-byte
//! frame reserve gigabytes. Two mechanisms bound what a decode reserves ahead of the data:
//!
//! * **Strings and byte buffers** (`String`, `serde_bytes`-style `deserialize_byte_buf`
//!   types) are never reserved from the length in front of them: the input is a slice, so
//!   they are asked of bincode as borrowed ones, checked against the bytes actually present,
//!   and copied once (see `bounded.rs`). Every decode also runs with a bincode size limit
//!   chosen from the size of the input: the smallest power of 16 (at least 64 KiB) that is at
//!   least 16 times the input. Honest input never comes near it; a forged length fails with
//!   [`CodecError::LimitExceeded`], which names the limit, before anything is copied.
//! * **Sequences and maps** (`Vec`, `VecDeque`, `HashMap`, `HashSet`, `BinaryHeap`, ...) are
//!   built by serde, which reserves room for the element count written in front of them (up
//!   to 1 MiB per container) before reading one element; bincode's limit does not see that.
//!   Decoding here therefore rations those counts: **the element counts that all the
//!   containers of one decode are allowed to reserve add up to at most one element per input
//!   byte**, however nested or recursive the type. A `Vec<T>` reserves at most
//!   `input_len * size_of::<T>()` bytes ahead of its elements (as many bytes as the input for
//!   `Vec<u8>`, 24 times the input for `Vec<String>`); a hash map or set at most about
//!   2.3 times `input_len * size_of::<(K, V)>()`, plus one control byte per bucket (hashbrown
//!   rounds its table up to a power of two buckets at 7/8 load, 4 buckets at least);
//!   `BTreeMap`s and `BTreeSet`s reserve nothing.
//!   Past what was reserved, containers grow only as elements actually arrive.
//!
//! So before forged input is refused, a decode reserves nothing for strings and byte buffers
//! and at most `input_len` elements of its containers in all.
//! Honest input decodes exactly as without these bounds: every container element that takes
//! at least one byte on the wire is counted against a byte of its own, so honest containers
//! are always allowed their full count (only containers of elements encoded in zero bytes,
//! such as `Vec<()>`, can be told less, and then grow as they fill).

use std::marker::PhantomData;

use bytes::{BufMut, Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;

mod bounded;

/// Encodes values into bytes and decodes them back.
///
/// [`Bincode`] is the only implementation, and the only one the framework uses (see the
/// [module docs](self)). Implementations must be deterministic and must bound the memory a decode may reserve by
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

    /// Like [`decode`](Self::decode), from a received frame's bytes: every
    /// [`Payload`](crate::Payload) in the value is a slice of `src`, not a copy (see
    /// [`payload`](crate::payload)).
    fn decode_shared<T: DeserializeOwned>(&self, src: &Bytes) -> Result<T, CodecError> {
        crate::payload::decoding_from(src, |bytes| self.decode(bytes))
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

/// bincode 2 through serde, with `bincode::config::standard()` (little endian, varint
/// integers): the encoding of every body on the wire. Decoding adds a size limit chosen from
/// the input's length (see the [module docs](self)).
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

/// The bincode limit is at least this many times the input (see the module docs).
const EXPANSION: usize = 16;

/// Lets bincode append into a `BytesMut` through a small buffer on the stack.
///
/// bincode writes every integer, and a varint's tag, on its own. Appending each to the
/// `BytesMut` cost a call and a `memcpy` apiece (about 40 instructions a write, several
/// writes a message); here the usual sizes become plain stores into `scratch`, and the
/// `BytesMut` gets one copy per [`SCRATCH`] bytes.
///
/// In an encode that splices [`Payload`](crate::Payload)s (a write queue's), an empty write
/// may be a payload's marker: see [`splice_here`](Self::splice_here).
struct BytesWriter<'a> {
    dst: &'a mut BytesMut,
    scratch: [u8; SCRATCH],
    len: usize,
    splicing: bool,
}

/// Bytes gathered before they go to the `BytesMut`.
const SCRATCH: usize = 64;

impl<'a> BytesWriter<'a> {
    #[inline]
    fn new(dst: &'a mut BytesMut, splicing: bool) -> Self {
        BytesWriter {
            dst,
            scratch: [0; SCRATCH],
            len: 0,
            splicing,
        }
    }

    /// Appends what is gathered to the `BytesMut`.
    #[inline]
    fn flush(&mut self) {
        if self.len > 0 {
            self.dst.put_slice(&self.scratch[..self.len]);
            self.len = 0;
        }
    }

    /// Copies `bytes`, `N` long, into the scratch buffer (a copy of a known length: a store),
    /// or to the `BytesMut` if the buffer has no room.
    #[inline(always)]
    fn gather<const N: usize>(&mut self, bytes: &[u8]) {
        match (
            self.scratch.get_mut(self.len..self.len + N),
            <&[u8; N]>::try_from(bytes),
        ) {
            (Some(to), Ok(from)) => {
                to.copy_from_slice(from);
                self.len += N;
            }
            _ => self.pass(bytes),
        }
    }

    /// Appends `bytes` to the `BytesMut` after what is gathered.
    fn pass(&mut self, bytes: &[u8]) {
        self.flush();
        if bytes.is_empty() && self.splicing {
            self.splice_here();
        }
        self.dst.put_slice(bytes);
    }

    /// An empty write: an empty string or byte slice, or the marker a spliced payload
    /// writes after its length (an empty byte slice: its length, a 0, then no bytes). For a
    /// marker, the 0 is taken back and the payload's bytes are recorded to go here.
    #[cold]
    fn splice_here(&mut self) {
        let Some(bytes) = crate::payload::take_marked() else {
            return;
        };
        if self.dst.last() == Some(&0) {
            self.dst.truncate(self.dst.len() - 1);
            crate::payload::record_splice(self.dst.len(), bytes);
        }
    }
}

impl bincode::enc::write::Writer for BytesWriter<'_> {
    #[inline]
    fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
        if self.len + bytes.len() > SCRATCH {
            self.flush();
        }
        match bytes.len() {
            1 => self.gather::<1>(bytes),
            2 => self.gather::<2>(bytes),
            4 => self.gather::<4>(bytes),
            8 => self.gather::<8>(bytes),
            _ => self.pass(bytes),
        }
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
        let begun = crate::payload::begin_encode();
        let mut writer = BytesWriter::new(dst, begun == crate::payload::Mode::Armed);
        let result =
            bincode::serde::encode_into_writer(value, &mut writer, bincode::config::standard());
        writer.flush();
        crate::payload::end_encode(begun);
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
    // Containers draw their preallocation hints from one element per input byte (module
    // docs). `seed_decode_from_slice` is bincode's `decode_from_slice` with a seed, which lets
    // the value go through the `Bounded` wrapper and still reports the bytes used.
    let budget = bounded::Budget::new(src.len());
    let seed = bounded::Seed::new(PhantomData::<T>, &budget);
    bincode::serde::seed_decode_from_slice(seed, src, config).map_err(|err| match err {
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
    use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

    fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(value: T) {
        let mut buf = BytesMut::new();
        Bincode.encode(&value, &mut buf).expect("encode");
        let back: T = Bincode.decode(&buf).expect("decode");
        assert_eq!(back, value);
    }

    #[test]
    fn gathered_writes_give_the_bytes_bincode_gives() {
        // Integers of every width around the scratch buffer's edge, strings shorter and
        // longer than it: the bytes and their order must be bincode's own.
        let long = "x".repeat(3 * SCRATCH + 5);
        let value = (
            (0..40u64).map(|i| i * 997).collect::<Vec<_>>(),
            "short",
            u64::MAX,
            -3i16,
            long,
            (1u8, 70_000u32, 1.5f64, 'é'),
            vec![u128::MAX; 5],
        );
        // Appended after bytes already there, as a frame's body is.
        let mut buf = BytesMut::from(&b"head"[..]);
        Bincode.encode(&value, &mut buf).expect("encode");
        let plain = bincode::serde::encode_to_vec(&value, bincode::config::standard())
            .expect("bincode encodes it");
        assert_eq!(&buf[..4], b"head");
        assert_eq!(&buf[4..], &plain[..]);
    }

    /// A byte buffer that asks for an owned buffer, as `serde_bytes::ByteBuf` does.
    #[derive(Debug, PartialEq)]
    struct Blob(Vec<u8>);

    impl Serialize for Blob {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(&self.0)
        }
    }

    impl<'de> serde::Deserialize<'de> for Blob {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl serde::de::Visitor<'_> for V {
                type Value = Blob;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("bytes")
                }
                fn visit_bytes<E>(self, v: &[u8]) -> Result<Blob, E> {
                    Ok(Blob(v.to_vec()))
                }
            }
            d.deserialize_byte_buf(V)
        }
    }

    #[test]
    fn owned_buffers_and_strings_decode_from_borrowed_input() {
        round_trip(Blob(vec![1, 2, 3, 255]));
        round_trip(Blob(Vec::new()));
        round_trip((String::from("grüße"), Blob(vec![7; 1000]), String::new()));
        // Invalid UTF-8 is still refused on the borrowed path.
        let mut buf = BytesMut::new();
        Bincode
            .encode(&Blob(vec![0xff, 0xfe]), &mut buf)
            .expect("encode");
        assert!(Bincode.decode::<String>(&buf).is_err());
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

    // The `Bounded` wrapper must forward everything: these round trips go through every kind
    // of accessor it wraps (sequences, maps, options, newtypes, enum variants of each shape).

    #[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
    enum Shape {
        Unit,
        Newtype(Vec<String>),
        Tuple(u8, Vec<Vec<u16>>, Option<Vec<u64>>),
        Struct {
            name: String,
            points: Vec<(i32, i32)>,
            tags: BTreeMap<String, Vec<u8>>,
        },
    }

    #[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
    struct Scalars {
        flag: bool,
        small: i8,
        wide: u128,
        negative: i128,
        ratio: f32,
        precise: f64,
        letter: char,
        unit: (),
        marker: Marker,
        wrapped: Wrapped,
        pair: Pair,
    }

    #[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
    struct Marker;

    #[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
    struct Wrapped(Vec<u32>);

    #[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
    struct Pair(u16, String);

    /// A recursive type: the depth comes from the input.
    #[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
    struct Tree(Vec<Tree>);

    /// A `serde_bytes::ByteBuf`-style type: decoded through `deserialize_byte_buf`, which
    /// bincode bounds with its size limit (no container hint involved).
    #[derive(Debug, PartialEq)]
    struct ByteBuf(Vec<u8>);

    impl Serialize for ByteBuf {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.serialize_bytes(&self.0)
        }
    }

    impl<'de> serde::Deserialize<'de> for ByteBuf {
        fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct Visitor;
            impl<'de> serde::de::Visitor<'de> for Visitor {
                type Value = ByteBuf;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("bytes")
                }
                fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<ByteBuf, E> {
                    Ok(ByteBuf(v))
                }
                fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<ByteBuf, E> {
                    Ok(ByteBuf(v.to_vec()))
                }
            }
            deserializer.deserialize_byte_buf(Visitor)
        }
    }

    #[test]
    fn round_trips_nested_containers() {
        round_trip(vec![
            vec!["a".to_string(), String::new()],
            vec![],
            vec!["bc".into()],
        ]);
        round_trip(HashMap::from([
            ("one".to_string(), vec![1u8]),
            ("none".to_string(), vec![]),
            ("many".to_string(), vec![7u8; 300]),
        ]));
        round_trip(BTreeMap::from([
            (3u64, vec![Some(1i64), None]),
            (9, vec![]),
        ]));
        round_trip(Some(vec![Some(vec![1u32, 2]), None, Some(vec![])]));
        round_trip(None::<Vec<String>>);
        round_trip(VecDeque::from([vec![1u8], vec![2, 3]]));
        round_trip(HashSet::from([1u64, 1 << 40, u64::MAX]));
        round_trip(BTreeSet::from(["x".to_string(), "y".into()]));
        round_trip(vec![
            Shape::Unit,
            Shape::Newtype(vec!["n".into(); 3]),
            Shape::Tuple(1, vec![vec![2, 3], vec![]], Some(vec![u64::MAX])),
            Shape::Struct {
                name: "s".into(),
                points: vec![(-1, 1), (i32::MIN, i32::MAX)],
                tags: BTreeMap::from([("k".into(), vec![0, 255])]),
            },
        ]);
        round_trip(Scalars {
            flag: true,
            small: -128,
            wide: u128::MAX,
            negative: i128::MIN,
            ratio: 1.5,
            precise: -0.25,
            letter: 'é',
            unit: (),
            marker: Marker,
            wrapped: Wrapped(vec![1, 2, 3]),
            pair: Pair(7, "seven".into()),
        });
        round_trip(Tree(vec![Tree(vec![Tree(vec![])]), Tree(vec![])]));
        round_trip(ByteBuf(vec![0xab; 1000]));
        round_trip((ByteBuf(vec![]), vec![ByteBuf(vec![1, 2])]));
    }

    #[test]
    fn zero_sized_elements_outnumbering_the_input_still_decode() {
        // 1000 units take 2 bytes (the length); the hint is cut to 2, the vector still fills.
        let mut buf = BytesMut::new();
        Bincode.encode(&vec![(); 1000], &mut buf).expect("encode");
        assert_eq!(buf.len(), 3);
        let units: Vec<()> = Bincode.decode(&buf).expect("decode");
        assert_eq!(units.len(), 1000);
        round_trip((vec![(); 1000], vec![1u8, 2, 3], vec![Marker, Marker]));
    }

    #[test]
    fn byte_buf_users_are_bounded_by_the_limit_not_the_hint() {
        // A forged byte buffer is refused by bincode's limit, before any allocation.
        let err = Bincode
            .decode::<ByteBuf>(&forged_len_prefix())
            .expect_err("forged");
        assert!(matches!(err, CodecError::LimitExceeded { .. }), "{err:?}");
    }

    // The size hints visitors see, recorded by `Hinted` (a `Vec` that logs the hint it was
    // given, per thread, before reading its elements like serde's `Vec` does).

    thread_local! {
        static HINTS: std::cell::RefCell<Vec<Option<usize>>> = const {
            std::cell::RefCell::new(Vec::new())
        };
    }

    /// The hints recorded on this thread since the last call.
    fn take_hints() -> Vec<Option<usize>> {
        HINTS.with(|hints| std::mem::take(&mut *hints.borrow_mut()))
    }

    #[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
    struct Hinted<T>(Vec<T>);

    impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Hinted<T> {
        fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct Visitor<T>(std::marker::PhantomData<T>);
            impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for Visitor<T> {
                type Value = Hinted<T>;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a sequence")
                }
                fn visit_seq<A: serde::de::SeqAccess<'de>>(
                    self,
                    mut seq: A,
                ) -> Result<Hinted<T>, A::Error> {
                    let hint = seq.size_hint();
                    // Asking again is not charged twice, and gives the same answer.
                    assert_eq!(seq.size_hint(), hint);
                    HINTS.with(|hints| hints.borrow_mut().push(hint));
                    let mut items = Vec::new();
                    while let Some(item) = seq.next_element()? {
                        items.push(item);
                    }
                    Ok(Hinted(items))
                }
            }
            deserializer.deserialize_seq(Visitor(std::marker::PhantomData))
        }
    }

    fn encoded<T: Serialize>(value: &T) -> Vec<u8> {
        let mut buf = BytesMut::new();
        Bincode.encode(value, &mut buf).expect("encode");
        buf.to_vec()
    }

    #[test]
    fn honest_containers_get_their_full_hint() {
        let value = Hinted(vec![
            Hinted(vec![1u8, 2, 3]),
            Hinted(vec![]),
            Hinted(vec![4; 200]),
        ]);
        let back: Hinted<Hinted<u8>> = Bincode.decode(&encoded(&value)).expect("decode");
        assert_eq!(back, value);
        assert_eq!(take_hints(), [Some(3), Some(3), Some(0), Some(200)]);

        // Containers nested behind every kind of accessor still report exact hints.
        let value = (
            Some(Hinted(vec![1u64, 2])),
            HashMap::from([(5u8, Hinted(vec!["a".to_string()]))]),
            Ok::<_, ()>(Hinted(vec![(); 3])),
        );
        type Behind = (
            Option<Hinted<u64>>,
            HashMap<u8, Hinted<String>>,
            Result<Hinted<()>, ()>,
        );
        let back: Behind = Bincode.decode(&encoded(&value)).expect("decode");
        assert_eq!(back, value);
        // 11 input bytes; the budget is charged 2 + 1 (the map) + 1 + 3 = 7, so even the units
        // (which take no bytes) get their full hint.
        assert_eq!(take_hints(), [Some(2), Some(1), Some(3)]);
    }

    /// `prefix` followed by a length claiming 2^60 elements.
    fn forged_after(prefix: &[u8]) -> Vec<u8> {
        let mut bytes = prefix.to_vec();
        bytes.extend_from_slice(&forged_len_prefix());
        bytes
    }

    #[test]
    fn forged_lengths_are_hinted_at_most_the_input_length() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        enum Carrier {
            Unit,
            Newtype(Hinted<u64>),
            Tuple(u8, Hinted<u64>),
            Struct { first: u8, items: Hinted<u64> },
        }
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Newtype(Hinted<u64>);

        fn check<T: DeserializeOwned + std::fmt::Debug>(what: &str, bytes: &[u8]) {
            assert!(
                Bincode.decode::<T>(bytes).is_err(),
                "{what}: forged input decoded"
            );
            let hints = take_hints();
            assert!(!hints.is_empty(), "{what}: no hint recorded");
            let total: usize = hints.iter().map(|h| h.unwrap_or(0)).sum();
            assert!(
                total <= bytes.len(),
                "{what}: hints {hints:?} exceed the {} input bytes",
                bytes.len()
            );
        }

        check::<Hinted<u64>>("top level", &forged_after(&[]));
        check::<Option<Hinted<u64>>>("option", &forged_after(&[1]));
        check::<Newtype>("newtype struct", &forged_after(&[]));
        check::<(u8, Hinted<u64>)>("tuple", &forged_after(&[9]));
        check::<HashMap<u8, Hinted<u64>>>("map value", &forged_after(&[1, 5]));
        check::<BTreeMap<Hinted<u64>, u8>>("map key", &forged_after(&[1]));
        check::<Carrier>("newtype variant", &forged_after(&[1]));
        check::<Carrier>("tuple variant", &forged_after(&[2, 7]));
        check::<Carrier>("struct variant", &forged_after(&[3, 7]));
        // Nested: the outer claim takes the whole budget, the inner one gets nothing.
        check::<Hinted<Hinted<u64>>>("nested", &forged_after(&forged_len_prefix()));
        assert!(Bincode
            .decode::<Hinted<Hinted<u64>>>(&forged_after(&forged_len_prefix()))
            .is_err());
        assert_eq!(take_hints(), [Some(18), Some(0)]);
    }

    #[test]
    fn hints_of_a_recursive_type_add_up_to_the_input_length() {
        // 100 nested levels, each claiming 2^60 children: each level asks for a hint while
        // its parents are still open. Per container, each could reserve the input length;
        // together they get no more than that.
        let bytes: Vec<u8> = std::iter::repeat_n(forged_len_prefix(), 100)
            .flatten()
            .collect();
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Node(Hinted<Node>);
        assert!(Bincode.decode::<Node>(&bytes).is_err());
        let hints = take_hints();
        assert_eq!(hints.len(), 100);
        assert_eq!(hints[0], Some(bytes.len()));
        assert!(hints[1..].iter().all(|&h| h == Some(0)), "{hints:?}");
    }
}
