//! [`Client`]: one logical connection to a server, shared by every clone and every stub
//! built on it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use rpc_core::stream::Stream as RpcStream;
use rpc_core::{Error, Method, Transport};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::balance::Balancer;
use crate::call::Call;
use crate::channel::{start_transport, Channel};
use crate::config::ClientConfig;
use crate::connection::Connection;
use crate::discover::Change;
use crate::endpoint::Endpoint;
use crate::intercept::{ClientInterceptor, Slot};
use crate::retry::RetryBudget;

/// A connection to a server, multiplexing any number of concurrent calls.
///
/// Cheap to clone: clones share the connection. Generated stubs (`CalculatorClient`) wrap
/// one; several stubs can share one `Client` to reach several services over one connection.
///
/// When the connection breaks, calls waiting on it fail at once with
/// [`Error::ConnectionClosed`]. The next call dials again; if that fails, calls fail fast
/// with the dial error until a backoff (doubling, with jitter; see [`ClientConfig`]) allows
/// another attempt. No call is ever retried behind the caller's back, with one exception
/// that is always safe: a call the server refused unrun because it is shutting down is sent
/// again on a fresh connection.
///
/// ```no_run
/// #[rpc::service]
/// pub trait Greeter {
///     async fn hello(&self, name: String) -> String;
/// }
///
/// # async fn demo() -> Result<(), rpc::Error> {
/// let client = rpc::Client::connect("127.0.0.1:7000").await?;
/// // A stub per service; every stub built on `client` (or a clone) shares its connection.
/// let greeter = GreeterClient::new(client.clone());
/// match greeter.hello("World".into()).await {
///     Ok(reply) => println!("{reply}"),
///     Err(err) => eprintln!("hello failed: {err}"),
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    config: ClientConfig,
    /// Runs before every call; health checks of a balanced client skip it.
    interceptor: Option<Arc<dyn ClientInterceptor>>,
    route: Route,
    budget: RetryBudget,
    /// Attempts beyond each call's first, since the client was made.
    retries: AtomicU64,
    /// Room for calls made through `Client::tower` services, made by the first of them.
    #[cfg(feature = "tower")]
    pub(crate) tower_permits: std::sync::OnceLock<Arc<tokio::sync::Semaphore>>,
}

/// Where calls go: one endpoint, or a balanced set.
enum Route {
    /// Shared only by a balancer's health check of that endpoint.
    One(Arc<Channel>),
    Balanced(Balancer),
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut f = f.debug_struct("Client");
        match &self.inner.route {
            Route::One(channel) => f.field("endpoint", &channel.endpoint()),
            Route::Balanced(balancer) => f.field("endpoints", &balancer.endpoints()),
        }
        .field("connected", &self.is_connected())
        .finish()
    }
}

/// Configures a [`Client`] before connecting.
///
/// ```no_run
/// # async fn demo() -> Result<(), rpc::Error> {
/// use std::time::Duration;
/// let client = rpc::Client::builder()
///     .default_timeout(Some(Duration::from_secs(2)))
///     .connect("127.0.0.1:7000")
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct ClientBuilder {
    config: ClientConfig,
    interceptor: Slot,
}

impl ClientBuilder {
    /// Replaces all settings at once.
    pub fn config(mut self, config: ClientConfig) -> Self {
        self.config = config;
        self
    }

    /// See [`ClientConfig::default_timeout`].
    pub fn default_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config.default_timeout = timeout;
        self
    }

    /// See [`ClientConfig::max_in_flight`].
    pub fn max_in_flight(mut self, calls: usize) -> Self {
        self.config.max_in_flight = calls.max(1);
        self
    }

    /// See [`ClientConfig::max_frame_len`].
    pub fn max_frame_len(mut self, bytes: usize) -> Self {
        self.config.max_frame_len = bytes;
        self
    }

    /// See [`ClientConfig::connect_timeout`].
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// See [`ClientConfig::write_high_water`].
    pub fn write_high_water(mut self, bytes: usize) -> Self {
        self.config.write_high_water = bytes;
        self
    }

    /// See [`ClientConfig::stream_window`].
    pub fn stream_window(mut self, bytes: usize) -> Self {
        self.config.stream_window = bytes;
        self
    }

    /// See [`ClientConfig::reconnect_backoff_min`] and [`ClientConfig::reconnect_backoff_max`].
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.config.reconnect_backoff_min = min;
        self.config.reconnect_backoff_max = max.max(min);
        self
    }

    /// See [`ClientConfig::max_attempts`].
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.config.max_attempts = attempts.max(1);
        self
    }

    /// See [`ClientConfig::retry_ratio`] and [`ClientConfig::retry_min_per_sec`].
    pub fn retry_budget(mut self, ratio: f64, min_per_sec: u32) -> Self {
        self.config.retry_ratio = ratio;
        self.config.retry_min_per_sec = min_per_sec;
        self
    }

    /// See [`ClientConfig::health_check_interval`].
    pub fn health_check_interval(mut self, every: Option<Duration>) -> Self {
        self.config.health_check_interval = every;
        self
    }

    /// See [`ClientConfig::lazy_connect`].
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), rpc_core::Error> {
    /// // Succeeds even if nothing listens yet; the first call dials.
    /// let client = rpc_client::Client::builder()
    ///     .lazy_connect(true)
    ///     .connect(("localhost", 7000))
    ///     .await?;
    /// assert!(!client.is_connected());
    /// # Ok(()) }
    /// ```
    pub fn lazy_connect(mut self, lazy: bool) -> Self {
        self.config.lazy_connect = lazy;
        self
    }

    /// See [`ClientConfig::keepalive_interval`]; `None` sends no pings.
    pub fn keepalive_interval(mut self, interval: Option<Duration>) -> Self {
        self.config.keepalive_interval = interval;
        self
    }

    /// See [`ClientConfig::keepalive_timeout`].
    pub fn keepalive_timeout(mut self, timeout: Duration) -> Self {
        self.config.keepalive_timeout = timeout;
        self
    }

    /// See [`ClientConfig::tls`]: TLS on every connection this client dials.
    ///
    /// ```no_run
    /// # async fn demo(ca_pem: &[u8]) -> Result<(), Box<dyn std::error::Error>> {
    /// let tls = rpc::tls::ClientTls::from_pem(ca_pem)?;
    /// let client = rpc::Client::builder().tls(tls).connect("calc.internal:7443").await?;
    /// # let _ = client; Ok(()) }
    /// ```
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: crate::tls::ClientTls) -> Self {
        self.config.tls = Some(tls);
        self
    }

    /// Runs `interceptor` before every call this client makes (see [`ClientInterceptor`]);
    /// replaces any set before.
    pub fn interceptor(mut self, interceptor: impl ClientInterceptor) -> Self {
        self.interceptor = Slot(Some(Arc::new(interceptor)));
        self
    }

    /// Connects to `endpoint`; the client redials it when the connection breaks. With
    /// [`lazy_connect`](Self::lazy_connect), returns at once and the first call dials.
    ///
    /// `endpoint` is anything that converts into an [`Endpoint`]: `"host:port"`,
    /// `("host", port)`, a `SocketAddr`, `"unix:/path"` or a `Path` to a Unix socket.
    pub async fn connect(self, endpoint: impl Into<Endpoint>) -> Result<Client, Error> {
        let endpoint = endpoint.into();
        let channel = if self.config.lazy_connect {
            Channel::new(Some(endpoint), &self.config, None)
        } else {
            Channel::connect(endpoint, &self.config).await?
        };
        Ok(Client::assemble(
            self.config,
            self.interceptor.0,
            Route::One(Arc::new(channel)),
        ))
    }

    /// A client over several endpoints, each call going to the less loaded of two picked
    /// at random (see [`discover`](Self::discover) for endpoints that change). Dials
    /// nothing yet: each endpoint is dialled when first picked, and one that cannot be
    /// dialled is left out (its calls go elsewhere) until its backoff ends.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), rpc::Error> {
    /// let client = rpc::Client::builder().balance(["10.0.0.1:7000", "10.0.0.2:7000"]);
    /// # Ok(()) }
    /// ```
    pub fn balance<E: Into<Endpoint>>(self, endpoints: impl IntoIterator<Item = E>) -> Client {
        let endpoints = endpoints.into_iter().map(Into::into).collect();
        let balancer = Balancer::fixed(endpoints, self.config.clone());
        Client::assemble(self.config, self.interceptor.0, Route::Balanced(balancer))
    }

    /// A client over the endpoints `changes` inserts and removes: [`crate::discover::dns`],
    /// or a stream the application feeds from its own registry. A removed endpoint gets no
    /// new calls and its calls in flight finish. Calls made before the first endpoint
    /// arrives wait for it (within their deadline). Must be called inside a tokio runtime:
    /// the client owns a task that follows `changes`.
    ///
    /// ```no_run
    /// # async fn demo() {
    /// use rpc::discover::Change;
    /// let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    /// let client = rpc::Client::builder()
    ///     .discover(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)));
    /// tx.send(Change::Insert("10.0.0.1:7000".into())).await.expect("client alive");
    /// # let _ = client;
    /// # }
    /// ```
    pub fn discover<S>(self, changes: S) -> Client
    where
        S: Stream<Item = Change> + Send + 'static,
    {
        let balancer = Balancer::discovered(changes, self.config.clone());
        Client::assemble(self.config, self.interceptor.0, Route::Balanced(balancer))
    }

    /// Uses an already-open stream (for example an in-memory pipe). Such a client cannot
    /// redial: once the stream breaks, every call fails.
    pub async fn connect_transport<T: Transport>(self, stream: T) -> Result<Client, Error> {
        let connection = start_transport(stream, &self.config).await?;
        let channel = Channel::new(None, &self.config, Some(connection));
        Ok(Client::assemble(
            self.config,
            self.interceptor.0,
            Route::One(Arc::new(channel)),
        ))
    }
}

impl Client {
    /// Connects with the default settings.
    ///
    /// `endpoint` is a `"host:port"` string (names are resolved), a `SocketAddr`, or
    /// [`Endpoint::unix`].
    pub async fn connect(endpoint: impl Into<Endpoint>) -> Result<Client, Error> {
        ClientBuilder::default().connect(endpoint).await
    }

    /// Starts configuring a client.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// A client that sends every call to one member of a balanced set (its health checks).
    pub(crate) fn pinned(channel: Arc<Channel>, config: ClientConfig) -> Client {
        Client::assemble(config, None, Route::One(channel))
    }

    fn assemble(
        config: ClientConfig,
        interceptor: Option<Arc<dyn ClientInterceptor>>,
        route: Route,
    ) -> Client {
        let budget = RetryBudget::new(config.retry_ratio, config.retry_min_per_sec);
        Client {
            inner: Arc::new(Inner {
                config,
                interceptor,
                route,
                budget,
                retries: AtomicU64::new(0),
                #[cfg(feature = "tower")]
                tower_permits: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Prepares a call to `method` with `args`; await the result to send it.
    ///
    /// Generated stubs call this; use it directly only for services without a stub.
    pub fn call<Args, Out: DeserializeOwned>(&self, method: Method, args: Args) -> Call<Args, Out> {
        Call::unary(self.clone(), method, args)
    }

    /// Prepares a call whose reply is a stream of `T`.
    pub fn call_streaming_response<Args, T>(
        &self,
        method: Method,
        args: Args,
    ) -> Call<Args, RpcStream<T>>
    where
        T: DeserializeOwned + Send + 'static,
    {
        Call::streaming_response(self.clone(), method, args)
    }

    /// Prepares a call that sends `input` as its last argument and gets one value back.
    pub fn call_streaming_request<Args, In, Out>(
        &self,
        method: Method,
        args: Args,
        input: RpcStream<In>,
    ) -> Call<Args, Out>
    where
        In: Serialize + Send + 'static,
        Out: DeserializeOwned,
    {
        Call::streaming_request(self.clone(), method, args, input)
    }

    /// Prepares a call that streams both ways.
    pub fn call_bidi<Args, In, T>(
        &self,
        method: Method,
        args: Args,
        input: RpcStream<In>,
    ) -> Call<Args, RpcStream<T>>
    where
        In: Serialize + Send + 'static,
        T: DeserializeOwned + Send + 'static,
    {
        Call::bidi(self.clone(), method, args, input)
    }

    /// The settings in force.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Where the client connects, if it was connected to one endpoint.
    pub fn endpoint(&self) -> Option<&Endpoint> {
        match &self.inner.route {
            Route::One(channel) => channel.endpoint(),
            Route::Balanced(_) => None,
        }
    }

    /// Attempts this client made beyond each call's first: calls sent again because the
    /// server refused them unrun, or (idempotent methods only) because their connection was
    /// lost before the reply. A metric of how much failing over is going on.
    pub fn retries(&self) -> u64 {
        self.inner.retries.load(Ordering::Relaxed)
    }

    /// Whether a broken connection can be replaced (not for a client built on a transport).
    pub(crate) fn can_redial(&self) -> bool {
        match &self.inner.route {
            Route::One(channel) => channel.endpoint().is_some(),
            Route::Balanced(_) => true,
        }
    }

    /// Counts one attempt beyond a call's first.
    pub(crate) fn count_retry(&self) {
        self.inner.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// The interceptor every call runs first, if any.
    #[inline]
    pub(crate) fn interceptor(&self) -> Option<&Arc<dyn ClientInterceptor>> {
        self.inner.interceptor.as_ref()
    }

    /// The budget that limits retries of calls that may have run.
    pub(crate) fn budget(&self) -> &RetryBudget {
        &self.inner.budget
    }

    /// Every endpoint the client knows now: one, or a balanced client's current set.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        match &self.inner.route {
            Route::One(channel) => channel.endpoint().cloned().into_iter().collect(),
            Route::Balanced(balancer) => balancer.endpoints(),
        }
    }

    /// Whether a connection is up and accepting new calls (false for a lazy client before
    /// its first call; for a balanced client, whether any endpoint's is).
    pub fn is_connected(&self) -> bool {
        self.connections().iter().any(|conn| conn.is_usable())
    }

    /// Calls still waiting for their reply, over every current connection (a diagnostic).
    pub fn in_flight(&self) -> usize {
        self.connections().iter().map(|conn| conn.waiting()).sum()
    }

    /// Streams open on every current connection, both directions together (a diagnostic).
    pub fn open_streams(&self) -> usize {
        self.connections()
            .iter()
            .map(|conn| conn.streams().len())
            .sum()
    }

    /// Dials again now, ignoring any backoff, and routes new calls over the new connection
    /// (every endpoint's, for a balanced client; it succeeds if any does). Calls in flight
    /// on the old connections finish there.
    pub async fn reconnect(&self) -> Result<(), Error> {
        match &self.inner.route {
            Route::One(channel) => channel.reconnect(&self.inner.config).await,
            Route::Balanced(balancer) => balancer.reconnect().await,
        }
    }

    /// The current connection of every endpoint.
    fn connections(&self) -> Vec<Arc<Connection>> {
        match &self.inner.route {
            Route::One(channel) => channel.current().into_iter().collect(),
            Route::Balanced(balancer) => balancer
                .channels()
                .iter()
                .filter_map(|channel| channel.current())
                .collect(),
        }
    }

    /// A connection that takes a call now, if one does without waiting.
    #[inline]
    pub(crate) fn usable_connection(&self) -> Option<Arc<Connection>> {
        match &self.inner.route {
            Route::One(channel) => channel.usable_connection(),
            Route::Balanced(balancer) => balancer.usable_connection(),
        }
    }

    /// The connection a new call should use, dialing if needed.
    pub(crate) async fn connection(&self) -> Result<Arc<Connection>, Error> {
        match &self.inner.route {
            Route::One(channel) => channel.connection(&self.inner.config).await,
            Route::Balanced(balancer) => balancer.connection().await,
        }
    }
}
