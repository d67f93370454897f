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
    /// Largest frame accepted or sent, in bytes. A message over it fails only its own call,
    /// with `Error::MessageTooLarge` for the caller: a reply the handler returns is not sent;
    /// a larger incoming frame is skipped unread but for its header (at most
    /// `max_metadata_len` plus 4 KiB), and the connection goes on. Default: 16 MiB.
    pub max_frame_len: usize,
    /// Calls one connection may have running at once. Requests beyond it wait or are
    /// refused, as [`overload`](Self::overload) says; either way the connection reads on, so
    /// a cancel or the client leaving is noticed at once. Default: 1024.
    pub max_in_flight_per_connection: usize,
    /// Calls one connection may have running at once that receive a stream from the client
    /// (client-streaming and bidirectional methods), on top of unary calls. Beyond it they
    /// wait or are refused like calls beyond the in-flight limit. Default: 128.
    pub max_streams_per_connection: usize,
    /// Bytes one connection may hold: the requests of its calls running or parked (each
    /// counted at its frame's size until the call ends), plus a stream window for each call
    /// that receives a client stream. A request that does not fit is refused with
    /// `Overloaded`. At least `max_frame_len + stream_window`, so one request of any size
    /// always fits an idle connection. Default: 64 MiB.
    pub max_inbound_bytes_per_connection: usize,
    /// The same bytes, over all connections together. Default: 1 GiB.
    pub max_inbound_bytes: usize,
    /// Bytes of replies queued to be written, over all connections together (each
    /// connection also stops at its own `write_high_water`). Handlers wait while it is full.
    /// Default: 256 MiB.
    pub max_outbound_bytes: usize,
    /// What happens to a request that arrives while its connection is at
    /// `max_in_flight_per_connection` or `max_streams_per_connection`. Default:
    /// [`Overload::Wait`](crate::Overload::Wait).
    pub overload: crate::Overload,
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
    /// its calls are aborted. Default: 20 s.
    pub keepalive_timeout: Duration,
    /// Whether the server hosts the built-in `rpc.Reflection` service, which tells any
    /// client that asks what services and methods the server hosts and the shapes of their
    /// arguments and results (see `rpc::reflection`). Turned off, calls to it fail with
    /// `UnknownMethod`. Default: on.
    pub reflection: bool,
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
            max_streams_per_connection: 128,
            max_inbound_bytes_per_connection: 64 << 20,
            max_inbound_bytes: 1 << 30,
            max_outbound_bytes: 256 << 20,
            overload: crate::Overload::Wait,
            max_connections: 10_000,
            preamble_timeout: Duration::from_secs(5),
            idle_timeout: Some(Duration::from_secs(300)),
            max_metadata_len: 16 * 1024,
            write_high_water: 1024 * 1024,
            stream_window: rpc_core::stream::DEFAULT_WINDOW,
            shutdown_grace: Duration::from_secs(10),
            keepalive_interval: Some(rpc_core::keepalive::DEFAULT_INTERVAL),
            keepalive_timeout: rpc_core::keepalive::DEFAULT_TIMEOUT,
            reflection: true,
            expose_panic_messages: false,
        }
    }
}
