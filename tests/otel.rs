//! OpenTelemetry (feature `otel`): a request the program traces with OpenTelemetry goes
//! client -> service A -> service B, and the exported spans (an in-memory exporter) form one
//! trace: the program's span, the client's call span, A's server span, A's call span, B's
//! server span, each the parent of the next, the servers' parents remote.

mod support;

use opentelemetry::trace::{SpanId, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use rpc::{Context, TraceContext};
use support::{eventually, start, within};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

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

/// The one exported span named `name` whose `rpc.method` attribute is `method` (any, for the
/// program's own span).
fn one(spans: &[SpanData], name: &str, method: Option<&str>) -> SpanData {
    let found: Vec<_> = spans
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            method.is_none_or(|m| {
                s.attributes
                    .iter()
                    .any(|kv| kv.key.as_str() == "rpc.method" && kv.value.as_str() == m)
            })
        })
        .collect();
    assert_eq!(found.len(), 1, "one {name} {method:?} in {spans:#?}");
    found[0].clone()
}

#[tokio::test]
async fn client_a_and_b_spans_share_one_opentelemetry_trace_with_the_right_parents() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("rpc-test"));
    let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));

    let back_server = start(rpc::Server::builder().serve(BackImpl.into_service())).await;
    let back = BackClient::connect(back_server.addr)
        .await
        .expect("connect back");
    let front_server = start(rpc::Server::builder().serve(FrontImpl { back }.into_service())).await;
    let client = FrontClient::connect(front_server.addr)
        .await
        .expect("connect front");

    let request = tracing::info_span!("request");
    let (a, b) = within("relay", client.relay().instrument(request))
        .await
        .expect("relay");
    let spans = || exporter.get_finished_spans().expect("exporter");
    eventually("five spans exported", || spans().len() >= 5).await;
    let spans = spans();

    let request = one(&spans, "request", None);
    let client_span = one(&spans, "rpc.client", Some("relay"));
    let a_span = one(&spans, "rpc.server", Some("relay"));
    let a_call = one(&spans, "rpc.client", Some("trace"));
    let b_span = one(&spans, "rpc.server", Some("trace"));
    let trace = request.span_context.trace_id();
    for span in [&client_span, &a_span, &a_call, &b_span] {
        assert_eq!(span.span_context.trace_id(), trace, "{span:#?}");
    }
    assert_eq!(request.parent_span_id, SpanId::INVALID);
    let id = |s: &SpanData| s.span_context.span_id();
    assert_eq!(client_span.parent_span_id, id(&request));
    assert_eq!(a_span.parent_span_id, id(&client_span));
    assert!(a_span.parent_span_is_remote);
    assert_eq!(a_call.parent_span_id, id(&a_span));
    assert_eq!(b_span.parent_span_id, id(&a_call));
    assert!(b_span.parent_span_is_remote);

    // The handlers' rpc::TraceContext is their OpenTelemetry span.
    let parse = |t: Option<String>| TraceContext::parse(&t.expect("a trace")).expect("valid");
    let (a, b) = (parse(a), parse(b));
    assert_eq!(a.span_id().to_be_bytes(), id(&a_span).to_bytes());
    assert_eq!(b.span_id().to_be_bytes(), id(&b_span).to_bytes());
    assert_eq!(a.trace_id().to_be_bytes(), trace.to_bytes());
}
