//! A client over many endpoints: each call goes to the less loaded of two endpoints picked
//! at random ("power of two choices", as tower's and Finagle's balancers do), by calls in
//! flight on each endpoint's connection.
//!
//! Why two random choices and not the least loaded of all: it needs no global order, costs
//! two atomic reads per call, and does not send every caller's next call to the same idle
//! endpoint at once (herding). Calls in flight is a load estimate that needs no clock read on
//! the hot path: a slow endpoint keeps its calls longer, so it is picked less; a new
//! endpoint has none, so it gets calls at once.
//!
//! Endpoints come and go by [`Change`]s. Each is a [`Channel`]: dialled when first picked,
//! redialled after its connection breaks or its server says it is going away, and left alone
//! while a failed dial's backoff lasts (ejected, probed again when the backoff ends). A call
//! whose endpoint cannot be dialled moves to another: it never ran.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, Weak};

use futures::{Stream, StreamExt};
use rpc_core::health::{self, HealthStatus};
use rpc_core::task::AbortOnDrop;
use rpc_core::Error;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::channel::{Availability, Channel};
use crate::config::ClientConfig;
use crate::connection::Connection;
use crate::discover::Change;
use crate::endpoint::Endpoint;

pub(crate) struct Balancer {
    members: Arc<Members>,
    /// Applies the discovery stream's changes; ends with the balancer.
    _discovery: Option<AbortOnDrop<()>>,
    /// Asks every connected endpoint's health service on an interval; ends with the
    /// balancer.
    _health: Option<AbortOnDrop<()>>,
}

struct Members {
    list: RwLock<Vec<Arc<Channel>>>,
    /// Woken when an endpoint is inserted, for calls waiting for the first one.
    inserted: Notify,
    /// State of the generator behind the random picks.
    random: AtomicU64,
    config: ClientConfig,
}

impl Balancer {
    /// A balancer over a fixed set of endpoints.
    pub(crate) fn fixed(endpoints: Vec<Endpoint>, config: ClientConfig) -> Self {
        let members = Members::new(config);
        for endpoint in endpoints {
            members.apply(Change::Insert(endpoint));
        }
        let members = Arc::new(members);
        Balancer {
            _health: probe_health(&members),
            members,
            _discovery: None,
        }
    }

    /// A balancer whose endpoints `changes` inserts and removes, from a task this balancer
    /// owns. Must be called inside a tokio runtime.
    pub(crate) fn discovered<S>(changes: S, config: ClientConfig) -> Self
    where
        S: Stream<Item = Change> + Send + 'static,
    {
        let members = Arc::new(Members::new(config));
        let weak = Arc::downgrade(&members);
        let task = AbortOnDrop::spawn(follow(weak, changes));
        Balancer {
            _health: probe_health(&members),
            members,
            _discovery: Some(task),
        }
    }

    /// The endpoints known now.
    pub(crate) fn endpoints(&self) -> Vec<Endpoint> {
        self.members
            .read()
            .iter()
            .filter_map(|channel| channel.endpoint().cloned())
            .collect()
    }

    /// Every endpoint's channel, for diagnostics.
    pub(crate) fn channels(&self) -> Vec<Arc<Channel>> {
        self.members.read().clone()
    }

    /// A connection that takes a call now, from the less loaded of two endpoints; `None`
    /// if the pick has no live connection yet (then [`connection`](Self::connection)
    /// dials it) or there is no endpoint.
    #[inline]
    pub(crate) fn usable_connection(&self) -> Option<Arc<Connection>> {
        self.members.pick(&[], Instant::now(), false)?.conn
    }

    /// A connection for a call, dialing as needed. An endpoint that cannot be dialled is
    /// skipped (it is backing off now) and the next pick tried; the call fails only when no
    /// endpoint can be reached, with the last endpoint's error. With no endpoint known yet,
    /// waits for one (the caller's deadline bounds the wait).
    pub(crate) async fn connection(&self) -> Result<Arc<Connection>, Error> {
        let members = &self.members;
        let mut tried: Vec<Arc<Channel>> = Vec::new();
        let mut last_error = None;
        loop {
            let inserted = members.inserted.notified();
            let now = Instant::now();
            // An endpoint another call is dialing is taken only when no other will do: the
            // call then waits for that dial.
            let pick = members
                .pick(&tried, now, false)
                .or_else(|| members.pick(&tried, now, true));
            let Some(Pick { channel, .. }) = pick else {
                if let Some(err) = last_error {
                    return Err(err);
                }
                if members.read().is_empty() {
                    inserted.await;
                    continue;
                }
                return Err(members.all_failing());
            };
            match channel.connection(&members.config).await {
                Ok(conn) => return Ok(conn),
                Err(err) => {
                    tracing::debug!(endpoint = ?channel.endpoint(), error = %err, "endpoint unreachable; trying another");
                    last_error = Some(err);
                    tried.push(channel);
                }
            }
        }
    }

    /// Dials every endpoint again; succeeds if any did.
    pub(crate) async fn reconnect(&self) -> Result<(), Error> {
        let mut outcome = Err(self.members.all_failing());
        for channel in self.channels() {
            match channel.reconnect(&self.members.config).await {
                Ok(()) => outcome = Ok(()),
                Err(err) if outcome.is_err() => outcome = Err(err),
                Err(_) => {}
            }
        }
        outcome
    }
}

/// Starts the health probe, if the configuration asks for one and a runtime is there.
fn probe_health(members: &Arc<Members>) -> Option<AbortOnDrop<()>> {
    let every = members.config.health_check_interval?;
    if tokio::runtime::Handle::try_current().is_err() {
        tracing::warn!(
            "a balanced client made outside a tokio runtime does not check its endpoints' health"
        );
        return None;
    }
    Some(AbortOnDrop::spawn(check_health(
        Arc::downgrade(members),
        every,
    )))
}

/// Every `every`, asks each endpoint that has a live connection whether it serves (the
/// health service every server hosts), over that connection; an endpoint that says it does
/// not gets no new calls until it says it does again. Endpoints without a connection are not
/// dialled for this: calls dial them, and a failed dial ejects them by itself.
async fn check_health(members: Weak<Members>, every: std::time::Duration) {
    // Nothing is connected at the start: the first check is one interval in.
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(alive) = members.upgrade() else {
            return;
        };
        let channels = alive.read().clone();
        let config = alive.config.clone();
        drop(alive);
        let checks = channels.into_iter().map(|channel| {
            let config = config.clone();
            async move {
                // Only a live connection is asked: a check never dials.
                if channel.usable_connection().is_none() {
                    return;
                }
                let probe = crate::Client::pinned(channel.clone(), config);
                let asked = probe
                    .call::<_, HealthStatus>(health::CHECK, (String::new(),))
                    .timeout(every)
                    .await;
                match asked {
                    Ok(status) => {
                        if !status.is_serving() {
                            tracing::debug!(endpoint = ?channel.endpoint(), ?status, "endpoint does not serve; no new calls go there");
                        }
                        channel.set_serving(status.is_serving());
                    }
                    // The connection's own failure handling (and keepalive) deals with it.
                    Err(err) => {
                        tracing::debug!(endpoint = ?channel.endpoint(), error = %err, "health check failed")
                    }
                }
            }
        });
        futures::future::join_all(checks).await;
    }
}

/// Applies `changes` while the balancer lives.
async fn follow<S>(members: Weak<Members>, changes: S)
where
    S: Stream<Item = Change> + Send + 'static,
{
    let mut changes = std::pin::pin!(changes);
    while let Some(change) = changes.next().await {
        let Some(members) = members.upgrade() else {
            return;
        };
        members.apply(change);
    }
    tracing::debug!("the endpoint discovery stream ended; the endpoints stay as they are");
}

impl Members {
    fn new(config: ClientConfig) -> Self {
        Members {
            list: RwLock::new(Vec::new()),
            inserted: Notify::new(),
            random: AtomicU64::new(seed()),
            config,
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Vec<Arc<Channel>>> {
        // Nothing panics while holding this lock; a poisoned one still holds a valid list.
        self.list
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn apply(&self, change: Change) {
        let mut list = self
            .list
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match change {
            Change::Insert(endpoint) => {
                if list
                    .iter()
                    .any(|channel| channel.endpoint() == Some(&endpoint))
                {
                    return;
                }
                tracing::debug!(%endpoint, "endpoint added");
                list.push(Arc::new(Channel::new(Some(endpoint), &self.config, None)));
                drop(list);
                self.inserted.notify_waiters();
            }
            Change::Remove(endpoint) => {
                // Calls in flight hold their connection: they finish there.
                list.retain(|channel| channel.endpoint() != Some(&endpoint));
                tracing::debug!(%endpoint, "endpoint removed; its calls in flight finish");
            }
        }
    }

    /// The less loaded of two endpoints picked at random, among those that take calls
    /// (not draining, not saying they do not serve, not backing off, and not being dialled
    /// by another call unless `dialing_too`) and are not in `tried`; with its live
    /// connection if it has one.
    fn pick(&self, tried: &[Arc<Channel>], now: Instant, dialing_too: bool) -> Option<Pick> {
        let list = self.read();
        let candidate = |channel: &Arc<Channel>| -> Option<Pick> {
            if tried.iter().any(|t| Arc::ptr_eq(t, channel)) {
                return None;
            }
            let conn = match channel.availability(now) {
                Availability::Connected(conn) => Some(conn),
                Availability::Dialable => None,
                Availability::Dialing if dialing_too => None,
                Availability::Draining
                | Availability::NotServing
                | Availability::BackingOff
                | Availability::Dialing => return None,
            };
            Some(Pick {
                channel: channel.clone(),
                conn,
            })
        };
        let random = self.next_random();
        // Usually both random candidates take calls: no scan of the list.
        let (a, b) = two_indices(random, list.len())?;
        let picked = match (candidate(&list[a]), b.and_then(|b| candidate(&list[b]))) {
            (Some(a), Some(b)) => Some(if b.load() < a.load() { b } else { a }),
            (one, other) => one.or(other),
        };
        if picked.is_some() {
            return picked;
        }
        // Both were out: choose among the rest.
        let mut rest: Vec<Pick> = list.iter().filter_map(candidate).collect();
        let (a, b) = two_indices(random >> 16, rest.len())?;
        let chosen = match b {
            Some(b) if rest[b].load() < rest[a].load() => b,
            _ => a,
        };
        Some(rest.swap_remove(chosen))
    }

    /// The error for a call when every endpoint is backing off or there is none.
    fn all_failing(&self) -> Error {
        let count = self.read().len();
        crate::channel::connect_error(
            format_args!("any of {count} endpoints"),
            std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "every endpoint failed its last connection attempt and is backing off",
            ),
        )
    }

    /// splitmix64 over an atomic counter: cheap, lock-free, good enough to spread picks.
    fn next_random(&self) -> u64 {
        let mut z = self
            .random
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// An endpoint chosen for a call.
struct Pick {
    channel: Arc<Channel>,
    /// Its live connection, if it has one (else the call dials).
    conn: Option<Arc<Connection>>,
}

impl Pick {
    /// Calls in flight on the endpoint's connection; none while it has no live one, so a
    /// new endpoint gets calls at once.
    fn load(&self) -> usize {
        self.conn.as_ref().map_or(0, |conn| conn.in_flight())
    }
}

/// Two different indices below `len` from `random` (the second `None` if `len` is 1);
/// `None` if `len` is 0.
fn two_indices(random: u64, len: usize) -> Option<(usize, Option<usize>)> {
    let len64 = len as u64;
    match len {
        0 => None,
        1 => Some((0, None)),
        _ => {
            let a = (random % len64) as usize;
            let b = (a + 1 + ((random >> 32) % (len64 - 1)) as usize) % len;
            Some((a, Some(b)))
        }
    }
}

fn seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn inserts_are_idempotent_and_removes_forget() {
        let balancer = Balancer::fixed(
            vec![
                "10.0.0.1:1".into(),
                "10.0.0.2:1".into(),
                "10.0.0.1:1".into(),
            ],
            ClientConfig::default(),
        );
        assert_eq!(balancer.endpoints().len(), 2);
        balancer.members.apply(Change::Remove("10.0.0.1:1".into()));
        assert_eq!(balancer.endpoints(), vec![Endpoint::from("10.0.0.2:1")]);
    }

    #[tokio::test]
    async fn picks_spread_over_every_endpoint_and_skip_the_tried() {
        let endpoints: Vec<Endpoint> = (1..=4).map(|i| format!("10.0.0.{i}:1").into()).collect();
        let balancer = Balancer::fixed(endpoints.clone(), ClientConfig::default());
        let now = Instant::now();
        let mut seen = std::collections::HashMap::new();
        for _ in 0..400 {
            let pick = balancer.members.pick(&[], now, false).expect("a pick");
            *seen.entry(pick.channel.endpoint().cloned()).or_insert(0) += 1;
        }
        // Equal loads: every endpoint is picked, none overwhelmingly.
        assert_eq!(seen.len(), 4, "{seen:?}");
        assert!(seen.values().all(|&n| n > 40), "{seen:?}");
        let all = balancer.channels();
        assert!(balancer.members.pick(&all, now, false).is_none());
        let last = balancer
            .members
            .pick(&all[..3], now, false)
            .expect("one left");
        assert!(Arc::ptr_eq(&last.channel, &all[3]));
        let two = balancer
            .members
            .pick(&all[..2], now, false)
            .expect("two left");
        assert!(all[2..].iter().any(|c| Arc::ptr_eq(c, &two.channel)));
    }

    #[test]
    fn two_indices_are_in_range_and_different() {
        assert_eq!(two_indices(7, 0), None);
        assert_eq!(two_indices(7, 1), Some((0, None)));
        let mut random = 0x1234_5678_9abc_def0_u64;
        for len in 2..10 {
            for _ in 0..100 {
                random = random.wrapping_mul(6364136223846793005).wrapping_add(1);
                let (a, b) = two_indices(random, len).expect("non-empty");
                let b = b.expect("two");
                assert!(a < len && b < len && a != b, "{a} {b} {len}");
            }
        }
    }

    #[tokio::test]
    async fn a_discovery_stream_feeds_the_endpoints() {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let balancer = Balancer::discovered(tokio_stream_from(rx), ClientConfig::default());
        tx.send(Change::Insert("10.0.0.9:1".into()))
            .await
            .expect("send");
        // The first pick waits until the insert has been applied.
        let waiter = balancer.members.inserted.notified();
        if balancer.endpoints().is_empty() {
            waiter.await;
        }
        assert_eq!(balancer.endpoints(), vec![Endpoint::from("10.0.0.9:1")]);
    }

    fn tokio_stream_from(
        mut rx: tokio::sync::mpsc::Receiver<Change>,
    ) -> impl Stream<Item = Change> + Send {
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }
}
