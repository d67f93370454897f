//! Error codes survive a hop: a client calls a proxy over TCP, the proxy calls a backend and
//! passes on the backend's failure (`Request::dispatch_fallible`); the client sees the code
//! and message it would have seen calling the backend itself.

mod support;

use rpc::{Error, ErrorCode, Method};
use support::{start, within};

const FAIL: Method = Method::new("Backend", "fail");
/// Not a method of the backend: its server refuses it with `UnknownMethod`.
const MISSING: Method = Method::new("Backend", "missing");
const FORWARD: Method = Method::new("Proxy", "forward");

/// The failures the backend is asked for, by number.
fn failure(kind: u8) -> Error {
    match kind {
        1 => Error::Overloaded {
            reason: "backend queue full (512 calls)".into(),
        },
        2 => Error::MessageTooLarge {
            len: 20 << 20,
            max: 16 << 20,
        },
        3 => Error::Unauthenticated {
            reason: "token expired at 12:00".into(),
        },
        4 => Error::Server {
            code: 4242,
            message: "a failure from a newer version".into(),
        },
        5 => Error::PermissionDenied {
            reason: "read only".into(),
        },
        6 => Error::BadRequest {
            reason: "key must not be empty".into(),
        },
        7 => Error::DeadlineExceeded,
        _ => Error::Unavailable {
            reason: "draining".into(),
        },
    }
}

/// Fails every call with `failure(kind)`.
struct Backend;

impl rpc::Service for Backend {
    fn name(&self) -> &'static str {
        "Backend"
    }

    fn methods(&self) -> &'static [Method] {
        &[FAIL]
    }

    fn call(&self, request: rpc::Request) -> rpc::Dispatch {
        request.dispatch_fallible(|(kind,): (u8,)| async move { Err::<(), _>(failure(kind)) })
    }
}

/// Forwards `forward(kind)` to the backend's `fail(kind)`, or to a method it lacks for
/// kind 0, and returns what the backend said.
struct Proxy {
    backend: rpc::Client,
}

impl rpc::Service for Proxy {
    fn name(&self) -> &'static str {
        "Proxy"
    }

    fn methods(&self) -> &'static [Method] {
        &[FORWARD]
    }

    fn call(&self, request: rpc::Request) -> rpc::Dispatch {
        let backend = self.backend.clone();
        request.dispatch_fallible(move |(kind,): (u8,)| async move {
            match kind {
                0 => backend.call::<_, ()>(MISSING, ()).await,
                kind => backend.call::<_, ()>(FAIL, (kind,)).await,
            }
        })
    }
}

#[tokio::test]
async fn a_proxy_passes_on_its_backends_code_and_message() {
    let backend = start(rpc::Server::builder().serve(Backend)).await;
    let backend_client = rpc::Client::connect(backend.addr).await.expect("connect");
    let proxy = start(rpc::Server::builder().serve(Proxy {
        backend: backend_client.clone(),
    }))
    .await;
    let client = rpc::Client::connect(proxy.addr).await.expect("connect");

    for kind in 0..=8u8 {
        let direct = match kind {
            0 => backend_client.call::<_, ()>(MISSING, ()).await,
            kind => backend_client.call::<_, ()>(FAIL, (kind,)).await,
        };
        let direct = direct.expect_err("the backend fails every call");
        let proxied = within(
            "a call through the proxy",
            client.call::<_, ()>(FORWARD, (kind,)),
        )
        .await
        .expect_err("the proxy passes the failure on");
        // Same code, same message, same error: as if the client had called the backend.
        assert_eq!(proxied.to_wire(), direct.to_wire(), "kind {kind}");
        assert_eq!(proxied.to_string(), direct.to_string(), "kind {kind}");
        println!("kind {kind}: {proxied}");
    }

    let via_proxy = |kind: u8| {
        let client = client.clone();
        async move {
            client
                .call::<_, ()>(FORWARD, (kind,))
                .await
                .expect_err("fails")
        }
    };
    // The backend's missing method is named, not the proxy's.
    assert!(matches!(
        via_proxy(0).await,
        Error::UnknownMethod { method } if method == "Backend.missing"
    ));
    assert!(matches!(
        via_proxy(1).await,
        Error::Overloaded { reason } if reason == "backend queue full (512 calls)"
    ));
    // Too large for the backend: the proxy's caller reads the sizes.
    let too_large = via_proxy(2).await;
    assert!(too_large.to_string().contains("20971520"), "{too_large}");
    assert!(matches!(
        via_proxy(3).await,
        Error::Unauthenticated { reason } if reason == "token expired at 12:00"
    ));
    // A code this version does not know keeps its number (it was code 6 before).
    assert!(matches!(
        via_proxy(4).await,
        Error::Server { code: 4242, message } if message == "a failure from a newer version"
    ));
    assert!(matches!(via_proxy(5).await, Error::PermissionDenied { .. }));
    assert!(matches!(via_proxy(6).await, Error::BadRequest { .. }));
    assert!(matches!(via_proxy(7).await, Error::DeadlineExceeded));
    // A refusal passed on by a handler is no longer "never run": that handler ran.
    let passed_on = via_proxy(8).await;
    assert!(
        matches!(&passed_on, Error::Overloaded { reason } if reason == "draining"),
        "{passed_on:?}"
    );
    assert!(passed_on.may_have_run());
    assert_eq!(passed_on.to_wire().0, ErrorCode::Overloaded.to_u16());
}
