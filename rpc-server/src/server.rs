//! [`Server`]: listeners, the accept loop, the connection cap and shutdown.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rpc_core::Transport;
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;

use crate::config::ServerConfig;
use crate::connection;
use crate::listener::{Accepted, Listener, MemoryConnector, MEMORY_BACKLOG};
use crate::router::Router;
use crate::service::Service;
use crate::stats::Counters;

/// Configures a [`Server`]: which services it hosts and its limits.
///
/// ```no_run
/// # async fn demo(svc: impl rpc::Service) -> std::io::Result<()> {
/// let server = rpc::Server::builder()
///     .serve(svc)
///     .bind("127.0.0.1:0")
///     .await?;
/// println!("listening on {:?}", server.local_addr());
/// server.run().await;
/// # Ok(()) }
/// ```
#[derive(Default)]
pub struct ServerBuilder {
    router: Router,
    config: ServerConfig,
}

impl ServerBuilder {
    /// Hosts `service`; call once per service. All of them share every connection.
    ///
    /// # Panics
    /// If a method of `service` is already hosted (the same service added twice).
    pub fn serve<S: Service>(mut self, service: S) -> Self {
        self.router.add(Arc::new(service));
        self
    }

    /// Replaces all limits at once.
    pub fn config(mut self, config: ServerConfig) -> Self {
        self.config = config;
        self
    }

    /// See [`ServerConfig::max_frame_len`].
    pub fn max_frame_len(mut self, bytes: usize) -> Self {
        self.config.max_frame_len = bytes;
        self
    }

    /// See [`ServerConfig::max_in_flight_per_connection`].
    pub fn max_in_flight_per_connection(mut self, calls: usize) -> Self {
        self.config.max_in_flight_per_connection = calls.max(1);
        self
    }

    /// See [`ServerConfig::max_connections`].
    pub fn max_connections(mut self, connections: usize) -> Self {
        self.config.max_connections = connections;
        self
    }

    /// See [`ServerConfig::preamble_timeout`].
    pub fn preamble_timeout(mut self, timeout: Duration) -> Self {
        self.config.preamble_timeout = timeout;
        self
    }

    /// See [`ServerConfig::idle_timeout`].
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config.idle_timeout = timeout;
        self
    }

    /// See [`ServerConfig::max_metadata_len`].
    pub fn max_metadata_len(mut self, bytes: usize) -> Self {
        self.config.max_metadata_len = bytes;
        self
    }

    /// See [`ServerConfig::shutdown_grace`].
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.config.shutdown_grace = grace;
        self
    }

    /// Listens on a TCP address (`"127.0.0.1:0"` picks a free port; see
    /// [`Server::local_addr`]).
    pub async fn bind(self, addr: impl ToSocketAddrs) -> io::Result<Server> {
        let listener = TcpListener::bind(addr).await?;
        Ok(self.build(Listener::Tcp(listener)))
    }

    /// Listens on a Unix domain socket at `path` (which must not exist yet).
    #[cfg(unix)]
    pub fn bind_unix(self, path: impl AsRef<std::path::Path>) -> io::Result<Server> {
        let listener = tokio::net::UnixListener::bind(path)?;
        Ok(self.build(Listener::Unix(listener)))
    }

    /// Serves in-memory connections opened with the returned [`MemoryConnector`]; for tests.
    pub fn memory(self) -> (Server, MemoryConnector) {
        let (tx, rx) = mpsc::channel(MEMORY_BACKLOG);
        (self.build(Listener::Memory(rx)), MemoryConnector::new(tx))
    }

    fn build(self, listener: Listener) -> Server {
        if self.router.is_empty() {
            tracing::warn!("server hosts no service: every call will fail with UnknownMethod; add one with .serve(..)");
        }
        let (shutdown, _) = watch::channel(false);
        Server {
            listener,
            router: Arc::new(self.router),
            config: Arc::new(self.config),
            shutdown: Arc::new(shutdown),
            counters: Arc::default(),
        }
    }
}

/// A bound server, ready to [`run`](Server::run).
///
/// Dropping the future returned by `run` stops the server at once and aborts every
/// connection and call; [`run_until`](Server::run_until) and [`ServerHandle::shutdown`]
/// stop it gracefully.
///
/// ```no_run
/// # async fn demo(svc: impl rpc::Service) -> Result<(), Box<dyn std::error::Error>> {
/// let server = rpc::Server::builder().serve(svc).bind("127.0.0.1:0").await?;
/// let addr = server.local_addr().ok_or("not on TCP")?;
/// let handle = server.handle();
/// let running = tokio::spawn(server.run());
/// println!("serving on {addr}");
/// // Later, from anywhere: stop gracefully, and wait until every connection has closed.
/// handle.shutdown();
/// running.await?;
/// # Ok(()) }
/// ```
pub struct Server {
    listener: Listener,
    router: Arc<Router>,
    config: Arc<ServerConfig>,
    shutdown: Arc<watch::Sender<bool>>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr())
            .field("config", &self.config)
            .finish()
    }
}

/// Asks a running server to shut down gracefully; cheap to clone.
///
/// ```no_run
/// # async fn demo(server: rpc::Server) {
/// let handle = server.handle();
/// tokio::spawn(async move {
///     let _ = tokio::signal::ctrl_c().await;
///     println!("{} calls in flight; shutting down", handle.in_flight());
///     handle.shutdown();
/// });
/// server.run().await;
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ServerHandle {
    shutdown: Arc<watch::Sender<bool>>,
    counters: Arc<Counters>,
}

impl ServerHandle {
    /// Starts a graceful shutdown: stop accepting, tell every client to go away, let calls in
    /// flight finish within the grace period, then close. [`Server::run`] returns when done.
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Connections open right now (including ones still in their handshake).
    pub fn connections(&self) -> usize {
        self.counters.connections()
    }

    /// Calls running right now, across all connections. A call that finishes in its first
    /// poll (most do) is over before anyone could look, and is not counted.
    pub fn in_flight(&self) -> usize {
        self.counters.in_flight()
    }
}

impl Server {
    /// Starts configuring a server.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// The TCP address the server listens on, if it listens on TCP.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr()
    }

    /// A handle that can shut the server down while it runs.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            shutdown: self.shutdown.clone(),
            counters: self.counters.clone(),
        }
    }

    /// Serves until [`ServerHandle::shutdown`] is called, then shuts down gracefully.
    pub async fn run(self) {
        self.run_until(std::future::pending()).await
    }

    /// Serves until `signal` completes (or [`ServerHandle::shutdown`] is called), then shuts
    /// down gracefully: no new connections, a go-away to every client, calls in flight get
    /// [`ServerConfig::shutdown_grace`] to finish, then every connection closes.
    ///
    /// ```no_run
    /// # async fn demo(server: rpc::Server) {
    /// server.run_until(async { let _ = tokio::signal::ctrl_c().await; }).await;
    /// # }
    /// ```
    pub async fn run_until(mut self, signal: impl Future<Output = ()>) {
        let mut connections = JoinSet::new();
        let slots = Arc::new(Semaphore::new(self.config.max_connections));
        let mut stop = self.shutdown.subscribe();
        let mut accept_backoff = ACCEPT_BACKOFF_MIN;
        tokio::pin!(signal);
        loop {
            tokio::select! {
                () = &mut signal => break,
                () = stopped(&mut stop) => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                accepted = self.listener.accept() => match accepted {
                    Ok(stream) => {
                        accept_backoff = ACCEPT_BACKOFF_MIN;
                        let Ok(slot) = slots.clone().try_acquire_owned() else {
                            tracing::warn!(
                                limit = self.config.max_connections,
                                "refusing connection: max_connections reached; existing connections are unaffected"
                            );
                            continue;
                        };
                        let router = self.router.clone();
                        let config = self.config.clone();
                        let shutdown = self.shutdown.subscribe();
                        let counters = self.counters.clone();
                        connections.spawn(async move {
                            serve_accepted(stream, router, config, shutdown, counters).await;
                            drop(slot);
                        });
                    }
                    Err(err) => {
                        // EMFILE, ENFILE, ECONNABORTED and friends: the listener is fine,
                        // the moment is not. Log, pause, go on.
                        tracing::error!(error = %err, retry_in = ?accept_backoff, "accept failed; retrying");
                        tokio::time::sleep(accept_backoff).await;
                        accept_backoff = (accept_backoff * 2).min(ACCEPT_BACKOFF_MAX);
                    }
                },
            }
        }
        // Graceful part: stop accepting, ask connections to drain, wait for them.
        drop(self.listener);
        self.shutdown.send_replace(true);
        let grace = self.config.shutdown_grace;
        let drained = tokio::time::timeout(grace + DRAIN_SLACK, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                remaining = connections.len(),
                "connections still open after the shutdown grace period; closing them"
            );
        }
        // Dropping the set aborts whatever is left.
    }
}

/// Completes once shutdown is requested (the guard `wait_for` returns is not `Send`, so it is
/// dropped here rather than held by the accept loop).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Time for connections to flush their last replies after the grace period.
const DRAIN_SLACK: Duration = Duration::from_secs(1);

async fn serve_accepted(
    stream: Accepted,
    router: Arc<Router>,
    config: Arc<ServerConfig>,
    shutdown: watch::Receiver<bool>,
    counters: Arc<Counters>,
) {
    match stream {
        Accepted::Tcp(s) => connection::serve(s, router, config, shutdown, counters).await,
        #[cfg(unix)]
        Accepted::Unix(s) => connection::serve(s, router, config, shutdown, counters).await,
        Accepted::Memory(s) => connection::serve(s, router, config, shutdown, counters).await,
    }
}

impl Server {
    /// Serves one already-connected stream with this server's services and limits, outside
    /// the accept loop (for example a stream accepted by your own listener).
    pub async fn serve_transport<T: Transport>(&self, stream: T) {
        connection::serve(
            stream,
            self.router.clone(),
            self.config.clone(),
            self.shutdown.subscribe(),
            self.counters.clone(),
        )
        .await
    }
}
