//! Metrics through the `metrics` facade, scraped as Prometheus would: after a known number
//! of calls (answered, past their deadline, panicked, streamed), the example's HTTP endpoint
//! (examples/metrics/http.rs) serves the exact counts per service, method and outcome, the
//! latency histograms' counts, in-flight gauges back at zero, open connections, bytes and
//! stream items; calls through tower layers (`serve_layered`) are counted too, with the
//! layer's outcome.
//!
//! One test in this binary: the recorder is global to the process.

mod support;

use std::time::Duration;

use futures::StreamExt;
use metrics_exporter_prometheus::PrometheusBuilder;
use rpc::Stream;
use support::{start, within};

#[path = "../examples/metrics/http.rs"]
mod http;

#[rpc::service]
trait Metered {
    /// Answers at once.
    async fn ok(&self) -> u32;
    /// Never answers: the deadline ends it.
    async fn stuck(&self);
    /// Panics.
    async fn panics(&self);
    /// Streams `n` numbers.
    async fn count(&self, n: u32) -> Stream<u32>;
}

struct MeteredImpl;

impl Metered for MeteredImpl {
    async fn ok(&self) -> u32 {
        1
    }

    async fn stuck(&self) {
        std::future::pending::<()>().await
    }

    async fn panics(&self) {
        panic!("on purpose")
    }

    async fn count(&self, n: u32) -> Stream<u32> {
        Stream::iter(0..n)
    }
}

#[rpc::service]
trait Shedding {
    /// Waits for the gate.
    async fn hold(&self);
    /// Answers at once.
    async fn ok(&self) -> u32;
}

#[derive(Clone)]
struct SheddingImpl {
    gate: std::sync::Arc<tokio::sync::Semaphore>,
    /// Handlers of `hold` that have started.
    started: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Shedding for SheddingImpl {
    async fn hold(&self) {
        self.started
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.gate.acquire().await.expect("gate open").forget();
    }

    async fn ok(&self) -> u32 {
        2
    }
}

#[rpc::service]
trait Limited {
    /// Waits for the gate.
    async fn hold(&self);
    /// Answers at once.
    async fn ok(&self) -> u32;
}

/// The same handlers, under another service name.
struct LimitedImpl(SheddingImpl);

impl Limited for LimitedImpl {
    async fn hold(&self) {
        self.0.hold().await
    }

    async fn ok(&self) -> u32 {
        self.0.ok().await
    }
}

/// The value of the sample of `name` carrying every label in `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
        let wanted = labels
            .iter()
            .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
        (metric == name && wanted).then(|| value.parse().ok())?
    })
}

fn call(method: &str) -> [(&str, &str); 2] {
    [("service", "Metered"), ("method", method)]
}

fn ended<'a>(method: &'a str, outcome: &'a str) -> [(&'a str, &'a str); 3] {
    [
        ("service", "Metered"),
        ("method", method),
        ("outcome", outcome),
    ]
}

#[tokio::test]
async fn a_scrape_after_known_calls_shows_their_exact_counts() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).expect("the only recorder of this test binary");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let metrics_addr = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let endpoint = tokio::spawn(http::serve(listener, handle, stopped));

    let shedding = SheddingImpl {
        gate: std::sync::Arc::new(tokio::sync::Semaphore::new(0)),
        started: std::sync::Arc::default(),
    };
    let server = start(
        rpc::Server::builder()
            .serve(MeteredImpl.into_service())
            .serve_layered(
                shedding.clone().into_service(),
                tower::ServiceBuilder::new()
                    .load_shed()
                    .concurrency_limit(1),
            ),
    )
    .await;
    let client = MeteredClient::connect(server.addr).await.expect("connect");
    for _ in 0..5 {
        within("ok", client.ok()).await.expect("ok");
    }
    for _ in 0..2 {
        let late = within("stuck", client.stuck().timeout(Duration::from_millis(20))).await;
        assert!(
            matches!(late, Err(rpc::Error::DeadlineExceeded)),
            "{late:?}"
        );
    }
    let panicked = within("panics", client.panics()).await;
    assert!(
        matches!(panicked, Err(rpc::Error::HandlerPanicked { .. })),
        "{panicked:?}"
    );
    let items = within("count", async {
        client
            .count(4)
            .await
            .expect("stream")
            .collect::<Vec<_>>()
            .await
    })
    .await;
    assert_eq!(items.len(), 4);

    // Through the layers: two calls pass, and one is shed while `hold` holds the limit.
    let layered = SheddingClient::connect(server.addr).await.expect("connect");
    for _ in 0..2 {
        assert_eq!(within("ok", layered.ok()).await.expect("ok"), 2);
    }
    let held = tokio::spawn(layered.clone().hold());
    support::eventually("hold runs", || {
        shedding.started.load(std::sync::atomic::Ordering::SeqCst) == 1
    })
    .await;
    let shed = within("ok", layered.ok()).await;
    assert!(
        matches!(shed, Err(rpc::Error::Overloaded { .. })),
        "{shed:?}"
    );
    shedding.gate.add_permits(1);
    within("hold", held).await.expect("task").expect("hold");

    // At the server's own limit (one call per connection, the rest shed): refused unrun.
    let limited = SheddingImpl {
        gate: std::sync::Arc::new(tokio::sync::Semaphore::new(0)),
        started: std::sync::Arc::default(),
    };
    let limited_server = start(
        rpc::Server::builder()
            .max_in_flight_per_connection(1)
            .overload(rpc::Overload::Shed)
            .serve(LimitedImpl(limited.clone()).into_service()),
    )
    .await;
    let limited_client = LimitedClient::new(support::connect_pinned(limited_server.addr).await);
    let held = tokio::spawn(limited_client.clone().hold());
    support::eventually("hold runs", || {
        limited.started.load(std::sync::atomic::Ordering::SeqCst) == 1
    })
    .await;
    let refused = within("ok", limited_client.ok()).await;
    assert!(
        matches!(refused, Err(rpc::Error::Overloaded { .. })),
        "{refused:?}"
    );
    limited.gate.add_permits(1);
    within("hold", held).await.expect("task").expect("hold");

    // The server counts a call finished when its handler's future ends, which for a
    // deadline may come a moment after the client gave up: scrape until it has all 9.
    let text = within("every call counted on the server", async {
        loop {
            let text = http::scrape(metrics_addr).await.expect("scrape");
            let finished: f64 = [
                ("ok", "ok"),
                ("stuck", "deadline_exceeded"),
                ("stuck", "cancelled"),
                ("panics", "handler_panicked"),
                ("count", "ok"),
            ]
            .iter()
            .filter_map(|(m, outcome)| {
                sample(&text, "rpc_server_calls_finished_total", &ended(m, outcome))
            })
            .sum();
            let layered: f64 = [("ok", "ok"), ("ok", "overloaded"), ("hold", "ok")]
                .iter()
                .filter_map(|(m, outcome)| {
                    let labels = [("service", "Shedding"), ("method", m), ("outcome", outcome)];
                    sample(&text, "rpc_server_calls_finished_total", &labels)
                })
                .sum();
            let limited = sample(
                &text,
                "rpc_server_calls_finished_total",
                &[
                    ("service", "Limited"),
                    ("method", "ok"),
                    ("outcome", "overloaded"),
                ],
            );
            if finished >= 9.0 && layered >= 4.0 && limited == Some(1.0) {
                break text;
            }
            // Polling: how long to wait is not what the test relies on, the count is.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;

    for side in ["server", "client"] {
        let started = format!("rpc_{side}_calls_started_total");
        let finished = format!("rpc_{side}_calls_finished_total");
        let duration = format!("rpc_{side}_call_duration_seconds_count");
        let in_flight = format!("rpc_{side}_calls_in_flight");
        for (method, outcome, n) in [
            ("ok", "ok", 5.0),
            ("stuck", "deadline_exceeded", 2.0),
            ("panics", "handler_panicked", 1.0),
            ("count", "ok", 1.0),
        ] {
            assert_eq!(
                sample(&text, &started, &call(method)),
                Some(n),
                "{side} {method}\n{text}"
            );
            // Past the deadline, the client's cancel may reach the server before its own
            // timer fires (a loaded machine): on the server, either outcome is right.
            let count = |metric: &str| {
                let mut n = sample(&text, metric, &ended(method, outcome)).unwrap_or(0.0);
                if side == "server" && method == "stuck" {
                    n += sample(&text, metric, &ended(method, "cancelled")).unwrap_or(0.0);
                }
                n
            };
            assert_eq!(count(&finished), n, "{side} {method}\n{text}");
            assert_eq!(count(&duration), n, "{side} {method}\n{text}");
            assert_eq!(
                sample(&text, &in_flight, &call(method)),
                Some(0.0),
                "{side} {method}\n{text}"
            );
        }
        for (method, outcome, n) in [
            ("ok", "ok", 2.0),
            ("ok", "overloaded", 1.0),
            ("hold", "ok", 1.0),
        ] {
            let labels = [
                ("service", "Shedding"),
                ("method", method),
                ("outcome", outcome),
            ];
            assert_eq!(
                sample(&text, &finished, &labels),
                Some(n),
                "{side} {method} {outcome}\n{text}"
            );
            assert_eq!(
                sample(&text, &duration, &labels),
                Some(n),
                "{side} {method} {outcome}\n{text}"
            );
        }
        let labels = [
            ("service", "Limited"),
            ("method", "ok"),
            ("outcome", "overloaded"),
        ];
        assert_eq!(
            sample(&text, &finished, &labels),
            Some(1.0),
            "{side}\n{text}"
        );
        let labels = [("service", "Limited"), ("method", "ok")];
        assert_eq!(
            sample(&text, &started, &labels),
            Some(1.0),
            "{side}\n{text}"
        );
        assert_eq!(
            sample(&text, &in_flight, &labels),
            Some(0.0),
            "{side}\n{text}"
        );
        let labels = [("service", "Shedding"), ("method", "ok")];
        assert_eq!(
            sample(&text, &started, &labels),
            Some(3.0),
            "{side}\n{text}"
        );
        assert_eq!(
            sample(&text, &in_flight, &labels),
            Some(0.0),
            "{side}\n{text}"
        );
        assert_eq!(
            sample(&text, &format!("rpc_{side}_connections"), &[]),
            Some(3.0),
            "{side}\n{text}"
        );
        for bytes in ["sent", "received"] {
            let n = sample(&text, &format!("rpc_{side}_bytes_{bytes}_total"), &[]);
            assert!(
                n.is_some_and(|n| n > 0.0),
                "{side} bytes {bytes}: {n:?}\n{text}"
            );
        }
    }
    let items = |side: &str, direction| {
        let labels = [
            ("service", "Metered"),
            ("method", "count"),
            ("direction", direction),
        ];
        sample(&text, &format!("rpc_{side}_stream_items_total"), &labels)
    };
    assert_eq!(items("server", "sent"), Some(4.0), "{text}");
    assert_eq!(items("client", "received"), Some(4.0), "{text}");

    let _ = stop.send(());
    within("endpoint stops", endpoint)
        .await
        .expect("endpoint task");
}
