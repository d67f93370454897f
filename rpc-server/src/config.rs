//! Server limits and timeouts.

use std::time::Duration;

use rpc_core::frame::DEFAULT_MAX_FRAME_LEN;

/// Limits and timeouts for a [`Server`](crate::Server). Every field has a default, chosen so
/// a misbehaving peer costs one connection and bounded memory.
///
/// Each field has a setter of the same name on [`ServerBuilder`](crate::ServerBuilder), which
/// is the usual way to change one. The struct is `#[non_exhaustive]` (fields may be added), so
/// a whole config starts from [`ServerConfig::default`]:
///
/// ```
/// use rpc::ServerConfig;
/// let mut config = ServerConfig::default();
/// config.max_in_flight_per_connection = 64;
/// assert_eq!(config.max_frame_len, 16 * 1024 * 1024);
/// # let _ = rpc::Server::builder().config(config);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Largest frame accepted or sent, in bytes. A larger length prefix closes the connection.
    /// Default: 16 MiB.
    pub max_frame_len: usize,
    /// Calls one connection may have running at once. At the limit the server stops reading
    /// that connection until a call finishes, so TCP pushes back on the client.
    /// Default: 1024.
    pub max_in_flight_per_connection: usize,
    /// Connections served at once. Beyond it, new connections are closed right after accept
    /// (with a log line); existing ones are unaffected. Default: 10,000.
    pub max_connections: usize,
    /// Time a new connection has to send its preamble. Default: 5 s.
    pub preamble_timeout: Duration,
    /// A connection with no calls in flight and no incoming frames for this long is closed.
    /// Keepalive pings and pongs do not count as activity here (as in gRPC): a client that
    /// only pings still idles out. `None` keeps idle connections open. Default: 5 minutes.
    pub idle_timeout: Option<Duration>,
    /// Largest call metadata (keys plus values), in bytes. Larger metadata fails the call with
    /// `BadRequest`. Default: 16 KiB.
    pub max_metadata_len: usize,
    /// Bytes of replies buffered per connection before handlers wait for the writer.
    /// Default: 1 MiB.
    pub write_high_water: usize,
    /// Flow-control window of each stream the server receives, in bytes: how much a client
    /// may send ahead of the handler reading it. Default: 256 KiB.
    pub stream_window: usize,
    /// On shutdown, how long calls in flight may take to finish before they are aborted.
    /// Default: 10 s.
    pub shutdown_grace: Duration,
    /// Ping a client after this long without reading anything from it, calls in flight or
    /// not, to notice a client that vanished without closing the connection (a host that
    /// lost power, a cable pulled). Checked once per interval, so the ping goes out between
    /// one and two intervals after the last frame read. `None` sends no pings (the server
    /// still answers the client's). Default: 10 s.
    pub keepalive_interval: Option<Duration>,
    /// A client that sends nothing, its pong included, for this long after a ping is
    /// declared dead: its connection closes at once, with a log line naming the peer, and
    /// its calls are aborted. A connection held at `max_in_flight_per_connection` (the
    /// server itself stopped reading it) is never declared dead. Default: 20 s.
    pub keepalive_timeout: Duration,
    /// Whether a handler's panic message is sent to its caller. Off, the caller learns only
    /// that the handler panicked and the call id under which the server logged the message
    /// (a panic message can carry whatever the handler held: a path, a query, a secret).
    /// For development. Default: false.
    pub expose_panic_messages: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            max_in_flight_per_connection: 1024,
            max_connections: 10_000,
            preamble_timeout: Duration::from_secs(5),
            idle_timeout: Some(Duration::from_secs(300)),
            max_metadata_len: 16 * 1024,
            write_high_water: 1024 * 1024,
            stream_window: rpc_core::stream::DEFAULT_WINDOW,
            shutdown_grace: Duration::from_secs(10),
            keepalive_interval: Some(rpc_core::keepalive::DEFAULT_INTERVAL),
            keepalive_timeout: rpc_core::keepalive::DEFAULT_TIMEOUT,
            expose_panic_messages: false,
        }
    }
}
