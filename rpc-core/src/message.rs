//! The header at the front of every frame.
//!
//! A frame's payload is a bincode-encoded [`Header`] followed directly by the body: the
//! call's arguments or its result, encoded by the [`Codec`]. The header says
//! how long it is by being a valid encoding, so no extra length field is needed, and the body
//! is handed on as a slice of the received frame, without a copy.
//!
//! Both directions share one [`Header`] enum with distinct tags, so a message sent the
//! wrong way (a response sent to a server) is recognised and refused rather than misread.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::codec::{Bincode, Codec, CodecError};
use crate::error::{Error, ProtocolError};
use crate::frame::PREFIX_LEN;
use crate::metadata::Metadata;

/// The kinds of message on a connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
}

impl Header {
    /// A short name for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Header::Request(_) => "request",
            Header::Cancel { .. } => "cancel",
            Header::Response { .. } => "response",
            Header::GoAway => "go-away",
        }
    }
}

/// A call's header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestHeader {
    /// Chosen by the client, unique among its calls in flight on this connection.
    pub id: u64,
    /// The method's wire id, see [`MethodId`](crate::MethodId).
    pub method: u64,
    /// Time left until the deadline, in microseconds, when the call has one. Relative, because
    /// the two hosts' clocks differ.
    pub timeout_micros: Option<u64>,
    /// User metadata.
    pub metadata: Metadata,
}

/// How a call ended, from the framework's point of view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// The handler ran; the body holds its return value (which may be an application error).
    Ok,
    /// The framework failed the call; see [`ErrorCode`](crate::error::ErrorCode).
    Error {
        /// The wire error code.
        code: u16,
        /// A human-readable explanation.
        message: String,
    },
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
    let frame = Rollback::new(dst);
    frame.buf.put_u32(0);
    Bincode.encode(header, frame.buf)?;
    body(frame.buf)?;
    let len = frame.buf.len() - frame.start - PREFIX_LEN;
    let prefix = u32::try_from(len)
        .ok()
        .filter(|_| len <= max_frame_len)
        .ok_or(Error::MessageTooLarge {
            len,
            max: max_frame_len,
        })?;
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
    let (header, used) =
        Bincode
            .decode_prefix::<Header>(&frame)
            .map_err(|err| ProtocolError::MalformedHeader {
                reason: err.to_string(),
            })?;
    Ok((header, frame.slice(used..)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Buf;

    fn request() -> Header {
        let mut metadata = Metadata::new();
        metadata.insert("k", "v");
        Header::Request(RequestHeader {
            id: 7,
            method: 0xdead_beef,
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
