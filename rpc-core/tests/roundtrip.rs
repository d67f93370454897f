//! Property tests: envelopes, frames and bincode values survive encode → decode unchanged,
//! and decoding arbitrary bytes never panics.

use std::collections::HashMap;

use bytes::{Buf, Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use rpc_core::frame::{FrameDecoder, DEFAULT_MAX_FRAME_LEN, PREFIX_LEN};
use rpc_core::message::{decode_frame, encode_frame, Header, RequestHeader, Status};
use rpc_core::{Bincode, Codec, Error, Metadata, ProtocolError};
use tokio_util::codec::Decoder;

/// Integers with extra weight on bincode's varint boundaries (250/251, u16, u32, u64).
fn int() -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u64>(),
        0u64..300,
        prop::sample::select(vec![
            250,
            251,
            252,
            0xffff,
            0x1_0000,
            0xffff_ffff,
            0x1_0000_0000,
            u64::MAX - 1,
            u64::MAX,
        ]),
    ]
}

fn metadata() -> impl Strategy<Value = Metadata> {
    vec((any::<String>(), vec(any::<u8>(), 0..40)), 0..6).prop_map(|pairs| {
        let mut md = Metadata::new();
        for (k, v) in pairs {
            md.insert(k, v);
        }
        md
    })
}

fn status() -> impl Strategy<Value = Status> {
    prop_oneof![
        Just(Status::Ok),
        (any::<u16>(), any::<String>()).prop_map(|(code, message)| Status::Error { code, message }),
    ]
}

fn header() -> impl Strategy<Value = Header> {
    prop_oneof![
        (int(), int(), int(), prop::option::of(int()), metadata()).prop_map(
            |(id, method, fingerprint, timeout_micros, metadata)| {
                Header::Request(RequestHeader {
                    id,
                    method,
                    fingerprint,
                    timeout_micros,
                    metadata,
                })
            }
        ),
        int().prop_map(|id| Header::Cancel { id }),
        (int(), status()).prop_map(|(id, status)| Header::Response { id, status }),
        Just(Header::GoAway),
        int().prop_map(|id| Header::StreamItem { id }),
        (int(), status()).prop_map(|(id, status)| Header::StreamEnd { id, status }),
        (int(), any::<u32>()).prop_map(|(id, bytes)| Header::Credit { id, bytes }),
        int().prop_map(|payload| Header::Ping { payload }),
        int().prop_map(|payload| Header::Pong { payload }),
    ]
}

/// Encodes one frame after `prior`, returning the buffer.
fn encode(prior: &[u8], header: &Header, body: &[u8], max: usize) -> Result<BytesMut, Error> {
    let mut buf = BytesMut::from(prior);
    encode_frame(&mut buf, header, max, |b| {
        b.extend_from_slice(body);
        Ok(())
    })?;
    Ok(buf)
}

/// Feeds `stream` to a decoder in reads of the given sizes (cycled) and collects the frames.
fn decode_chunked(
    decoder: &mut FrameDecoder,
    stream: &[u8],
    sizes: &[usize],
) -> (Vec<Bytes>, Result<(), Error>, BytesMut) {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut fed = 0;
    let mut sizes = sizes.iter().cycle();
    while fed < stream.len() {
        let size = sizes.next().copied().unwrap_or(stream.len()).max(1);
        let end = (fed + size).min(stream.len());
        buf.extend_from_slice(&stream[fed..end]);
        fed = end;
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(err) => return (frames, Err(err), buf),
            }
        }
    }
    (frames, Ok(()), buf)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn header_and_body_round_trip(
        header in header(),
        body in vec(any::<u8>(), 0..200),
        prior in vec(any::<u8>(), 0..8),
    ) {
        let mut buf = encode(&prior, &header, &body, DEFAULT_MAX_FRAME_LEN).expect("encode");
        prop_assert_eq!(&buf[..prior.len()], &prior[..]);
        buf.advance(prior.len());
        let len = buf.get_u32() as usize;
        prop_assert_eq!(len, buf.len());
        let frame = buf.freeze();
        let (decoded, decoded_body) = decode_frame(frame.clone()).expect("decode");
        prop_assert_eq!(&decoded, &header);
        prop_assert_eq!(&decoded_body[..], &body[..]);

        // Every strict prefix of the header is refused rather than misread.
        let header_len = frame.len() - body.len();
        for cut in 0..header_len {
            prop_assert!(decode_frame(frame.slice(..cut)).is_err(), "cut at {}", cut);
        }
    }

    #[test]
    fn too_large_frames_are_refused_and_buffer_kept(
        header in header(),
        body in vec(any::<u8>(), 1..200),
        prior in vec(any::<u8>(), 0..8),
    ) {
        let fits = encode(&[], &header, &body, DEFAULT_MAX_FRAME_LEN).expect("encode");
        let max = fits.len() - PREFIX_LEN - 1;
        let mut buf = BytesMut::from(&prior[..]);
        let err = encode_frame(&mut buf, &header, max, |b| {
            b.extend_from_slice(&body);
            Ok(())
        })
        .expect_err("one byte over the limit");
        prop_assert!(matches!(err, Error::MessageTooLarge { .. }), "{:?}", err);
        prop_assert_eq!(&buf[..], &prior[..]);
        // Exactly at the limit is fine.
        prop_assert!(encode(&prior, &header, &body, max + 1).is_ok());
    }

    #[test]
    fn frames_reassemble_through_any_chunking(
        frames in vec(vec(any::<u8>(), 0..300), 0..8),
        sizes in vec(1usize..64, 0..16),
        slack in 0usize..3,
    ) {
        let max = frames.iter().map(Vec::len).max().unwrap_or(0) + slack;
        let mut stream = Vec::new();
        for frame in &frames {
            stream.extend_from_slice(&(frame.len() as u32).to_be_bytes());
            stream.extend_from_slice(frame);
        }
        let mut decoder = FrameDecoder::new(max);
        let (got, result, rest) = decode_chunked(&mut decoder, &stream, &sizes);
        prop_assert!(result.is_ok(), "{:?}", result);
        prop_assert!(rest.is_empty());
        let got: Vec<Vec<u8>> = got.iter().map(|f| f.to_vec()).collect();
        prop_assert_eq!(got, frames);
    }

    #[test]
    fn oversized_prefix_is_an_error_after_the_frames_before_it(
        frames in vec(vec(any::<u8>(), 0..64), 0..4),
        max in 0usize..256,
        extra in 1u32..=u32::MAX - 255,
        tail in vec(any::<u8>(), 0..16),
        sizes in vec(1usize..16, 0..8),
    ) {
        let frames: Vec<Vec<u8>> = frames.into_iter().filter(|f| f.len() <= max).collect();
        let mut stream = Vec::new();
        for frame in &frames {
            stream.extend_from_slice(&(frame.len() as u32).to_be_bytes());
            stream.extend_from_slice(frame);
        }
        let bad = max as u32 + extra;
        stream.extend_from_slice(&bad.to_be_bytes());
        stream.extend_from_slice(&tail);
        let mut decoder = FrameDecoder::new(max);
        let (got, result, _) = decode_chunked(&mut decoder, &stream, &sizes);
        let got: Vec<Vec<u8>> = got.iter().map(|f| f.to_vec()).collect();
        prop_assert_eq!(got, frames);
        match result {
            Err(Error::Protocol(ProtocolError::FrameTooLarge { len, max: m })) => {
                prop_assert_eq!(len, u64::from(bad));
                prop_assert_eq!(m, max);
            }
            other => prop_assert!(false, "expected FrameTooLarge, got {:?}", other),
        }
    }

    #[test]
    fn bincode_round_trips(
        value in (
            any::<String>(),
            vec(any::<u8>(), 0..100),
            any::<Option<i64>>(),
            prop::collection::hash_map(any::<u32>(), any::<String>(), 0..8),
        ),
        trailing in vec(any::<u8>(), 0..8),
    ) {
        type T = (String, Vec<u8>, Option<i64>, HashMap<u32, String>);
        let mut buf = BytesMut::new();
        Bincode.encode(&value, &mut buf).expect("encode");
        let back: T = Bincode.decode(&buf).expect("decode");
        prop_assert_eq!(&back, &value);

        let encoded_len = buf.len();
        buf.extend_from_slice(&trailing);
        let (back, used): (T, usize) = Bincode.decode_prefix(&buf).expect("decode_prefix");
        prop_assert_eq!(&back, &value);
        prop_assert_eq!(used, encoded_len);
        if !trailing.is_empty() {
            prop_assert!(Bincode.decode::<T>(&buf).is_err());
        }
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in vec(any::<u8>(), 0..256)) {
        let _ = decode_frame(Bytes::from(bytes.clone()));
        let _ = Bincode.decode::<(u64, u64)>(&bytes);
        let _ = Bincode.decode::<(String,)>(&bytes);
        let _ = Bincode.decode::<(Vec<u8>,)>(&bytes);
        let _ = Bincode.decode::<(String, Vec<u8>, Option<i64>, HashMap<u32, String>)>(&bytes);
        let _ = Bincode.decode::<HashMap<String, Vec<u32>>>(&bytes);
        let _ = Header::decode(&mut &bytes[..]);
        let mut decoder = FrameDecoder::new(64);
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(frame)) = decoder.decode(&mut buf) {
            let _ = decode_frame(frame);
        }
    }

    #[test]
    fn corrupted_frames_never_panic(
        header in header(),
        body in vec(any::<u8>(), 0..32),
        flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut buf = encode(&[], &header, &body, DEFAULT_MAX_FRAME_LEN).expect("encode");
        buf.advance(PREFIX_LEN);
        let mut bytes = buf.to_vec();
        for (at, byte) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= byte;
        }
        let cut = cut.index(bytes.len() + 1);
        if let Ok((decoded, rest)) = decode_frame(Bytes::copy_from_slice(&bytes[..cut])) {
            // Whatever decodes re-encodes to a frame that decodes the same way.
            let again = encode(&[], &decoded, &rest, DEFAULT_MAX_FRAME_LEN).expect("re-encode");
            let (header2, rest2) = decode_frame(again.freeze().slice(PREFIX_LEN..)).expect("decode");
            prop_assert_eq!(header2, decoded);
            prop_assert_eq!(rest2, rest);
        }
    }
}
