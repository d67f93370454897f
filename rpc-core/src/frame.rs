//! Length-delimited frames: a big-endian `u32` length, then that many bytes.
//!
//! The length prefix is checked against the limit *before* anything is reserved, and no
//! memory is reserved for the claimed length at all. The read buffer grows only as bytes
//! arrive, so a peer that announces a 16 MiB frame and then sends nothing costs a few
//! kilobytes, not 16 MiB. (tokio-util's `LengthDelimitedCodec` reserves the whole announced
//! length as soon as it has read the prefix.)

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::Decoder;

use crate::error::{Error, ProtocolError};

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
            // Wait for more bytes without reserving the claimed length.
            return Ok(None);
        }
        src.advance(PREFIX_LEN);
        Ok(Some(src.split_to(len).freeze()))
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
}
