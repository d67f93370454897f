//! Signature fingerprints over real TCP: a client built from a trait whose method differs
//! from the server's in its argument or result shapes gets `SignatureMismatch`, naming the
//! method and the part that differs, and the server's handler never runs; differences that
//! are not in the shapes (aliases, paths, argument names, extra methods) still call through.
//!
//! Each case is a module holding two traits named `Case`, one for the server and one for the
//! client, as two versions of one service would be.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;

use rpc::protocol::message::{Header, RequestHeader, Status};
use rpc::ErrorCode;
use support::{body, start, within, Raw};

/// Asserts `err` is a mismatch on `Case.run` whose detail names `part`.
fn assert_mismatch(err: &rpc::Error, part: &str) {
    match err {
        rpc::Error::SignatureMismatch { method, detail } => {
            assert_eq!(method, "Case.run", "{err}");
            assert!(detail.starts_with(part), "expected {part:?}: {detail}");
            assert!(detail.contains("not decoded or run"), "{detail}");
        }
        other => panic!("expected SignatureMismatch, got {other:?}"),
    }
    assert!(!err.may_have_run());
}

/// One mismatch case: a server trait and a client trait that differ as written; calling
/// the client's `run` fails with a mismatch in `part` and the handler never runs.
macro_rules! mismatch {
    (
        $test:ident, $part:literal,
        server { $($server_items:item)* }
        fn run(&self $(, $sa:ident: $st:ty)*) -> $sr:ty { $body:expr }
        client { $($client_items:item)* }
        fn run(&self $(, $ca:ident: $ct:ty)*) -> $cr:ty;
        call($($arg:expr),*)
    ) => {
        mod $test {
            use super::*;

            // Each half uses one side of what its trait generates.
            #[allow(dead_code)]
            #[allow(dead_code)] // Each half uses one side of what its trait generates.
    pub(crate) mod server {
                use super::*;
                $($server_items)*

                #[rpc::service]
                pub(crate) trait Case {
                    async fn run(&self $(, $sa: $st)*) -> $sr;
                }

                pub(crate) struct Impl(pub(crate) Arc<AtomicUsize>);

                impl Case for Impl {
                    async fn run(&self $(, $sa: $st)*) -> $sr {
                        self.0.fetch_add(1, SeqCst);
                        $(let _ = $sa;)*
                        $body
                    }
                }
            }

            #[allow(dead_code)] // Each half uses one side of what its trait generates.
            #[allow(dead_code)] // Each half uses one side of what its trait generates.
    pub(crate) mod client {
                #[allow(unused_imports)] // Not every case names a type from the parent.
                use super::*;
                $($client_items)*

                #[rpc::service]
                pub(crate) trait Case {
                    async fn run(&self $(, $ca: $ct)*) -> $cr;
                }
            }

            #[tokio::test]
            async fn is_refused_unrun() {
                let ran = Arc::new(AtomicUsize::new(0));
                let server = start(
                    rpc::Server::builder()
                        .serve(server::Case::into_service(server::Impl(ran.clone()))),
                )
                .await;
                let client = client::CaseClient::connect(server.addr).await.expect("connect");
                let err = within("the call", client.run($($arg),*))
                    .await
                    .expect_err("a mismatch");
                assert_mismatch(&err, $part);
                assert_eq!(ran.load(SeqCst), 0, "the handler ran");
                // The connection is fine: the refusal is an answer like any other.
                let again = within("a second call", client.run($($arg),*)).await;
                assert!(matches!(again, Err(rpc::Error::SignatureMismatch { .. })));
            }
        }
    };
}

mismatch! {
    i64_vs_u64, "the arguments differ",
    server {}
    fn run(&self, a: i64, b: i64) -> i64 { 0 }
    client {}
    fn run(&self, a: u64, b: u64) -> i64;
    call(2, 3)
}

mismatch! {
    bool_vs_int, "the arguments differ",
    server {}
    fn run(&self, a: i64, b: i64) -> i64 { 0 }
    client {}
    fn run(&self, a: bool, b: bool) -> i64;
    call(true, false)
}

mismatch! {
    i32_vs_i64, "the arguments differ",
    server {}
    fn run(&self, a: i64) -> i64 { 0 }
    client {}
    fn run(&self, a: i32, b: i32) -> i64;
    call(1, 0)
}

mismatch! {
    swapped_struct_fields, "the arguments differ",
    server {
        #[derive(serde::Serialize, serde::Deserialize)]
        pub(crate) struct Span { pub(crate) start: u32, pub(crate) end: u32 }
    }
    fn run(&self, span: Span) -> i64 { 0 }
    client {
        #[derive(serde::Serialize, serde::Deserialize)]
        pub(crate) struct Span { pub(crate) end: u32, pub(crate) start: u32 }
    }
    fn run(&self, span: Span) -> i64;
    call(client::Span { end: 1, start: 2 })
}

mismatch! {
    renamed_struct_field, "the arguments differ",
    server {
        #[derive(serde::Serialize, serde::Deserialize)]
        pub(crate) struct Account { pub(crate) owner: String, pub(crate) cents: i64 }
    }
    fn run(&self, account: Account) -> i64 { 0 }
    client {
        #[derive(serde::Serialize, serde::Deserialize)]
        pub(crate) struct Account { pub(crate) owner: String, pub(crate) balance: i64 }
    }
    fn run(&self, account: Account) -> i64;
    call(client::Account { owner: "a".into(), balance: 1 })
}

mismatch! {
    renamed_enum_variant, "the result differs",
    server {
        #[derive(Debug, serde::Serialize, serde::Deserialize)]
        pub(crate) enum Light { Red, Green }
    }
    fn run(&self) -> Light { Light::Green }
    client {
        #[derive(Debug, serde::Serialize, serde::Deserialize)]
        pub(crate) enum Light { Red, Go }
    }
    fn run(&self) -> Light;
    call()
}

mismatch! {
    added_argument, "the arguments differ",
    server {}
    fn run(&self, a: i64) -> i64 { 0 }
    client {}
    fn run(&self, a: i64, b: i64) -> i64;
    call(1, 2)
}

mismatch! {
    changed_return_type, "the result differs",
    server {}
    fn run(&self, a: i64) -> i64 { 0 }
    client {}
    fn run(&self, a: i64) -> u64;
    call(1)
}

mismatch! {
    bytes_vs_string, "the arguments differ",
    server {}
    fn run(&self, data: Vec<u8>) -> i64 { 0 }
    client {}
    fn run(&self, data: String) -> i64;
    call("abc".to_string())
}

mismatch! {
    arguments_and_result, "both the arguments and the result differ",
    server {}
    fn run(&self, a: i64) -> Result<i64, String> { Ok(0) }
    client {}
    fn run(&self, a: u64) -> Result<u64, String>;
    call(1)
}

/// A streaming method against a unary one with the same item type (written out: the two
/// sides differ in more than the types `mismatch!` takes).
mod unary_vs_server_stream {
    use super::*;

    #[allow(dead_code)] // Each half uses one side of what its trait generates.
    pub(crate) mod server {
        #[rpc::service]
        pub(crate) trait Case {
            async fn run(&self) -> rpc::Stream<u8>;
        }

        pub(crate) struct Impl;

        impl Case for Impl {
            async fn run(&self) -> rpc::Stream<u8> {
                rpc::Stream::empty()
            }
        }
    }

    #[allow(dead_code)] // Each half uses one side of what its trait generates.
    pub(crate) mod client {
        #[rpc::service]
        pub(crate) trait Case {
            async fn run(&self) -> u8;
        }
    }

    #[tokio::test]
    async fn is_refused() {
        let server =
            start(rpc::Server::builder().serve(server::Case::into_service(server::Impl))).await;
        let client = client::CaseClient::connect(server.addr)
            .await
            .expect("connect");
        let err = within("the call", client.run())
            .await
            .expect_err("a mismatch");
        assert_mismatch(&err, "the result differs");
    }
}

/// A client stream whose items differ: refused while the client may already be sending
/// items, and the connection goes on serving.
mod client_stream_items {
    use super::*;

    #[allow(dead_code)] // Each half uses one side of what its trait generates.
    pub(crate) mod server {
        #[rpc::service]
        pub(crate) trait Case {
            async fn run(&self, numbers: rpc::Stream<i64>) -> i64;
            async fn ok(&self) -> u8;
        }

        pub(crate) struct Impl;

        impl Case for Impl {
            async fn run(&self, _numbers: rpc::Stream<i64>) -> i64 {
                unreachable!("a mismatched call never reaches its handler")
            }

            async fn ok(&self) -> u8 {
                7
            }
        }
    }

    #[allow(dead_code)] // Each half uses one side of what its trait generates.
    pub(crate) mod client {
        #[rpc::service]
        pub(crate) trait Case {
            async fn run(&self, numbers: rpc::Stream<u64>) -> i64;
            async fn ok(&self) -> u8;
        }
    }

    #[tokio::test]
    async fn is_refused_and_the_connection_serves_on() {
        let server =
            start(rpc::Server::builder().serve(server::Case::into_service(server::Impl))).await;
        let client = client::CaseClient::connect(server.addr)
            .await
            .expect("connect");
        let items = rpc::Stream::iter(0..1000u64);
        let err = within("the call", client.run(items))
            .await
            .expect_err("a mismatch");
        assert_mismatch(&err, "the arguments differ");
        assert_eq!(within("ok", client.ok()).await.expect("ok"), 7);
    }
}

/// Differences that are not in the shapes: the call goes through.
mod matches {
    use super::*;

    #[allow(dead_code)] // Each half uses one side of what its trait generates.
    pub(crate) mod server {
        use super::*;

        /// An alias is its type.
        pub(crate) type Id = i64;

        #[rpc::service]
        pub(crate) trait Case {
            async fn run(&self, first: Id, second: std::primitive::i64) -> Id;
            /// A method the older client below does not know.
            async fn added(&self) -> String;
        }

        pub(crate) struct Impl(pub(crate) Arc<AtomicUsize>);

        impl Case for Impl {
            async fn run(&self, first: Id, second: i64) -> Id {
                self.0.fetch_add(1, SeqCst);
                first * 10 + second
            }

            async fn added(&self) -> String {
                "new".into()
            }
        }
    }

    #[allow(dead_code)] // Each half uses one side of what its trait generates.
    pub(crate) mod client {
        /// The client spells the types out and names the arguments differently.
        #[rpc::service]
        pub(crate) trait Case {
            async fn run(&self, a: i64, b: ::core::primitive::i64) -> i64;
        }
    }

    #[tokio::test]
    async fn aliases_paths_argument_names_and_added_methods_still_call_through() {
        let ran = Arc::new(AtomicUsize::new(0));
        let server = start(
            rpc::Server::builder().serve(server::Case::into_service(server::Impl(ran.clone()))),
        )
        .await;
        let client = client::CaseClient::connect(server.addr)
            .await
            .expect("connect");
        assert_eq!(within("run", client.run(4, 2)).await.expect("run"), 42);
        assert_eq!(ran.load(SeqCst), 1);
        // The newer client, on the same server, reaches the added method too.
        let newer = server::CaseClient::new(client.client().clone());
        assert_eq!(within("added", newer.added()).await.expect("added"), "new");
        assert_eq!(within("run", newer.run(1, 2)).await.expect("run"), 12);
    }
}

/// A struct type renamed (or moved) with the same fields keeps its fingerprint: container
/// names do not count, field names do.
mod renamed_type {
    use super::*;

    #[allow(dead_code)] // Each half uses one side of what its trait generates.
    pub(crate) mod server {
        #[derive(serde::Serialize, serde::Deserialize)]
        pub(crate) struct Point {
            pub(crate) x: i32,
            pub(crate) y: i32,
        }

        #[rpc::service]
        pub(crate) trait Case {
            async fn run(&self, at: Point) -> i64;
        }

        pub(crate) struct Impl;

        impl Case for Impl {
            async fn run(&self, at: Point) -> i64 {
                i64::from(at.x) * 10 + i64::from(at.y)
            }
        }
    }

    #[allow(dead_code)] // Each half uses one side of what its trait generates.
    pub(crate) mod client {
        #[derive(serde::Serialize, serde::Deserialize)]
        pub(crate) struct Coordinates {
            pub(crate) x: i32,
            pub(crate) y: i32,
        }

        #[rpc::service]
        pub(crate) trait Case {
            async fn run(&self, at: Coordinates) -> i64;
        }
    }

    #[tokio::test]
    async fn calls_through() {
        let server =
            start(rpc::Server::builder().serve(server::Case::into_service(server::Impl))).await;
        let client = client::CaseClient::connect(server.addr)
            .await
            .expect("connect");
        let at = client::Coordinates { x: 3, y: 4 };
        assert_eq!(within("run", client.run(at)).await.expect("run"), 34);
    }
}

/// The raw view: a request with fingerprint 0 is not checked; one with a wrong fingerprint
/// is refused with code 10 before its body is read (a body that would not even decode).
#[tokio::test]
async fn raw_requests_are_checked_only_when_they_carry_a_fingerprint() {
    let ran = Arc::new(AtomicUsize::new(0));
    let server = start(
        rpc::Server::builder().serve(i64_vs_u64::server::Case::into_service(
            i64_vs_u64::server::Impl(ran.clone()),
        )),
    )
    .await;
    let mut raw = Raw::connect(server.addr).await;
    let request = |id, fingerprint| {
        Header::Request(RequestHeader {
            id,
            method: rpc::MethodId::of("Case", "run").as_u64(),
            fingerprint,
            timeout_micros: None,
            metadata: rpc::Metadata::new(),
        })
    };
    raw.send_frame(&request(1, 0), &body(&(2i64, 3i64))).await;
    let (header, _) = within("unchecked answer", raw.next())
        .await
        .expect("answer");
    assert_eq!(
        header,
        Header::Response {
            id: 1,
            status: Status::Ok
        }
    );
    assert_eq!(ran.load(SeqCst), 1);

    raw.send_frame(&request(2, 0x0bad_0bad_0bad_0bad), b"not even a body")
        .await;
    let (header, _) = within("refusal", raw.next()).await.expect("answer");
    match header {
        Header::Response {
            id: 2,
            status: Status::Error { code, message },
        } => {
            assert_eq!(code, ErrorCode::SignatureMismatch.to_u16());
            assert_eq!(code, 10);
            assert!(
                message.contains("both the arguments and the result differ"),
                "{message}"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(ran.load(SeqCst), 1, "the refused call ran");
}

/// Client and server built from one trait agree, and the fingerprint is what the shapes
/// say: computed from the traced signature, in the method both sides use.
#[tokio::test]
async fn one_trait_on_both_sides_carries_the_traced_fingerprint() {
    use rpc::shape::{MethodKind, Signature};
    let server = i64_vs_u64::server::Case::into_service(i64_vs_u64::server::Impl(Arc::default()));
    let method = rpc::Service::methods(&server)[0];
    let traced = Signature::builder(MethodKind::Unary)
        .arg::<i64>("x")
        .arg::<i64>("y")
        .result::<i64>()
        .build()
        .expect("traceable");
    assert_eq!(method.fingerprint(), traced.fingerprint());
    let signature = rpc::Service::signature(&server, method.id())
        .expect("described")
        .as_ref()
        .expect("traced");
    assert_eq!(signature.args[0].name, "a");
    assert_eq!(signature.fingerprint(), method.fingerprint());
}

/// The built-in health check carries its fingerprint like a generated method: a peer whose
/// `HealthStatus` (or argument) differs is refused unread, a caller that sends none is not
/// checked, and the check is described by reflection.
#[tokio::test]
async fn the_health_check_is_checked_like_any_method() {
    let server = start(rpc::Server::builder()).await;
    let client = rpc::Client::connect(server.addr).await.expect("connect");
    let status: rpc::health::HealthStatus =
        within("a check", client.call(rpc::health::CHECK, (String::new(),)))
            .await
            .expect("a matching fingerprint");
    assert!(status.is_serving());

    // A caller whose HealthStatus has another shape: a u8 in its place.
    let other = rpc::Method::new(rpc::health::SERVICE, "check")
        .with_fingerprint(rpc::health::CHECK.fingerprint() ^ 1);
    let err = within("a mismatch", client.call::<_, u8>(other, (String::new(),)))
        .await
        .expect_err("refused");
    assert!(
        matches!(err, rpc::Error::SignatureMismatch { .. }),
        "{err:?}"
    );

    // No fingerprint (0): not checked.
    let unchecked = rpc::Method::new(rpc::health::SERVICE, "check");
    let status: u8 = within("unchecked", client.call(unchecked, (String::new(),)))
        .await
        .expect("no fingerprint, no check");
    assert_eq!(status, 0, "Serving is variant 0");

    let description = rpc::reflection::ReflectionClient::new(client)
        .describe("rpc.Health", "check")
        .await
        .expect("describe")
        .expect("the method exists");
    let signature = description.signature.expect("described");
    assert_eq!(signature.fingerprint(), rpc::health::CHECK.fingerprint());
}
