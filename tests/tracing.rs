//! Spans and trace context: every call has one `rpc.server` and one `rpc.client` span with
//! its service, method, call id, peer, outcome and duration (stream items counted); a call
//! made inside a trace carries `traceparent`, the handler continues that trace, and its own
//! calls carry it on (client -> A -> B, all one trace, each span the parent of the next).
//!
//! The subscriber is a small `Layer` that keeps every closed span's fields. Tests run on the
//! current-thread runtime with the subscriber set as the thread's default, so the servers,
//! the clients and the test share it.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use rpc::{Context, Stream, TraceContext};
use support::{eventually, start, within};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context as LayerContext, SubscriberExt};
use tracing_subscriber::Layer;

/// A closed span: its name and every field recorded on it, as text.
#[derive(Debug, Clone, Default)]
struct Captured {
    name: &'static str,
    fields: HashMap<String, String>,
}

impl Captured {
    fn get(&self, field: &str) -> Option<&str> {
        self.fields.get(field).map(String::as_str)
    }
}

impl Visit for Captured {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.fields
            .insert(field.name().to_string(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.fields
            .insert(field.name().to_string(), value.to_string());
    }
}

#[derive(Clone, Default)]
struct Capture {
    open: Arc<Mutex<HashMap<u64, Captured>>>,
    closed: Arc<Mutex<Vec<Captured>>>,
}

impl<S: Subscriber> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: LayerContext<'_, S>) {
        let mut span = Captured {
            name: attrs.metadata().name(),
            ..Captured::default()
        };
        attrs.record(&mut span);
        self.open.lock().expect("lock").insert(id.into_u64(), span);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: LayerContext<'_, S>) {
        if let Some(span) = self.open.lock().expect("lock").get_mut(&id.into_u64()) {
            values.record(span);
        }
    }

    fn on_close(&self, id: Id, _: LayerContext<'_, S>) {
        if let Some(span) = self.open.lock().expect("lock").remove(&id.into_u64()) {
            self.closed.lock().expect("lock").push(span);
        }
    }
}

impl Capture {
    /// Sets a subscriber with this layer as the thread's default until the guard drops.
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        tracing::subscriber::set_default(tracing_subscriber::registry().with(self.clone()))
    }

    fn closed(&self, name: &str) -> Vec<Captured> {
        let closed = self.closed.lock().expect("lock");
        closed.iter().filter(|s| s.name == name).cloned().collect()
    }

    /// Waits until `n` spans of each side have closed.
    async fn wait_for(&self, n: usize) {
        eventually("the calls' spans close", || {
            self.closed("rpc.server").len() >= n && self.closed("rpc.client").len() >= n
        })
        .await;
    }
}

#[rpc::service]
trait Observed {
    /// Answers at once.
    async fn ok(&self) -> u32;
    /// Never answers: the deadline ends it.
    async fn stuck(&self);
    /// Panics.
    async fn panics(&self) -> u32;
    /// Streams `n` numbers.
    async fn count(&self, n: u32) -> Stream<u32>;
}

struct ObservedImpl;

impl Observed for ObservedImpl {
    async fn ok(&self) -> u32 {
        7
    }

    async fn stuck(&self) {
        std::future::pending::<()>().await
    }

    async fn panics(&self) -> u32 {
        panic!("on purpose")
    }

    async fn count(&self, n: u32) -> Stream<u32> {
        Stream::iter(0..n)
    }
}

/// The one span of `name` whose `rpc.method` is `method`.
fn one(spans: &[Captured], method: &str) -> Captured {
    let found: Vec<_> = spans
        .iter()
        .filter(|s| s.get("rpc.method") == Some(method))
        .collect();
    assert_eq!(found.len(), 1, "one span for {method}: {spans:#?}");
    found[0].clone()
}

#[tokio::test]
async fn each_call_has_one_server_and_one_client_span_with_its_outcome() {
    let capture = Capture::default();
    let _guard = capture.install();
    let server = start(rpc::Server::builder().serve(ObservedImpl.into_service())).await;
    let client = ObservedClient::connect(server.addr).await.expect("connect");

    assert_eq!(within("ok", client.ok()).await.expect("ok"), 7);
    let stuck = within("stuck", client.stuck().timeout(Duration::from_millis(20))).await;
    assert!(
        matches!(stuck, Err(rpc::Error::DeadlineExceeded)),
        "{stuck:?}"
    );
    let panicked = within("panics", client.panics()).await;
    assert!(
        matches!(panicked, Err(rpc::Error::HandlerPanicked { .. })),
        "{panicked:?}"
    );
    let items: Vec<_> = within("count", async {
        client
            .count(3)
            .await
            .expect("stream")
            .collect::<Vec<_>>()
            .await
    })
    .await;
    assert_eq!(items.len(), 3);
    capture.wait_for(4).await;

    let servers = capture.closed("rpc.server");
    let clients = capture.closed("rpc.client");
    assert_eq!(
        (servers.len(), clients.len()),
        (4, 4),
        "{servers:#?} {clients:#?}"
    );
    for (method, outcome) in [
        ("ok", "ok"),
        ("stuck", "deadline_exceeded"),
        ("panics", "handler_panicked"),
        ("count", "ok"),
    ] {
        let (s, c) = (one(&servers, method), one(&clients, method));
        assert_eq!(s.get("rpc.service"), Some("Observed"));
        assert_eq!(c.get("rpc.service"), Some("Observed"));
        // Past the deadline, the client's cancel may reach the server before its own timer
        // fires (a loaded machine): either end acting first is right.
        let server_outcomes: &[&str] = match method {
            "stuck" => &["deadline_exceeded", "cancelled"],
            _ => &[outcome],
        };
        assert!(
            s.get("outcome")
                .is_some_and(|o| server_outcomes.contains(&o)),
            "server {method}: {s:?}"
        );
        assert_eq!(c.get("outcome"), Some(outcome), "client {method}: {c:?}");
        assert!(s.get("duration_us").is_some() && c.get("duration_us").is_some());
        // Both sides name the same call, and each the other end.
        assert_eq!(s.get("call_id"), c.get("call_id"), "{s:?} {c:?}");
        assert_eq!(c.get("peer"), Some(server.addr.to_string().as_str()));
        assert!(s.get("peer").is_some_and(|p| p.starts_with("127.0.0.1:")));
    }
    assert_eq!(one(&servers, "count").get("items_sent"), Some("3"));
    assert_eq!(one(&clients, "count").get("items_received"), Some("3"));
}

#[rpc::service]
trait Back {
    /// The trace the call reached this handler with.
    async fn trace(&self) -> Option<String>;
}

struct BackImpl;

impl Back for BackImpl {
    async fn trace(&self) -> Option<String> {
        Context::current()?.trace().map(|t| t.to_string())
    }
}

#[rpc::service]
trait Front {
    /// This handler's trace, and the back service's.
    async fn relay(&self) -> (Option<String>, Option<String>);
}

struct FrontImpl {
    back: BackClient,
}

impl Front for FrontImpl {
    async fn relay(&self) -> (Option<String>, Option<String>) {
        let mine = Context::current()
            .and_then(|c| c.trace())
            .map(|t| t.to_string());
        let back = self.back.trace().await.ok().flatten();
        (mine, back)
    }
}

async fn two_services() -> (support::Running, support::Running, FrontClient) {
    let back_server = start(rpc::Server::builder().serve(BackImpl.into_service())).await;
    let back = BackClient::connect(back_server.addr)
        .await
        .expect("connect back");
    let front_server = start(rpc::Server::builder().serve(FrontImpl { back }.into_service())).await;
    let client = FrontClient::connect(front_server.addr)
        .await
        .expect("connect front");
    (back_server, front_server, client)
}

fn parse(traceparent: Option<String>) -> TraceContext {
    TraceContext::parse(&traceparent.expect("a trace")).expect("well-formed")
}

#[tokio::test]
async fn a_trace_goes_from_the_client_through_a_to_b_with_each_span_the_parent_of_the_next() {
    let capture = Capture::default();
    let _guard = capture.install();
    let (_back, _front, client) = two_services().await;
    let root = TraceContext::new_root();

    let (a, b) = within("relay", root.scope(client.relay()))
        .await
        .expect("relay");
    let (a, b) = (parse(a), parse(b));
    capture.wait_for(2).await;

    let hex = |id: u64| format!("{id:016x}");
    let trace = format!("{:032x}", root.trace_id());
    let client_span = one(&capture.closed("rpc.client"), "relay");
    let a_span = one(&capture.closed("rpc.server"), "relay");
    let a_client_span = one(&capture.closed("rpc.client"), "trace");
    let b_span = one(&capture.closed("rpc.server"), "trace");
    // One trace id everywhere.
    for span in [&client_span, &a_span, &a_client_span, &b_span] {
        assert_eq!(span.get("trace_id"), Some(trace.as_str()), "{span:?}");
    }
    assert_eq!(
        (a.trace_id(), b.trace_id()),
        (root.trace_id(), root.trace_id())
    );
    // Each span's parent is the one before it: root -> client -> A -> A's call -> B.
    assert_eq!(
        client_span.get("parent_id"),
        Some(hex(root.span_id()).as_str())
    );
    assert_eq!(a_span.get("parent_id"), client_span.get("span_id"));
    assert_eq!(a_span.get("span_id"), Some(hex(a.span_id()).as_str()));
    assert_eq!(a_client_span.get("parent_id"), a_span.get("span_id"));
    assert_eq!(b_span.get("parent_id"), a_client_span.get("span_id"));
    assert_eq!(b_span.get("span_id"), Some(hex(b.span_id()).as_str()));
    let ids = [&client_span, &a_span, &a_client_span, &b_span].map(|s| s.get("span_id"));
    for (i, id) in ids.iter().enumerate() {
        assert!(
            id.is_some() && !ids[..i].contains(id),
            "distinct span ids: {ids:?}"
        );
    }
}

#[tokio::test]
async fn with_the_spans_filtered_out_the_trace_still_travels_and_a_malformed_one_is_ignored() {
    // A subscriber that records nothing below WARN: every call span is `Span::none()`. (Not
    // "no subscriber at all": the other tests of this binary register theirs, and a span
    // whose callsite another thread's subscriber enabled is created against none.)
    let _guard = tracing::subscriber::set_default(
        tracing_subscriber::registry().with(tracing_subscriber::filter::LevelFilter::WARN),
    );
    let (_back, _front, client) = two_services().await;
    let root = TraceContext::new_root();
    let (a, b) = within("relay", root.scope(client.relay()))
        .await
        .expect("relay");
    let (a, b) = (parse(a), parse(b));
    assert_eq!(
        (a.trace_id(), b.trace_id()),
        (root.trace_id(), root.trace_id())
    );
    assert!(a.span_id() != root.span_id() && b.span_id() != a.span_id());

    // Outside a trace, and with no span recorded, nothing is made up.
    let (a, b) = within("relay", client.relay()).await.expect("relay");
    assert_eq!((a, b), (None, None));

    // A malformed traceparent (upper-case hex) is ignored, as W3C asks.
    let bad = "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01";
    let (a, _) = within("relay", client.relay().metadata("traceparent", bad))
        .await
        .expect("relay");
    assert_eq!(a, None);
}

#[rpc::service]
trait Gated {
    /// Waits for the gate; answers the call's trace and the span it runs in.
    async fn wait(&self) -> (Option<String>, Option<String>);
    /// Answers the same at once.
    async fn quick(&self) -> (Option<String>, Option<String>);
}

#[derive(Clone)]
struct GatedImpl {
    gate: Arc<tokio::sync::Semaphore>,
    /// Handlers of `wait` that have started.
    started: Arc<std::sync::atomic::AtomicUsize>,
}

impl GatedImpl {
    fn new() -> Self {
        GatedImpl {
            gate: Arc::new(tokio::sync::Semaphore::new(0)),
            started: Arc::default(),
        }
    }

    fn started(&self) -> usize {
        self.started.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The trace of the call being served, and the name of the span the handler runs in.
fn seen() -> (Option<String>, Option<String>) {
    let trace = Context::current()
        .and_then(|c| c.trace())
        .map(|t| t.to_string());
    let span = tracing::Span::current()
        .metadata()
        .map(|m| m.name().to_string());
    (trace, span)
}

impl Gated for GatedImpl {
    async fn wait(&self) -> (Option<String>, Option<String>) {
        self.started
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.gate.acquire().await.expect("gate open").forget();
        seen()
    }

    async fn quick(&self) -> (Option<String>, Option<String>) {
        seen()
    }
}

/// The closed spans of `name` for `method`, ordered by call id.
fn by_call_id(spans: &[Captured], method: &str) -> Vec<Captured> {
    let mut found: Vec<_> = spans
        .iter()
        .filter(|s| s.get("rpc.method") == Some(method))
        .cloned()
        .collect();
    found.sort_by_key(|s| s.get("call_id").and_then(|id| id.parse::<u64>().ok()));
    found
}

/// Checks that the handler saw `seen` inside the server span `server`, whose trace is
/// `root`'s continued from the client span `client`.
fn continued(
    root: &TraceContext,
    seen: (Option<String>, Option<String>),
    server: &Captured,
    client: &Captured,
) {
    let (trace, span) = seen;
    assert_eq!(
        span.as_deref(),
        Some("rpc.server"),
        "the handler runs in its call's span"
    );
    let trace = parse(trace);
    let hex = format!("{:032x}", root.trace_id());
    assert_eq!(trace.trace_id(), root.trace_id());
    assert_eq!(server.get("trace_id"), Some(hex.as_str()), "{server:?}");
    assert_eq!(client.get("trace_id"), Some(hex.as_str()), "{client:?}");
    assert_eq!(
        server.get("parent_id"),
        client.get("span_id"),
        "{server:?} {client:?}"
    );
    assert_eq!(
        server.get("span_id"),
        Some(format!("{:016x}", trace.span_id()).as_str()),
        "{server:?}"
    );
    assert_eq!(server.get("call_id"), client.get("call_id"));
}

#[tokio::test]
async fn a_parked_call_keeps_its_span_and_trace_until_it_runs() {
    let capture = Capture::default();
    let _guard = capture.install();
    let service = GatedImpl::new();
    let server = start(
        rpc::Server::builder()
            .max_in_flight_per_connection(1)
            .serve(service.clone().into_service()),
    )
    .await;
    let client = GatedClient::new(support::connect_pinned(server.addr).await);
    let root = TraceContext::new_root();
    let calls: Vec<_> = (0..2)
        .map(|_| tokio::spawn(root.scope(client.clone().wait())))
        .collect();
    eventually("one call runs and one is parked", || {
        let held = server.handle.accounting();
        held.in_flight == 1 && held.parked == 1
    })
    .await;
    assert_eq!(service.started(), 1);
    // Only the running call's span may have closed: none has.
    assert!(capture.closed("rpc.server").is_empty());
    service.gate.add_permits(2);
    let mut seen = Vec::new();
    for call in calls {
        seen.push(within("wait", call).await.expect("task").expect("wait"));
    }
    capture.wait_for(2).await;

    let servers = by_call_id(&capture.closed("rpc.server"), "wait");
    let clients = by_call_id(&capture.closed("rpc.client"), "wait");
    assert_eq!((servers.len(), clients.len()), (2, 2), "{servers:#?}");
    for (server, client) in servers.iter().zip(&clients) {
        assert_eq!(server.get("outcome"), Some("ok"), "{server:?}");
        assert_eq!(client.get("outcome"), Some("ok"), "{client:?}");
        assert!(server.get("duration_us").is_some(), "{server:?}");
        // Which answer belongs to which span: the span ids say.
        let seen = seen
            .iter()
            .find(|(trace, _)| {
                trace
                    .as_deref()
                    .map(|t| parse(Some(t.to_string())).span_id())
                    == server
                        .get("span_id")
                        .and_then(|id| u64::from_str_radix(id, 16).ok())
            })
            .cloned()
            .unwrap_or_else(|| panic!("an answer for {server:?} in {seen:?}"));
        continued(&root, seen, server, client);
    }
}

#[tokio::test]
async fn a_call_refused_at_the_limit_ends_its_spans_as_overloaded() {
    let capture = Capture::default();
    let _guard = capture.install();
    let service = GatedImpl::new();
    let server = start(
        rpc::Server::builder()
            .max_in_flight_per_connection(1)
            .overload(rpc::Overload::Shed)
            .serve(service.clone().into_service()),
    )
    .await;
    let client = GatedClient::new(support::connect_pinned(server.addr).await);
    let held = tokio::spawn(client.clone().wait());
    eventually("the first call runs", || service.started() == 1).await;
    let refused = within("quick", client.quick()).await;
    assert!(
        matches!(refused, Err(rpc::Error::Overloaded { .. })),
        "{refused:?}"
    );
    service.gate.add_permits(1);
    within("wait", held).await.expect("task").expect("wait");
    capture.wait_for(2).await;

    let server = one(&capture.closed("rpc.server"), "quick");
    let client_span = one(&capture.closed("rpc.client"), "quick");
    assert_eq!(server.get("outcome"), Some("overloaded"), "{server:?}");
    assert_eq!(
        client_span.get("outcome"),
        Some("overloaded"),
        "{client_span:?}"
    );
    assert_eq!(
        one(&capture.closed("rpc.server"), "wait").get("outcome"),
        Some("ok")
    );
}

#[tokio::test]
async fn calls_through_tower_layers_have_their_spans_and_the_layers_outcome() {
    use tower::ServiceBuilder;

    let capture = Capture::default();
    let _guard = capture.install();
    let service = GatedImpl::new();
    let server = start(rpc::Server::builder().serve_layered(
        service.clone().into_service(),
        ServiceBuilder::new().load_shed().concurrency_limit(1),
    ))
    .await;
    let client = GatedClient::connect(server.addr).await.expect("connect");
    let root = TraceContext::new_root();
    let answer = within("quick", root.scope(client.quick()))
        .await
        .expect("quick");
    capture.wait_for(1).await;
    let server_span = one(&capture.closed("rpc.server"), "quick");
    let client_span = one(&capture.closed("rpc.client"), "quick");
    assert_eq!(server_span.get("outcome"), Some("ok"), "{server_span:?}");
    continued(&root, answer, &server_span, &client_span);

    // The one call the limit lets in holds it: the layer sheds the next.
    let held = tokio::spawn(client.clone().wait());
    eventually("the first call runs", || service.started() == 1).await;
    let shed = within("quick", client.quick()).await;
    assert!(
        matches!(shed, Err(rpc::Error::Overloaded { .. })),
        "{shed:?}"
    );
    service.gate.add_permits(1);
    within("wait", held).await.expect("task").expect("wait");
    capture.wait_for(3).await;
    let shed: Vec<_> = capture
        .closed("rpc.server")
        .into_iter()
        .filter(|s| s.get("rpc.method") == Some("quick") && s.get("outcome") != Some("ok"))
        .collect();
    assert_eq!(shed.len(), 1, "{shed:#?}");
    assert_eq!(shed[0].get("outcome"), Some("overloaded"));
    assert_eq!(
        one(&capture.closed("rpc.server"), "wait").get("outcome"),
        Some("ok")
    );
}
