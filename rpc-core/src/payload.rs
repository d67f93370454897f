//! [`Payload`]: bytes that cross the wire without being copied by the framework.
//!
//! A `Vec<u8>` argument is copied out of the received frame when it is decoded, and copied
//! into the connection's write buffer when it is sent. A [`Payload`] is neither:
//!
//! * **Decoding.** The codec decodes a received body through
//!   [`Codec::decode_shared`](crate::Codec::decode_shared), which lends the frame's
//!   [`Bytes`] to the decode (a thread-local, set around the synchronous decode). A payload
//!   whose bytes lie inside that frame becomes a slice of it: a reference count, no copy.
//!   (Bodies under [`LEND_MIN`] bytes are not lent: a copy of so few bytes is cheaper.)
//! * **Encoding.** A payload of at least [`SPLICE_MIN`] bytes, encoded by a connection's
//!   write queue, writes only its length into the write buffer and hands its `Bytes` to the
//!   queue, which writes them from where they are with a vectored write (a *splice*). The
//!   bytes on the wire are exactly bincode's encoding of a byte slice: a varint length, then
//!   the bytes.
//!
//! Everywhere else (JSON, another bincode encode, shape tracing) a payload is a plain byte
//! buffer, with the shape of `serde_bytes`' bytes. (One exception: a `Serialize` impl that,
//! while the framework encodes it, serializes a payload with another binary serializer of
//! its own would get the splice's marker there. Encoding with [`Bincode`](crate::Bincode)
//! inside is fine: a nested encode never splices.)
//!
//! A payload decoded from a frame keeps the frame's memory alive as long as it lives; copy
//! it ([`Payload::copy_from_slice`]) to keep a small piece of a large message for long.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::ops::Deref;

use bytes::Bytes;
use serde::de::{SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Payloads of at least this many bytes are spliced into the write (not copied into the
/// write buffer) when a connection sends them. Below it a copy is cheaper than the splice's
/// bookkeeping and the extra buffers of the write: queued and written to a sink
/// (`rpc-bench` micro), a splice cost about 100 ns more than a copy at 1 KiB, 60 ns more at
/// 4 KiB, and 300 ns less at 16 KiB. At 16 KiB a payload also fills a TLS record of its own.
pub const SPLICE_MIN: usize = 16 * 1024;

/// A byte buffer for arguments, results and stream items that the framework does not copy:
/// decoded as a slice of the received frame, written from its own memory (see the
/// [module docs](self)).
///
/// Derefs to `[u8]`; converts from and into [`Bytes`], and from `Vec<u8>` without a copy.
///
/// ```
/// use rpc::Payload;
///
/// let payload = Payload::from(vec![1, 2, 3]);
/// assert_eq!(&payload[..], [1, 2, 3]);
/// assert_eq!(payload.len(), 3);
/// let bytes: bytes::Bytes = payload.into();
/// assert_eq!(bytes, &[1u8, 2, 3][..]);
/// ```
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Payload(Bytes);

impl Payload {
    /// Payloads of at least this many bytes are written from their own memory, not copied
    /// into the write buffer: [`SPLICE_MIN`].
    pub const SPLICE_MIN: usize = SPLICE_MIN;

    /// An empty payload.
    pub const fn new() -> Self {
        Payload(Bytes::new())
    }

    /// A payload of static bytes (no allocation).
    pub const fn from_static(bytes: &'static [u8]) -> Self {
        Payload(Bytes::from_static(bytes))
    }

    /// A payload holding a copy of `bytes`: one that shares no other buffer's memory.
    pub fn copy_from_slice(bytes: &[u8]) -> Self {
        Payload(Bytes::copy_from_slice(bytes))
    }

    /// The bytes, as [`Bytes`] (no copy).
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// The bytes, as [`Bytes`].
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `Bytes`' own form, a byte string; a large payload prints as its length, not its
        // megabytes.
        const SHOWN: usize = 64;
        if self.0.len() <= SHOWN {
            write!(f, "Payload({:?})", self.0)
        } else {
            write!(
                f,
                "Payload({:?}.. {} bytes)",
                self.0.slice(..SHOWN),
                self.0.len()
            )
        }
    }
}

impl Deref for Payload {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for Payload {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl From<Bytes> for Payload {
    fn from(bytes: Bytes) -> Self {
        Payload(bytes)
    }
}

impl From<Vec<u8>> for Payload {
    fn from(bytes: Vec<u8>) -> Self {
        Payload(Bytes::from(bytes))
    }
}

impl From<&'static [u8]> for Payload {
    fn from(bytes: &'static [u8]) -> Self {
        Payload(Bytes::from_static(bytes))
    }
}

impl From<Payload> for Bytes {
    fn from(payload: Payload) -> Self {
        payload.0
    }
}

impl From<Payload> for Vec<u8> {
    fn from(payload: Payload) -> Self {
        Vec::from(payload.0)
    }
}

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.0.len() < SPLICE_MIN || serializer.is_human_readable() || !splicing_now() {
            return serializer.serialize_bytes(&self.0);
        }
        // The length, as bincode writes a slice's (a varint u64), then an empty byte slice
        // as the marker the codec's writer recognises: it drops the marker's own length
        // byte and records where these bytes go.
        MARKED.with_borrow_mut(|marked| *marked = Some(self.0.clone()));
        BUSY.set(true);
        let mut tuple = serializer.serialize_tuple(2)?;
        tuple.serialize_element(&(self.0.len() as u64))?;
        tuple.serialize_element(&Marker)?;
        tuple.end()
    }
}

/// Serializes as an empty byte slice: the splice marker.
struct Marker;

impl Serialize for Marker {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&[])
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_bytes(PayloadVisitor)
    }
}

struct PayloadVisitor;

impl<'de> Visitor<'de> for PayloadVisitor {
    type Value = Payload;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("bytes")
    }

    fn visit_borrowed_bytes<E: serde::de::Error>(self, v: &'de [u8]) -> Result<Payload, E> {
        Ok(Payload(share_or_copy(v)))
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Payload, E> {
        Ok(Payload(Bytes::copy_from_slice(v)))
    }

    fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Payload, E> {
        Ok(Payload(Bytes::from(v)))
    }

    fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Payload, E> {
        self.visit_borrowed_bytes(v.as_bytes())
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Payload, E> {
        self.visit_bytes(v.as_bytes())
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Payload, E> {
        self.visit_byte_buf(v.into_bytes())
    }

    /// Formats that write bytes as a sequence of numbers (JSON).
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Payload, A::Error> {
        // No reservation from the hint: it may come from a peer.
        let mut bytes = Vec::new();
        while let Some(byte) = seq.next_element::<u8>()? {
            bytes.push(byte);
        }
        Ok(Payload(Bytes::from(bytes)))
    }
}

// The frame being decoded, and the splices of the body being encoded. Thread-locals, set
// around a synchronous encode or decode on this thread: serde has no other way to reach a
// payload's (de)serializer with them.
thread_local! {
    /// The received frame a [`decode_shared`](crate::Codec::decode_shared) reads.
    static FRAME: RefCell<Option<Bytes>> = const { RefCell::new(None) };
    /// Whether payloads splice (see [`Mode`]).
    static MODE: Cell<Mode> = const { Cell::new(Mode::Off) };
    /// The payload whose length was just written, waiting for the writer's marker.
    static MARKED: RefCell<Option<Bytes>> = const { RefCell::new(None) };
    /// Splices recorded since [`splicing`] began.
    static SPLICES: RefCell<Vec<Splice>> = const { RefCell::new(Vec::new()) };
    /// Whether `MARKED` or `SPLICES` may hold something: the cheap test [`splicing`] makes.
    static BUSY: Cell<bool> = const { Cell::new(false) };
}

/// Who may splice on this thread right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Nobody: payloads serialize as plain bytes.
    Off,
    /// A write queue is encoding: the next codec encode splices.
    Armed,
    /// A codec encode that splices is running (an encode nested in it does not).
    Active,
}

fn splicing_now() -> bool {
    MODE.get() == Mode::Active
}

/// Bytes written from their own memory after the first `at` bytes of a buffer (and after
/// the splices before them).
#[derive(Debug, Clone)]
pub(crate) struct Splice {
    pub(crate) at: usize,
    pub(crate) bytes: Bytes,
}

/// The bytes `splices` add to the buffer they belong to.
pub(crate) fn spliced_len(splices: &[Splice]) -> usize {
    splices.iter().map(|s| s.bytes.len()).sum()
}

/// Runs `encode` (which encodes with the codec into one buffer) with payloads of at least
/// [`SPLICE_MIN`] bytes spliced: appends their splices, positioned in that buffer, to `out`,
/// and returns how many bytes they hold beside `encode`'s result. If `encode` panics, its
/// splices are thrown away.
#[inline]
pub(crate) fn splicing<R>(out: &mut Vec<Splice>, encode: impl FnOnce() -> R) -> (R, usize) {
    let armed = MODE.replace(Mode::Armed);
    let disarm = Disarm(armed);
    let result = encode();
    std::mem::forget(disarm);
    MODE.set(armed);
    // Frames without a spliced payload (nearly all) touch no more than these two cells.
    let spliced = if BUSY.replace(false) { collect(out) } else { 0 };
    (result, spliced)
}

/// Puts the mode back and throws the splices away when an encode panics.
struct Disarm(Mode);

impl Drop for Disarm {
    fn drop(&mut self) {
        MODE.set(self.0);
        BUSY.set(false);
        MARKED.with_borrow_mut(|marked| *marked = None);
        SPLICES.with_borrow_mut(Vec::clear);
    }
}

/// Moves the splices recorded to `out`; returns their bytes.
#[cold]
fn collect(out: &mut Vec<Splice>) -> usize {
    // Left over only by a payload serialized by another serializer than the codec's.
    MARKED.with_borrow_mut(|marked| *marked = None);
    SPLICES.with_borrow_mut(|splices| {
        let spliced = spliced_len(splices);
        out.append(splices);
        spliced
    })
}

/// Called by the codec as an encode begins: says whether it splices, and masks splicing
/// from encodes nested in it. Pass the answer to [`end_encode`].
#[inline]
pub(crate) fn begin_encode() -> Mode {
    let mode = MODE.get();
    match mode {
        Mode::Off => {}
        Mode::Armed => MODE.set(Mode::Active),
        Mode::Active => MODE.set(Mode::Off),
    }
    mode
}

/// Called by the codec as an encode ends, with what [`begin_encode`] returned.
#[inline]
pub(crate) fn end_encode(begun: Mode) {
    if begun != Mode::Off {
        MODE.set(begun);
    }
}

/// The payload whose marker the codec's writer just met, if one is waiting.
pub(crate) fn take_marked() -> Option<Bytes> {
    MARKED.with_borrow_mut(Option::take)
}

/// Records that `bytes` go after the first `at` bytes of the buffer being encoded into.
pub(crate) fn record_splice(at: usize, bytes: Bytes) {
    SPLICES.with_borrow_mut(|splices| splices.push(Splice { at, bytes }));
}

/// Appends `encoded` (a body encoded with [`splicing`] on its own) to `buf`, its splices
/// with it: inside [`splicing`], they join the buffer's.
pub(crate) fn append_spliced(buf: &mut bytes::BytesMut, encoded: &[u8], splices: &mut Vec<Splice>) {
    let base = buf.len();
    buf.extend_from_slice(encoded);
    if splices.is_empty() {
        return;
    }
    BUSY.set(true);
    SPLICES.with_borrow_mut(|recorded| {
        recorded.extend(splices.drain(..).map(|s| Splice {
            at: base + s.at,
            bytes: s.bytes,
        }));
    });
}

/// Bodies shorter than this are decoded without lending their frame: payloads in them are
/// copied. Lending costs about 100 instructions a decode (a reference count taken and given
/// back, a thread-local set and restored), more than an allocation and a copy of a few
/// hundred bytes; and a small payload kept for long does not pin a large read buffer.
pub const LEND_MIN: usize = 1024;

/// Runs `decode` over `frame`'s bytes, with the frame lent to payloads decoded meanwhile if
/// it holds at least [`LEND_MIN`] bytes.
#[inline]
pub(crate) fn decoding_from<R>(frame: &Bytes, decode: impl FnOnce(&[u8]) -> R) -> R {
    if frame.len() < LEND_MIN {
        return decode(frame);
    }
    lending(frame, decode)
}

fn lending<R>(frame: &Bytes, decode: impl FnOnce(&[u8]) -> R) -> R {
    struct Restore(Option<Bytes>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            FRAME.with_borrow_mut(|frame| *frame = previous);
        }
    }
    let _restore = Restore(FRAME.with_borrow_mut(|lent| lent.replace(frame.clone())));
    decode(frame)
}

/// `v` as a slice of the frame being decoded if it lies inside it, else a copy.
fn share_or_copy(v: &[u8]) -> Bytes {
    if v.is_empty() {
        return Bytes::new();
    }
    let shared = FRAME.with(|frame| {
        let frame = frame.try_borrow().ok()?;
        let frame = frame.as_ref()?;
        // Compared as addresses: whether `v` is a part of the frame's memory.
        let start = frame.as_ptr() as usize;
        let offset = (v.as_ptr() as usize).checked_sub(start)?;
        let end = offset.checked_add(v.len())?;
        (end <= frame.len()).then(|| frame.slice(offset..end))
    });
    shared.unwrap_or_else(|| Bytes::copy_from_slice(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Bincode, Codec};
    use bytes::BytesMut;

    fn encoded<T: Serialize + ?Sized>(value: &T) -> BytesMut {
        let mut buf = BytesMut::new();
        Bincode.encode(value, &mut buf).expect("encode");
        buf
    }

    fn inside(payload: &Payload, frame: &Bytes) -> bool {
        let start = frame.as_ptr() as usize;
        let p = payload.as_ptr() as usize;
        p >= start && p + payload.len() <= start + frame.len()
    }

    #[test]
    fn decoded_from_a_frame_it_is_a_slice_of_the_frame() {
        let data: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let frame = encoded(&(7u32, Payload::from(data.clone()), "tail")).freeze();
        let (n, payload, tail): (u32, Payload, String) =
            Bincode.decode_shared(&frame).expect("decode");
        assert_eq!((n, tail.as_str()), (7, "tail"));
        assert_eq!(&payload[..], &data[..]);
        assert!(inside(&payload, &frame), "the payload was copied");
    }

    #[test]
    fn in_a_body_shorter_than_lend_min_it_is_a_copy() {
        let frame = encoded(&Payload::from(vec![1u8; LEND_MIN - 4])).freeze();
        assert!(frame.len() < LEND_MIN);
        let payload: Payload = Bincode.decode_shared(&frame).expect("decode");
        assert_eq!(payload.len(), LEND_MIN - 4);
        assert!(!inside(&payload, &frame));
        let frame = encoded(&Payload::from(vec![1u8; LEND_MIN])).freeze();
        let payload: Payload = Bincode.decode_shared(&frame).expect("decode");
        assert!(inside(&payload, &frame));
    }

    #[test]
    fn decoded_from_a_plain_slice_it_is_a_copy() {
        let data = vec![5u8; 1000];
        let buf = encoded(&Payload::from(data.clone()));
        let payload: Payload = Bincode.decode(&buf).expect("decode");
        assert_eq!(&payload[..], &data[..]);
        assert!(!inside(&payload, &buf.clone().freeze()));
        // A frame lent to the decode of other bytes is not used for them either.
        let other = Bytes::from(vec![0u8; 2000]);
        let payload: Payload = decoding_from(&other, |_| Bincode.decode(&buf)).expect("decode");
        assert_eq!(&payload[..], &data[..]);
        assert!(!inside(&payload, &other));
        // And the frame is not lent once the decode is over.
        assert!(FRAME.with_borrow(Option::is_none));
    }

    #[test]
    fn the_shape_and_the_encoding_are_serde_bytes() {
        #[derive(Serialize, Deserialize)]
        struct Ours(Payload);
        #[derive(Serialize, Deserialize)]
        struct Theirs(#[serde(with = "serde_bytes")] Vec<u8>);
        use crate::shape::trace::Tracer;
        use crate::shape::{MethodKind, Signature};
        assert_eq!(
            Tracer::new().trace::<Payload>().expect("traces"),
            Tracer::new()
                .trace::<serde_bytes::ByteBuf>()
                .expect("traces")
        );
        let fingerprint =
            |sig: crate::shape::SignatureBuilder| sig.build().expect("builds").fingerprint();
        assert_eq!(
            fingerprint(
                Signature::builder(MethodKind::Unary)
                    .arg::<Payload>("data")
                    .result::<(u8, Payload)>()
            ),
            fingerprint(
                Signature::builder(MethodKind::Unary)
                    .arg::<serde_bytes::ByteBuf>("data")
                    .result::<(u8, serde_bytes::ByteBuf)>()
            )
        );
        for len in [0, 1, 250, 251, 70_000, SPLICE_MIN] {
            let data = vec![3u8; len];
            assert_eq!(
                encoded(&Ours(Payload::from(data.clone()))),
                encoded(&Theirs(data))
            );
        }
    }

    #[test]
    fn outside_a_write_queue_large_payloads_are_plain_bytes() {
        let data = vec![9u8; SPLICE_MIN * 2];
        let buf = encoded(&Payload::from(data.clone()));
        let plain = bincode::serde::encode_to_vec(
            serde_bytes::Bytes::new(&data),
            bincode::config::standard(),
        )
        .expect("bincode");
        assert_eq!(&buf[..], &plain[..]);
        assert!(SPLICES.with_borrow(Vec::is_empty));
    }

    /// Encodes `value` with splicing on, and puts the splices back in: the bytes the wire gets.
    fn spliced<T: Serialize>(value: &T) -> (BytesMut, Vec<Splice>, Vec<u8>) {
        let mut buf = BytesMut::from(&b"head"[..]);
        let mut splices = Vec::new();
        splicing(&mut splices, || Bincode.encode(value, &mut buf))
            .0
            .expect("encode");
        let mut wire = Vec::new();
        let mut from = 0;
        for splice in &splices {
            wire.extend_from_slice(&buf[from..splice.at]);
            wire.extend_from_slice(&splice.bytes);
            from = splice.at;
        }
        wire.extend_from_slice(&buf[from..]);
        (buf, splices, wire)
    }

    #[test]
    fn spliced_payloads_give_the_bytes_bincode_gives() {
        let big = Payload::from(vec![0xabu8; SPLICE_MIN]);
        let huge = Payload::from((0..(1u32 << 20)).map(|i| i as u8).collect::<Vec<_>>());
        let small = Payload::from(vec![1u8; SPLICE_MIN - 1]);
        let value = (1u8, big.clone(), small.clone(), "x", huge.clone(), 2u64);
        let (buf, splices, wire) = spliced(&value);
        let plain = bincode::serde::encode_to_vec(
            (
                1u8,
                serde_bytes::Bytes::new(&big),
                serde_bytes::Bytes::new(&small),
                "x",
                serde_bytes::Bytes::new(&huge),
                2u64,
            ),
            bincode::config::standard(),
        )
        .expect("bincode");
        assert_eq!(&wire[..4], b"head");
        assert_eq!(&wire[4..], &plain[..]);
        // Two splices, each right after its length, and the buffer holds neither.
        assert_eq!(splices.len(), 2);
        // head, u8, varint 251 + u16.
        assert_eq!(splices[0].at, 4 + 1 + 3);
        assert_eq!(
            splices[0].bytes.as_ptr(),
            big.as_ptr(),
            "copied, not spliced"
        );
        assert_eq!(
            splices[1].at,
            splices[0].at + 3 + (SPLICE_MIN - 1) + 2 + 5,
            "after the small payload (copied), \"x\" and a varint 252 + u32"
        );
        assert_eq!(splices[1].bytes.as_ptr(), huge.as_ptr());
        assert_eq!(buf.len() + spliced_len(&splices), wire.len());
    }

    #[test]
    fn an_encode_nested_in_a_spliced_one_does_not_splice() {
        struct Nested(Payload);
        impl Serialize for Nested {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let inner = encoded(&self.0);
                s.serialize_bytes(&inner)
            }
        }
        let payload = Payload::from(vec![4u8; SPLICE_MIN]);
        let (_, splices, wire) = spliced(&(Nested(payload.clone()), payload.clone()));
        assert_eq!(splices.len(), 1);
        let (inner, outer): (serde_bytes::ByteBuf, Payload) =
            Bincode.decode(&wire[4..]).expect("decode");
        assert_eq!(outer, payload);
        assert_eq!(Bincode.decode::<Payload>(&inner).expect("inner"), payload);
    }

    #[test]
    fn a_failed_or_panicking_encode_leaves_no_splice_behind() {
        let payload = Payload::from(vec![4u8; SPLICE_MIN]);
        let result = std::panic::catch_unwind(|| {
            let mut buf = BytesMut::new();
            splicing(&mut Vec::new(), || {
                Bincode.encode(&payload, &mut buf).expect("encode");
                panic!("a user's Serialize panics");
            })
        });
        assert!(result.is_err());
        assert_eq!(MODE.get(), Mode::Off);
        let buf = encoded(&payload);
        assert_eq!(buf.len(), 3 + SPLICE_MIN, "not spliced outside a queue");
    }

    #[test]
    fn json_sees_an_array_of_numbers() {
        let payload = Payload::from(vec![1u8, 2, 255]);
        let json = serde_json::to_string(&payload).expect("json");
        assert_eq!(json, "[1,2,255]");
        assert_eq!(
            serde_json::from_str::<Payload>(&json).expect("back"),
            payload
        );
    }

    #[test]
    fn debug_shows_a_large_payload_by_its_length() {
        assert_eq!(
            format!("{:?}", Payload::from_static(b"hi")),
            "Payload(b\"hi\")"
        );
        let long = format!("{:?}", Payload::from(vec![b'a'; 1000]));
        assert!(long.ends_with(".. 1000 bytes)"), "{long}");
        assert!(long.len() < 100, "{long}");
    }
}
