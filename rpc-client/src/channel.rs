//! One endpoint: its current connection, and redialing it with backoff when that breaks.
//!
//! A [`Client`](crate::Client) over one address is one channel; a balanced client holds one
//! per endpoint. A channel dials lazily or at once, keeps one connection at a time, and after
//! a failed dial fails fast until its backoff (doubling, with jitter) allows another attempt:
//! that window is also how a balancer knows to leave the endpoint alone for a while.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rpc_core::sync::lock;
use rpc_core::Error;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::config::ClientConfig;
use crate::connection::Connection;
use crate::endpoint::Endpoint;

pub(crate) struct Channel {
    /// `None` for a channel built on a transport: it cannot redial.
    endpoint: Option<Endpoint>,
    /// The connection new calls use; `None` until a lazy channel first dials.
    current: Mutex<Option<Arc<Connection>>>,
    /// Until when dials are not attempted after a failure; read without waiting.
    not_before: Mutex<Option<Instant>>,
    /// Serialises dials: one at a time per endpoint.
    redial: tokio::sync::Mutex<Backoff>,
    /// False while the server's health check says it does not serve (a balancer's probe
    /// sets it): no new calls go here, the connection stays up.
    serving: AtomicBool,
    /// How long an endpoint whose connection went silent is left alone before a dial.
    eject_for: Duration,
}

/// What a balancer sees of an endpoint.
pub(crate) enum Availability {
    /// A live connection that takes new calls.
    Connected(Arc<Connection>),
    /// No live connection; a call here dials first.
    Dialable,
    /// The server said it is going away and is finishing its calls.
    Draining,
    /// The server's health check says it does not serve.
    NotServing,
    /// The last dial failed; it is not tried again before its backoff ends.
    BackingOff,
    /// A dial is under way.
    Dialing,
}

struct Backoff {
    delay: Duration,
    last_error: Option<Error>,
}

impl Channel {
    pub(crate) fn new(
        endpoint: Option<Endpoint>,
        config: &ClientConfig,
        conn: Option<Connection>,
    ) -> Self {
        Channel {
            endpoint,
            current: Mutex::new(conn.map(Arc::new)),
            not_before: Mutex::new(None),
            redial: tokio::sync::Mutex::new(Backoff {
                delay: config.reconnect_backoff_min,
                last_error: None,
            }),
            serving: AtomicBool::new(true),
            eject_for: config.reconnect_backoff_min,
        }
    }

    /// Dials `endpoint` now.
    pub(crate) async fn connect(endpoint: Endpoint, config: &ClientConfig) -> Result<Self, Error> {
        let conn = dial(&endpoint, config).await?;
        Ok(Channel::new(Some(endpoint), config, Some(conn)))
    }

    pub(crate) fn endpoint(&self) -> Option<&Endpoint> {
        self.endpoint.as_ref()
    }

    pub(crate) fn current(&self) -> Option<Arc<Connection>> {
        lock(&self.current).clone()
    }

    /// The current connection if it takes new calls; never waits.
    #[inline]
    pub(crate) fn usable_connection(&self) -> Option<Arc<Connection>> {
        self.current().filter(|conn| conn.is_usable())
    }

    /// Whether a dial failed recently enough that the next one must wait (at `now`).
    pub(crate) fn backing_off(&self, now: Instant) -> bool {
        lock(&self.not_before).is_some_and(|until| now < until)
    }

    /// Records what the server's health check said.
    pub(crate) fn set_serving(&self, serving: bool) {
        self.serving.store(serving, Ordering::Relaxed);
    }

    /// Whether a new call can go here, and how: a balancer's view of the endpoint at `now`.
    pub(crate) fn availability(&self, now: Instant) -> Availability {
        if !self.serving.load(Ordering::Relaxed) {
            return Availability::NotServing;
        }
        match self.current() {
            Some(conn) if conn.is_usable() => Availability::Connected(conn),
            // The host stopped answering pings: a dial now would most likely hang for the
            // whole connect timeout. Left alone for a backoff, as after a failed dial, then
            // dialled again by a call (one at a time; see `Dialing`).
            Some(conn) if conn.went_silent() => {
                *lock(&self.not_before) = Some(now + self.eject_for);
                let mut current = lock(&self.current);
                // Unless a call has just dialled it again.
                if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, &conn)) {
                    *current = None;
                }
                drop(current);
                tracing::debug!(endpoint = ?self.endpoint, "endpoint went silent; ejected for a backoff");
                Availability::BackingOff
            }
            // Going away (a go-away, or a call refused unrun) but still finishing its calls:
            // the server is draining, so no new call goes here until the connection is
            // gone and a fresh dial succeeds.
            Some(conn) if conn.closed_reason().is_none() => Availability::Draining,
            _ if self.backing_off(now) => Availability::BackingOff,
            // Another call is dialing it (a host that does not answer holds a dial for the
            // whole connect timeout): new calls go elsewhere meanwhile.
            _ if self.redial.try_lock().is_err() => Availability::Dialing,
            _ => Availability::Dialable,
        }
    }

    /// The connection a new call should use, dialing if there is none or redialing if the
    /// current one is gone; fails fast while a failed dial's backoff lasts.
    pub(crate) async fn connection(&self, config: &ClientConfig) -> Result<Arc<Connection>, Error> {
        let conn = self.current();
        if let Some(conn) = conn.as_ref().filter(|conn| conn.is_usable()) {
            return Ok(conn.clone());
        }
        if self.endpoint.is_none() {
            // Nothing to redial: use the connection while it lives.
            return match conn {
                Some(conn) => match conn.closed_reason() {
                    Some(err) => Err(err),
                    None => Ok(conn),
                },
                None => Err(Error::closed("this client has no connection")),
            };
        }
        let mut backoff = self.redial.lock().await;
        // Another call may have redialed while this one waited for the lock.
        let conn = self.current();
        if let Some(conn) = conn.as_ref().filter(|conn| conn.is_usable()) {
            return Ok(conn.clone());
        }
        if self.backing_off(Instant::now()) {
            return Err(backoff
                .last_error
                .clone()
                .or_else(|| conn.and_then(|conn| conn.closed_reason()))
                .unwrap_or_else(|| Error::closed("reconnecting")));
        }
        self.redial(&mut backoff, config).await
    }

    /// Dials again now, ignoring any backoff; calls in flight on the old connection finish
    /// there.
    pub(crate) async fn reconnect(&self, config: &ClientConfig) -> Result<(), Error> {
        let mut backoff = self.redial.lock().await;
        self.redial(&mut backoff, config).await.map(drop)
    }

    async fn redial(
        &self,
        backoff: &mut Backoff,
        config: &ClientConfig,
    ) -> Result<Arc<Connection>, Error> {
        let Some(endpoint) = &self.endpoint else {
            return Err(Error::closed(
                "this client was built on a transport and cannot redial",
            ));
        };
        match dial(endpoint, config).await {
            Ok(conn) => {
                let conn = Arc::new(conn);
                *lock(&self.current) = Some(conn.clone());
                *lock(&self.not_before) = None;
                backoff.delay = config.reconnect_backoff_min;
                backoff.last_error = None;
                tracing::debug!(%endpoint, "connected");
                Ok(conn)
            }
            Err(err) => {
                let pause = jitter(backoff.delay);
                tracing::warn!(%endpoint, error = %err, retry_after = ?pause, "connecting failed; calls to this endpoint fail fast until the next attempt");
                *lock(&self.not_before) = Some(Instant::now() + pause);
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

pub(crate) fn connect_error(endpoint: impl std::fmt::Display, source: io::Error) -> Error {
    Error::Connect {
        endpoint: endpoint.to_string(),
        source: source.into(),
    }
}

/// Opens `stream`'s connection (the handshake) within the connect timeout.
pub(crate) async fn start_transport<T: rpc_core::Transport>(
    stream: T,
    config: &ClientConfig,
) -> Result<Connection, Error> {
    tokio::time::timeout(config.connect_timeout, Connection::start(stream, config))
        .await
        .map_err(|_| connect_error("transport", timed_out(config.connect_timeout)))?
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
                start(stream, endpoint, config).await
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
    start(stream, endpoint, config).await
}

/// The connection over a freshly dialled stream: through TLS first if the client has it.
async fn start<T: rpc_core::Transport>(
    stream: T,
    endpoint: &Endpoint,
    config: &ClientConfig,
) -> Result<Connection, Error> {
    #[cfg(feature = "tls")]
    if let Some(tls) = &config.tls {
        return tls.start(stream, endpoint, config).await;
    }
    #[cfg(not(feature = "tls"))]
    let _ = endpoint;
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
