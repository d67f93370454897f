//! `docs/PROTOCOL.md` against the implementation, so the spec and the code cannot drift apart.
//!
//! Every fenced example in the spec is checked:
//!
//! * ```` ```hex frame NAME ````: one whole frame. The implementation must write exactly these
//!   bytes for the header and body this test names for `NAME`, and read them back as that
//!   header and body.
//! * ```` ```hex preamble NAME ````: the preambles, against the handshake functions.
//! * ```` ```hex conversation NAME ````: a whole exchange, driven against a real server over
//!   TCP on 127.0.0.1: the `C:` bytes are sent as they are, and the server must answer exactly
//!   the `S:` bytes.
//! * ```` ```text method-ids ````: FNV-1a test vectors against `MethodId`.
//! * ```` ```text encoding ````: body encoding examples against `Bincode`, both ways.
//!
//! On a mismatch the failure prints the bytes the implementation produced, as hex, so the
//! spec can be corrected from the message.

mod support;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::Duration;

use bytes::BytesMut;
use rpc::protocol::frame::{FrameDecoder, DEFAULT_MAX_FRAME_LEN};
use rpc::protocol::message::{decode_frame, encode_frame, Header, RequestHeader, Status};
use rpc::protocol::preamble::{client_handshake, server_handshake};
use rpc::protocol::{Bincode, Codec};
use rpc::shape::fingerprint;
use rpc::shape::{Argument, MethodKind, Registry, Shape, Signature, Variant, VariantShape};
use rpc::{Metadata, MethodId};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::Decoder;

const SPEC: &str = include_str!("../docs/PROTOCOL.md");

// --- reading the spec ----------------------------------------------------------------------

/// One fenced block: its info string's words after the language, and its text.
struct Block {
    lang: String,
    kind: String,
    name: String,
    text: String,
}

fn blocks() -> Vec<Block> {
    let mut out = Vec::new();
    let mut lines = SPEC.lines();
    while let Some(line) = lines.next() {
        let Some(info) = line.strip_prefix("```") else {
            continue;
        };
        let mut words = info.split_whitespace();
        let lang = words.next().unwrap_or("").to_string();
        let kind = words.next().unwrap_or("").to_string();
        let name = words.next().unwrap_or("").to_string();
        let mut text = String::new();
        for body in lines.by_ref() {
            if body.starts_with("```") {
                break;
            }
            text.push_str(body);
            text.push('\n');
        }
        out.push(Block {
            lang,
            kind,
            name,
            text,
        });
    }
    out
}

fn named(lang: &str, kind: &str) -> Vec<Block> {
    blocks()
        .into_iter()
        .filter(|b| b.lang == lang && b.kind == kind)
        .collect()
}

/// Hex pairs separated by spaces; `#` starts a comment.
fn parse_hex(text: &str) -> Vec<u8> {
    let text = text.split('#').next().unwrap_or("");
    text.split_whitespace()
        .map(|pair| {
            u8::from_str_radix(pair, 16).unwrap_or_else(|_| panic!("`{pair}` is not a hex byte"))
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Asserts `actual == expected`, showing the actual bytes as hex to paste into the spec.
fn same_bytes(what: &str, actual: &[u8], expected: &[u8]) {
    assert!(
        actual == expected,
        "{what}: the implementation writes\n  {}\nthe spec says\n  {}",
        hex(actual),
        hex(expected)
    );
}

// --- frames --------------------------------------------------------------------------------

fn body<T: Serialize>(value: &T) -> Vec<u8> {
    let mut buf = BytesMut::new();
    Bincode.encode(value, &mut buf).expect("encodes");
    buf.to_vec()
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
enum MathError {
    DivisionByZero,
    Overflow,
}

fn request(id: u64, method: &str, timeout: Option<u64>, metadata: Metadata) -> Header {
    let (service, name) = method.rsplit_once('.').expect("Service.method");
    Header::Request(RequestHeader {
        id,
        method: MethodId::of(service, name).as_u64(),
        fingerprint: signature(method).fingerprint(),
        timeout_micros: timeout,
        metadata,
    })
}

fn error(code: u16, message: &str) -> Status {
    Status::Error {
        code,
        message: message.into(),
    }
}

const DEADLINE: &str = "deadline exceeded: no reply before the call's deadline";

/// The header and body each `hex frame` example of the spec shows.
fn frame_example(name: &str) -> (Header, Vec<u8>) {
    match name {
        "request" => (
            request(1, "Calculator.add", None, Metadata::new()),
            body(&(2i64, 3i64)),
        ),
        "request-deadline-metadata" => {
            let mut metadata = Metadata::new();
            metadata.insert("trace-id", "abc");
            (
                request(2, "Calculator.add", Some(1_500_000), metadata),
                body(&(2i64, 3i64)),
            )
        }
        "response-ok" => (
            Header::Response {
                id: 1,
                status: Status::Ok,
            },
            body(&Ok::<i64, MathError>(5)),
        ),
        "response-app-error" => (
            Header::Response {
                id: 3,
                status: Status::Ok,
            },
            body(&Err::<i64, MathError>(MathError::DivisionByZero)),
        ),
        "response-error" => (
            Header::Response {
                id: 4,
                status: error(4, DEADLINE),
            },
            vec![],
        ),
        "cancel" => (Header::Cancel { id: 5 }, vec![]),
        "go-away" => (Header::GoAway, vec![]),
        "stream-item" => (Header::StreamItem { id: 6 }, body(&300u64)),
        "stream-end-ok" => (
            Header::StreamEnd {
                id: 6,
                status: Status::Ok,
            },
            vec![],
        ),
        "stream-end-error" => (
            Header::StreamEnd {
                id: 6,
                status: error(8, "call cancelled"),
            },
            vec![],
        ),
        "credit" => (
            Header::Credit {
                id: 6,
                bytes: 128 * 1024,
            },
            vec![],
        ),
        "ping" => (
            Header::Ping {
                payload: 0x0102_0304_0506_0708,
            },
            vec![],
        ),
        "pong" => (
            Header::Pong {
                payload: 0x0102_0304_0506_0708,
            },
            vec![],
        ),
        other => panic!("the spec has a frame example `{other}` this test does not know"),
    }
}

#[test]
fn every_frame_example_is_what_the_implementation_writes_and_reads() {
    let examples = named("hex", "frame");
    let names: Vec<&str> = examples.iter().map(|b| b.name.as_str()).collect();
    for required in [
        "request",
        "response-ok",
        "response-app-error",
        "response-error",
        "cancel",
        "go-away",
        "stream-item",
        "stream-end-ok",
        "credit",
        "ping",
        "pong",
    ] {
        assert!(
            names.contains(&required),
            "the spec lost `hex frame {required}`"
        );
    }
    for block in examples {
        let doc: Vec<u8> = block.text.lines().flat_map(parse_hex).collect();
        let (header, body) = frame_example(&block.name);
        // Written: the same header and body give the spec's bytes.
        let mut written = BytesMut::new();
        encode_frame(&mut written, &header, DEFAULT_MAX_FRAME_LEN, |buf| {
            buf.extend_from_slice(&body);
            Ok(())
        })
        .expect("encodes");
        same_bytes(&format!("frame `{}`", block.name), &written, &doc);
        // Read: the spec's bytes give the same header and body.
        let mut input = BytesMut::from(&doc[..]);
        let frame = FrameDecoder::new(DEFAULT_MAX_FRAME_LEN)
            .decode(&mut input)
            .expect("a valid frame")
            .expect("a whole frame");
        assert!(
            input.is_empty(),
            "frame `{}` has bytes after its end",
            block.name
        );
        let (read, read_body) = decode_frame(frame).expect("a valid header");
        assert_eq!(read, header, "frame `{}`", block.name);
        assert_eq!(&read_body[..], &body[..], "frame `{}` body", block.name);
    }
}

// --- preambles -----------------------------------------------------------------------------

fn preamble(name: &str) -> Vec<u8> {
    let block = named("hex", "preamble")
        .into_iter()
        .find(|b| b.name == name)
        .unwrap_or_else(|| panic!("the spec lost `hex preamble {name}`"));
    let bytes: Vec<u8> = block.text.lines().flat_map(parse_hex).collect();
    assert_eq!(bytes.len(), 8, "preamble `{name}` is 8 bytes");
    bytes
}

#[tokio::test]
async fn the_preambles_are_what_the_handshakes_write_and_accept() {
    // The client writes the spec's preamble and accepts the spec's answer.
    let (mut client, mut server) = tokio::io::duplex(64);
    let accept = preamble("accept");
    let peer = async {
        let mut hello = [0u8; 8];
        server
            .read_exact(&mut hello)
            .await
            .expect("client preamble");
        server.write_all(&accept).await.expect("answer");
        hello
    };
    let (handshake, hello) = tokio::join!(client_handshake(&mut client), peer);
    handshake.expect("the client accepts the spec's answer");
    same_bytes("client preamble", &hello, &preamble("client"));

    // The server answers the spec's preamble with the spec's answer.
    let (mut client, mut server) = tokio::io::duplex(64);
    client.write_all(&preamble("client")).await.expect("write");
    server_handshake(&mut server)
        .await
        .expect("the server accepts");
    let mut answer = [0u8; 8];
    client.read_exact(&mut answer).await.expect("answer");
    same_bytes("server's answer", &answer, &accept);

    // Another version: rejected with the spec's bytes, on both sides.
    let (mut client, mut server) = tokio::io::duplex(64);
    client
        .write_all(&preamble("unsupported"))
        .await
        .expect("write");
    assert!(server_handshake(&mut server).await.is_err());
    let mut answer = [0u8; 8];
    client.read_exact(&mut answer).await.expect("answer");
    same_bytes("rejection", &answer, &preamble("reject"));
    let (mut client, mut server) = tokio::io::duplex(64);
    server.write_all(&preamble("reject")).await.expect("write");
    let refused = client_handshake(&mut client).await;
    assert!(
        matches!(
            refused,
            Err(rpc::Error::Protocol(
                rpc::ProtocolError::UnsupportedVersion { .. }
            ))
        ),
        "{refused:?}"
    );
}

// --- method ids ----------------------------------------------------------------------------

/// FNV-1a 64 as the spec writes it out, independent of the implementation.
fn fnv1a(text: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[test]
fn method_id_vectors_match_fnv1a_and_method_id() {
    let blocks = named("text", "method-ids");
    assert_eq!(blocks.len(), 1, "one `text method-ids` block");
    let mut checked = 0;
    for line in blocks[0].text.lines().filter(|l| !l.trim().is_empty()) {
        let (name, id) = line.split_once(" = ").expect("\"name\" = 0x...");
        let name = name.trim().trim_matches('"');
        let id = u64::from_str_radix(id.trim().trim_start_matches("0x"), 16).expect("hex id");
        assert_eq!(fnv1a(name), id, "FNV-1a({name:?}) is {:#018x}", fnv1a(name));
        if let Some((service, method)) = name.rsplit_once('.') {
            assert_eq!(
                MethodId::of(service, method).as_u64(),
                id,
                "MethodId of {name}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 5);
    assert_eq!(
        rpc::health::CHECK.id().as_u64(),
        fnv1a("rpc.Health.check"),
        "the health check's id"
    );
}

// --- fingerprints --------------------------------------------------------------------------

fn unit_variants(names: &[&str]) -> Shape {
    Shape::Enum(
        names
            .iter()
            .map(|name| Variant {
                name: (*name).into(),
                shape: VariantShape::Unit,
            })
            .collect(),
    )
}

/// The signatures of section 13's methods, built from the spec's description of the types.
fn signature(method: &str) -> Signature {
    let mut registry = Registry::new();
    registry.insert("MathError", unit_variants(&["DivisionByZero", "Overflow"]));
    registry.insert(
        "Result",
        Shape::Enum(vec![
            Variant {
                name: "Ok".into(),
                shape: VariantShape::Newtype(Box::new(Shape::I64)),
            },
            Variant {
                name: "Err".into(),
                shape: VariantShape::Newtype(Box::new(Shape::Named("MathError".into()))),
            },
        ]),
    );
    registry.insert(
        "HealthStatus",
        unit_variants(&["Serving", "NotServing", "Unknown"]),
    );
    let args = |shapes: &[Shape]| {
        shapes
            .iter()
            .enumerate()
            .map(|(i, shape)| Argument {
                name: format!("a{i}"),
                shape: shape.clone(),
            })
            .collect()
    };
    let (kind, args, input_stream, result) = match method {
        "Calculator.add" | "Calculator.div" => (
            MethodKind::Unary,
            args(&[Shape::I64, Shape::I64]),
            None,
            Shape::Named("Result".into()),
        ),
        "Calculator.slow_add" => (
            MethodKind::Unary,
            args(&[Shape::I64, Shape::I64, Shape::U64]),
            None,
            Shape::I64,
        ),
        "Counter.count" => (
            MethodKind::ServerStream,
            args(&[Shape::U64]),
            None,
            Shape::U64,
        ),
        "Counter.sum" => (
            MethodKind::ClientStream,
            args(&[]),
            Some(Argument {
                name: "numbers".into(),
                shape: Shape::U64,
            }),
            Shape::U64,
        ),
        "rpc.Health.check" => (
            MethodKind::Unary,
            args(&[Shape::Str]),
            None,
            Shape::Named("HealthStatus".into()),
        ),
        "Example.add" => (
            MethodKind::Unary,
            args(&[Shape::I64, Shape::I64]),
            None,
            Shape::I64,
        ),
        "Example.ping" => (MethodKind::Unary, args(&[]), None, Shape::Unit),
        other => panic!("no signature for {other}"),
    };
    Signature {
        kind,
        args,
        input_stream,
        result,
        registry,
    }
}

/// The method `#[rpc::service]` generates for section 13's traits, fingerprint included.
fn generated(name: &str) -> Option<rpc::Method> {
    use rpc::Service;
    let calc = Calc.into_service();
    let count = Count.into_service();
    calc.methods()
        .iter()
        .chain(count.methods())
        .find(|m| m.to_string() == name)
        .copied()
}

/// The fingerprint as the spec writes it out, independent of the implementation.
fn fingerprint_of(args: &[u8], result: &[u8]) -> u64 {
    let fold = |bytes: &[u8]| {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in bytes {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        (hash >> 32) ^ (hash & 0xffff_ffff)
    };
    match ((fold(args) & 0x7fff_ffff) << 32) | fold(result) {
        0 => 1,
        fingerprint => fingerprint,
    }
}

#[test]
fn fingerprint_vectors_match_the_algorithm_and_the_implementation() {
    let blocks = named("text", "fingerprints");
    assert_eq!(blocks.len(), 1, "one `text fingerprints` block");
    let (mut checked, mut traced) = (0, 0);
    for line in blocks[0].text.lines().filter(|l| !l.trim().is_empty()) {
        let columns: Vec<&str> = line.split(" | ").collect();
        let [method, args, result, fingerprint] = columns[..] else {
            panic!("`{line}` is not `method | args | result | fingerprint`");
        };
        let (args, result) = (parse_hex(args), parse_hex(result));
        let fingerprint =
            u64::from_str_radix(fingerprint.trim_start_matches("0x"), 16).expect("hex");
        assert_eq!(
            fingerprint_of(&args, &result),
            fingerprint,
            "{method}: the spec's algorithm gives {:#018x}",
            fingerprint_of(&args, &result)
        );
        let signature = signature(method);
        same_bytes(
            &format!("{method}: arguments half"),
            &fingerprint::args_bytes(&signature),
            &args,
        );
        same_bytes(
            &format!("{method}: result half"),
            &fingerprint::result_bytes(&signature),
            &result,
        );
        assert_eq!(signature.fingerprint(), fingerprint, "{method}");
        // And what `#[rpc::service]` traces and sends for the same trait.
        if let Some(generated) = generated(method) {
            traced += 1;
            assert_eq!(
                generated.fingerprint(),
                fingerprint,
                "{method}: #[rpc::service] sends {:#018x}",
                generated.fingerprint()
            );
        }
        checked += 1;
    }
    assert!(
        checked >= 5 && traced >= 5,
        "{checked} vectors, {traced} traced"
    );
}

// --- the body encoding ---------------------------------------------------------------------

/// A JSON value, as much as the encoding examples need.
#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Number(String),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

fn parse_json(text: &str) -> Json {
    let mut chars = text.trim().chars().peekable();
    let value = json_value(&mut chars);
    assert!(chars.all(char::is_whitespace), "trailing text in {text}");
    value
}

fn json_value(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Json {
    while chars.next_if(|c| c.is_whitespace()).is_some() {}
    match chars.peek().copied() {
        Some('n') => {
            chars.by_ref().take(4).for_each(drop);
            Json::Null
        }
        Some('t') => {
            chars.by_ref().take(4).for_each(drop);
            Json::Bool(true)
        }
        Some('f') => {
            chars.by_ref().take(5).for_each(drop);
            Json::Bool(false)
        }
        Some('"') => Json::String(json_string(chars)),
        Some('[') => {
            chars.next();
            let mut items = Vec::new();
            loop {
                while chars.next_if(|c| c.is_whitespace() || *c == ',').is_some() {}
                if chars.next_if_eq(&']').is_some() {
                    return Json::Array(items);
                }
                items.push(json_value(chars));
            }
        }
        Some('{') => {
            chars.next();
            let mut fields = Vec::new();
            loop {
                while chars.next_if(|c| c.is_whitespace() || *c == ',').is_some() {}
                if chars.next_if_eq(&'}').is_some() {
                    return Json::Object(fields);
                }
                let key = json_string(chars);
                while chars.next_if(|c| c.is_whitespace() || *c == ':').is_some() {}
                fields.push((key, json_value(chars)));
            }
        }
        _ => {
            let mut number = String::new();
            while let Some(c) = chars.next_if(|c| c.is_ascii_digit() || "+-.eE".contains(*c)) {
                number.push(c);
            }
            assert!(!number.is_empty(), "not JSON");
            Json::Number(number)
        }
    }
}

fn json_string(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> String {
    assert_eq!(chars.next(), Some('"'));
    let mut out = String::new();
    for c in chars.by_ref() {
        if c == '"' {
            return out;
        }
        out.push(c);
    }
    panic!("unterminated string")
}

/// Builds a value of an example type from its JSON form (serde_json's form of the value).
trait Example: Sized {
    fn from_json(json: &Json) -> Self;
}

macro_rules! numbers {
    ($($t:ty),*) => {$(
        impl Example for $t {
            fn from_json(json: &Json) -> Self {
                match json {
                    Json::Number(n) => n.parse().unwrap_or_else(|_| panic!("{n} as {}", stringify!($t))),
                    other => panic!("{other:?} is not a number"),
                }
            }
        }
    )*};
}
numbers!(u8, i8, u16, u32, u64, u128, i32, i64, f32, f64);

impl Example for bool {
    fn from_json(json: &Json) -> Self {
        json == &Json::Bool(true)
    }
}

impl Example for char {
    fn from_json(json: &Json) -> Self {
        let text = String::from_json(json);
        let mut chars = text.chars();
        let c = chars.next().expect("one char");
        assert!(chars.next().is_none(), "one char");
        c
    }
}

impl Example for String {
    fn from_json(json: &Json) -> Self {
        match json {
            Json::String(s) => s.clone(),
            other => panic!("{other:?} is not a string"),
        }
    }
}

impl Example for () {
    fn from_json(json: &Json) -> Self {
        assert_eq!(json, &Json::Null);
    }
}

fn items(json: &Json) -> &[Json] {
    match json {
        Json::Array(items) => items,
        other => panic!("{other:?} is not an array"),
    }
}

fn fields(json: &Json) -> &[(String, Json)] {
    match json {
        Json::Object(fields) => fields,
        other => panic!("{other:?} is not an object"),
    }
}

fn field<T: Example>(json: &Json, name: &str) -> T {
    let (_, value) = fields(json)
        .iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("no field {name}"));
    T::from_json(value)
}

/// An enum's variant name and payload, as serde_json writes it.
fn variant(json: &Json) -> (&str, &Json) {
    match json {
        Json::String(name) => (name, &Json::Null),
        Json::Object(fields) if fields.len() == 1 => (&fields[0].0, &fields[0].1),
        other => panic!("{other:?} is not an enum"),
    }
}

impl<T: Example> Example for Vec<T> {
    fn from_json(json: &Json) -> Self {
        items(json).iter().map(T::from_json).collect()
    }
}

impl<T: Example> Example for Option<T> {
    fn from_json(json: &Json) -> Self {
        (json != &Json::Null).then(|| T::from_json(json))
    }
}

impl<A: Example> Example for (A,) {
    fn from_json(json: &Json) -> Self {
        (A::from_json(&items(json)[0]),)
    }
}

impl<A: Example, B: Example> Example for (A, B) {
    fn from_json(json: &Json) -> Self {
        let items = items(json);
        (A::from_json(&items[0]), B::from_json(&items[1]))
    }
}

impl Example for [u8; 3] {
    fn from_json(json: &Json) -> Self {
        Vec::<u8>::from_json(json).try_into().expect("3 bytes")
    }
}

impl<V: Example> Example for BTreeMap<String, V> {
    fn from_json(json: &Json) -> Self {
        fields(json)
            .iter()
            .map(|(k, v)| (k.clone(), V::from_json(v)))
            .collect()
    }
}

impl<T: Example, E: Example> Example for Result<T, E> {
    fn from_json(json: &Json) -> Self {
        match variant(json) {
            ("Ok", v) => Ok(T::from_json(v)),
            ("Err", e) => Err(E::from_json(e)),
            (other, _) => panic!("Result has no variant {other}"),
        }
    }
}

impl Example for MathError {
    fn from_json(json: &Json) -> Self {
        match variant(json).0 {
            "DivisionByZero" => MathError::DivisionByZero,
            "Overflow" => MathError::Overflow,
            other => panic!("MathError has no variant {other}"),
        }
    }
}

/// The spec's example struct.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Point {
    x: i32,
    y: i32,
}

impl Example for Point {
    fn from_json(json: &Json) -> Self {
        Point {
            x: field(json, "x"),
            y: field(json, "y"),
        }
    }
}

/// The spec's example enum `Shape` (named so in the spec).
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename = "Shape")]
enum Figure {
    Empty,
    Circle(u32),
    Rect(u32, u32),
    Labeled { id: u8, name: String },
}

impl Example for Figure {
    fn from_json(json: &Json) -> Self {
        match variant(json) {
            ("Empty", _) => Figure::Empty,
            ("Circle", r) => Figure::Circle(u32::from_json(r)),
            ("Rect", wh) => {
                let (w, h) = <(u32, u32)>::from_json(wh);
                Figure::Rect(w, h)
            }
            ("Labeled", fields) => Figure::Labeled {
                id: field(fields, "id"),
                name: field(fields, "name"),
            },
            (other, _) => panic!("Shape has no variant {other}"),
        }
    }
}

/// Checks one example line both ways: the value encodes to the bytes, the bytes decode to
/// the value.
fn check<T: Example + Serialize + DeserializeOwned + PartialEq + Debug>(
    line: &str,
    json: &str,
    bytes: &[u8],
) {
    let value = T::from_json(&parse_json(json));
    same_bytes(line, &body(&value), bytes);
    let back: T = Bincode
        .decode(bytes)
        .unwrap_or_else(|err| panic!("{line}: the spec's bytes do not decode: {err}"));
    assert_eq!(back, value, "{line}");
}

#[test]
fn body_encoding_examples_are_bincode() {
    let blocks = named("text", "encoding");
    assert_eq!(blocks.len(), 1, "one `text encoding` block");
    let mut checked = 0;
    for line in blocks[0].text.lines().filter(|l| !l.trim().is_empty()) {
        let mut columns = line.split(" | ");
        let (Some(ty), Some(json), Some(bytes), None) = (
            columns.next(),
            columns.next(),
            columns.next(),
            columns.next(),
        ) else {
            panic!("`{line}` is not `type | value | bytes`");
        };
        let bytes = if bytes.trim() == "(empty)" {
            vec![]
        } else {
            parse_hex(bytes)
        };
        match ty.trim() {
            "u8" => check::<u8>(line, json, &bytes),
            "i8" => check::<i8>(line, json, &bytes),
            "u16" => check::<u16>(line, json, &bytes),
            "u32" => check::<u32>(line, json, &bytes),
            "u64" => check::<u64>(line, json, &bytes),
            "u128" => check::<u128>(line, json, &bytes),
            "i32" => check::<i32>(line, json, &bytes),
            "i64" => check::<i64>(line, json, &bytes),
            "f32" => check::<f32>(line, json, &bytes),
            "f64" => check::<f64>(line, json, &bytes),
            "bool" => check::<bool>(line, json, &bytes),
            "char" => check::<char>(line, json, &bytes),
            "String" => check::<String>(line, json, &bytes),
            "Vec<u8>" => check::<Vec<u8>>(line, json, &bytes),
            "Vec<u16>" => check::<Vec<u16>>(line, json, &bytes),
            "Option<u32>" => check::<Option<u32>>(line, json, &bytes),
            "()" => check::<()>(line, json, &bytes),
            "(i64, i64)" => check::<(i64, i64)>(line, json, &bytes),
            "(String,)" => check::<(String,)>(line, json, &bytes),
            "[u8; 3]" => check::<[u8; 3]>(line, json, &bytes),
            "BTreeMap<String, u8>" => check::<BTreeMap<String, u8>>(line, json, &bytes),
            "Point" => check::<Point>(line, json, &bytes),
            "Shape" => check::<Figure>(line, json, &bytes),
            "Result<i64, MathError>" => check::<Result<i64, MathError>>(line, json, &bytes),
            "Result<(), String>" => check::<Result<(), String>>(line, json, &bytes),
            other => {
                panic!("the spec has an encoding example of type `{other}` this test does not know")
            }
        }
        checked += 1;
    }
    assert!(checked >= 40, "only {checked} encoding examples");
}

// --- conversations -------------------------------------------------------------------------

/// The services the spec's conversations run against (section 13).
#[rpc::service]
trait Calculator {
    async fn add(&self, a: i64, b: i64) -> Result<i64, MathError>;
    async fn div(&self, a: i64, b: i64) -> Result<i64, MathError>;
    async fn slow_add(&self, a: i64, b: i64, millis: u64) -> i64;
}

#[rpc::service]
trait Counter {
    async fn count(&self, n: u64) -> rpc::Stream<u64>;
    async fn sum(&self, numbers: rpc::Stream<u64>) -> u64;
}

struct Calc;

impl Calculator for Calc {
    async fn add(&self, a: i64, b: i64) -> Result<i64, MathError> {
        a.checked_add(b).ok_or(MathError::Overflow)
    }
    async fn div(&self, a: i64, b: i64) -> Result<i64, MathError> {
        if b == 0 {
            return Err(MathError::DivisionByZero);
        }
        a.checked_div(b).ok_or(MathError::Overflow)
    }
    async fn slow_add(&self, a: i64, b: i64, millis: u64) -> i64 {
        tokio::time::sleep(Duration::from_millis(millis)).await;
        a + b
    }
}

struct Count;

impl Counter for Count {
    async fn count(&self, n: u64) -> rpc::Stream<u64> {
        rpc::Stream::iter(0..n)
    }
    async fn sum(&self, numbers: rpc::Stream<u64>) -> u64 {
        use futures::StreamExt;
        numbers
            .map(|n| n.unwrap_or(0))
            .fold(0, |a, b| async move { a + b })
            .await
    }
}

/// One step of a conversation.
#[derive(Debug)]
enum Step {
    Send(Vec<u8>),
    Expect(Vec<u8>),
    Closed,
    Shutdown,
}

fn steps(text: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    for line in text.lines() {
        let code = line.split('#').next().unwrap_or("").trim_end();
        if code.trim().is_empty() {
            continue;
        }
        if code.trim() == "! shutdown" {
            steps.push(Step::Shutdown);
        } else if code.trim() == "S: EOF" {
            steps.push(Step::Closed);
        } else if let Some(rest) = code.strip_prefix("C:") {
            steps.push(Step::Send(parse_hex(rest)));
        } else if let Some(rest) = code.strip_prefix("S:") {
            steps.push(Step::Expect(parse_hex(rest)));
        } else if code.starts_with(' ') {
            match steps.last_mut() {
                Some(Step::Send(bytes) | Step::Expect(bytes)) => bytes.extend(parse_hex(code)),
                _ => panic!("`{line}` continues nothing"),
            }
        } else {
            panic!("`{line}` is not a conversation line");
        }
    }
    steps
}

/// Runs one conversation against a fresh server; panics with the server's actual bytes on a
/// mismatch.
async fn converse(name: &str, steps: Vec<Step>) {
    let server = support::start(
        rpc::Server::builder()
            .serve(Calc.into_service())
            .serve(Count.into_service())
            .keepalive_interval(None)
            .stream_window(32),
    )
    .await;
    let mut stream = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let opens_itself =
        matches!(steps.first(), Some(Step::Send(b)) if b.starts_with(&[0xf0, b'R', b'P', b'C']));
    if !opens_itself {
        stream
            .write_all(&preamble("client"))
            .await
            .expect("preamble");
        let mut answer = [0u8; 8];
        stream.read_exact(&mut answer).await.expect("answer");
        same_bytes(&format!("{name}: handshake"), &answer, &preamble("accept"));
    }
    for (i, step) in steps.into_iter().enumerate() {
        match step {
            Step::Send(bytes) => stream
                .write_all(&bytes)
                .await
                .unwrap_or_else(|err| panic!("conversation `{name}`, step {i}: sending: {err}")),
            Step::Shutdown => server.handle.shutdown(),
            Step::Expect(expected) => {
                let mut got = Vec::new();
                let read = tokio::time::timeout(support::PATIENCE, async {
                    while got.len() < expected.len() {
                        let mut chunk = vec![0u8; expected.len() - got.len()];
                        match stream.read(&mut chunk).await {
                            Ok(0) => return "the server closed the connection",
                            Ok(n) => got.extend_from_slice(&chunk[..n]),
                            Err(_) => return "the connection failed",
                        }
                    }
                    "read"
                })
                .await
                .unwrap_or("nothing more arrived in time");
                if got != expected {
                    // Whatever else is on its way, to show the whole answer.
                    let mut more = Vec::new();
                    let _ = tokio::time::timeout(
                        Duration::from_millis(200),
                        stream.read_to_end(&mut more),
                    )
                    .await;
                    panic!(
                        "conversation `{name}`, step {i}: the server sent\n  {} {}\n({read}); the spec says\n  {}",
                        hex(&got),
                        hex(&more),
                        hex(&expected)
                    );
                }
            }
            Step::Closed => {
                let rest = support::read_until_closed(name, &mut stream).await;
                assert!(
                    rest.is_empty(),
                    "conversation `{name}`, step {i}: the server sent\n  {}\nbefore closing; the spec says it closes",
                    hex(&rest)
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_conversation_is_what_a_real_server_answers() {
    let conversations = named("hex", "conversation");
    let names: Vec<&str> = conversations.iter().map(|b| b.name.as_str()).collect();
    for required in [
        "handshake",
        "pipelined",
        "version-rejected",
        "unary",
        "application-error",
        "unknown-method",
        "signature-mismatch",
        "deadline",
        "cancel",
        "server-stream",
        "client-stream",
        "go-away",
        "ping",
        "health",
        "reflection",
        "duplicate-id",
        "frame-too-large",
    ] {
        assert!(
            names.contains(&required),
            "the spec lost `hex conversation {required}`"
        );
    }
    for block in conversations {
        converse(&block.name, steps(&block.text)).await;
    }
}
