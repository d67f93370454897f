//! `rpc`: this project, through the API a user writes against.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_bytes::ByteBuf;

use crate::BenchConn;

/// The benchmark service. `echo` takes `serde_bytes::ByteBuf`, serde's byte-buffer fast
/// path (`Vec<u8>` would go through the sequence path one byte at a time).
#[rpc::service]
pub trait Bench {
    /// `a + b`, wrapping.
    async fn add(&self, a: u64, b: u64) -> u64;
    /// Returns `data`.
    async fn echo(&self, data: ByteBuf) -> ByteBuf;
    /// Replies `ms` after `ms` milliseconds (memory tests only).
    async fn hold(&self, ms: u64) -> u64;
}

/// The implementation.
#[derive(Debug, Clone, Copy)]
pub struct Impl;

impl Bench for Impl {
    async fn add(&self, a: u64, b: u64) -> u64 {
        a.wrapping_add(b)
    }
    async fn echo(&self, data: ByteBuf) -> ByteBuf {
        data
    }
    async fn hold(&self, ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }
}

/// The server a user would write. `max_connections` is raised for the 10,000-connection
/// memory test; everything else is the default configuration.
pub async fn serve() -> Result<(), String> {
    let server = rpc::Server::builder()
        .max_connections(30_000)
        .serve(Impl.into_service())
        .bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = server.local_addr().ok_or("no tcp address")?;
    println!("PORT {}", addr.port());
    server.run().await;
    Ok(())
}

/// Calls served by this process's [`Balanced`] server (the orchestrator asks for it with a
/// `calls` line on stdin).
static SERVED: AtomicU64 = AtomicU64::new(0);

/// Calls this process's [`Balanced`] server has answered so far.
pub fn served() -> u64 {
    SERVED.load(Ordering::Relaxed)
}

/// The implementation behind the `balanced` workload's servers: [`Impl`], plus a count of
/// calls served (to see how a client spread its calls) and, on the slow server, a sleep
/// before every `add` and `echo` reply. A separate type so the other workloads' server
/// keeps its plain handlers.
#[derive(Debug, Clone, Copy)]
pub struct Balanced {
    /// How long each `add` and `echo` call sleeps before replying (zero: not at all).
    pub slow: Duration,
}

impl Balanced {
    async fn served(&self) {
        SERVED.fetch_add(1, Ordering::Relaxed);
        if !self.slow.is_zero() {
            tokio::time::sleep(self.slow).await;
        }
    }
}

impl Bench for Balanced {
    async fn add(&self, a: u64, b: u64) -> u64 {
        self.served().await;
        a.wrapping_add(b)
    }
    async fn echo(&self, data: ByteBuf) -> ByteBuf {
        self.served().await;
        data
    }
    async fn hold(&self, ms: u64) -> u64 {
        Impl.hold(ms).await
    }
}

/// The `balanced` workload's server: [`Balanced`] with `slow`, otherwise as [`serve`].
pub async fn serve_balanced(slow: Duration) -> Result<(), String> {
    let server = rpc::Server::builder()
        .serve(Balanced { slow }.into_service())
        .bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = server.local_addr().ok_or("no tcp address")?;
    println!("PORT {}", addr.port());
    server.run().await;
    Ok(())
}

impl BenchConn for BenchClient {
    type Buf = ByteBuf;

    async fn connect(addr: SocketAddr) -> Result<Self, String> {
        BenchClient::connect(addr).await.map_err(|e| e.to_string())
    }

    async fn add(&self, a: u64, b: u64) -> Result<u64, String> {
        BenchClient::add(self, a, b)
            .await
            .map_err(|e| e.to_string())
    }

    async fn echo(&self, data: Vec<u8>) -> Result<ByteBuf, String> {
        BenchClient::echo(self, ByteBuf::from(data))
            .await
            .map_err(|e| e.to_string())
    }

    async fn hold(&self, ms: u64) -> Result<u64, String> {
        BenchClient::hold(self, ms).await.map_err(|e| e.to_string())
    }
}
