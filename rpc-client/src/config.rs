//! Client limits and timeouts.

use std::time::Duration;

use rpc_core::frame::DEFAULT_MAX_FRAME_LEN;

/// Limits and timeouts for a [`Client`](crate::Client). Every field has a default.
///
/// Set fields with the [`ClientBuilder`](crate::ClientBuilder)'s methods of the same names,
/// or on a default value (the struct is `#[non_exhaustive]`: new settings may be added):
///
/// ```
/// use std::time::Duration;
/// use rpc_client::ClientConfig;
/// let mut config = ClientConfig::default();
/// config.default_timeout = Some(Duration::from_secs(5));
/// assert_eq!(config.max_in_flight, 1024);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Deadline for calls that set none, measured from when the call starts. Inside a
    /// server handler, a call inherits the handler's remaining deadline when that is sooner.
    /// `None` waits forever. Default: 30 s.
    pub default_timeout: Option<Duration>,
    /// Time to open a connection, handshake included. Default: 5 s.
    pub connect_timeout: Duration,
    /// Calls in flight on the connection at once; further calls wait for one to finish
    /// (their deadline keeps running). Default: 1024.
    pub max_in_flight: usize,
    /// Largest frame sent or accepted, in bytes. A message over it fails only its own call
    /// with `Error::MessageTooLarge`: a request is not sent; a larger incoming frame is
    /// skipped unread but for its header (at most 4 KiB), and the connection goes on.
    /// Default: 16 MiB (the server's default).
    pub max_frame_len: usize,
    /// Bytes of requests buffered before callers wait for the writer. Default: 1 MiB.
    pub write_high_water: usize,
    /// Flow-control window of each stream the client receives, in bytes: how much a server
    /// may send ahead of the caller reading it. Default: 256 KiB.
    pub stream_window: usize,
    /// After a failed reconnect, calls fail fast for this long before the next attempt; the
    /// pause doubles after each failure (with jitter) up to `reconnect_backoff_max`.
    /// Default: 50 ms.
    pub reconnect_backoff_min: Duration,
    /// The longest pause between reconnect attempts. Default: 5 s.
    pub reconnect_backoff_max: Duration,
    /// Whether `connect` returns at once without dialing, leaving the first call to dial
    /// (a client created before its server is up). A lazy client's calls fail like any
    /// client's while the server cannot be reached. Default: false (connect dials, and
    /// fails if it cannot).
    pub lazy_connect: bool,
    /// Attempts a call of an idempotent method may take in all, the first included, when
    /// its connection is lost before the reply (the call may have run, and running it again
    /// is harmless). Attempts share the call's deadline. Default: 3.
    pub max_attempts: u32,
    /// The retry budget, as tower's `Budget`: each success of an idempotent method allows
    /// this fraction of a retry (up to 100 retries saved up), on top of
    /// `retry_min_per_sec`. Default: 0.2.
    pub retry_ratio: f64,
    /// Retries a second allowed whatever the successes (a reserve that refills with time,
    /// holding at most one second's worth). Default: 10.
    pub retry_min_per_sec: u32,
    /// How often a balanced client asks each connected endpoint's health service whether it
    /// serves; one that says no gets no new calls until it says yes again. `None`: never.
    /// Default: 5 s.
    pub health_check_interval: Option<Duration>,
    /// Ping the server after this long without reading anything from it, calls in flight or
    /// not, to notice a server that vanished without closing the connection (a host that
    /// lost power, a cable pulled). Checked once per interval, so the ping goes out between
    /// one and two intervals after the last frame read. `None` sends no pings (the client
    /// still answers the server's). Default: 10 s.
    pub keepalive_interval: Option<Duration>,
    /// A server that sends nothing, its pong included, for this long after a ping is
    /// declared dead: every call waiting on the connection fails at once with
    /// `Error::ConnectionClosed`, and the next call redials. Default: 20 s.
    pub keepalive_timeout: Duration,
    /// TLS on every dial: the first, every redial, every endpoint of a balanced client (see
    /// [`ClientTls`](crate::tls::ClientTls)). `None` speaks plaintext. Default: `None`.
    #[cfg(feature = "tls")]
    pub tls: Option<crate::tls::ClientTls>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            default_timeout: Some(Duration::from_secs(30)),
            connect_timeout: Duration::from_secs(5),
            max_in_flight: 1024,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            write_high_water: 1024 * 1024,
            stream_window: rpc_core::stream::DEFAULT_WINDOW,
            reconnect_backoff_min: Duration::from_millis(50),
            reconnect_backoff_max: Duration::from_secs(5),
            lazy_connect: false,
            max_attempts: 3,
            retry_ratio: 0.2,
            retry_min_per_sec: 10,
            health_check_interval: Some(Duration::from_secs(5)),
            keepalive_interval: Some(rpc_core::keepalive::DEFAULT_INTERVAL),
            keepalive_timeout: rpc_core::keepalive::DEFAULT_TIMEOUT,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}
