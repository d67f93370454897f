//! The reflection service every server hosts (`rpc.Reflection`): `list` and `describe` over
//! real TCP, and a server that turns it off.

mod support;

use rpc::reflection::{MethodSummary, ReflectionClient};
use rpc::shape::{Field, MethodKind, Shape, Variant, VariantShape};
use support::{start, within};

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) enum MathError {
    DivideByZero,
    Overflow { at: i64 },
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Point {
    pub(crate) x: i32,
    pub(crate) y: i32,
}

#[rpc::service]
pub(crate) trait Calc {
    #[idempotent]
    async fn div(&self, a: i64, b: i64) -> Result<i64, MathError>;
    async fn count(&self, to: u32) -> rpc::Stream<Point>;
    async fn sum(&self, numbers: rpc::Stream<i64>) -> i64;
    async fn nothing(&self);
}

struct Impl;

impl Calc for Impl {
    async fn div(&self, a: i64, b: i64) -> Result<i64, MathError> {
        a.checked_div(b).ok_or(MathError::DivideByZero)
    }

    async fn count(&self, to: u32) -> rpc::Stream<Point> {
        rpc::Stream::iter((0..to).map(|i| Point { x: i as i32, y: 0 }))
    }

    async fn sum(&self, _numbers: rpc::Stream<i64>) -> i64 {
        0
    }

    async fn nothing(&self) {}
}

#[tokio::test]
async fn list_names_every_service_and_method_kind() {
    let server = start(rpc::Server::builder().serve(Impl.into_service())).await;
    let reflection = ReflectionClient::connect(server.addr)
        .await
        .expect("connect");
    let services = within("list", reflection.list()).await.expect("list");
    let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["Calc", "rpc.Health", "rpc.Reflection"]);
    let summary = |name: &str, kind, idempotent| MethodSummary {
        name: name.into(),
        kind: Some(kind),
        idempotent,
    };
    assert_eq!(
        services[0].methods,
        [
            summary("div", MethodKind::Unary, true),
            summary("count", MethodKind::ServerStream, false),
            summary("sum", MethodKind::ClientStream, false),
            summary("nothing", MethodKind::Unary, false),
        ]
    );
    // The built-in health service is hand-written and describes its method too.
    assert_eq!(
        services[1].methods,
        [summary("check", MethodKind::Unary, true)]
    );
    assert_eq!(services[2].methods.len(), 2);
}

#[tokio::test]
async fn describe_gives_argument_names_shapes_and_the_registry() {
    let server = start(rpc::Server::builder().serve(Impl.into_service())).await;
    let reflection = ReflectionClient::connect(server.addr)
        .await
        .expect("connect");

    let div = within("describe", reflection.describe("Calc", "div"))
        .await
        .expect("describe")
        .expect("Calc.div is hosted");
    assert_eq!((div.service.as_str(), div.name.as_str()), ("Calc", "div"));
    assert!(div.idempotent);
    assert_eq!(div.untraceable, None);
    let signature = div.signature.expect("described");
    assert_eq!(signature.kind, MethodKind::Unary);
    let args: Vec<(&str, &Shape)> = signature
        .args
        .iter()
        .map(|arg| (arg.name.as_str(), &arg.shape))
        .collect();
    assert_eq!(args, [("a", &Shape::I64), ("b", &Shape::I64)]);
    assert_eq!(signature.result, Shape::Named("Result".into()));
    assert_eq!(
        signature.registry.get("Result"),
        Some(&Shape::Enum(vec![
            Variant {
                name: "Ok".into(),
                shape: VariantShape::Newtype(Box::new(Shape::I64)),
            },
            Variant {
                name: "Err".into(),
                shape: VariantShape::Newtype(Box::new(Shape::Named("MathError".into()))),
            },
        ]))
    );
    assert_eq!(
        signature.registry.get("MathError"),
        Some(&Shape::Enum(vec![
            Variant {
                name: "DivideByZero".into(),
                shape: VariantShape::Unit,
            },
            Variant {
                name: "Overflow".into(),
                shape: VariantShape::Struct(vec![Field {
                    name: "at".into(),
                    shape: Shape::I64,
                }]),
            },
        ]))
    );
    // The fingerprint reflection reports is the one the server checks, and the one a client
    // built from the same trait sends.
    assert_eq!(div.fingerprint, signature.fingerprint());

    let count = within("describe", reflection.describe("Calc", "count"))
        .await
        .expect("describe")
        .expect("hosted")
        .signature
        .expect("described");
    assert_eq!(count.kind, MethodKind::ServerStream);
    assert_eq!(count.result, Shape::Named("Point".into()));
    assert!(
        matches!(count.registry.get("Point"), Some(Shape::Struct(fields)) if fields.len() == 2)
    );

    let sum = within("describe", reflection.describe("Calc", "sum"))
        .await
        .expect("describe")
        .expect("hosted")
        .signature
        .expect("described");
    assert_eq!(sum.kind, MethodKind::ClientStream);
    assert!(sum.args.is_empty());
    let stream = sum.input_stream.expect("a client stream");
    assert_eq!(
        (stream.name.as_str(), &stream.shape),
        ("numbers", &Shape::I64)
    );

    let nothing = within("describe", reflection.describe("Calc", "nothing"))
        .await
        .expect("describe")
        .expect("hosted")
        .signature
        .expect("described");
    assert_eq!((nothing.args.len(), &nothing.result), (0, &Shape::Unit));

    // Reflection describes itself.
    let describe = within(
        "describe",
        reflection.describe("rpc.Reflection", "describe"),
    )
    .await
    .expect("describe")
    .expect("hosted")
    .signature
    .expect("described");
    assert_eq!(describe.args.len(), 2);
    assert!(describe.registry.get("Shape").is_some());

    // Unknown names are `None`, not an error.
    for (service, method) in [("Calc", "mul"), ("Nope", "div"), ("", "")] {
        let none = within("describe", reflection.describe(service, method))
            .await
            .expect("describe");
        assert!(none.is_none(), "{service}.{method}: {none:?}");
    }
}

#[tokio::test]
async fn turned_off_it_is_an_unknown_method() {
    let server = start(
        rpc::Server::builder()
            .reflection(false)
            .serve(Impl.into_service()),
    )
    .await;
    let reflection = ReflectionClient::connect(server.addr)
        .await
        .expect("connect");
    let err = within("list", reflection.list())
        .await
        .expect_err("no reflection");
    assert!(
        matches!(&err, rpc::Error::UnknownMethod { method } if method == "rpc.Reflection.list"),
        "{err:?}"
    );
    let err = within("describe", reflection.describe("Calc", "div"))
        .await
        .expect_err("no reflection");
    assert!(matches!(err, rpc::Error::UnknownMethod { .. }), "{err:?}");
    // The server's own services still answer.
    let calc = CalcClient::new(reflection.client().clone());
    assert_eq!(
        within("div", calc.div(6, 3))
            .await
            .expect("div")
            .expect("ok"),
        2
    );
}

#[test]
#[should_panic(expected = "rpc.Reflection")]
fn a_service_may_not_claim_the_reflection_name() {
    struct Impostor;
    impl rpc::Service for Impostor {
        fn name(&self) -> &'static str {
            "rpc.Reflection"
        }
        fn methods(&self) -> &'static [rpc::Method] {
            &[]
        }
        fn call(&self, request: rpc::Request) -> rpc::Dispatch {
            request.unknown_method()
        }
    }
    let _ = rpc::Server::builder().serve(Impostor);
}
