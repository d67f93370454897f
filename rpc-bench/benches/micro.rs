//! Micro-benchmarks without a network: frame + envelope encode/decode, large payloads
//! (`rpc::Payload` against `serde_bytes::ByteBuf`) through decode and through the write
//! queue, and dispatch (a whole call through client stub, in-memory transport, server
//! connection and handler).
//!
//! `cargo bench --manifest-path rpc-bench/Cargo.toml` (from the repository root).

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rpc::protocol::frame::FrameDecoder;
use rpc::protocol::message::{decode_frame, encode_frame, Header, RequestHeader, Status};
use rpc::protocol::{Bincode, Codec};
use rpc::{Metadata, Method, Payload};
use rpc_bench::rpc_sys::{Bench, BenchClient, Impl};
use rpc_core::writer::WriteQueue;
use serde_bytes::ByteBuf;
use tokio_util::codec::Decoder;

const MAX: usize = 16 * 1024 * 1024;

fn request_header(id: u64) -> Header {
    Header::Request(RequestHeader {
        id,
        method: Method::new("Bench", "echo").id().as_u64(),
        fingerprint: 0,
        timeout_micros: Some(30_000_000),
        metadata: Metadata::new(),
    })
}

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("envelope");
    g.throughput(Throughput::Elements(1));
    let payload = ByteBuf::from(vec![7u8; 32]);

    let mut buf = BytesMut::with_capacity(64 * 1024);
    g.bench_function("encode request, echo 32 B", |b| {
        let mut id = 0u64;
        b.iter(|| {
            id += 1;
            if buf.len() > 60 * 1024 {
                buf.clear();
            }
            encode_frame(&mut buf, &request_header(id), MAX, |dst| {
                Bincode.encode(&(&payload,), dst)
            })
            .expect("encode");
        })
    });

    let mut one = BytesMut::new();
    encode_frame(&mut one, &request_header(12345), MAX, |dst| {
        Bincode.encode(&(&payload,), dst)
    })
    .expect("encode");
    let one = one.freeze();
    g.bench_function("decode request, echo 32 B (frame, header, args)", |b| {
        let mut decoder = FrameDecoder::new(MAX);
        b.iter_batched(
            || BytesMut::from(&one[..]),
            |mut src| {
                let frame = decoder.decode(&mut src).expect("ok").expect("frame");
                let (header, body) = decode_frame(frame).expect("header");
                let args: (ByteBuf,) = Bincode.decode(&body).expect("args");
                black_box((header, args))
            },
            BatchSize::SmallInput,
        )
    });

    g.bench_function("encode response, add", |b| {
        let mut id = 0u64;
        b.iter(|| {
            id += 1;
            if buf.len() > 60 * 1024 {
                buf.clear();
            }
            let header = Header::Response {
                id,
                status: Status::Ok,
            };
            encode_frame(&mut buf, &header, MAX, |dst| Bincode.encode(&(id * 3), dst))
                .expect("encode");
        })
    });
    g.finish();
}

/// A body of 16 KiB (the splice threshold) to 1 MiB: decoded from its frame, and queued and written by a connection's
/// write queue (to `tokio::io::sink()`, so what is measured is the framework's share, not the
/// kernel's copy). `Payload` is sliced out of the frame and spliced into the write;
/// `ByteBuf` is copied both times.
fn payload(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut g = c.benchmark_group("payload");
    for (name, len) in [
        ("16 KiB", 16 * 1024),
        ("64 KiB", 64 * 1024),
        ("1 MiB", 1024 * 1024),
    ] {
        g.throughput(Throughput::Bytes(len as u64));
        let data = vec![7u8; len];

        let mut frame = BytesMut::new();
        encode_frame(&mut frame, &request_header(1), MAX, |dst| {
            Bincode.encode(&(Payload::from(data.clone()),), dst)
        })
        .expect("encode");
        // Without its length prefix, as the frame decoder hands it out.
        let (_, body) = decode_frame(frame.freeze().slice(4..)).expect("header");
        g.bench_function(
            format!("decode {name}: Payload (a slice of the frame)"),
            |b| {
                b.iter(|| {
                    let args: (Payload,) = Bincode.decode_shared(&body).expect("args");
                    black_box(args)
                })
            },
        );
        g.bench_function(format!("decode {name}: ByteBuf (a copy)"), |b| {
            b.iter(|| {
                let args: (ByteBuf,) = Bincode.decode_shared(&body).expect("args");
                black_box(args)
            })
        });

        let queue_and_write =
            |value: &dyn Fn(&mut BytesMut) -> Result<(), rpc::protocol::codec::CodecError>| {
                let queue = WriteQueue::new(MAX, usize::MAX);
                let header = Header::Response {
                    id: 1,
                    status: Status::Ok,
                };
                queue.push(&header, value).expect("push");
                queue.close();
                rt.block_on(queue.run(tokio::io::sink())).expect("written");
            };
        let payload = Payload::from(data.clone());
        g.bench_function(format!("queue and write {name}: Payload (spliced)"), |b| {
            b.iter(|| queue_and_write(&|dst| Bincode.encode(&payload, dst)))
        });
        let buf = ByteBuf::from(data);
        g.bench_function(format!("queue and write {name}: ByteBuf (copied)"), |b| {
            b.iter(|| queue_and_write(&|dst| Bincode.encode(&buf, dst)))
        });
    }
    g.finish();
}

fn dispatch(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = rt.block_on(async {
        let (server, connector) = rpc::Server::builder().serve(Impl.into_service()).memory();
        tokio::spawn(server.run());
        let stream = connector.connect().await.expect("memory connect");
        let client = rpc::Client::builder()
            .connect_transport(stream)
            .await
            .expect("client");
        BenchClient::new(client)
    });
    let mut g = c.benchmark_group("dispatch (in-memory transport, one thread)");
    g.throughput(Throughput::Elements(1));
    g.bench_function("add, 1 in flight", |b| {
        b.iter(|| rt.block_on(async { client.add(1, 2).await.expect("add") }))
    });
    g.throughput(Throughput::Elements(128));
    g.bench_function("echo 32 B, 128 in flight", |b| {
        b.iter(|| {
            rt.block_on(async {
                let calls = (0..128u8).map(|i| client.echo(ByteBuf::from(vec![i; 32])));
                let replies = futures::future::join_all(calls).await;
                for (i, r) in replies.into_iter().enumerate() {
                    assert_eq!(r.expect("echo")[0], i as u8);
                }
            })
        })
    });
    g.finish();
}

criterion_group!(benches, codec, payload, dispatch);
criterion_main!(benches);
