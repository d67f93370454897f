//! Benchmarks of the `rpc` framework against tarpc and a hand-written floor.
//!
//! The binary (`src/main.rs`) is an orchestrator that re-executes itself as separate server
//! and client processes; this library holds the three systems, the workloads and the
//! process plumbing, so the criterion micro-benchmarks (`benches/micro.rs`) can share them.

pub mod alloc;
pub mod balanced;
pub mod floor;
pub mod load;
pub mod mem;
pub mod orchestrate;
pub mod proc_stat;
pub mod rpc_sys;
pub mod tarpc_sys;

use std::future::Future;
use std::net::SocketAddr;

/// The systems under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    /// This project, through its public API (generated stub and server).
    Rpc,
    /// tarpc 0.38, bincode serde transport over TCP.
    Tarpc,
    /// Hand-written tokio + LengthDelimitedCodec, no serialization.
    Floor,
    /// This project over TLS (rustls, ring), to compare with `Rpc`: the same service and
    /// client, with `ServerBuilder::tls` and `ClientBuilder::tls`. Measured for `pipe` and
    /// `bulk` only.
    RpcTls,
    /// This project with `rpc::Payload` for the bytes (`echo_payload`, and the `Streams`
    /// service's `*_payload` methods): the same server as `Rpc`, the type made for bulk
    /// bytes, decoded as slices of the received frames and written from its own memory.
    /// Measured for `bulk` and the 64 KiB streams only.
    RpcPayload,
}

impl System {
    /// All systems, in table order.
    pub const ALL: [System; 5] = [
        System::Rpc,
        System::Tarpc,
        System::Floor,
        System::RpcTls,
        System::RpcPayload,
    ];

    /// The name used on the command line and in tables.
    pub fn name(self) -> &'static str {
        match self {
            System::Rpc => "rpc",
            System::Tarpc => "tarpc",
            System::Floor => "floor",
            System::RpcTls => "rpc-tls",
            System::RpcPayload => "rpc-payload",
        }
    }

    /// Parses a name from [`System::name`].
    pub fn parse(s: &str) -> Option<System> {
        System::ALL.into_iter().find(|sys| sys.name() == s)
    }

    /// Whether the system runs `workload`: all of them run every workload but these:
    /// tarpc and `rpc-tls` have no streams (`rpc-tls` is measured for `pipe` and `bulk`),
    /// and `rpc-payload` is measured where bytes dominate (`bulk`, 64 KiB streams).
    pub fn runs(self, workload: load::Workload) -> bool {
        use load::Workload as W;
        match self {
            System::Rpc | System::Floor => true,
            System::Tarpc => workload.stream().is_none(),
            System::RpcTls => matches!(workload, W::Pipe | W::Bulk),
            System::RpcPayload => matches!(workload, W::Bulk | W::StreamDown | W::StreamUp),
        }
    }
}

/// The client side of one connection, as each system exposes it. Clones share the
/// connection.
pub trait BenchConn: Clone + Send + Sync + 'static {
    /// The reply type of `echo`.
    type Buf: AsRef<[u8]> + Send;

    /// Opens one connection.
    fn connect(addr: SocketAddr) -> impl Future<Output = Result<Self, String>> + Send;

    /// `add(a, b) -> a + b` (wrapping).
    fn add(&self, a: u64, b: u64) -> impl Future<Output = Result<u64, String>> + Send;

    /// `echo(data) -> data`.
    fn echo(&self, data: Vec<u8>) -> impl Future<Output = Result<Self::Buf, String>> + Send;

    /// `hold(ms) -> ms`: the server replies after `ms` milliseconds (memory tests).
    fn hold(&self, ms: u64) -> impl Future<Output = Result<u64, String>> + Send;
}

/// What the receiver of a client stream counted, returned when the stream ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Uploaded {
    /// Items received.
    pub items: u64,
    /// Payload bytes received.
    pub bytes: u64,
    /// Items that were not the expected next item ([`load::item_ok`]).
    pub wrong: u64,
}

/// Streams inside one connection, as each system that has them exposes them. Clones share
/// the connection.
///
/// Items are `size` bytes: item `n` (from 0) carries `n` in its first 8 bytes
/// (little-endian) and [`load::payload`]'s bytes after them, so both ends check every item.
pub trait BenchStreams: Clone + Send + Sync + 'static {
    /// A received item.
    type Item: AsRef<[u8]> + Send;
    /// A server stream as the client reads it.
    type Items: futures::Stream<Item = Result<Self::Item, String>> + Send + Unpin + 'static;

    /// Opens one connection.
    fn connect(addr: SocketAddr) -> impl Future<Output = Result<Self, String>> + Send;

    /// Asks for an endless server stream of `size`-byte items; dropping it cancels it.
    fn download(&self, size: usize) -> impl Future<Output = Result<Self::Items, String>> + Send;

    /// Sends `items` as a client stream until it ends; the server checks and counts them and
    /// answers with its count.
    fn upload<S>(&self, items: S) -> impl Future<Output = Result<Uploaded, String>> + Send
    where
        S: futures::Stream<Item = Vec<u8>> + Send + 'static;
}

/// The runtime every bench process runs on: tokio's multi-thread runtime with its defaults,
/// as a user of either framework would start it.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Raises the soft open-file limit to the hard limit (10,000 connections need more than the
/// usual 1024). Returns the new soft limit.
pub fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                return want.rlim_cur;
            }
        }
    }
    lim.rlim_cur
}

/// Runs the server of `system` on 127.0.0.1 (port chosen by the OS), prints `PORT <n>` on
/// stdout, and serves until stdin closes. Each line `stat` on stdin is answered with
/// `ALLOCS <n>` (allocations counted so far in this process), each line `calls` with
/// `CALLS <n>` (calls served so far; counted by the `balanced` server only).
///
/// With `balanced` (`--slow-ms N`; `rpc` only), serves the `balanced` workload's service
/// ([`rpc_sys::Balanced`]): it counts calls, and sleeps that long before each reply.
pub fn server_main(system: System, balanced: Option<std::time::Duration>) {
    if balanced.is_some() && system != System::Rpc {
        eprintln!(
            "server {}: --slow-ms is for the rpc system only",
            system.name()
        );
        std::process::exit(2);
    }
    raise_fd_limit();
    std::thread::spawn(|| {
        use std::io::BufRead;
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            let Ok(line) = line else { break };
            match line.trim() {
                "stat" => println!("ALLOCS {}", alloc::count()),
                "calls" => println!("CALLS {}", rpc_sys::served()),
                _ => {}
            }
        }
        // The orchestrator is gone or done with us.
        std::process::exit(0);
    });
    let rt = crate::runtime();
    rt.block_on(async move {
        let result = match system {
            System::Rpc => match balanced {
                Some(slow) => rpc_sys::serve_balanced(slow).await,
                None => rpc_sys::serve().await,
            },
            System::RpcPayload => rpc_sys::serve().await,
            System::RpcTls => rpc_sys::serve_tls().await,
            System::Tarpc => tarpc_sys::serve().await,
            System::Floor => floor::serve().await,
        };
        if let Err(err) = result {
            eprintln!("server {}: {err}", system.name());
            std::process::exit(2);
        }
    });
}

/// Binds 127.0.0.1:0 and announces the port on stdout.
pub async fn bind_and_announce() -> std::io::Result<tokio::net::TcpListener> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("PORT {}", listener.local_addr()?.port());
    Ok(listener)
}
