//! Feeds arbitrary bytes, split into arbitrary chunks, to `FrameDecoder`, and checks it
//! against a reference parser: the same frames in the same order, an error exactly where a
//! length prefix exceeds the limit, no panic, and no memory reserved for a length that has
//! merely been claimed. Every frame is then split into header and body, and a request's body
//! is decoded as a few argument types.

#![no_main]

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use rpc_core::frame::{FrameDecoder, PREFIX_LEN};
use rpc_core::message::{decode_frame, Header};
use rpc_core::{Bincode, Codec, Error, ProtocolError};
use rpc_fuzz::{bounded_decode, measure};
use tokio_util::codec::Decoder;

#[derive(Debug, Arbitrary)]
struct Input {
    /// The decoder's limit: small, so that both sides of it are reachable.
    max_frame_len: u16,
    /// Sizes of the reads the stream arrives in, used in turn; empty means one read.
    chunks: Vec<u8>,
    /// The bytes on the wire.
    stream: Vec<u8>,
}

#[derive(Debug, PartialEq)]
enum Event {
    Frame(Bytes),
    TooLarge { len: u64, max: usize },
}

/// What the decoder must produce for the whole stream.
fn reference(stream: &[u8], max: usize) -> Vec<Event> {
    let mut out = Vec::new();
    let mut rest = stream;
    while rest.len() >= PREFIX_LEN {
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len > max {
            out.push(Event::TooLarge {
                len: len as u64,
                max,
            });
            return out;
        }
        if rest.len() < PREFIX_LEN + len {
            break;
        }
        out.push(Event::Frame(Bytes::copy_from_slice(
            &rest[PREFIX_LEN..PREFIX_LEN + len],
        )));
        rest = &rest[PREFIX_LEN + len..];
    }
    out
}

fn try_body(body: &Bytes) {
    let n = body.len();
    let _ = bounded_decode("(u64, u64)", n, || Bincode.decode::<(u64, u64)>(body));
    let _ = bounded_decode("(String,)", n, || Bincode.decode::<(String,)>(body));
    let _ = bounded_decode("(Vec<u8>,)", n, || Bincode.decode::<(Vec<u8>,)>(body));
    let _ = bounded_decode("(HashMap<String, Vec<u32>>,)", n, || {
        Bincode.decode::<(HashMap<String, Vec<u32>>,)>(body)
    });
}

fn check_frame(frame: Bytes) {
    let n = frame.len();
    if let Ok((Header::Request(_), body)) = bounded_decode("Header", n, || decode_frame(frame)) {
        try_body(&body);
    }
}

fuzz_target!(|input: Input| {
    let max = usize::from(input.max_frame_len);
    let expected = reference(&input.stream, max);

    let mut decoder = FrameDecoder::new(max);
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    let mut fed = 0;
    let mut sizes = input.chunks.iter().cycle();
    'feed: while fed < input.stream.len() {
        let size = match sizes.next() {
            Some(&s) => usize::from(s).max(1),
            None => input.stream.len(),
        };
        let end = (fed + size).min(input.stream.len());
        buf.extend_from_slice(&input.stream[fed..end]);
        fed = end;
        loop {
            let buffered = buf.len();
            let (result, reserved) = measure(|| decoder.decode(&mut buf));
            // Reserving room for the next prefix may move the buffered bytes, but nothing
            // may be reserved for a length that has only been announced.
            assert!(
                reserved <= 2 * buffered + 64,
                "decode reserved {reserved} bytes with {buffered} buffered"
            );
            match result {
                Ok(Some(frame)) => {
                    assert!(frame.len() <= max, "frame of {} > max {max}", frame.len());
                    got.push(Event::Frame(frame));
                }
                Ok(None) => break,
                Err(Error::Protocol(ProtocolError::FrameTooLarge { len, max })) => {
                    got.push(Event::TooLarge { len, max });
                    break 'feed;
                }
                Err(other) => panic!("unexpected error: {other:?}"),
            }
        }
    }
    assert_eq!(got, expected);

    for event in got {
        if let Event::Frame(frame) = event {
            check_frame(frame);
        }
    }
});
