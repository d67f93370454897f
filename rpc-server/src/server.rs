//! [`Server`]: listeners, the accept loop, the connection cap and shutdown.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rpc_core::health::{HealthStatus, SERVICE as HEALTH};
use rpc_core::reflection::SERVICE as REFLECTION;
use rpc_core::Transport;
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::admission::Overload;
use crate::config::ServerConfig;
use crate::connection;
use crate::health::{Health, HealthService};
use crate::intercept::ServerInterceptor;
use crate::listener::{Accepted, Listener, MemoryConnector, MEMORY_BACKLOG};
use crate::reflection::{Catalog, ReflectionService};
use crate::router::{Router, RunOn};
use crate::service::Service;
use crate::shutdown::Signal;
use crate::stats::{Accounting, Counters};

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
    #[cfg(feature = "tls")]
    tls: Option<crate::tls::ServerTls>,
    /// Server-wide, in the order added.
    interceptors: Vec<Arc<dyn ServerInterceptor>>,
    /// Server-wide tower layers, in the order added (see `ServerBuilder::layer`).
    #[cfg(feature = "tower")]
    pub(crate) layers: Vec<crate::layer::WrapAll>,
}

impl ServerBuilder {
    /// Hosts `service`; call once per service. All of them share every connection.
    ///
    /// Its calls run on their connection's task: each call is polled first right where its
    /// request was read, and most handlers finish in that poll, so a call costs no task, no
    /// timer and no wake-up (the figures in the README's "Performance" section are measured
    /// this way). The price: a handler that blocks its thread or computes for long delays
    /// the other calls of its connection. Host such a service with
    /// [`serve_spawned`](Self::serve_spawned), or move the blocking part to
    /// `tokio::task::spawn_blocking`.
    ///
    /// # Panics
    /// If a method of `service` is already hosted (the same service added twice), or if
    /// `service` calls itself `rpc.Health` or `rpc.Reflection`, the names of the built-in
    /// services.
    pub fn serve<S: Service>(mut self, service: S) -> Self {
        refuse_reserved(&service);
        self.router.add(Arc::new(service), RunOn::Connection);
        self
    }

    /// Hosts `service` like [`serve`](Self::serve), but runs each of its calls as a tokio
    /// task of its own, so a handler that blocks its thread or burns CPU does not stall the
    /// other calls of its connection (on a multi-thread runtime, the others run on another
    /// worker). Each call then costs a task spawn and a wake-up.
    ///
    /// The call is still the connection's: it is aborted when the client cancels it, when its
    /// deadline passes and when the connection closes (an abort takes effect at the
    /// handler's next `.await`; a thread that is blocked stays blocked until it returns). A
    /// panic still reaches the caller as `HandlerPanicked`, and the call counts against
    /// [`ServerConfig::max_in_flight_per_connection`] until it ends.
    ///
    /// # Panics
    /// If a method of `service` is already hosted (the same service added twice), or if
    /// `service` calls itself `rpc.Health` or `rpc.Reflection`, the names of the built-in
    /// services.
    pub fn serve_spawned<S: Service>(mut self, service: S) -> Self {
        refuse_reserved(&service);
        self.router.add(Arc::new(service), RunOn::OwnTask);
        self
    }

    /// Whether to host the built-in `rpc.Reflection` service; see
    /// [`ServerConfig::reflection`].
    pub fn reflection(mut self, enabled: bool) -> Self {
        self.config.reflection = enabled;
        self
    }

    /// Runs `interceptor` before the handler of every call to every service (but the
    /// built-in health service), whether the service was added before or after; several run
    /// in the order added, before a service's own ([`Intercepted`](crate::Intercepted)).
    /// See [`ServerInterceptor`].
    pub fn interceptor(mut self, interceptor: impl ServerInterceptor) -> Self {
        self.interceptors.push(Arc::new(interceptor));
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

    /// See [`ServerConfig::max_streams_per_connection`]; at least 1.
    pub fn max_streams_per_connection(mut self, streams: usize) -> Self {
        self.config.max_streams_per_connection = streams.max(1);
        self
    }

    /// See [`ServerConfig::max_inbound_bytes_per_connection`].
    pub fn max_inbound_bytes_per_connection(mut self, bytes: usize) -> Self {
        self.config.max_inbound_bytes_per_connection = bytes;
        self
    }

    /// See [`ServerConfig::max_inbound_bytes`].
    pub fn max_inbound_bytes(mut self, bytes: usize) -> Self {
        self.config.max_inbound_bytes = bytes;
        self
    }

    /// See [`ServerConfig::max_outbound_bytes`].
    pub fn max_outbound_bytes(mut self, bytes: usize) -> Self {
        self.config.max_outbound_bytes = bytes;
        self
    }

    /// See [`ServerConfig::overload`].
    pub fn overload(mut self, overload: Overload) -> Self {
        self.config.overload = overload;
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

    /// See [`ServerConfig::write_high_water`].
    pub fn write_high_water(mut self, bytes: usize) -> Self {
        self.config.write_high_water = bytes;
        self
    }

    /// See [`ServerConfig::stream_window`]; at least 1 (no window would stall every stream).
    pub fn stream_window(mut self, bytes: usize) -> Self {
        self.config.stream_window = bytes.max(1);
        self
    }

    /// See [`ServerConfig::shutdown_grace`].
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.config.shutdown_grace = grace;
        self
    }

    /// See [`ServerConfig::keepalive_interval`]; `None` sends no pings.
    pub fn keepalive_interval(mut self, interval: Option<Duration>) -> Self {
        self.config.keepalive_interval = interval;
        self
    }

    /// See [`ServerConfig::keepalive_timeout`].
    pub fn keepalive_timeout(mut self, timeout: Duration) -> Self {
        self.config.keepalive_timeout = timeout;
        self
    }

    /// See [`ServerConfig::expose_panic_messages`].
    pub fn expose_panic_messages(mut self, expose: bool) -> Self {
        self.config.expose_panic_messages = expose;
        self
    }

    /// Speaks TLS (or mutual TLS) on every connection the server accepts, from any listener;
    /// a client that does not is dropped with a log line. The handshake runs in the
    /// connection's task, within [`ServerConfig::preamble_timeout`]. Streams given to
    /// [`Server::serve_transport`] are served as they are.
    ///
    /// ```no_run
    /// # async fn demo(svc: impl rpc::Service) -> Result<(), Box<dyn std::error::Error>> {
    /// let tls = rpc::tls::ServerTls::from_pem_files("server.pem", "server.key")?;
    /// let server = rpc::Server::builder().tls(tls).serve(svc).bind("0.0.0.0:7443").await?;
    /// # let _ = server; Ok(()) }
    /// ```
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: crate::tls::ServerTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Listens on a TCP address (`"127.0.0.1:0"` picks a free port; see
    /// [`Server::local_addr`]).
    pub async fn bind(self, addr: impl ToSocketAddrs) -> io::Result<Server> {
        let listener = TcpListener::bind(addr).await?;
        Ok(self.listener(listener))
    }

    /// Listens on a Unix domain socket at `path` (which must not exist yet).
    #[cfg(unix)]
    pub fn bind_unix(self, path: impl AsRef<std::path::Path>) -> io::Result<Server> {
        let listener = tokio::net::UnixListener::bind(path)?;
        Ok(self.unix_listener(listener))
    }

    /// Serves the connections of a TCP listener that is already bound: one handed over by
    /// socket activation, or one a test bound to own its port. The server is the same as
    /// from [`bind`](Self::bind): the same accept loop, connection cap and graceful
    /// shutdown. The listener closes when the server stops.
    ///
    /// ```no_run
    /// # async fn demo(svc: impl rpc::Service) -> std::io::Result<()> {
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// let addr = listener.local_addr()?;
    /// let server = rpc::Server::builder().serve(svc).listener(listener);
    /// tokio::spawn(server.run());
    /// // ... connect to `addr` ...
    /// # let _ = addr; Ok(()) }
    /// ```
    pub fn listener(self, listener: TcpListener) -> Server {
        self.build(Listener::Tcp(listener))
    }

    /// Like [`listener`](Self::listener), for a listener from the standard library (for
    /// example one made from a file descriptor the service manager passed). It is switched to
    /// non-blocking mode here.
    ///
    /// # Errors
    /// If the listener cannot be made non-blocking or registered with the runtime.
    ///
    /// # Panics
    /// Outside a tokio runtime (the listener is registered with the current one).
    pub fn std_listener(self, listener: std::net::TcpListener) -> io::Result<Server> {
        listener.set_nonblocking(true)?;
        Ok(self.listener(TcpListener::from_std(listener)?))
    }

    /// Like [`listener`](Self::listener), for a Unix domain socket listener that is already
    /// bound.
    #[cfg(unix)]
    pub fn unix_listener(self, listener: tokio::net::UnixListener) -> Server {
        self.build(Listener::Unix(listener))
    }

    /// Like [`unix_listener`](Self::unix_listener), for a listener from the standard library.
    /// It is switched to non-blocking mode here.
    ///
    /// # Errors
    /// If the listener cannot be made non-blocking or registered with the runtime.
    ///
    /// # Panics
    /// Outside a tokio runtime (the listener is registered with the current one).
    #[cfg(unix)]
    pub fn std_unix_listener(
        self,
        listener: std::os::unix::net::UnixListener,
    ) -> io::Result<Server> {
        listener.set_nonblocking(true)?;
        Ok(self.unix_listener(tokio::net::UnixListener::from_std(listener)?))
    }

    /// Serves in-memory connections opened with the returned [`MemoryConnector`]; for tests.
    pub fn memory(self) -> (Server, MemoryConnector) {
        let (tx, rx) = mpsc::channel(MEMORY_BACKLOG);
        (self.build(Listener::Memory(rx)), MemoryConnector::new(tx))
    }

    fn build(self, listener: Listener) -> Server {
        let mut router = self.router;
        if router.is_empty() {
            tracing::warn!("server hosts no service: every call will fail with UnknownMethod; add one with .serve(..)");
        }
        // Layers wrap each service once (one stack per service, not per method), so before
        // the interceptors, which wrap each method's route. The first added runs first, so
        // it is wrapped last (outermost); the same for interceptors.
        #[cfg(feature = "tower")]
        for wrap in self.layers.iter().rev() {
            router.wrap_services(wrap);
        }
        for interceptor in self.interceptors.iter().rev() {
            router.intercept_all(interceptor);
        }
        let shutdown = Signal::new();
        let health = Arc::new(Health::new(router.service_names(), shutdown.subscribe()));
        router.add(Arc::new(HealthService(health.clone())), RunOn::Connection);
        let mut config = self.config;
        // One request of any size always fits an idle connection, and the server.
        let one_request = config.max_frame_len.saturating_add(config.stream_window);
        config.max_inbound_bytes_per_connection =
            config.max_inbound_bytes_per_connection.max(one_request);
        config.max_inbound_bytes = config.max_inbound_bytes.max(one_request);
        if config.reflection {
            // It describes every service, itself included: its catalog is set once it is in.
            let catalog = Arc::new(OnceLock::new());
            router.add(
                Arc::new(ReflectionService(catalog.clone())),
                RunOn::Connection,
            );
            let _ = catalog.set(Catalog::new(&router));
        }
        // A cap beyond what a semaphore can count is no cap.
        let slots = Semaphore::new(config.max_connections.min(Semaphore::MAX_PERMITS));
        Server {
            listener,
            shared: Arc::new(Shared {
                router,
                counters: Arc::new(Counters::new(&config)),
                config,
                shutdown,
                health,
                #[cfg(feature = "tls")]
                tls: self.tls,
            }),
            slots: Arc::new(slots),
        }
    }
}

/// Panics if `service` claims the health or reflection service's name (see
/// [`ServerBuilder::serve`]).
fn refuse_reserved<S: Service>(service: &S) {
    let claims = |name: &str| {
        service.name() == name
            || service
                .methods()
                .iter()
                .any(|method| method.service() == name)
    };
    assert!(
        !claims(HEALTH),
        "the service name `{HEALTH}` is reserved: every server hosts the built-in health \
         service under it (see `ServerHandle::set_serving`); name your service otherwise"
    );
    assert!(
        !claims(REFLECTION),
        "the service name `{REFLECTION}` is reserved: servers host the built-in reflection \
         service under it; name your service otherwise"
    );
}

/// What the server and every one of its connections share, built once by the builder.
pub(crate) struct Shared {
    pub(crate) router: Router,
    pub(crate) config: ServerConfig,
    /// Behind their own `Arc`: each connection and call in flight holds a guard on them.
    pub(crate) counters: Arc<Counters>,
    pub(crate) shutdown: Signal,
    /// The health service's flags, shared with [`ServerHandle`].
    pub(crate) health: Arc<Health>,
    /// TLS on every accepted connection.
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<crate::tls::ServerTls>,
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
    shared: Arc<Shared>,
    /// One permit per connection served, from the accept loop or
    /// [`serve_transport`](Server::serve_transport).
    slots: Arc<Semaphore>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr())
            .field("config", &self.shared.config)
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
#[derive(Clone)]
pub struct ServerHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("connections", &self.connections())
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

impl ServerHandle {
    /// Starts a graceful shutdown: stop accepting, tell every client to go away, let calls in
    /// flight finish within the grace period, then close. [`Server::run`] returns when done.
    pub fn shutdown(&self) {
        self.shared.shutdown.trigger();
    }

    /// Connections open right now (including ones still in their handshake).
    pub fn connections(&self) -> usize {
        self.shared.counters.connections()
    }

    /// Calls running right now, across all connections. A call that finishes in its first
    /// poll (most do) is over before anyone could look, and is not counted.
    pub fn in_flight(&self) -> usize {
        self.shared.counters.in_flight()
    }

    /// What the server holds for its clients right now: bytes of requests and client
    /// streams, bytes of replies queued, streams, parked requests (see [`Accounting`]).
    pub fn accounting(&self) -> Accounting {
        self.shared.counters.accounting()
    }

    /// Sets what the built-in health service (`rpc.Health`, see `rpc::health`) answers for
    /// `service`: a hosted service's name, or `""` for the server as a whole (a flag of its
    /// own, not derived from the services'). Every name starts serving. Returns `false`, and
    /// changes nothing, if the server hosts no service of that name.
    ///
    /// From the moment the server starts shutting down every name answers
    /// [`NotServing`](HealthStatus::NotServing), whatever its flag. The flag only changes
    /// what the health check answers: calls to a service marked not serving still run (a
    /// balancing client stops sending them).
    ///
    /// ```no_run
    /// # async fn demo(server: rpc::Server) {
    /// let handle = server.handle();
    /// // Not ready until the cache is warm.
    /// handle.set_serving("", false);
    /// tokio::spawn(server.run());
    /// // ... warm the cache ...
    /// handle.set_serving("", true);
    /// # }
    /// ```
    pub fn set_serving(&self, service: &str, serving: bool) -> bool {
        self.shared.health.set_serving(service, serving)
    }

    /// What the health service answers for `service` right now (see
    /// [`set_serving`](Self::set_serving)): [`Unknown`](HealthStatus::Unknown) for a name
    /// the server does not host.
    pub fn health(&self, service: &str) -> HealthStatus {
        self.shared.health.status(service)
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
            shared: self.shared.clone(),
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
        let stop = self.shared.shutdown.triggered();
        let mut accept_backoff = ACCEPT_BACKOFF_MIN;
        tokio::pin!(signal, stop);
        loop {
            tokio::select! {
                () = &mut signal => break,
                () = &mut stop => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                accepted = self.listener.accept() => match accepted {
                    Ok(stream) => {
                        accept_backoff = ACCEPT_BACKOFF_MIN;
                        let Some(slot) = self.take_slot() else {
                            continue;
                        };
                        let shared = self.shared.clone();
                        connections.spawn(async move {
                            serve_accepted(stream, shared).await;
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
        self.shared.shutdown.trigger();
        let grace = self.shared.config.shutdown_grace;
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

const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Time for connections to flush their last replies after the grace period.
const DRAIN_SLACK: Duration = Duration::from_secs(1);

async fn serve_accepted(stream: Accepted, shared: Arc<Shared>) {
    #[cfg(feature = "tls")]
    if let Some(tls) = shared.tls.clone() {
        return match stream {
            Accepted::Tcp(s) => serve_tls(s, &tls, shared).await,
            #[cfg(unix)]
            Accepted::Unix(s) => serve_tls(s, &tls, shared).await,
            Accepted::Memory(s) => serve_tls(s, &tls, shared).await,
        };
    }
    match stream {
        Accepted::Tcp(s) => connection::serve(s, shared).await,
        #[cfg(unix)]
        Accepted::Unix(s) => connection::serve(s, shared).await,
        Accepted::Memory(s) => connection::serve(s, shared).await,
    }
}

/// The TLS handshake (in this connection's task, under the preamble timeout), then the
/// connection.
#[cfg(feature = "tls")]
async fn serve_tls<T: Transport>(stream: T, tls: &crate::tls::ServerTls, shared: Arc<Shared>) {
    let peer = stream.peer();
    let limit = shared.config.preamble_timeout;
    if let Some(stream) = tls.accept(stream, &peer, limit).await {
        connection::serve(stream, shared).await;
    }
}

impl Server {
    /// A connection slot, or `None` (logged) at [`ServerConfig::max_connections`].
    fn take_slot(&self) -> Option<OwnedSemaphorePermit> {
        let slot = self.slots.clone().try_acquire_owned().ok();
        if slot.is_none() {
            tracing::warn!(
                limit = self.shared.config.max_connections,
                "refusing connection: max_connections reached; existing connections are unaffected"
            );
        }
        slot
    }

    /// Serves one already-connected stream with this server's services and limits, outside
    /// the accept loop: for a stream your own code accepted and wrapped (in TLS, say), when
    /// the server is not [`run`](Server::run) at all. Call it once per stream, concurrently.
    ///
    /// The stream counts against [`ServerConfig::max_connections`] like an accepted one:
    /// beyond the cap it is dropped at once (with a log line). It follows
    /// [`ServerHandle::shutdown`] like one too: the client is told to go away, calls in
    /// flight get [`ServerConfig::shutdown_grace`] to finish, then the connection closes and
    /// this returns.
    pub async fn serve_transport<T: Transport>(&self, stream: T) {
        let Some(_slot) = self.take_slot() else {
            return;
        };
        let serve = connection::serve(stream, self.shared.clone());
        let stop = self.shared.shutdown.triggered();
        let grace = self.shared.config.shutdown_grace + DRAIN_SLACK;
        tokio::select! {
            () = serve => {}
            () = async {
                stop.await;
                tokio::time::sleep(grace).await;
            } => {
                tracing::warn!("connection still open after the shutdown grace period; closing it");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setter_reaches_the_config() {
        let builder = Server::builder()
            .max_frame_len(1)
            .max_in_flight_per_connection(2)
            .max_connections(3)
            .preamble_timeout(Duration::from_secs(4))
            .idle_timeout(Some(Duration::from_secs(5)))
            .max_metadata_len(6)
            .write_high_water(7)
            .stream_window(8)
            .shutdown_grace(Duration::from_secs(9))
            .keepalive_interval(Some(Duration::from_secs(10)))
            .keepalive_timeout(Duration::from_secs(11))
            .max_streams_per_connection(12)
            .max_inbound_bytes_per_connection(13)
            .max_inbound_bytes(14)
            .max_outbound_bytes(15)
            .overload(Overload::Shed)
            .reflection(false)
            .expose_panic_messages(true);
        // Destructured without `..`: a new field fails to compile here until it has a setter
        // and a line in this test.
        let ServerConfig {
            max_frame_len,
            max_in_flight_per_connection,
            max_connections,
            preamble_timeout,
            idle_timeout,
            max_metadata_len,
            write_high_water,
            stream_window,
            shutdown_grace,
            keepalive_interval,
            keepalive_timeout,
            max_streams_per_connection,
            max_inbound_bytes_per_connection,
            max_inbound_bytes,
            max_outbound_bytes,
            overload,
            reflection,
            expose_panic_messages,
        } = builder.config;
        assert_eq!(
            (max_frame_len, max_in_flight_per_connection, max_connections),
            (1, 2, 3)
        );
        assert_eq!(preamble_timeout, Duration::from_secs(4));
        assert_eq!(idle_timeout, Some(Duration::from_secs(5)));
        assert_eq!(
            (max_metadata_len, write_high_water, stream_window),
            (6, 7, 8)
        );
        assert_eq!(shutdown_grace, Duration::from_secs(9));
        assert_eq!(
            (keepalive_interval, keepalive_timeout),
            (Some(Duration::from_secs(10)), Duration::from_secs(11))
        );
        assert_eq!(
            (
                max_streams_per_connection,
                max_inbound_bytes_per_connection,
                max_inbound_bytes,
                max_outbound_bytes
            ),
            (12, 13, 14, 15)
        );
        assert_eq!(overload, Overload::Shed);
        assert!(!reflection && ServerConfig::default().reflection);
        assert!(expose_panic_messages);
    }
}
