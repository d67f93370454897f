//! `rpc`: this project, through the API a user writes against.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use serde_bytes::ByteBuf;

use crate::load::{item_ok, make_item, payload};
use crate::{BenchConn, BenchStreams, Uploaded};

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
    /// Returns `data`, as `rpc::Payload` (the `rpc-payload` system).
    async fn echo_payload(&self, data: rpc::Payload) -> rpc::Payload;
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
    async fn echo_payload(&self, data: rpc::Payload) -> rpc::Payload {
        data
    }
}

/// The largest stream item [`Streams::download`] makes; a larger `size` is cut to it.
pub const MAX_ITEM: usize = 1 << 20;

/// The stream workloads' service, served next to [`Bench`] by the same server. Items are
/// `serde_bytes::ByteBuf` for the same reason as `echo`'s argument.
#[rpc::service]
pub trait Streams {
    /// An endless stream of `size`-byte items (at least 8, at most [`MAX_ITEM`]); item `n`
    /// is [`make_item`]`(n, ..)`.
    async fn download(&self, size: u64) -> rpc::Stream<ByteBuf>;
    /// Reads a stream of items until it ends, checking that item `n` is
    /// [`make_item`]`(n, ..)`, and answers with what it counted.
    async fn upload(&self, items: rpc::Stream<ByteBuf>) -> Uploaded;
    /// [`download`](Self::download) with `rpc::Payload` items (the `rpc-payload` system).
    async fn download_payload(&self, size: u64) -> rpc::Stream<rpc::Payload>;
    /// [`upload`](Self::upload) with `rpc::Payload` items (the `rpc-payload` system).
    async fn upload_payload(&self, items: rpc::Stream<rpc::Payload>) -> Uploaded;
}

/// The implementation of [`Streams`].
#[derive(Debug, Clone, Copy)]
pub struct StreamsImpl;

impl Streams for StreamsImpl {
    async fn download(&self, size: u64) -> rpc::Stream<ByteBuf> {
        rpc::Stream::new(made_items(size).map(ByteBuf::from))
    }

    async fn upload(&self, items: rpc::Stream<ByteBuf>) -> Uploaded {
        count_items(items).await
    }

    async fn download_payload(&self, size: u64) -> rpc::Stream<rpc::Payload> {
        rpc::Stream::new(made_items(size).map(rpc::Payload::from))
    }

    async fn upload_payload(&self, items: rpc::Stream<rpc::Payload>) -> Uploaded {
        count_items(items).await
    }
}

/// An endless stream of `size`-byte items (cut to 8..=[`MAX_ITEM`]), item `n` being
/// [`make_item`]`(n, ..)`. The API takes each item owned: one buffer and one copy of the
/// payload per item.
fn made_items(size: u64) -> impl futures::Stream<Item = Vec<u8>> + Send + 'static {
    let size = usize::try_from(size).unwrap_or(MAX_ITEM).clamp(8, MAX_ITEM);
    let template = payload(size);
    let mut n = 0;
    futures::stream::repeat_with(move || {
        let item = make_item(n, &template);
        n += 1;
        item
    })
}

/// Reads `items` until it ends, checking item `n` against [`make_item`]`(n, ..)`.
async fn count_items<T: AsRef<[u8]>>(mut items: rpc::Stream<T>) -> Uploaded {
    let mut got = Uploaded::default();
    let mut template = Vec::new();
    while let Some(Ok(item)) = items.next().await {
        let item = item.as_ref();
        if template.len() != item.len() {
            template = payload(item.len());
        }
        if !item_ok(got.items, &template, item) {
            got.wrong += 1;
        }
        got.items += 1;
        got.bytes += item.len() as u64;
    }
    got
}

/// The server a user would write. `max_connections` is raised for the 10,000-connection
/// memory test; everything else is the default configuration.
pub async fn serve() -> Result<(), String> {
    let server = bind().await?;
    let addr = server.local_addr().ok_or("no tcp address")?;
    println!("PORT {}", addr.port());
    server.run().await;
    Ok(())
}

/// [`serve`]'s server, bound to 127.0.0.1 on a port the OS picks: [`Bench`] and
/// [`Streams`], default configuration except `max_connections(30_000)`.
pub async fn bind() -> Result<rpc::Server, String> {
    rpc::Server::builder()
        .max_connections(30_000)
        .serve(Impl.into_service())
        .serve(StreamsImpl.into_service())
        .bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())
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
    async fn echo_payload(&self, data: rpc::Payload) -> rpc::Payload {
        self.served().await;
        data
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

impl BenchStreams for StreamsClient {
    type Item = ByteBuf;
    type Items = futures::stream::Map<
        rpc::Stream<ByteBuf>,
        fn(Result<ByteBuf, rpc::Error>) -> Result<ByteBuf, String>,
    >;

    async fn connect(addr: SocketAddr) -> Result<Self, String> {
        StreamsClient::connect(addr)
            .await
            .map_err(|e| e.to_string())
    }

    async fn download(&self, size: usize) -> Result<Self::Items, String> {
        let items = StreamsClient::download(self, size as u64)
            .no_deadline()
            .await
            .map_err(|e| e.to_string())?;
        let to_string: fn(Result<ByteBuf, rpc::Error>) -> Result<ByteBuf, String> =
            |item| item.map_err(|e| e.to_string());
        Ok(items.map(to_string))
    }

    async fn upload<S>(&self, items: S) -> Result<Uploaded, String>
    where
        S: futures::Stream<Item = Vec<u8>> + Send + 'static,
    {
        StreamsClient::upload(self, rpc::Stream::new(items.map(ByteBuf::from)))
            .no_deadline()
            .await
            .map_err(|e| e.to_string())
    }
}

/// Where the orchestrator leaves the `rpc-tls` system's certificates (`ca.pem`,
/// `server.pem`, `server.key`), for the server and client processes it starts.
pub const TLS_DIR_ENV: &str = "RPC_BENCH_TLS_DIR";

/// Makes a CA and a certificate for `localhost` and 127.0.0.1 in a fresh directory, and
/// points [`TLS_DIR_ENV`] at it for the processes this one starts.
pub fn prepare_tls() -> Result<std::path::PathBuf, String> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let err = |e: rcgen::Error| e.to_string();
    let dir = std::env::temp_dir().join(format!("rpc-bench-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "rpc-bench CA");
    let ca_key = KeyPair::generate().map_err(err)?;
    let ca_cert = ca.self_signed(&ca_key).map_err(err)?;
    let leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .map_err(err)?;
    let key = KeyPair::generate().map_err(err)?;
    let cert = leaf.signed_by(&key, &ca_cert, &ca_key).map_err(err)?;
    for (name, pem) in [
        ("ca.pem", ca_cert.pem()),
        ("server.pem", cert.pem()),
        ("server.key", key.serialize_pem()),
    ] {
        std::fs::write(dir.join(name), pem).map_err(|e| e.to_string())?;
    }
    std::env::set_var(TLS_DIR_ENV, &dir);
    Ok(dir)
}

fn tls_file(name: &str) -> Result<std::path::PathBuf, String> {
    let dir = std::env::var_os(TLS_DIR_ENV)
        .ok_or_else(|| format!("{TLS_DIR_ENV} is not set (the orchestrator sets it)"))?;
    Ok(std::path::Path::new(&dir).join(name))
}

/// [`serve`] over TLS.
pub async fn serve_tls() -> Result<(), String> {
    let tls = rpc::tls::ServerTls::from_pem_files(tls_file("server.pem")?, tls_file("server.key")?)
        .map_err(|e| e.to_string())?;
    let server = rpc::Server::builder()
        .max_connections(30_000)
        .tls(tls)
        .serve(Impl.into_service())
        .bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = server.local_addr().ok_or("no tcp address")?;
    println!("PORT {}", addr.port());
    server.run().await;
    Ok(())
}

/// [`BenchClient`] over TLS.
#[derive(Clone)]
pub struct TlsBenchClient(BenchClient);

/// The client's TLS settings, read once per process.
fn client_tls() -> Result<rpc::tls::ClientTls, String> {
    static TLS: std::sync::OnceLock<Result<rpc::tls::ClientTls, String>> =
        std::sync::OnceLock::new();
    TLS.get_or_init(|| {
        rpc::tls::ClientTls::from_pem_file(tls_file("ca.pem")?).map_err(|e| e.to_string())
    })
    .clone()
}

impl BenchConn for TlsBenchClient {
    type Buf = ByteBuf;

    async fn connect(addr: SocketAddr) -> Result<Self, String> {
        let client = rpc::Client::builder()
            .tls(client_tls()?)
            .connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        Ok(TlsBenchClient(BenchClient::new(client)))
    }

    async fn add(&self, a: u64, b: u64) -> Result<u64, String> {
        BenchConn::add(&self.0, a, b).await
    }

    async fn echo(&self, data: Vec<u8>) -> Result<ByteBuf, String> {
        BenchConn::echo(&self.0, data).await
    }

    async fn hold(&self, ms: u64) -> Result<u64, String> {
        BenchConn::hold(&self.0, ms).await
    }
}

/// The `rpc-payload` system's unary client: [`BenchClient`], with `echo` through
/// `echo_payload`.
#[derive(Clone)]
pub struct PayloadBenchClient(BenchClient);

impl BenchConn for PayloadBenchClient {
    type Buf = rpc::Payload;

    async fn connect(addr: SocketAddr) -> Result<Self, String> {
        <BenchClient as BenchConn>::connect(addr)
            .await
            .map(PayloadBenchClient)
    }

    async fn add(&self, a: u64, b: u64) -> Result<u64, String> {
        BenchConn::add(&self.0, a, b).await
    }

    async fn echo(&self, data: Vec<u8>) -> Result<rpc::Payload, String> {
        self.0
            .echo_payload(rpc::Payload::from(data))
            .await
            .map_err(|e| e.to_string())
    }

    async fn hold(&self, ms: u64) -> Result<u64, String> {
        BenchConn::hold(&self.0, ms).await
    }
}

/// The `rpc-payload` system's stream client: [`StreamsClient`], with `rpc::Payload` items.
#[derive(Clone)]
pub struct PayloadStreamsClient(StreamsClient);

impl BenchStreams for PayloadStreamsClient {
    type Item = rpc::Payload;
    type Items = futures::stream::Map<
        rpc::Stream<rpc::Payload>,
        fn(Result<rpc::Payload, rpc::Error>) -> Result<rpc::Payload, String>,
    >;

    async fn connect(addr: SocketAddr) -> Result<Self, String> {
        <StreamsClient as BenchStreams>::connect(addr)
            .await
            .map(PayloadStreamsClient)
    }

    async fn download(&self, size: usize) -> Result<Self::Items, String> {
        let items = self
            .0
            .download_payload(size as u64)
            .no_deadline()
            .await
            .map_err(|e| e.to_string())?;
        let to_string: fn(Result<rpc::Payload, rpc::Error>) -> Result<rpc::Payload, String> =
            |item| item.map_err(|e| e.to_string());
        Ok(items.map(to_string))
    }

    async fn upload<S>(&self, items: S) -> Result<Uploaded, String>
    where
        S: futures::Stream<Item = Vec<u8>> + Send + 'static,
    {
        self.0
            .upload_payload(rpc::Stream::new(items.map(rpc::Payload::from)))
            .no_deadline()
            .await
            .map_err(|e| e.to_string())
    }
}
