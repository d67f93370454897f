//! Where the bytes of a 1 MiB payload are copied between a sender's value and a receiver's,
//! along the path a connection takes: the write queue's encode and write on one side, the
//! frame reader and the codec's decode on the other. The transport (here an in-memory
//! pipe, standing for the kernel) copies in `write` and in `read`; those copies are the
//! kernel's and are not counted. Everything else is:
//!
//! * **send**: whether the bytes the transport is given are the value's own memory (0
//!   copies) or the write buffer's (1: the encode copied them there);
//! * **read buffer**: bytes of the frame moved when the read buffer grows or compacts while
//!   the frame arrives (tokio-util's `FramedRead`, which the connections read with);
//! * **decode**: whether the decoded value's bytes lie inside the received frame (0) or
//!   not (1).
//!
//! `cargo test -p rpc-core --test copies -- --nocapture` prints the counts.

use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use futures::StreamExt;
use rpc_core::frame::{Frame, SkippingDecoder, HEADER_ALLOWANCE};
use rpc_core::message::{decode_frame, Header, Status};
use rpc_core::writer::WriteQueue;
use rpc_core::{Bincode, Codec, Error, Payload};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::AsyncWrite;
use tokio_util::codec::{Decoder, FramedRead};

const MIB: usize = 1 << 20;

/// A transport that records which memory it was handed.
struct Recorder {
    wire: Vec<u8>,
    /// Address ranges of every buffer `write`/`write_vectored` read from.
    handed: Vec<(usize, usize)>,
}

impl Recorder {
    fn take(&mut self, buf: &[u8]) -> usize {
        let start = buf.as_ptr() as usize;
        self.handed.push((start, start + buf.len()));
        self.wire.extend_from_slice(buf);
        buf.len()
    }

    /// How many of `value`'s bytes the transport read from `value`'s own memory.
    fn read_in_place(&self, value: &[u8]) -> usize {
        let (from, to) = (
            value.as_ptr() as usize,
            value.as_ptr() as usize + value.len(),
        );
        self.handed
            .iter()
            .map(|&(start, end)| end.min(to).saturating_sub(start.max(from)))
            .sum()
    }
}

impl AsyncWrite for Recorder {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Ok(self.take(buf)))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Ok(bufs.iter().map(|buf| self.take(buf)).sum()))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The frame decoder connections use, counting the bytes the read buffer moved: whenever
/// the buffer's contents are found at another address than where the last decode left
/// them, they were copied there.
struct Counting {
    inner: SkippingDecoder,
    last: Option<(usize, usize)>,
    moved: usize,
}

impl Decoder for Counting {
    type Item = Frame;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, Error> {
        if let Some((at, len)) = self.last {
            if len > 0 && src.as_ptr() as usize != at {
                self.moved += len;
            }
        }
        let frame = self.inner.decode(src)?;
        self.last = Some((src.as_ptr() as usize, src.len()));
        Ok(frame)
    }
}

/// Copies of one message's payload on each side.
#[derive(Debug, PartialEq, Eq)]
struct Copies {
    /// Whole copies made before the transport got the bytes.
    send: usize,
    /// Bytes of the frame moved by read-buffer growth.
    read_buffer_bytes: usize,
    /// Whole copies made by the decode.
    decode: usize,
}

/// Sends `value` (whose payload bytes are `bytes`) as a response through a write queue, reads
/// it back through a pipe with reads of up to 64 KiB, and decodes it as connections do.
async fn follow<T: Serialize + DeserializeOwned>(value: T, bytes: impl Fn(&T) -> &[u8]) -> Copies {
    let queue = WriteQueue::new(16 * MIB, usize::MAX);
    let header = Header::Response {
        id: 1,
        status: Status::Ok,
    };
    queue
        .push(&header, |buf| Bincode.encode(&value, buf))
        .expect("push");
    queue.close();
    let mut transport = Recorder {
        wire: Vec::new(),
        handed: Vec::new(),
    };
    queue.run(&mut transport).await.expect("written");
    let payload = bytes(&value);
    let in_place = transport.read_in_place(payload);
    assert!(in_place == 0 || in_place == payload.len());
    let send = usize::from(in_place == 0);

    let (mut tx, rx) = tokio::io::duplex(64 * 1024);
    let wire = transport.wire;
    let writer = tokio::spawn(async move {
        tokio::io::AsyncWriteExt::write_all(&mut tx, &wire)
            .await
            .expect("pipe");
    });
    let decoder = Counting {
        inner: SkippingDecoder::new(16 * MIB, HEADER_ALLOWANCE),
        last: None,
        moved: 0,
    };
    let mut frames = FramedRead::new(rx, decoder);
    let Some(Ok(Frame::Whole(frame))) = frames.next().await else {
        panic!("a whole frame");
    };
    writer.await.expect("writer");
    let (_, body) = decode_frame(frame).expect("header");
    let decoded: T = Bincode.decode_shared(&body).expect("decode");
    let got = bytes(&decoded);
    assert_eq!(got, payload);
    let (at, end) = (body.as_ptr() as usize, body.as_ptr() as usize + body.len());
    let inside = got.as_ptr() as usize >= at && got.as_ptr() as usize + got.len() <= end;
    Copies {
        send,
        read_buffer_bytes: frames.decoder().moved,
        decode: usize::from(!inside),
    }
}

#[tokio::test]
async fn a_large_payload_is_copied_only_by_the_transport() {
    let data: Vec<u8> = (0..MIB).map(|i| i as u8).collect();

    let before = follow(data.clone(), |v: &Vec<u8>| &v[..]).await;
    let after = follow(Payload::from(data), |p: &Payload| &p[..]).await;
    println!("1 MiB as Vec<u8>: {before:?}");
    println!("1 MiB as Payload: {after:?}");

    // Vec<u8>: copied into the write buffer, and out of the frame.
    assert_eq!((before.send, before.decode), (1, 1));
    // Payload: written from its own memory, decoded as a slice of the frame.
    assert_eq!((after.send, after.decode), (0, 0));
}
