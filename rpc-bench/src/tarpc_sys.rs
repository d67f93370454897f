//! `tarpc` 0.38 with its bincode serde transport over TCP (TCP_NODELAY set on both ends, as
//! for the other systems), default client and server configuration.

use std::net::SocketAddr;
use std::time::Duration;

use futures::prelude::*;
use serde_bytes::ByteBuf;
use tarpc::server::{BaseChannel, Channel};
use tarpc::tokio_serde::formats::Bincode;
use tarpc::tokio_util::codec::{Framed, LengthDelimitedCodec};
use tarpc::{client, context};
use tokio::net::TcpStream;

use crate::BenchConn;

/// The same service, in tarpc's dialect. `echo` uses `serde_bytes::ByteBuf` here too.
#[tarpc::service]
pub trait TBench {
    /// `a + b`, wrapping.
    async fn add(a: u64, b: u64) -> u64;
    /// Returns `data`.
    async fn echo(data: ByteBuf) -> ByteBuf;
    /// Replies `ms` after `ms` milliseconds (memory tests only).
    async fn hold(ms: u64) -> u64;
}

/// The implementation.
#[derive(Debug, Clone, Copy)]
pub struct Impl;

impl TBench for Impl {
    async fn add(self, _: context::Context, a: u64, b: u64) -> u64 {
        a.wrapping_add(b)
    }
    async fn echo(self, _: context::Context, data: ByteBuf) -> ByteBuf {
        data
    }
    async fn hold(self, _: context::Context, ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }
}

async fn spawn(fut: impl Future<Output = ()> + Send + 'static) {
    tokio::spawn(fut);
}

/// Accepts connections and serves each with a `BaseChannel` whose requests run as tasks.
pub async fn serve() -> Result<(), String> {
    let listener = crate::bind_and_announce()
        .await
        .map_err(|e| e.to_string())?;
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                eprintln!("tarpc accept: {err}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let transport = tarpc::serde_transport::new(
            Framed::new(stream, LengthDelimitedCodec::new()),
            Bincode::default(),
        );
        tokio::spawn(
            BaseChannel::with_defaults(transport)
                .execute(Impl.serve())
                .for_each(spawn),
        );
    }
}

impl BenchConn for TBenchClient {
    type Buf = ByteBuf;

    async fn connect(addr: SocketAddr) -> Result<Self, String> {
        let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let transport = tarpc::serde_transport::new(
            Framed::new(stream, LengthDelimitedCodec::new()),
            Bincode::default(),
        );
        Ok(TBenchClient::new(client::Config::default(), transport).spawn())
    }

    async fn add(&self, a: u64, b: u64) -> Result<u64, String> {
        TBenchClient::add(self, context::current(), a, b)
            .await
            .map_err(|e| e.to_string())
    }

    async fn echo(&self, data: Vec<u8>) -> Result<ByteBuf, String> {
        TBenchClient::echo(self, context::current(), ByteBuf::from(data))
            .await
            .map_err(|e| e.to_string())
    }

    async fn hold(&self, ms: u64) -> Result<u64, String> {
        TBenchClient::hold(self, context::current(), ms)
            .await
            .map_err(|e| e.to_string())
    }
}
