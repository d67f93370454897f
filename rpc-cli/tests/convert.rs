//! The JSON converter against the real encoding: for every shape kind, the bytes it writes
//! for a JSON value are exactly the bytes `rpc_core::Bincode` writes for the Rust value the
//! JSON stands for, and it reads them back to the same JSON.

use std::collections::BTreeMap;

use bytes::BytesMut;
use rpc_cli::json::{decode, encode};
use rpc_cli::shape::{Shape, Variant};
use rpc_core::{Bincode, Codec};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Checks both directions: `json` encodes to `value`'s bincode bytes, which decode to `json`.
fn check<T: Serialize + ?Sized>(shape: &Shape, value: &T, json: Value) {
    let mut expected = BytesMut::new();
    Bincode
        .encode(value, &mut expected)
        .expect("bincode encodes");
    let written = encode(shape, &json).unwrap_or_else(|err| panic!("{json} as {shape:?}: {err}"));
    assert_eq!(written, &expected[..], "{json} as {shape:?}");
    let read = decode(shape, &expected).unwrap_or_else(|err| panic!("{json} back: {err}"));
    assert_eq!(read, json, "decoding {:02x?} as {shape:?}", &expected[..]);
}

/// Like [`check`], with serde_json's own JSON for the value.
fn same<T: Serialize>(shape: &Shape, value: &T) {
    check(shape, value, serde_json::to_value(value).expect("json"));
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
    let nan = encode(&Shape::F64, &json!("NaN")).expect("NaN");
    assert!(f64::from_le_bytes(nan.try_into().expect("8 bytes")).is_nan());
    same(&Shape::Bool, &true);
    same(&Shape::Bool, &false);
    for c in ['a', 'é', '€', '😀'] {
        same(&Shape::Char, &c);
    }
    same(&Shape::String, &"");
    same(&Shape::String, &"grüße");
    same(&Shape::String, &"x".repeat(300));
    check(&Shape::Bytes, &Blob(vec![0, 1, 255]), json!([0, 1, 255]));
    check(&Shape::Bytes, &Blob(vec![]), json!([]));
    same(&Shape::Unit, &());
    same(&Shape::Unit, &UnitStruct);
}

#[test]
fn options_sequences_maps_tuples() {
    let opt = Shape::Option(Box::new(Shape::I64));
    same(&opt, &None::<i64>);
    same(&opt, &Some(-3i64));
    same(&Shape::Seq(Box::new(Shape::U16)), &vec![1u16, 300, 70]);
    same(&Shape::Seq(Box::new(Shape::String)), &Vec::<String>::new());
    let by_name: BTreeMap<String, i32> = [("a".into(), 1), ("b".into(), -2)].into();
    same(
        &Shape::Map(Box::new(Shape::String), Box::new(Shape::I32)),
        &by_name,
    );
    // Keys that are not strings: an array of pairs, in wire order.
    let by_number: BTreeMap<u32, bool> = [(2, true), (10, false)].into();
    let numbered = Shape::Map(Box::new(Shape::U32), Box::new(Shape::Bool));
    check(&numbered, &by_number, json!([[2, true], [10, false]]));
    // An object is accepted for them too, its keys read as JSON.
    let mut expected = BytesMut::new();
    Bincode
        .encode(&BTreeMap::from([(7u32, true)]), &mut expected)
        .expect("encodes");
    assert_eq!(
        encode(&numbered, &json!({"7": true})).expect("object"),
        &expected[..]
    );
    let pair = Shape::Tuple(vec![
        Shape::I64,
        Shape::String,
        Shape::Option(Box::new(Shape::Bool)),
    ]);
    same(&pair, &(5i64, "five", Some(true)));
    check(&Shape::Tuple(vec![]), &(), json!([]));
    assert_eq!(
        encode(&Shape::Tuple(vec![]), &json!(null)).expect("null"),
        b""
    );
    same(&Shape::Tuple(vec![Shape::U8; 3]), &[1u8, 2, 3]);
    same(
        &Shape::Tuple(vec![Shape::I32, Shape::I32]),
        &TupleStruct(-1, 1),
    );
    same(&Shape::I32, &Newtype(9));
}

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

/// A byte buffer serialized as bytes, as `serde_bytes` does.
struct Blob(Vec<u8>);

impl Serialize for Blob {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

fn point() -> Shape {
    Shape::Struct {
        name: "Point".into(),
        fields: vec![
            ("x".into(), Shape::I32),
            ("label".into(), Shape::String),
            ("tags".into(), Shape::Seq(Box::new(Shape::U8))),
        ],
    }
}

fn event() -> Shape {
    Shape::Enum {
        name: "Event".into(),
        variants: vec![
            ("Start".into(), Variant::Unit),
            ("Move".into(), Variant::Newtype(Shape::I32)),
            ("Pair".into(), Variant::Tuple(vec![Shape::U8, Shape::Bool])),
            (
                "Named".into(),
                Variant::Struct(vec![
                    ("id".into(), Shape::U64),
                    ("note".into(), Shape::Option(Box::new(Shape::String))),
                ]),
            ),
        ],
    }
}

#[test]
fn structs_enums_and_results() {
    same(
        &point(),
        &Point {
            x: -7,
            label: "p".into(),
            tags: vec![1, 2],
        },
    );
    // An array in field order is accepted for a struct.
    let mut expected = BytesMut::new();
    Bincode
        .encode(
            &Point {
                x: 1,
                label: "a".into(),
                tags: vec![],
            },
            &mut expected,
        )
        .expect("encodes");
    assert_eq!(
        encode(&point(), &json!([1, "a", []])).expect("array"),
        &expected[..]
    );

    same(&event(), &Event::Start);
    same(&event(), &Event::Move(-300));
    same(&event(), &Event::Pair(250, true));
    same(
        &event(),
        &Event::Named {
            id: 1 << 40,
            note: Some("n".into()),
        },
    );
    same(&event(), &Event::Named { id: 0, note: None });
    let result = Shape::result(Shape::I64, event());
    same(&result, &Ok::<i64, Event>(5));
    same(&result, &Err::<i64, Event>(Event::Move(2)));
    same(
        &Shape::Seq(Box::new(result)),
        &vec![Ok::<i64, Event>(1), Err(Event::Start)],
    );
}

fn error(shape: &Shape, json: Value) -> String {
    encode(shape, &json).expect_err("does not fit").to_string()
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
    let nested = Shape::Tuple(vec![point()]);
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
        error(&event(), json!("Stop")),
        "$: enum Event has no variant `Stop` (it has Start, Move, Pair, Named)"
    );
    assert_eq!(
        error(&event(), json!({"Move": "x"})),
        "$.Move: expected i32, got string"
    );
    assert_eq!(
        error(&Shape::Char, json!("ab")),
        "$: expected char, got a string of 2 characters"
    );
}

#[test]
fn bytes_that_do_not_fit_are_refused() {
    let mut buf = BytesMut::new();
    Bincode.encode(&(1i64, 2i64), &mut buf).expect("encodes");
    let one = Shape::Tuple(vec![Shape::I64]);
    assert!(decode(&one, &buf)
        .expect_err("trailing")
        .message
        .contains("1 bytes left over"));
    let three = Shape::Tuple(vec![Shape::I64; 3]);
    assert_eq!(decode(&three, &buf).expect_err("short").path, "$[2]");
    assert!(decode(&Shape::Bool, &[2]).is_err());
    assert!(decode(&Shape::String, &[5, b'a']).is_err());
    assert!(decode(&Shape::String, &[1, 0xff]).is_err());
    assert!(decode(&event(), &[9]).is_err());
    // A u64 marker where a u16 is expected: bincode refuses it too.
    assert!(decode(&Shape::U16, &[253, 1, 0, 0, 0, 0, 0, 0, 0]).is_err());
    assert!(Bincode
        .decode::<u16>(&[253, 1, 0, 0, 0, 0, 0, 0, 0])
        .is_err());
    // A forged length is refused before anything is read.
    assert!(decode(
        &Shape::Seq(Box::new(Shape::U8)),
        &[253, 255, 255, 255, 255, 0, 0, 0, 0]
    )
    .is_err());
    assert!(decode(
        &Shape::Seq(Box::new(Shape::Unit)),
        &[253, 255, 255, 255, 255, 0, 0, 0, 0]
    )
    .is_err());
}
