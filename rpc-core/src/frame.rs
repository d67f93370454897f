//! Length-delimited frames: a big-endian `u32` length, then that many bytes.
//!
//! The length prefix is checked against the limit *before* anything is reserved, and the
//! claimed length is not taken on trust: while a frame arrives, its full buffer grows by at
//! most [`GROWTH`] times the part of it that is already here. A peer that announces a 16 MiB
//! frame and then sends nothing costs a few kilobytes, not 16 MiB. A 1 MiB frame sent for
//! real is read into a buffer of its size, grown twice; a buffer left to double its way up
//! ended at twice the frame's size and copied about as much as the frame on the way (the
//! copies and page faults of that took a sixth of a 1 MiB echo server's CPU). (tokio-util's
//! `LengthDelimitedCodec` reserves the whole announced length as soon as it has read the
//! prefix.)
//!
//! A connection reads with a [`SkippingDecoder`]: a frame over the limit (from a peer
//! configured with a larger one) costs only its call, not the connection. The decoder keeps
//! the front of such a frame, where its header is, up to a bound, and drops the rest as it
//! arrives; the connection then fails that one call with
//! [`Error::MessageTooLarge`]. [`FrameDecoder`] is the strict form, for which any frame over
//! the limit is an error.

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::Decoder;

use crate::error::{Error, ProtocolError};
use crate::message::Header;

/// The default maximum frame length: 16 MiB.
pub const DEFAULT_MAX_FRAME_LEN: usize = 16 * 1024 * 1024;

/// The size of the length prefix.
pub const PREFIX_LEN: usize = 4;

/// The bytes a received frame took on the wire, length prefix included: what a stream's
/// sender counts against its window, so both ends must compute it the same way.
pub fn wire_len(frame: &Bytes) -> usize {
    PREFIX_LEN + frame.len()
}

/// Decodes frames, refusing any whose length prefix exceeds `max_frame_len`.
///
/// ```
/// use bytes::BytesMut;
/// use rpc_core::frame::FrameDecoder;
/// use tokio_util::codec::Decoder;
///
/// let mut decoder = FrameDecoder::new(8);
/// let mut buf = BytesMut::from(&[0, 0, 0, 2, b'h', b'i'][..]);
/// assert_eq!(&decoder.decode(&mut buf).unwrap().unwrap()[..], b"hi");
///
/// let mut buf = BytesMut::from(&[0, 0, 1, 0][..]); // claims 256 bytes
/// assert!(decoder.decode(&mut buf).is_err());
/// ```
#[derive(Debug)]
pub struct FrameDecoder {
    max_frame_len: usize,
}

impl FrameDecoder {
    /// A decoder that accepts frames of up to `max_frame_len` bytes (not counting the prefix).
    pub fn new(max_frame_len: usize) -> Self {
        FrameDecoder { max_frame_len }
    }
}

impl Decoder for FrameDecoder {
    type Item = Bytes;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, Error> {
        if src.len() < PREFIX_LEN {
            return Ok(None);
        }
        let len = (&src[..PREFIX_LEN]).get_u32() as usize;
        if len > self.max_frame_len {
            return Err(ProtocolError::FrameTooLarge {
                len: len as u64,
                max: self.max_frame_len,
            }
            .into());
        }
        if src.len() < PREFIX_LEN + len {
            await_rest(src, len);
            return Ok(None);
        }
        src.advance(PREFIX_LEN);
        Ok(Some(src.split_to(len).freeze()))
    }
}

/// How many times the part of a frame already received its full read buffer may grow by
/// (to the whole frame, if that is less): what bounds the memory a peer can make a
/// connection hold per byte it really sent.
pub const GROWTH: usize = 16;

/// The least a full buffer holding part of a frame grows by.
const MIN_GROWTH: usize = 4 * 1024;

/// Makes room for the rest of a frame of `len` bytes (not counting its prefix) whose start
/// is in `src`, once the buffer is full: up to [`GROWTH`] times what has come of it.
#[inline]
fn await_rest(src: &mut BytesMut, len: usize) {
    // With room left, the next read goes there, and the buffer holds what the peer sent.
    if src.capacity() == src.len() {
        let have = src.len() - PREFIX_LEN;
        src.reserve((len - have).min((have * GROWTH).max(MIN_GROWTH)));
    }
}

/// Room for a header beyond its metadata: the fixed part of any header, the per-pair
/// overhead of a few hundred metadata pairs, or an error message. How much of an oversized
/// frame a [`SkippingDecoder`] reads, on top of the metadata limit, to find its header.
pub const HEADER_ALLOWANCE: usize = 4 * 1024;

/// What a connection reads: a frame within the limit, or the front of one over it.
#[derive(Debug)]
pub enum Frame {
    /// A whole frame (header and body), without the length prefix.
    Whole(Bytes),
    /// A frame over the limit: its front, kept to read the header; the rest is dropped as it
    /// arrives, never buffered. (Boxed: rare, and so a `Frame` is no larger than `Bytes`.)
    Oversized(Box<Oversized>),
}

/// The front of a frame over the receiver's limit. Its bytes after [`head`](Self::head) are
/// skipped by the decoder.
#[derive(Debug)]
pub struct Oversized {
    /// The first bytes of the frame, up to the decoder's head bound: where its header is.
    pub head: Bytes,
    /// The length the frame claimed.
    pub len: usize,
    /// The limit it exceeds.
    pub max: usize,
}

impl Oversized {
    /// The frame's header. A header that does not fit in the bytes kept (or does not
    /// decode) cannot be answered: that is a protocol error, which closes the connection.
    pub fn header(&self) -> Result<Header, ProtocolError> {
        let mut cursor = &self.head[..];
        match Header::decode(&mut cursor) {
            Ok(header) => Ok(header),
            // Cut short by the bound, not by the peer: the frame is simply too large.
            Err(_) if self.head.len() < self.len => Err(self.protocol_error()),
            Err(err) => Err(err),
        }
    }

    /// The error that fails the frame's call, on both sides.
    pub fn error(&self) -> Error {
        Error::MessageTooLarge {
            len: self.len,
            max: self.max,
        }
    }

    /// The error that closes the connection when the frame cannot be tied to a call (it is
    /// not a request, a response or a stream item, or its header is unreadable).
    pub fn protocol_error(&self) -> ProtocolError {
        ProtocolError::FrameTooLarge {
            len: self.len as u64,
            max: self.max,
        }
    }
}

/// Decodes frames like [`FrameDecoder`], but a frame over `max_frame_len` is not an error:
/// the decoder reads its first bytes, up to `max_head_len` and no further than its header
/// (or than the bytes that show it has none), hands them out as [`Frame::Oversized`], and
/// then drops the rest of the frame as it arrives, so the read buffer never holds more than
/// what one read brings.
///
/// Frames within the limit cost what they cost with [`FrameDecoder`]: one test of a field
/// that is zero, on top.
///
/// ```
/// use bytes::BytesMut;
/// use rpc_core::frame::{Frame, SkippingDecoder};
/// use tokio_util::codec::Decoder;
///
/// let mut decoder = SkippingDecoder::new(2, 3);
/// // A 6-byte frame over the 2-byte limit, then a 1-byte frame.
/// let mut buf = BytesMut::from(&[0, 0, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0, 0, 1, 9][..]);
/// let Some(Frame::Oversized(over)) = decoder.decode(&mut buf).unwrap() else { panic!() };
/// assert_eq!((&over.head[..], over.len, over.max), (&[1, 2, 3][..], 6, 2));
/// let Some(Frame::Whole(frame)) = decoder.decode(&mut buf).unwrap() else { panic!() };
/// assert_eq!(&frame[..], [9]);
/// ```
#[derive(Debug)]
pub struct SkippingDecoder {
    max_frame_len: usize,
    max_head_len: usize,
    /// Bytes of an oversized frame still to drop.
    skip: usize,
}

impl SkippingDecoder {
    /// A decoder that accepts frames of up to `max_frame_len` bytes and, of a larger one,
    /// keeps at most `max_head_len` bytes.
    pub fn new(max_frame_len: usize, max_head_len: usize) -> Self {
        SkippingDecoder {
            max_frame_len,
            max_head_len,
            skip: 0,
        }
    }

    /// Bytes of the current oversized frame not yet dropped.
    pub fn skipping(&self) -> usize {
        self.skip
    }

    /// Drops what has arrived of the oversized frame being skipped; true once all of it is
    /// gone.
    #[cold]
    fn skip_some(&mut self, src: &mut BytesMut) -> bool {
        let n = self.skip.min(src.len());
        src.advance(n);
        self.skip -= n;
        self.skip == 0
    }

    /// A prefix over the limit: the front of the frame as soon as its header has arrived, or
    /// the bytes present are no header, or `max_head_len` of it (or all of it) is here; the
    /// rest is skipped from here on.
    #[cold]
    fn oversized(&mut self, src: &mut BytesMut, len: usize) -> Option<Frame> {
        let head_len = len.min(self.max_head_len);
        let present = (src.len() - PREFIX_LEN).min(head_len);
        if present < head_len
            && matches!(
                Header::decode_partial(&src[PREFIX_LEN..PREFIX_LEN + present]),
                Ok(None)
            )
        {
            // Wait for the rest of the header, which is bounded; nothing is reserved for the
            // rest of the frame.
            return None;
        }
        src.advance(PREFIX_LEN);
        // A copy, so the read buffer is not kept alive by the head and can be reused.
        let head = Bytes::copy_from_slice(&src[..present]);
        src.advance(present);
        self.skip = len - present;
        Some(Frame::Oversized(Box::new(Oversized {
            head,
            len,
            max: self.max_frame_len,
        })))
    }
}

impl Decoder for SkippingDecoder {
    type Item = Frame;
    type Error = Error;

    #[inline]
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, Error> {
        if self.skip != 0 && !self.skip_some(src) {
            return Ok(None);
        }
        if src.len() < PREFIX_LEN {
            return Ok(None);
        }
        let len = (&src[..PREFIX_LEN]).get_u32() as usize;
        if len > self.max_frame_len {
            return Ok(self.oversized(src, len));
        }
        if src.len() < PREFIX_LEN + len {
            await_rest(src, len);
            return Ok(None);
        }
        src.advance(PREFIX_LEN);
        Ok(Some(Frame::Whole(src.split_to(len).freeze())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_frames_wait_without_reserving_claimed_length() {
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_LEN);
        let mut buf = BytesMut::with_capacity(64);
        buf.extend_from_slice(&(DEFAULT_MAX_FRAME_LEN as u32).to_be_bytes());
        buf.extend_from_slice(b"abc");
        assert!(decoder.decode(&mut buf).expect("ok").is_none());
        assert!(
            buf.capacity() < 1024,
            "reserved {} bytes for a frame that has not arrived",
            buf.capacity()
        );
    }

    #[test]
    fn splits_back_to_back_frames() {
        let mut decoder = FrameDecoder::new(16);
        let mut buf = BytesMut::from(&[0, 0, 0, 1, b'a', 0, 0, 0, 0, 0, 0, 0, 2, b'b'][..]);
        assert_eq!(&decoder.decode(&mut buf).expect("a").expect("a")[..], b"a");
        assert_eq!(
            &decoder.decode(&mut buf).expect("empty").expect("empty")[..],
            b""
        );
        assert!(decoder.decode(&mut buf).expect("partial").is_none());
        buf.extend_from_slice(b"c");
        assert_eq!(
            &decoder.decode(&mut buf).expect("bc").expect("bc")[..],
            b"bc"
        );
    }

    #[test]
    fn oversized_prefix_names_limit_and_length() {
        let mut decoder = FrameDecoder::new(1024);
        let mut buf = BytesMut::from(&u32::MAX.to_be_bytes()[..]);
        let err = decoder.decode(&mut buf).expect_err("too large");
        assert!(matches!(
            err,
            Error::Protocol(ProtocolError::FrameTooLarge {
                len: 4_294_967_295,
                max: 1024
            })
        ));
    }

    /// Feeds `stream` to `decoder` in reads of `chunk` bytes, as `FramedRead` does (reserve,
    /// read, decode until nothing more), and returns the frames and the largest capacity the
    /// read buffer reached.
    fn feed(decoder: &mut SkippingDecoder, stream: &[u8], chunk: usize) -> (Vec<Frame>, usize) {
        let mut buf = BytesMut::with_capacity(chunk);
        let mut frames = Vec::new();
        let mut most = 0;
        for piece in stream.chunks(chunk) {
            buf.reserve(piece.len());
            buf.extend_from_slice(piece);
            most = most.max(buf.capacity());
            while let Some(frame) = decoder.decode(&mut buf).expect("no error") {
                frames.push(frame);
            }
        }
        (frames, most)
    }

    /// Reads `stream` as `FramedRead` does: a buffer of 8 KiB to start with, decoded after
    /// every read, grown by one byte only when full, reads of at most `max_read` bytes. Every
    /// frame is kept, as a handler or a write queue may keep its bytes. Returns the frames,
    /// the largest capacity the buffer reached and the bytes it moved (its contents found at
    /// another address than where the last step left them).
    fn read_like_framed(
        decoder: &mut SkippingDecoder,
        mut stream: &[u8],
        max_read: usize,
    ) -> (Vec<Frame>, usize, usize) {
        let mut buf = BytesMut::with_capacity(8 * 1024);
        let (mut frames, mut most, mut moved) = (Vec::new(), 0, 0);
        loop {
            // A decode either splits a whole frame off or may move the buffer to make room
            // for the rest of one: then all it holds was copied.
            loop {
                let at = buf.as_ptr();
                match decoder.decode(&mut buf).expect("no error") {
                    Some(frame) => frames.push(frame),
                    None => {
                        moved += if buf.as_ptr() != at { buf.len() } else { 0 };
                        break;
                    }
                }
            }
            if stream.is_empty() {
                return (frames, most, moved);
            }
            if buf.capacity() == buf.len() {
                let at = buf.as_ptr();
                buf.reserve(1);
                moved += if buf.as_ptr() != at { buf.len() } else { 0 };
            }
            most = most.max(buf.capacity());
            let n = (buf.capacity() - buf.len()).min(max_read).min(stream.len());
            buf.extend_from_slice(&stream[..n]);
            stream = &stream[n..];
        }
    }

    #[test]
    fn a_large_frame_is_read_into_one_buffer_of_about_its_size() {
        let body = vec![7u8; 1 << 20];
        let mut stream = framed(&body);
        stream.extend_from_slice(&framed(&body));
        let (frames, most, moved) =
            read_like_framed(&mut SkippingDecoder::new(16 << 20, 64), &stream, 64 * 1024);
        assert_eq!(frames.len(), 2);
        assert!(frames
            .iter()
            .all(|f| matches!(f, Frame::Whole(b) if b[..] == body[..])));
        // A buffer left to double its way up ends at 2 MiB and moves over 1 MiB per frame.
        assert!(
            most <= (1 << 20) + 16 * 1024,
            "the read buffer grew to {most} bytes for 1 MiB frames"
        );
        assert!(
            moved <= 2 * (256 << 10),
            "the read buffer moved {moved} bytes for two 1 MiB frames"
        );
    }

    #[test]
    fn a_partial_frame_holds_at_most_growth_times_what_arrived() {
        // The prefix of a 16 MiB frame, then `sent` bytes of it, and nothing more.
        for sent in [100usize, 8 * 1024, 64 * 1024, 1 << 20] {
            let mut stream = framed(&vec![0u8; 16 << 20]);
            stream.truncate(PREFIX_LEN + sent);
            let (frames, most, _) =
                read_like_framed(&mut SkippingDecoder::new(16 << 20, 64), &stream, 64 * 1024);
            assert!(frames.is_empty());
            let bound = (GROWTH + 1) * (PREFIX_LEN + sent).max(8 * 1024);
            assert!(
                most <= bound,
                "{sent} bytes of a 16 MiB frame made the buffer hold {most} (bound {bound})"
            );
        }
    }

    fn framed(payload: &[u8]) -> Vec<u8> {
        let mut out = (payload.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn an_oversized_frame_is_skipped_without_buffering_its_body() {
        let header = {
            let mut buf = BytesMut::new();
            Header::StreamItem { id: 42 }
                .encode(&mut buf)
                .expect("encode");
            buf
        };
        let mut big = header.to_vec();
        big.resize(4 << 20, 0xab);
        let mut stream = framed(b"before");
        stream.extend_from_slice(&framed(&big));
        stream.extend_from_slice(&framed(b"after"));

        let mut decoder = SkippingDecoder::new(1 << 20, 64);
        let (frames, most) = feed(&mut decoder, &stream, 8 * 1024);
        assert!(
            most <= 64 * 1024,
            "the read buffer grew to {most} bytes while skipping a 4 MiB frame"
        );
        assert_eq!(decoder.skipping(), 0);
        let [Frame::Whole(before), Frame::Oversized(over), Frame::Whole(after)] = &frames[..]
        else {
            panic!("{frames:?}");
        };
        assert_eq!((&before[..], &after[..]), (&b"before"[..], &b"after"[..]));
        assert_eq!(
            (over.len, over.max, over.head.len()),
            (4 << 20, 1 << 20, 64)
        );
        assert_eq!(
            over.header().expect("header"),
            Header::StreamItem { id: 42 }
        );
        assert!(matches!(
            over.error(),
            Error::MessageTooLarge {
                len: 4_194_304,
                max: 1_048_576
            }
        ));
    }

    #[test]
    fn a_frame_is_no_larger_than_its_bytes() {
        // What the read loops move for every frame stays what it was before oversized
        // frames had a variant.
        assert_eq!(std::mem::size_of::<Frame>(), std::mem::size_of::<Bytes>());
    }

    #[test]
    fn any_chunking_gives_the_same_frames() {
        let mut stream = Vec::new();
        for len in [0usize, 3, 10, 11, 4, 40, 2] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            stream.extend_from_slice(&framed(&payload));
        }
        let describe = |frames: Vec<Frame>| -> Vec<(bool, Vec<u8>, usize)> {
            frames
                .into_iter()
                .map(|frame| match frame {
                    Frame::Whole(bytes) => (true, bytes.to_vec(), bytes.len()),
                    Frame::Oversized(over) => (false, over.head.to_vec(), over.len),
                })
                .collect()
        };
        let whole = describe(feed(&mut SkippingDecoder::new(10, 5), &stream, stream.len()).0);
        assert_eq!(
            whole.iter().map(|f| (f.0, f.2)).collect::<Vec<_>>(),
            [
                (true, 0),
                (true, 3),
                (true, 10),
                (false, 11),
                (true, 4),
                (false, 40),
                (true, 2)
            ]
        );
        assert_eq!(whole[3].1, [0, 1, 2, 3, 4]);
        for chunk in 1..stream.len() {
            let got = describe(feed(&mut SkippingDecoder::new(10, 5), &stream, chunk).0);
            assert_eq!(got, whole, "reads of {chunk} bytes");
        }
    }

    #[test]
    fn an_unreadable_header_in_an_oversized_frame_is_a_protocol_error() {
        // A request whose metadata runs past the bytes the decoder keeps.
        let mut buf = BytesMut::new();
        let mut metadata = crate::Metadata::new();
        metadata.insert("k", vec![0u8; 200]);
        Header::Request(crate::message::RequestHeader {
            id: 1,
            method: 2,
            fingerprint: 0,
            timeout_micros: None,
            metadata,
        })
        .encode(&mut buf)
        .expect("encode");
        buf.resize(1000, 0);
        let stream = framed(&buf);
        let (frames, _) = feed(&mut SkippingDecoder::new(100, 64), &stream, 16);
        let [Frame::Oversized(over)] = &frames[..] else {
            panic!("{frames:?}");
        };
        assert_eq!(
            over.header(),
            Err(ProtocolError::FrameTooLarge {
                len: 1000,
                max: 100
            })
        );

        // Bytes that are no header are known for that at once: nothing more is waited for.
        let mut decoder = SkippingDecoder::new(100, 64);
        let mut buf = BytesMut::from(&[0, 0, 4, 0, 99][..]);
        let Some(Frame::Oversized(over)) = decoder.decode(&mut buf).expect("no error") else {
            panic!("the front of a frame that has no header");
        };
        assert_eq!(&over.head[..], [99]);
        assert!(over.header().is_err());
        // A header that has arrived is not waited past either.
        let mut decoder = SkippingDecoder::new(100, 64);
        let mut buf = BytesMut::from(&[0, 0, 4, 0][..]);
        Header::StreamItem { id: 5 }
            .encode(&mut buf)
            .expect("encode");
        let Some(Frame::Oversized(over)) = decoder.decode(&mut buf).expect("no error") else {
            panic!("the header of an oversized frame");
        };
        assert_eq!(over.header(), Ok(Header::StreamItem { id: 5 }));
        assert_eq!(decoder.skipping(), 1024 - 9);
    }

    proptest::proptest! {
        /// Frames over and under the limit, cut into reads of any sizes: every frame within
        /// the limit arrives whole, every other one as its header, in order, and the frame
        /// after a skipped one is intact.
        #[test]
        fn oversized_frames_in_any_chunking_fail_only_themselves(
            frames in proptest::collection::vec((0u64..1000, 0usize..300), 0..12),
            max in 9usize..200,
            sizes in proptest::collection::vec(1usize..64, 1..16),
        ) {
            let mut stream = Vec::new();
            let mut expected = Vec::new();
            for (id, body_len) in &frames {
                let mut payload = BytesMut::new();
                Header::StreamItem { id: *id }.encode(&mut payload).expect("encode");
                payload.extend((0..*body_len).map(|i| i as u8));
                stream.extend_from_slice(&framed(&payload));
                expected.push((payload.len() <= max, *id, payload.len()));
            }
            let mut decoder = SkippingDecoder::new(max, 16);
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            let mut rest = &stream[..];
            for size in sizes.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (piece, tail) = rest.split_at((*size).min(rest.len()));
                rest = tail;
                buf.extend_from_slice(piece);
                while let Some(frame) = decoder.decode(&mut buf).expect("no error") {
                    got.push(match frame {
                        Frame::Whole(bytes) => {
                            let (header, _) = crate::message::decode_frame(bytes.clone())
                                .expect("a header");
                            let Header::StreamItem { id } = header else {
                                panic!("{header:?}");
                            };
                            (true, id, bytes.len())
                        }
                        Frame::Oversized(over) => {
                            proptest::prop_assert_eq!(over.max, max);
                            let Header::StreamItem { id } = over.header().expect("a header")
                            else {
                                panic!("{over:?}");
                            };
                            (false, id, over.len)
                        }
                    });
                }
            }
            proptest::prop_assert_eq!(got, expected);
            proptest::prop_assert!(buf.is_empty());
            proptest::prop_assert_eq!(decoder.skipping(), 0);
        }
    }
}
