//! [`Client`]: one logical connection to a server, shared by every clone and every stub
//! built on it.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rpc_core::stream::Stream;
use rpc_core::{Error, Method, Transport};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::call::Call;
use crate::config::ClientConfig;
use crate::connection::Connection;
use crate::endpoint::Endpoint;

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
    inner: Arc<Inner>,
}

struct Inner {
    endpoint: Option<Endpoint>,
    config: ClientConfig,
    /// The connection new calls use; `None` until a lazy client first dials.
    current: Mutex<Option<Arc<Connection>>>,
    redial: tokio::sync::Mutex<Backoff>,
}

struct Backoff {
    delay: Duration,
    not_before: Option<Instant>,
    last_error: Option<Error>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.inner.endpoint)
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

    /// Connects to `endpoint`; the client redials it when the connection breaks. With
    /// [`lazy_connect`](Self::lazy_connect), returns at once and the first call dials.
    ///
    /// `endpoint` is anything that converts into an [`Endpoint`]: `"host:port"`,
    /// `("host", port)`, a `SocketAddr`, `"unix:/path"` or a `Path` to a Unix socket.
    pub async fn connect(self, endpoint: impl Into<Endpoint>) -> Result<Client, Error> {
        let endpoint = endpoint.into();
        let connection = if self.config.lazy_connect {
            None
        } else {
            Some(dial(&endpoint, &self.config).await?)
        };
        Ok(Client::assemble(Some(endpoint), self.config, connection))
    }

    /// Uses an already-open stream (for example an in-memory pipe). Such a client cannot
    /// redial: once the stream breaks, every call fails.
    pub async fn connect_transport<T: Transport>(self, stream: T) -> Result<Client, Error> {
        let connection = tokio::time::timeout(
            self.config.connect_timeout,
            Connection::start(stream, &self.config),
        )
        .await
        .map_err(|_| connect_error("transport", timed_out(self.config.connect_timeout)))??;
        Ok(Client::assemble(None, self.config, Some(connection)))
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

    fn assemble(
        endpoint: Option<Endpoint>,
        config: ClientConfig,
        conn: Option<Connection>,
    ) -> Client {
        let backoff = Backoff {
            delay: config.reconnect_backoff_min,
            not_before: None,
            last_error: None,
        };
        Client {
            inner: Arc::new(Inner {
                endpoint,
                config,
                current: Mutex::new(conn.map(Arc::new)),
                redial: tokio::sync::Mutex::new(backoff),
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
    ) -> Call<Args, Stream<T>>
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
        input: Stream<In>,
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
        input: Stream<In>,
    ) -> Call<Args, Stream<T>>
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

    /// Where the client connects, if it was connected by endpoint.
    pub fn endpoint(&self) -> Option<&Endpoint> {
        self.inner.endpoint.as_ref()
    }

    /// Whether the current connection is up and accepting new calls (false for a lazy
    /// client before its first call).
    pub fn is_connected(&self) -> bool {
        self.current().is_some_and(|conn| conn.is_usable())
    }

    /// Calls on the current connection still waiting for their reply (a diagnostic).
    pub fn in_flight(&self) -> usize {
        self.current().map_or(0, |conn| conn.waiting())
    }

    /// Streams open on the current connection, both directions together (a diagnostic).
    pub fn open_streams(&self) -> usize {
        self.current().map_or(0, |conn| conn.streams().len())
    }

    /// Dials the endpoint again now, ignoring any backoff, and routes new calls over the new
    /// connection. Calls in flight on the old one finish there.
    pub async fn reconnect(&self) -> Result<(), Error> {
        let mut backoff = self.inner.redial.lock().await;
        self.redial(&mut backoff).await.map(drop)
    }

    fn current(&self) -> Option<Arc<Connection>> {
        rpc_core::sync::lock(&self.inner.current).clone()
    }

    /// The current connection if it takes new calls; never waits.
    pub(crate) fn usable_connection(&self) -> Option<Arc<Connection>> {
        self.current().filter(|conn| conn.is_usable())
    }

    /// The connection a new call should use, dialing if there is none or redialing if the
    /// current one is gone.
    pub(crate) async fn connection(&self) -> Result<Arc<Connection>, Error> {
        let conn = self.current();
        if let Some(conn) = conn.as_ref().filter(|conn| conn.is_usable()) {
            return Ok(conn.clone());
        }
        if self.inner.endpoint.is_none() {
            // Nothing to redial: use the connection while it lives.
            return match conn {
                Some(conn) => match conn.closed_reason() {
                    Some(err) => Err(err),
                    None => Ok(conn),
                },
                None => Err(Error::closed("this client has no connection")),
            };
        }
        let mut backoff = self.inner.redial.lock().await;
        // Another call may have redialed while this one waited for the lock.
        let conn = self.current();
        if let Some(conn) = conn.as_ref().filter(|conn| conn.is_usable()) {
            return Ok(conn.clone());
        }
        if let Some(not_before) = backoff.not_before {
            if Instant::now() < not_before {
                return Err(backoff
                    .last_error
                    .clone()
                    .or_else(|| conn.and_then(|conn| conn.closed_reason()))
                    .unwrap_or_else(|| Error::closed("reconnecting")));
            }
        }
        self.redial(&mut backoff).await
    }

    async fn redial(&self, backoff: &mut Backoff) -> Result<Arc<Connection>, Error> {
        let Some(endpoint) = &self.inner.endpoint else {
            return Err(Error::closed(
                "this client was built on a transport and cannot redial",
            ));
        };
        let config = &self.inner.config;
        match dial(endpoint, config).await {
            Ok(conn) => {
                let conn = Arc::new(conn);
                *rpc_core::sync::lock(&self.inner.current) = Some(conn.clone());
                backoff.delay = config.reconnect_backoff_min;
                backoff.not_before = None;
                backoff.last_error = None;
                tracing::debug!(%endpoint, "reconnected");
                Ok(conn)
            }
            Err(err) => {
                let pause = jitter(backoff.delay);
                tracing::warn!(%endpoint, error = %err, retry_after = ?pause, "reconnect failed; calls fail fast until the next attempt");
                backoff.not_before = Some(Instant::now() + pause);
                backoff.delay = (backoff.delay * 2).min(config.reconnect_backoff_max);
                backoff.last_error = Some(err.clone());
                Err(err)
            }
        }
    }
}

/// Between half and all of `delay`, so clients that lost the same server do not return in
/// step.
fn jitter(delay: Duration) -> Duration {
    let random = RandomState::new().build_hasher().finish();
    let fraction = 0.5 + (random % 1000) as f64 / 2000.0;
    delay.mul_f64(fraction)
}

fn timed_out(after: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("no connection within {after:?}"),
    )
}

fn connect_error(endpoint: impl std::fmt::Display, source: io::Error) -> Error {
    Error::Connect {
        endpoint: endpoint.to_string(),
        source: Arc::new(source),
    }
}

async fn dial(endpoint: &Endpoint, config: &ClientConfig) -> Result<Connection, Error> {
    let attempt = async {
        match endpoint {
            Endpoint::Addr(addr) => {
                start_tcp(TcpStream::connect(addr).await, endpoint, config).await
            }
            Endpoint::Host(host) => {
                start_tcp(TcpStream::connect(host.as_str()).await, endpoint, config).await
            }
            #[cfg(unix)]
            Endpoint::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|err| connect_error(endpoint, err))?;
                Connection::start(stream, config).await
            }
            #[cfg(not(unix))]
            Endpoint::Unix(_) => Err(connect_error(
                endpoint,
                io::Error::new(
                    io::ErrorKind::Unsupported,
                    "Unix sockets need a Unix system",
                ),
            )),
        }
    };
    tokio::time::timeout(config.connect_timeout, attempt)
        .await
        .map_err(|_| connect_error(endpoint, timed_out(config.connect_timeout)))?
}

async fn start_tcp(
    stream: io::Result<TcpStream>,
    endpoint: &Endpoint,
    config: &ClientConfig,
) -> Result<Connection, Error> {
    let stream = stream.map_err(|err| connect_error(endpoint, err))?;
    // Small calls must not wait for Nagle's algorithm.
    stream
        .set_nodelay(true)
        .map_err(|err| connect_error(endpoint, err))?;
    Connection::start(stream, config).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_between_half_and_all() {
        for _ in 0..100 {
            let d = jitter(Duration::from_millis(100));
            assert!(
                d >= Duration::from_millis(50) && d <= Duration::from_millis(100),
                "{d:?}"
            );
        }
    }
}
