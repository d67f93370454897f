//! Where a balanced client's endpoints come from: a stream of [`Change`]s.
//!
//! A static list is a stream that inserts each endpoint once; [`dns`] re-resolves a name on
//! an interval and inserts and removes endpoints as its records change (the pattern of a
//! Kubernetes headless service); anything else (Consul, etcd, the Kubernetes API) is a stream
//! the application feeds. The shape is `tower::discover::Change`'s, keyed by the endpoint.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use futures::{Stream, StreamExt};

use crate::endpoint::Endpoint;

/// One change to a balanced client's set of endpoints.
///
/// ```
/// use rpc::discover::Change;
/// let changes = futures::stream::iter([
///     Change::Insert("10.0.0.1:7000".into()),
///     Change::Insert("10.0.0.2:7000".into()),
///     Change::Remove("10.0.0.1:7000".into()),
/// ]);
/// # let _ = changes;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A new endpoint: it gets calls from now on (dialled when first picked). Inserting one
    /// already present changes nothing.
    Insert(Endpoint),
    /// An endpoint that is gone: it gets no new calls; calls already running on it finish
    /// there (drained, not cut).
    Remove(Endpoint),
}

/// Every address `name` (`"host:port"`) resolves to, re-resolved every `interval`: an
/// insert for each new address, a remove for each that disappeared. A failed lookup keeps
/// the endpoints as they are (a DNS hiccup must not empty the set) and is logged.
///
/// ```no_run
/// # async fn demo() {
/// use std::time::Duration;
/// let workers = rpc::Client::builder()
///     .discover(rpc::discover::dns("workers.internal:7000", Duration::from_secs(5)));
/// # let _ = workers;
/// # }
/// ```
pub fn dns(name: &str, interval: Duration) -> impl Stream<Item = Change> + Send + 'static {
    let name = name.to_string();
    let known = BTreeSet::<SocketAddr>::new();
    let state = (name, known, None::<tokio::time::Interval>);
    futures::stream::unfold(state, move |(name, known, ticker)| async move {
        let mut ticker = match ticker {
            Some(ticker) => ticker,
            None => {
                let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(1)));
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                ticker
            }
        };
        ticker.tick().await;
        let changes = match tokio::net::lookup_host(name.as_str()).await {
            Ok(found) => diff(&known, found.collect()),
            Err(err) => {
                tracing::warn!(%name, error = %err, "DNS lookup failed; keeping the endpoints already known");
                (known.clone(), Vec::new())
            }
        };
        let (now_known, changes) = changes;
        Some((
            futures::stream::iter(changes),
            (name, now_known, Some(ticker)),
        ))
    })
    .flatten()
}

/// The changes that turn `known` into `found`, and `found`.
fn diff(
    known: &BTreeSet<SocketAddr>,
    found: BTreeSet<SocketAddr>,
) -> (BTreeSet<SocketAddr>, Vec<Change>) {
    let removed = known
        .difference(&found)
        .map(|addr| Change::Remove(Endpoint::Addr(*addr)));
    let inserted = found
        .difference(known)
        .map(|addr| Change::Insert(Endpoint::Addr(*addr)));
    let changes = inserted.chain(removed).collect();
    (found, changes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn addrs(list: &[&str]) -> BTreeSet<SocketAddr> {
        list.iter().map(|a| a.parse().expect("addr")).collect()
    }

    #[test]
    fn diff_inserts_new_records_and_removes_vanished_ones() {
        let known = addrs(&["10.0.0.1:1", "10.0.0.2:1"]);
        let (now, changes) = diff(&known, addrs(&["10.0.0.2:1", "10.0.0.3:1"]));
        assert_eq!(now, addrs(&["10.0.0.2:1", "10.0.0.3:1"]));
        assert_eq!(
            changes,
            [
                Change::Insert("10.0.0.3:1".into()),
                Change::Remove("10.0.0.1:1".into())
            ]
        );
        let (_, none) = diff(&now, now.clone());
        assert!(none.is_empty());
    }

    #[tokio::test]
    async fn dns_inserts_what_a_name_resolves_to() {
        let mut changes = Box::pin(dns("127.0.0.1:7000", Duration::from_secs(3600)));
        let first = changes.next().await;
        assert_eq!(first, Some(Change::Insert("127.0.0.1:7000".into())));
    }
}
