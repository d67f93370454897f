//! `decode_frame` on arbitrary bytes: it must not panic or reserve memory for claimed
//! lengths, the body must be exactly the bytes after the header, and any header it accepts
//! must survive `encode_frame` → `decode_frame` unchanged, with the body intact, and encode
//! to the same bytes every time.

#![no_main]

use bytes::{Buf, Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use rpc_core::frame::PREFIX_LEN;
use rpc_core::message::{decode_frame, encode_frame, Header};
use rpc_fuzz::bounded_decode;

fn encode(header: &Header, body: &[u8]) -> BytesMut {
    let mut buf = BytesMut::new();
    encode_frame(&mut buf, header, usize::MAX, |b| {
        b.extend_from_slice(body);
        Ok(())
    })
    .expect("a decoded header must encode");
    buf
}

fuzz_target!(|data: &[u8]| {
    let frame = Bytes::copy_from_slice(data);
    let Ok((header, body)) = bounded_decode("Header", data.len(), || decode_frame(frame)) else {
        return;
    };
    assert!(body.len() < data.len(), "a header takes at least one byte");
    assert_eq!(&body[..], &data[data.len() - body.len()..]);

    let mut first = encode(&header, &body);
    let again = encode(&header, &body);
    assert_eq!(first, again, "encoding is not deterministic");
    let len = first.get_u32() as usize;
    assert_eq!(len, first.len(), "length prefix disagrees with the frame");
    let header_len = first.len() - body.len();
    assert!(
        header_len <= data.len() - body.len(),
        "re-encoded header ({header_len} bytes) is longer than the one decoded"
    );

    let (header2, body2) = decode_frame(first.freeze()).expect("re-encoded frame must decode");
    assert_eq!(header2, header);
    assert_eq!(body2, body);
    assert_eq!(encode(&header2, &body2)[PREFIX_LEN..], again[PREFIX_LEN..]);
});
