//! The JSON converter against the real encoding: for every shape kind, the bytes it writes
//! for a JSON value are exactly the bytes `rpc_core::Bincode` writes for the Rust value the
//! JSON stands for, and it reads them back to the same JSON.

use std::collections::BTreeMap;

use bytes::BytesMut;
use rpc::shape::{Field, Registry, Shape, Variant, VariantShape};
use rpc_cli::json::{decode, encode};
use rpc_core::{Bincode, Codec};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Serialize, Deserialize)]
struct Point {
    x: i32,
    label: String,
    tags: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
enum Event {
    Start,
    Move(i32),
    Pair(u8, bool),
    Named { id: u64, note: Option<String> },
}

#[derive(Serialize, Deserialize)]
struct UnitStruct;

#[derive(Serialize, Deserialize)]
struct Newtype(i32);

#[derive(Serialize, Deserialize)]
struct TupleStruct(i32, i32);

#[derive(Serialize, Deserialize)]
enum List {
    Nil,
    Cons(i64, Box<List>),
}

/// A byte buffer serialized as bytes, as `serde_bytes` does.
struct Blob(Vec<u8>);

impl Serialize for Blob {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

fn field(name: &str, shape: Shape) -> Field {
    Field {
        name: name.into(),
        shape,
    }
}

fn variant(name: &str, shape: VariantShape) -> Variant {
    Variant {
        name: name.into(),
        shape,
    }
}

fn named(name: &str) -> Shape {
    Shape::Named(name.into())
}

/// The containers of the types above, as reflection describes them.
fn registry() -> Registry {
    let mut types = Registry::new();
    types.insert(
        "Point",
        Shape::Struct(vec![
            field("x", Shape::I32),
            field("label", Shape::Str),
            field("tags", Shape::Seq(Box::new(Shape::U8))),
        ]),
    );
    types.insert(
        "Event",
        Shape::Enum(vec![
            variant("Start", VariantShape::Unit),
            variant("Move", VariantShape::Newtype(Box::new(Shape::I32))),
            variant("Pair", VariantShape::Tuple(vec![Shape::U8, Shape::Bool])),
            variant(
                "Named",
                VariantShape::Struct(vec![
                    field("id", Shape::U64),
                    field("note", Shape::Option(Box::new(Shape::Str))),
                ]),
            ),
        ]),
    );
    types.insert(
        "Result",
        Shape::Enum(vec![
            variant("Ok", VariantShape::Newtype(Box::new(Shape::I64))),
            variant("Err", VariantShape::Newtype(Box::new(named("Event")))),
        ]),
    );
    types.insert("UnitStruct", Shape::UnitStruct);
    types.insert("Newtype", Shape::NewtypeStruct(Box::new(Shape::I32)));
    types.insert(
        "TupleStruct",
        Shape::TupleStruct(vec![Shape::I32, Shape::I32]),
    );
    types.insert(
        "List",
        Shape::Enum(vec![
            variant("Nil", VariantShape::Unit),
            variant("Cons", VariantShape::Tuple(vec![Shape::I64, named("List")])),
        ]),
    );
    types
}

/// Checks both directions: `json` encodes to `value`'s bincode bytes, which decode to `json`.
fn check<T: Serialize + ?Sized>(shape: &Shape, value: &T, json: Value) {
    let types = registry();
    let mut expected = BytesMut::new();
    Bincode
        .encode(value, &mut expected)
        .expect("bincode encodes");
    let written =
        encode(shape, &types, &json).unwrap_or_else(|err| panic!("{json} as {shape:?}: {err}"));
    assert_eq!(written, &expected[..], "{json} as {shape:?}");
    let read = decode(shape, &types, &expected).unwrap_or_else(|err| panic!("{json} back: {err}"));
    assert_eq!(read, json, "decoding {:02x?} as {shape:?}", &expected[..]);
}

/// Like [`check`], with serde_json's own JSON for the value.
fn same<T: Serialize>(shape: &Shape, value: &T) {
    check(shape, value, serde_json::to_value(value).expect("json"));
}

fn bytes<T: Serialize>(value: &T) -> Vec<u8> {
    let mut buf = BytesMut::new();
    Bincode.encode(value, &mut buf).expect("encodes");
    buf.to_vec()
}

fn encoded(shape: &Shape, json: Value) -> Vec<u8> {
    encode(shape, &registry(), &json).unwrap_or_else(|err| panic!("{err}"))
}

#[test]
fn unsigned_integers_at_every_varint_threshold() {
    for v in [
        0u64,
        1,
        250,
        251,
        255,
        256,
        65_535,
        65_536,
        u64::from(u32::MAX),
        u64::from(u32::MAX) + 1,
        u64::MAX,
    ] {
        same(&Shape::U64, &v);
        if let Ok(v) = u32::try_from(v) {
            same(&Shape::U32, &v);
        }
        if let Ok(v) = u16::try_from(v) {
            same(&Shape::U16, &v);
        }
        if let Ok(v) = u8::try_from(v) {
            same(&Shape::U8, &v);
        }
        same(&Shape::U128, &u128::from(v));
    }
    // Past 64 bits JSON numbers end: a decimal string.
    check(&Shape::U128, &u128::MAX, json!(u128::MAX.to_string()));
}

#[test]
fn signed_integers_zigzag() {
    for v in [
        0i64,
        -1,
        1,
        -125,
        125,
        -126,
        126,
        i64::from(i16::MIN),
        i64::from(i16::MAX),
        i64::from(i32::MIN),
        i64::from(i32::MAX),
        i64::MIN,
        i64::MAX,
    ] {
        same(&Shape::I64, &v);
        if let Ok(v) = i32::try_from(v) {
            same(&Shape::I32, &v);
        }
        if let Ok(v) = i16::try_from(v) {
            same(&Shape::I16, &v);
        }
        if let Ok(v) = i8::try_from(v) {
            same(&Shape::I8, &v);
        }
        same(&Shape::I128, &i128::from(v));
    }
    same(&Shape::I8, &i8::MIN);
    check(&Shape::I128, &i128::MIN, json!(i128::MIN.to_string()));
}

#[test]
fn floats_bools_chars_strings_bytes_unit() {
    check(&Shape::F32, &1.1f32, json!(1.1));
    check(&Shape::F32, &-0.5f32, json!(-0.5));
    check(&Shape::F64, &1.1f64, json!(1.1));
    check(&Shape::F64, &f64::INFINITY, json!("inf"));
    check(&Shape::F64, &f64::NEG_INFINITY, json!("-inf"));
    let nan = encoded(&Shape::F64, json!("NaN"));
    assert!(f64::from_le_bytes(nan.try_into().expect("8 bytes")).is_nan());
    same(&Shape::Bool, &true);
    same(&Shape::Bool, &false);
    for c in ['a', 'é', '€', '😀'] {
        same(&Shape::Char, &c);
    }
    same(&Shape::Str, &"");
    same(&Shape::Str, &"grüße");
    same(&Shape::Str, &"x".repeat(300));
    check(&Shape::Bytes, &Blob(vec![0, 1, 255]), json!([0, 1, 255]));
    check(&Shape::Bytes, &Blob(vec![]), json!([]));
    same(&Shape::Unit, &());
}

#[test]
fn options_sequences_maps_tuples() {
    let opt = Shape::Option(Box::new(Shape::I64));
    same(&opt, &None::<i64>);
    same(&opt, &Some(-3i64));
    same(&Shape::Seq(Box::new(Shape::U16)), &vec![1u16, 300, 70]);
    same(&Shape::Seq(Box::new(Shape::Str)), &Vec::<String>::new());
    let map = |key, value| Shape::Map {
        key: Box::new(key),
        value: Box::new(value),
    };
    let by_name: BTreeMap<String, i32> = [("a".into(), 1), ("b".into(), -2)].into();
    same(&map(Shape::Str, Shape::I32), &by_name);
    // Keys that are not strings: an array of pairs, in wire order.
    let by_number: BTreeMap<u32, bool> = [(2, true), (10, false)].into();
    let numbered = map(Shape::U32, Shape::Bool);
    check(&numbered, &by_number, json!([[2, true], [10, false]]));
    // An object is accepted for them too, its keys read as JSON.
    assert_eq!(
        encoded(&numbered, json!({"7": true})),
        bytes(&BTreeMap::from([(7u32, true)]))
    );
    let triple = Shape::Tuple(vec![
        Shape::I64,
        Shape::Str,
        Shape::Option(Box::new(Shape::Bool)),
    ]);
    same(&triple, &(5i64, "five", Some(true)));
    // No arguments: the empty tuple, `[]` (or `null`), no bytes.
    check(&Shape::Tuple(vec![]), &(), json!([]));
    assert_eq!(encoded(&Shape::Tuple(vec![]), json!(null)), b"");
    same(&Shape::Tuple(vec![Shape::U8; 3]), &[1u8, 2, 3]);
}

#[test]
fn structs_enums_results_and_recursion() {
    same(&named("UnitStruct"), &UnitStruct);
    same(&named("Newtype"), &Newtype(9));
    same(&named("TupleStruct"), &TupleStruct(-1, 1));
    let point = Point {
        x: -7,
        label: "p".into(),
        tags: vec![1, 2],
    };
    same(&named("Point"), &point);
    // An array in field order is accepted for a struct.
    assert_eq!(
        encoded(&named("Point"), json!([-7, "p", [1, 2]])),
        bytes(&point)
    );

    same(&named("Event"), &Event::Start);
    same(&named("Event"), &Event::Move(-300));
    same(&named("Event"), &Event::Pair(250, true));
    same(
        &named("Event"),
        &Event::Named {
            id: 1 << 40,
            note: Some("n".into()),
        },
    );
    same(&named("Event"), &Event::Named { id: 0, note: None });
    same(&named("Result"), &Ok::<i64, Event>(5));
    same(&named("Result"), &Err::<i64, Event>(Event::Move(2)));
    same(
        &Shape::Seq(Box::new(named("Result"))),
        &vec![Ok::<i64, Event>(1), Err(Event::Start)],
    );
    let list = List::Cons(1, Box::new(List::Cons(2, Box::new(List::Nil))));
    same(&named("List"), &list);
}

fn error(shape: &Shape, json: Value) -> String {
    encode(shape, &registry(), &json)
        .expect_err("does not fit")
        .to_string()
}

#[test]
fn json_that_does_not_fit_names_its_path() {
    let args = Shape::Tuple(vec![Shape::I64, Shape::I64]);
    assert_eq!(
        error(&args, json!([2, "3"])),
        "$[1]: expected i64, got string"
    );
    assert_eq!(
        error(&args, json!([2])),
        "$: expected an array of 2 values, got 1"
    );
    assert_eq!(
        error(&args, json!({"a": 1})),
        "$: expected array of 2, got object"
    );
    assert_eq!(
        error(&args, json!([2, 2.5])),
        "$[1]: expected i64, got number 2.5"
    );
    assert_eq!(error(&Shape::U8, json!(256)), "$: 256 does not fit in u8");
    assert_eq!(error(&Shape::U32, json!(-1)), "$: -1 does not fit in u32");
    let nested = Shape::Tuple(vec![named("Point")]);
    assert_eq!(
        error(&nested, json!([{"x": 1, "label": "a", "tags": [1, 300]}])),
        "$[0].tags[1]: 300 does not fit in u8"
    );
    assert_eq!(
        error(&nested, json!([{"x": 1, "label": "a"}])),
        "$[0]: missing field `tags`"
    );
    assert_eq!(
        error(&nested, json!([{"x": 1, "label": "a", "tags": [], "y": 2}])),
        "$[0]: unknown field `y`"
    );
    assert_eq!(
        error(&nested, json!(["point"])),
        "$[0]: expected object (struct Point), got string"
    );
    assert_eq!(
        error(&named("Event"), json!("Stop")),
        "$: enum Event has no variant `Stop` (it has Start, Move, Pair, Named)"
    );
    assert_eq!(
        error(&named("Event"), json!({"Move": "x"})),
        "$.Move: expected i32, got string"
    );
    assert_eq!(
        error(&Shape::Char, json!("ab")),
        "$: expected char, got a string of 2 characters"
    );
    assert_eq!(
        error(&named("Missing"), json!(1)),
        "$: the server's description has no type `Missing`"
    );
}

fn refused(shape: &Shape, input: &[u8]) -> String {
    decode(shape, &registry(), input)
        .expect_err("refused")
        .to_string()
}

#[test]
fn bytes_that_do_not_fit_are_refused() {
    let two = bytes(&(1i64, 2i64));
    let one = Shape::Tuple(vec![Shape::I64]);
    assert!(refused(&one, &two).contains("1 bytes left over"));
    let three = Shape::Tuple(vec![Shape::I64; 3]);
    assert!(refused(&three, &two).starts_with("$[2]: "));
    assert!(refused(&Shape::Bool, &[2]).contains("neither 0 nor 1"));
    refused(&Shape::Str, &[5, b'a']);
    refused(&Shape::Str, &[1, 0xff]);
    assert!(refused(&named("Event"), &[9]).contains("out of range"));
    // A u64 marker where a u16 is expected: bincode refuses it too.
    refused(&Shape::U16, &[253, 1, 0, 0, 0, 0, 0, 0, 0]);
    assert!(Bincode
        .decode::<u16>(&[253, 1, 0, 0, 0, 0, 0, 0, 0])
        .is_err());
    // A forged length is refused before anything is read.
    let forged = [253, 255, 255, 255, 255, 0, 0, 0, 0];
    refused(&Shape::Seq(Box::new(Shape::U8)), &forged);
    refused(&Shape::Seq(Box::new(Shape::Unit)), &forged);
    // A recursive type nested past the limit is refused, not a stack overflow.
    let mut deep = Vec::new();
    for _ in 0..10_000 {
        deep.extend_from_slice(&[1, 2]); // Cons(1, ..
    }
    deep.push(0); // Nil
    assert!(refused(&named("List"), &deep).contains("nest deeper"));
}

#[test]
fn a_payload_is_bytes_an_array_of_numbers() {
    // Traced, a payload is `Shape::Bytes`; its JSON is serde_json's own (an array), and the
    // converter writes the bytes the codec writes, at any size.
    let shape = rpc::shape::trace::Tracer::new()
        .trace::<rpc::Payload>()
        .expect("traces");
    assert_eq!(shape, Shape::Bytes);
    for len in [0, 1, 300, rpc::Payload::SPLICE_MIN + 1] {
        let payload = rpc::Payload::from((0..len).map(|i| i as u8).collect::<Vec<_>>());
        same(&shape, &payload);
        let back: rpc::Payload = Bincode
            .decode(&encoded(
                &shape,
                serde_json::to_value(&payload).expect("json"),
            ))
            .expect("decodes");
        assert_eq!(back, payload);
    }
}
