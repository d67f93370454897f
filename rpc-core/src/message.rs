//! The header at the front of every frame.
//!
//! A frame's payload is a [`Header`] followed directly by the body: the call's arguments or
//! its result, encoded by the [`Codec`](crate::Codec). The header says how long it is by
//! being a valid encoding, so no extra length field is needed, and the body is handed on as a
//! slice of the received frame, without a copy.
//!
//! # Layout
//!
//! The header has a fixed, hand-written layout (integers little endian). It is on the path
//! of every call, and reading fixed-width fields costs a fraction of a serde decode; every
//! length in it is checked against the bytes actually present before anything is allocated.
//!
//! | tag (u8) | message | fields after the tag |
//! |---|---|---|
//! | 0 | request | id u64, method u64, fingerprint u64, has-timeout u8 (0 or 1) then, if 1, the timeout in µs u64, metadata count u16, then per pair: key length u16, key (UTF-8), value length u32, value |
//! | 1 | cancel | id u64 |
//! | 2 | response | id u64, status u8: 0 ok; 1 error, then code u16, message length u32, message (UTF-8) |
//! | 3 | go-away | nothing |
//! | 4 | stream item | id u64 (the item is the body) |
//! | 5 | stream end | id u64, status as in a response |
//! | 6 | credit | id u64, bytes u32 |
//! | 7 | ping | payload u64 (opaque) |
//! | 8 | pong | payload u64, the ping's, echoed |
//!
//! A request's `fingerprint` is the method's signature fingerprint (see
//! [`shape::fingerprint`](crate::shape::fingerprint)): the high 32 bits hash the arguments'
//! shape (their top bit is always 0), the low 32 bits the result's. 0 means "not given": the
//! server then does not compare. A server whose own fingerprint for the method differs
//! refuses the call unread, with error code 10 (`SignatureMismatch`).
//!
//! Both directions share these tags, so a message sent the wrong way (a response sent to a
//! server) is recognised and refused rather than misread.
//!
//! Ping and pong are the keepalive (see [`keepalive`](crate::keepalive)): either side may
//! ping, and the other answers at once. A peer built before they existed refuses tag 7 as
//! an unknown tag and closes the connection as malformed; the protocol version stays 1, as
//! no such peer was ever deployed.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::codec::CodecError;
use crate::error::{Error, ErrorCode, ProtocolError};
use crate::frame::PREFIX_LEN;
use crate::metadata::Metadata;

/// The kinds of message on a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Header {
    /// Client to server: call a method; the body holds the arguments.
    Request(RequestHeader),
    /// Client to server: the caller no longer wants the reply to request `id`.
    Cancel {
        /// The request to stop.
        id: u64,
    },
    /// Server to client: the outcome of request `id`; on success the body holds the result.
    Response {
        /// The request answered.
        id: u64,
        /// Success, or the framework error that ended the call.
        status: Status,
    },
    /// Server to client: the server is shutting down; send new calls elsewhere. Calls already
    /// sent are still answered.
    GoAway,
    /// Either way: one item of call `id`'s stream; the body holds the item.
    StreamItem {
        /// The call the stream belongs to.
        id: u64,
    },
    /// Either way: call `id`'s stream has ended, normally or with a framework error.
    StreamEnd {
        /// The call the stream belongs to.
        id: u64,
        /// `Ok` for a normal end.
        status: Status,
    },
    /// Either way: the receiver of call `id`'s stream has room for `bytes` more bytes of
    /// items (flow control; see [`stream`](crate::stream)).
    Credit {
        /// The call the stream belongs to.
        id: u64,
        /// Bytes of frames the sender may add.
        bytes: u32,
    },
    /// Either way: are you there? The receiver answers with a [`Pong`](Header::Pong)
    /// carrying the same payload, at once (see [`keepalive`](crate::keepalive)).
    Ping {
        /// Chosen by the sender, echoed in the pong.
        payload: u64,
    },
    /// Either way: the answer to a [`Ping`](Header::Ping).
    Pong {
        /// The ping's payload.
        payload: u64,
    },
}

impl Header {
    /// A short name for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Header::Request(_) => "request",
            Header::Cancel { .. } => "cancel",
            Header::Response { .. } => "response",
            Header::GoAway => "go-away",
            Header::StreamItem { .. } => "stream item",
            Header::StreamEnd { .. } => "stream end",
            Header::Credit { .. } => "credit",
            Header::Ping { .. } => "ping",
            Header::Pong { .. } => "pong",
        }
    }
}

/// A call's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHeader {
    /// Chosen by the client, unique among its calls in flight on this connection.
    pub id: u64,
    /// The method's wire id, see [`MethodId`](crate::MethodId).
    pub method: u64,
    /// The caller's fingerprint of the method's signature, or 0 when it gives none (see
    /// [`Method::fingerprint`](crate::Method::fingerprint)).
    pub fingerprint: u64,
    /// Time left until the deadline, in microseconds, when the call has one. Relative, because
    /// the two hosts' clocks differ.
    pub timeout_micros: Option<u64>,
    /// User metadata.
    pub metadata: Metadata,
}

/// How a call ended, from the framework's point of view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// The handler ran; the body holds its return value (which may be an application error).
    Ok,
    /// The framework failed the call; see [`ErrorCode`].
    Error {
        /// The wire error code.
        code: u16,
        /// A human-readable explanation.
        message: String,
    },
}

impl Status {
    /// The failed status that reports `err` to the peer, which rebuilds it with
    /// [`Error::from_remote`].
    pub fn from_error(err: &Error) -> Status {
        let (code, message) = err.to_wire();
        Status::Error { code, message }
    }

    /// A failed status with an explicit code: how a server refuses a request itself.
    pub fn refusal(code: ErrorCode, message: impl Into<String>) -> Status {
        Status::Error {
            code: code.to_u16(),
            message: message.into(),
        }
    }

    /// Whether the peer refused the call without running any of it
    /// ([`ErrorCode::ShuttingDown`]): the one failure that is always safe to send again.
    ///
    /// Only the wire code says so. An [`Error::Overloaded`] from a handler, even one that
    /// arrives while the server is going away, is not it: that call may have run.
    pub fn is_refused_unrun(&self) -> bool {
        matches!(self, Status::Error { code, .. } if *code == ErrorCode::ShuttingDown.to_u16())
    }
}

/// Appends one whole frame (length prefix, header, body) to `dst`.
///
/// `body` writes the body. If it fails, or the frame would exceed `max_frame_len`, `dst` is
/// left as it was and the error is returned.
pub fn encode_frame(
    dst: &mut BytesMut,
    header: &Header,
    max_frame_len: usize,
    body: impl FnOnce(&mut BytesMut) -> Result<(), CodecError>,
) -> Result<(), Error> {
    encode_frame_spliced(dst, header, max_frame_len, |buf| body(buf).map(|()| 0))
}

/// Like [`encode_frame`], for a body part of which is written from elsewhere (spliced
/// payloads, see [`payload`](crate::payload)): `body` returns how many of its bytes are not
/// in `dst`. They count in the length prefix and against `max_frame_len`.
pub(crate) fn encode_frame_spliced(
    dst: &mut BytesMut,
    header: &Header,
    max_frame_len: usize,
    body: impl FnOnce(&mut BytesMut) -> Result<usize, CodecError>,
) -> Result<(), Error> {
    let frame = Rollback::new(dst);
    frame.buf.put_u32(0);
    header.encode(frame.buf)?;
    let spliced = body(frame.buf)?;
    let len = frame.buf.len() - frame.start - PREFIX_LEN + spliced;
    // A match, not `ok_or`: an error built eagerly is also dropped on every good frame.
    let prefix = match u32::try_from(len) {
        Ok(prefix) if len <= max_frame_len => prefix,
        _ => {
            return Err(Error::MessageTooLarge {
                len,
                max: max_frame_len,
            })
        }
    };
    let start = frame.start;
    frame.buf[start..start + PREFIX_LEN].copy_from_slice(&prefix.to_be_bytes());
    frame.commit();
    Ok(())
}

/// Truncates a buffer back to where a frame began unless the frame is committed: on an error
/// return, and also when a user's `Serialize` impl panics half-way, so a half-written frame
/// never reaches the wire.
struct Rollback<'a> {
    buf: &'a mut BytesMut,
    start: usize,
    committed: bool,
}

impl<'a> Rollback<'a> {
    fn new(buf: &'a mut BytesMut) -> Self {
        let start = buf.len();
        Rollback {
            buf,
            start,
            committed: false,
        }
    }

    fn commit(mut self) {
        self.committed = true;
    }
}

impl Drop for Rollback<'_> {
    fn drop(&mut self) {
        if !self.committed {
            self.buf.truncate(self.start);
        }
    }
}

/// Splits a received frame into its header and body; the body shares the frame's memory.
pub fn decode_frame(frame: Bytes) -> Result<(Header, Bytes), ProtocolError> {
    let mut cursor = &frame[..];
    let header = Header::decode(&mut cursor)?;
    let used = frame.len() - cursor.len();
    Ok((header, frame.slice(used..)))
}

const TAG_REQUEST: u8 = 0;
const TAG_CANCEL: u8 = 1;
const TAG_RESPONSE: u8 = 2;
const TAG_GO_AWAY: u8 = 3;
const TAG_STREAM_ITEM: u8 = 4;

/// The bytes a stream item's header takes: the tag and the call id. With the length prefix
/// and the item, they make the frame a stream's sender counts against its window.
pub const STREAM_ITEM_HEADER_LEN: usize = 1 + 8;
const TAG_STREAM_END: u8 = 5;
const TAG_CREDIT: u8 = 6;
const TAG_PING: u8 = 7;
const TAG_PONG: u8 = 8;
/// The longest fixed part of a request header: tag, id, method, fingerprint, timeout flag and
/// value, metadata count.
const FIXED_REQUEST_LEN: usize = 1 + 8 + 8 + 8 + 1 + 8 + 2;

const STATUS_OK: u8 = 0;
const STATUS_ERROR: u8 = 1;

impl Header {
    /// Appends the header's wire form (see the [module docs](self)).
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), CodecError> {
        match self {
            Header::Request(request) => {
                let count = u16::try_from(request.metadata.len())
                    .map_err(|_| too_long("metadata pairs", request.metadata.len()))?;
                // The fixed part goes out in one copy: this runs for every call.
                let mut fixed = [0u8; FIXED_REQUEST_LEN];
                let mut at = &mut fixed[..];
                at.put_u8(TAG_REQUEST);
                at.put_u64_le(request.id);
                at.put_u64_le(request.method);
                at.put_u64_le(request.fingerprint);
                match request.timeout_micros {
                    Some(micros) => {
                        at.put_u8(1);
                        at.put_u64_le(micros);
                    }
                    None => at.put_u8(0),
                }
                at.put_u16_le(count);
                let len = FIXED_REQUEST_LEN - at.len();
                dst.put_slice(&fixed[..len]);
                for (key, value) in request.metadata.iter() {
                    let key_len = u16::try_from(key.len())
                        .map_err(|_| too_long("metadata key", key.len()))?;
                    let value_len = u32::try_from(value.len())
                        .map_err(|_| too_long("metadata value", value.len()))?;
                    dst.put_u16_le(key_len);
                    dst.put_slice(key.as_bytes());
                    dst.put_u32_le(value_len);
                    dst.put_slice(value);
                }
            }
            Header::Cancel { id } => {
                dst.put_u8(TAG_CANCEL);
                dst.put_u64_le(*id);
            }
            Header::Response { id, status } => {
                if let Status::Ok = status {
                    // The common case in one copy.
                    let mut fixed = [0u8; 10];
                    fixed[0] = TAG_RESPONSE;
                    fixed[1..9].copy_from_slice(&id.to_le_bytes());
                    fixed[9] = STATUS_OK;
                    dst.put_slice(&fixed);
                } else {
                    dst.put_u8(TAG_RESPONSE);
                    dst.put_u64_le(*id);
                    status.encode(dst)?;
                }
            }
            Header::GoAway => dst.put_u8(TAG_GO_AWAY),
            Header::StreamItem { id } => {
                // One copy: this runs for every stream item.
                let mut fixed = [0u8; 9];
                fixed[0] = TAG_STREAM_ITEM;
                fixed[1..].copy_from_slice(&id.to_le_bytes());
                dst.put_slice(&fixed);
            }
            Header::StreamEnd { id, status } => {
                dst.put_u8(TAG_STREAM_END);
                dst.put_u64_le(*id);
                status.encode(dst)?;
            }
            Header::Credit { id, bytes } => {
                dst.put_u8(TAG_CREDIT);
                dst.put_u64_le(*id);
                dst.put_u32_le(*bytes);
            }
            Header::Ping { payload } => {
                dst.put_u8(TAG_PING);
                dst.put_u64_le(*payload);
            }
            Header::Pong { payload } => {
                dst.put_u8(TAG_PONG);
                dst.put_u64_le(*payload);
            }
        }
        Ok(())
    }

    /// Reads a header from the front of `src`, advancing it past the header.
    pub fn decode(src: &mut &[u8]) -> Result<Header, ProtocolError> {
        Header::decode_from(&mut Reader { src, short: false })
    }

    /// Reads a header from the front of `src`, which may be only the first bytes of a frame:
    /// `Ok(None)` when `src` ends inside the header (more bytes may complete it), an error
    /// only when the bytes present are no header's.
    pub fn decode_partial(src: &[u8]) -> Result<Option<Header>, ProtocolError> {
        let mut cursor = src;
        let mut r = Reader {
            src: &mut cursor,
            short: false,
        };
        match Header::decode_from(&mut r) {
            Ok(header) => Ok(Some(header)),
            Err(_) if r.short => Ok(None),
            Err(err) => Err(err),
        }
    }

    #[inline]
    fn decode_from(r: &mut Reader<'_, '_>) -> Result<Header, ProtocolError> {
        Ok(match r.u8("message tag")? {
            TAG_REQUEST => {
                let id = r.u64("request id")?;
                let method = r.u64("method id")?;
                let fingerprint = r.u64("signature fingerprint")?;
                let timeout_micros = match r.u8("timeout flag")? {
                    0 => None,
                    1 => Some(r.u64("timeout")?),
                    other => {
                        return Err(malformed(format!(
                            "timeout flag {other} is neither 0 nor 1"
                        )))
                    }
                };
                let count = usize::from(r.u16("metadata count")?);
                // Each pair takes at least 6 bytes: refuse a count the frame cannot hold
                // before reserving room for it.
                if count > r.src.len() / 6 {
                    // The bytes end before the pairs could.
                    r.short = true;
                    return Err(malformed(format!(
                        "{count} metadata pairs cannot fit in {} bytes",
                        r.src.len()
                    )));
                }
                let mut metadata = Metadata::with_capacity(count);
                for _ in 0..count {
                    let key_len = usize::from(r.u16("metadata key length")?);
                    let key = r.text(key_len, "metadata key")?;
                    let value_len = r.u32("metadata value length")? as usize;
                    let value = r.bytes(value_len, "metadata value")?;
                    metadata.insert(key, value);
                }
                Header::Request(RequestHeader {
                    id,
                    method,
                    fingerprint,
                    timeout_micros,
                    metadata,
                })
            }
            TAG_CANCEL => Header::Cancel {
                id: r.u64("cancel id")?,
            },
            TAG_RESPONSE => {
                let id = r.u64("response id")?;
                let status = r.status()?;
                Header::Response { id, status }
            }
            TAG_GO_AWAY => Header::GoAway,
            TAG_STREAM_ITEM => Header::StreamItem {
                id: r.u64("stream id")?,
            },
            TAG_STREAM_END => {
                let id = r.u64("stream id")?;
                let status = r.status()?;
                Header::StreamEnd { id, status }
            }
            TAG_CREDIT => Header::Credit {
                id: r.u64("stream id")?,
                bytes: r.u32("credit")?,
            },
            TAG_PING => Header::Ping {
                payload: r.u64("ping payload")?,
            },
            TAG_PONG => Header::Pong {
                payload: r.u64("pong payload")?,
            },
            other => return Err(malformed(format!("unknown message tag {other}"))),
        })
    }
}

impl Status {
    fn encode(&self, dst: &mut BytesMut) -> Result<(), CodecError> {
        match self {
            Status::Ok => dst.put_u8(STATUS_OK),
            Status::Error { code, message } => {
                let len = u32::try_from(message.len())
                    .map_err(|_| too_long("error message", message.len()))?;
                dst.put_u8(STATUS_ERROR);
                dst.put_u16_le(*code);
                dst.put_u32_le(len);
                dst.put_slice(message.as_bytes());
            }
        }
        Ok(())
    }
}

fn too_long(what: &str, len: usize) -> CodecError {
    CodecError::Encode {
        reason: format!("{what} of {len} bytes is too long for the header"),
    }
}

fn malformed(reason: String) -> ProtocolError {
    ProtocolError::MalformedHeader { reason }
}

/// The error for a field the frame ends inside of; out of line, as it is rare.
#[cold]
fn cut_short(what: &str, left: usize, needed: usize) -> ProtocolError {
    malformed(format!(
        "frame ends inside the {what} ({left} of {needed} bytes)"
    ))
}

/// Bounds-checked reads; every failure names the field that was cut short.
struct Reader<'a, 'b> {
    src: &'a mut &'b [u8],
    /// Set when a read failed because the bytes ended (rather than held something invalid).
    short: bool,
}

impl Reader<'_, '_> {
    #[inline]
    fn need(&mut self, n: usize, what: &str) -> Result<(), ProtocolError> {
        if self.src.len() < n {
            self.short = true;
            return Err(cut_short(what, self.src.len(), n));
        }
        Ok(())
    }

    #[inline]
    fn u8(&mut self, what: &str) -> Result<u8, ProtocolError> {
        self.need(1, what)?;
        Ok(self.src.get_u8())
    }

    #[inline]
    fn u16(&mut self, what: &str) -> Result<u16, ProtocolError> {
        self.need(2, what)?;
        Ok(self.src.get_u16_le())
    }

    #[inline]
    fn u32(&mut self, what: &str) -> Result<u32, ProtocolError> {
        self.need(4, what)?;
        Ok(self.src.get_u32_le())
    }

    #[inline]
    fn u64(&mut self, what: &str) -> Result<u64, ProtocolError> {
        self.need(8, what)?;
        Ok(self.src.get_u64_le())
    }

    fn bytes(&mut self, len: usize, what: &str) -> Result<Vec<u8>, ProtocolError> {
        self.need(len, what)?;
        let (head, tail) = self.src.split_at(len);
        *self.src = tail;
        Ok(head.to_vec())
    }

    fn status(&mut self) -> Result<Status, ProtocolError> {
        Ok(match self.u8("status")? {
            STATUS_OK => Status::Ok,
            STATUS_ERROR => {
                let code = self.u16("error code")?;
                let len = self.u32("error message length")? as usize;
                let message = self.text(len, "error message")?;
                Status::Error { code, message }
            }
            other => return Err(malformed(format!("unknown status {other}"))),
        })
    }

    fn text(&mut self, len: usize, what: &str) -> Result<String, ProtocolError> {
        String::from_utf8(self.bytes(len, what)?)
            .map_err(|_| malformed(format!("the {what} is not UTF-8")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Bincode, Codec};
    use bytes::Buf;

    fn request() -> Header {
        let mut metadata = Metadata::new();
        metadata.insert("k", "v");
        Header::Request(RequestHeader {
            id: 7,
            method: 0xdead_beef,
            fingerprint: 0x0123_4567_89ab_cdef,
            timeout_micros: Some(1_500),
            metadata,
        })
    }

    #[test]
    fn frame_round_trip_keeps_header_and_body() {
        let mut buf = BytesMut::new();
        encode_frame(&mut buf, &request(), 1024, |b| {
            Bincode.encode(&(1u32, 2u32), b)
        })
        .expect("encode");
        let len = buf.get_u32() as usize;
        assert_eq!(len, buf.len());
        let (header, body) = decode_frame(buf.freeze()).expect("decode");
        assert_eq!(header, request());
        let args: (u32, u32) = Bincode.decode(&body).expect("body");
        assert_eq!(args, (1, 2));
    }

    #[test]
    fn every_header_kind_round_trips() {
        let headers = [
            request(),
            Header::Request(RequestHeader {
                id: u64::MAX,
                method: 0,
                fingerprint: 0,
                timeout_micros: None,
                metadata: Metadata::new(),
            }),
            Header::Cancel { id: 3 },
            Header::Response {
                id: 4,
                status: Status::Ok,
            },
            Header::Response {
                id: 5,
                status: Status::Error {
                    code: 7,
                    message: "ünïcode".into(),
                },
            },
            Header::GoAway,
            Header::StreamItem { id: 8 },
            Header::StreamEnd {
                id: 9,
                status: Status::Ok,
            },
            Header::StreamEnd {
                id: 10,
                status: Status::Error {
                    code: 3,
                    message: "boom".into(),
                },
            },
            Header::Credit {
                id: 11,
                bytes: u32::MAX,
            },
            Header::Ping { payload: 12 },
            Header::Pong { payload: u64::MAX },
        ];
        for header in headers {
            let mut buf = BytesMut::new();
            header.encode(&mut buf).expect("encode");
            buf.extend_from_slice(b"body");
            let (back, body) = decode_frame(buf.freeze()).expect("decode");
            assert_eq!(back, header);
            assert_eq!(&body[..], b"body");
        }
    }

    #[test]
    fn every_truncation_of_a_header_is_refused() {
        let mut buf = BytesMut::new();
        request().encode(&mut buf).expect("encode");
        for len in 0..buf.len() {
            let cut = Bytes::copy_from_slice(&buf[..len]);
            assert!(decode_frame(cut).is_err(), "a {len}-byte prefix decoded");
        }
    }

    #[test]
    fn oversized_frame_is_refused_and_buffer_restored() {
        let mut buf = BytesMut::from(&b"prior"[..]);
        let err = encode_frame(&mut buf, &Header::GoAway, 16, |b| {
            Bincode.encode(&vec![0u8; 100], b)
        })
        .expect_err("too large");
        assert!(
            matches!(err, Error::MessageTooLarge { max: 16, .. }),
            "{err}"
        );
        assert_eq!(&buf[..], b"prior");
    }

    #[test]
    fn panicking_serialize_leaves_no_partial_frame() {
        let mut buf = BytesMut::from(&b"prior"[..]);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = encode_frame(&mut buf, &Header::GoAway, 1024, |b| {
                b.extend_from_slice(b"half");
                panic!("user Serialize impl panicked");
            });
        }));
        assert!(result.is_err());
        assert_eq!(&buf[..], b"prior");
    }

    #[test]
    fn garbage_header_is_a_protocol_error() {
        let err = decode_frame(Bytes::from_static(&[0xff, 0xff, 0xff])).expect_err("garbage");
        assert!(matches!(err, ProtocolError::MalformedHeader { .. }));
        // A request whose metadata claims more pairs than the frame holds.
        let mut forged = vec![TAG_REQUEST];
        forged.extend_from_slice(&[0; 25]);
        forged.extend_from_slice(&u16::MAX.to_le_bytes());
        let err = decode_frame(Bytes::from(forged)).expect_err("forged count");
        assert!(matches!(err, ProtocolError::MalformedHeader { .. }));
    }

    #[test]
    fn ping_and_pong_have_their_documented_layout() {
        for (header, tag, name) in [
            (Header::Ping { payload: 0x0102 }, TAG_PING, "ping"),
            (Header::Pong { payload: 0x0102 }, TAG_PONG, "pong"),
        ] {
            let mut buf = BytesMut::new();
            header.encode(&mut buf).expect("encode");
            assert_eq!(&buf[..], &[tag, 2, 1, 0, 0, 0, 0, 0, 0]);
            assert_eq!(header.kind(), name);
            // Cut short anywhere, it is refused.
            for len in 1..buf.len() {
                let cut = Bytes::copy_from_slice(&buf[..len]);
                assert!(decode_frame(cut).is_err(), "a {len}-byte {name} decoded");
            }
        }
        assert_eq!((TAG_PING, TAG_PONG), (7, 8));
    }

    #[test]
    fn request_header_has_its_documented_layout() {
        let header = Header::Request(RequestHeader {
            id: 0x0102,
            method: 0x0304,
            fingerprint: 0x1122_3344_5566_7788,
            timeout_micros: None,
            metadata: Metadata::new(),
        });
        let mut buf = BytesMut::new();
        header.encode(&mut buf).expect("encode");
        let mut expected = vec![TAG_REQUEST];
        expected.extend_from_slice(&0x0102u64.to_le_bytes());
        expected.extend_from_slice(&0x0304u64.to_le_bytes());
        expected.extend_from_slice(&0x1122_3344_5566_7788u64.to_le_bytes());
        expected.push(0); // no timeout
        expected.extend_from_slice(&0u16.to_le_bytes()); // no metadata
        assert_eq!(&buf[..], &expected[..]);
    }

    #[test]
    fn directions_have_distinct_tags() {
        // A response must never decode as a request, whatever its fields.
        let mut buf = BytesMut::new();
        let response = Header::Response {
            id: 1,
            status: Status::Ok,
        };
        encode_frame(&mut buf, &response, 1024, |_| Ok(())).expect("encode");
        let (header, _) = decode_frame(buf.freeze().slice(4..)).expect("decode");
        assert_eq!(header.kind(), "response");
    }
}
