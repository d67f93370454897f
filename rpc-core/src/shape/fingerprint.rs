//! Signature fingerprints: a 64-bit hash of a method's argument and result shapes.
//!
//! Every request carries its method's fingerprint (see [`message`](crate::message)), and a
//! server refuses, before decoding anything, a call whose fingerprint differs from its own:
//! [`Error::SignatureMismatch`](crate::Error::SignatureMismatch). The check costs one
//! comparison per call; the fingerprint is computed once per method.
//!
//! # Layout
//!
//! The high 32 bits hash the *arguments* half, the low 32 bits the *result* half, so a
//! mismatch can say which side differs ([`Difference`]). Each half is FNV-1a 64 (offset
//! basis `0xcbf29ce484222325`, prime `0x100000001b3`, over bytes) of the half's canonical
//! bytes, folded to 32 bits as `(h >> 32) ^ (h & 0xffffffff)`. The top bit of the whole
//! (of the arguments half) is always 0: `fingerprint = ((args & 0x7fffffff) << 32) |
//! result`. (An [`rpc::Method`](crate::Method) keeps its idempotent flag in that bit, which
//! keeps it, and every call's futures, 8 bytes smaller: measurably fewer instructions per
//! call.) A fingerprint that comes out as 0 is sent as 1, as 0 means "not given" (the
//! server skips the check).
//!
//! - arguments half: the canonical bytes of the tuple of the arguments sent in the request
//!   body (`Shape::Tuple`, no arguments: the empty tuple); for a method that takes a client
//!   stream, followed by the stream byte `0x1c` and the item's canonical bytes.
//! - result half: the result's canonical bytes; for a method that answers with a stream,
//!   the stream byte `0x1c` followed by the item's canonical bytes.
//!
//! # Canonical bytes of a shape
//!
//! One tag byte, then the parts listed. Counts and lengths are u32 little endian; a name is
//! its UTF-8 length then its bytes.
//!
//! | tag | shape | then |
//! |---|---|---|
//! | `0x00`..`0x10` | bool, i8, i16, i32, i64, i128, u8, u16, u32, u64, u128, f32, f64, char, str, bytes, unit | nothing |
//! | `0x11` | option | the inner shape |
//! | `0x12` | seq | the element shape |
//! | `0x13` | map | key shape, value shape |
//! | `0x14` | tuple | count, each shape |
//! | `0x15` | unit struct | nothing |
//! | `0x16` | newtype struct | the inner shape |
//! | `0x17` | tuple struct | count, each shape |
//! | `0x18` | struct | count, per field: name, shape |
//! | `0x19` | enum | count, per variant: name, kind byte (0 unit; 1 newtype, shape; 2 tuple, count, shapes; 3 struct, count, fields) |
//! | `0x1a` | reference to a container being described | u32: its position among the containers being described, outermost 0 |
//! | `0x1b` | name missing from the registry | name |
//!
//! A [`Shape::Named`] is replaced by the container it names, so *container names do not
//! count*: renaming a struct or enum type, moving it to another module, or
//! `#[serde(rename)]` on the container keeps the fingerprint. Field and variant names do
//! count, in order: renaming, reordering, adding or removing a field or variant changes it.
//! Argument names do not count. A recursive reference (to a container whose description
//! encloses this one) becomes `0x1a`, so every finite description has finite bytes.

use super::{Field, Registry, Shape, Signature, TraceError, VariantShape};

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The byte that marks a stream in a half's canonical bytes.
pub const STREAM: u8 = 0x1c;

/// FNV-1a 64 of `bytes`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(FNV_PRIME)
    })
}

/// Folds a 64-bit hash into 32 bits: the xor of its halves.
pub const fn fold(hash: u64) -> u32 {
    ((hash >> 32) ^ (hash & 0xffff_ffff)) as u32
}

/// The fingerprint made of two halves: the arguments half loses its top bit, and 0 becomes 1.
pub const fn combine(args: u32, result: u32) -> u64 {
    match (((args & 0x7fff_ffff) as u64) << 32) | result as u64 {
        0 => 1,
        fingerprint => fingerprint,
    }
}

/// The fingerprint of `signature`.
pub fn of(signature: &Signature) -> u64 {
    combine(
        fold(fnv1a64(&args_bytes(signature))),
        fold(fnv1a64(&result_bytes(signature))),
    )
}

/// The fingerprint of a traced signature; 0 ("not given": no check) when its types could not
/// be traced.
pub fn of_traced(signature: &Result<Signature, TraceError>) -> u64 {
    signature.as_ref().map_or(0, of)
}

/// The canonical bytes of the arguments half of `signature`.
pub fn args_bytes(signature: &Signature) -> Vec<u8> {
    let args = Shape::Tuple(signature.args.iter().map(|a| a.shape.clone()).collect());
    let mut out = canonical_bytes(&args, &signature.registry);
    if let Some(stream) = &signature.input_stream {
        out.push(STREAM);
        Encoder::new(&signature.registry, &mut out).shape(&stream.shape);
    }
    out
}

/// The canonical bytes of the result half of `signature`.
pub fn result_bytes(signature: &Signature) -> Vec<u8> {
    let mut out = Vec::new();
    if signature.kind.has_output_stream() {
        out.push(STREAM);
    }
    Encoder::new(&signature.registry, &mut out).shape(&signature.result);
    out
}

/// The canonical bytes of `shape`, with the containers it names looked up in `registry`.
pub fn canonical_bytes(shape: &Shape, registry: &Registry) -> Vec<u8> {
    let mut out = Vec::new();
    Encoder::new(registry, &mut out).shape(shape);
    out
}

/// Which half of two fingerprints differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Difference {
    /// The arguments' shapes differ, the result's agree.
    Arguments,
    /// The result's shape differs, the arguments' agree.
    Result,
    /// Both differ.
    Both,
}

impl Difference {
    /// How `theirs` differs from `ours`; `None` when they are equal.
    pub const fn between(ours: u64, theirs: u64) -> Option<Difference> {
        let args = (ours >> 32) != (theirs >> 32);
        let result = (ours & 0xffff_ffff) != (theirs & 0xffff_ffff);
        match (args, result) {
            (false, false) => None,
            (true, false) => Some(Difference::Arguments),
            (false, true) => Some(Difference::Result),
            (true, true) => Some(Difference::Both),
        }
    }

    /// What differs, in words: "the arguments differ", "the result differs", "both the
    /// arguments and the result differ".
    pub const fn describe(self) -> &'static str {
        match self {
            Difference::Arguments => "the arguments differ",
            Difference::Result => "the result differs",
            Difference::Both => "both the arguments and the result differ",
        }
    }
}

struct Encoder<'a> {
    registry: &'a Registry,
    out: &'a mut Vec<u8>,
    /// Names of the containers being described, outermost first.
    enclosing: Vec<&'a str>,
}

impl<'a> Encoder<'a> {
    fn new(registry: &'a Registry, out: &'a mut Vec<u8>) -> Self {
        Encoder {
            registry,
            out,
            enclosing: Vec::new(),
        }
    }

    fn count(&mut self, n: usize) {
        // Shapes come from types; none has four billion fields.
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        self.out.extend_from_slice(&n.to_le_bytes());
    }

    fn name(&mut self, name: &str) {
        self.count(name.len());
        self.out.extend_from_slice(name.as_bytes());
    }

    fn shapes(&mut self, shapes: &'a [Shape]) {
        self.count(shapes.len());
        for shape in shapes {
            self.shape(shape);
        }
    }

    fn fields(&mut self, fields: &'a [Field]) {
        self.count(fields.len());
        for field in fields {
            self.name(&field.name);
            self.shape(&field.shape);
        }
    }

    fn shape(&mut self, shape: &'a Shape) {
        let tag: u8 = match shape {
            Shape::Bool => 0x00,
            Shape::I8 => 0x01,
            Shape::I16 => 0x02,
            Shape::I32 => 0x03,
            Shape::I64 => 0x04,
            Shape::I128 => 0x05,
            Shape::U8 => 0x06,
            Shape::U16 => 0x07,
            Shape::U32 => 0x08,
            Shape::U64 => 0x09,
            Shape::U128 => 0x0a,
            Shape::F32 => 0x0b,
            Shape::F64 => 0x0c,
            Shape::Char => 0x0d,
            Shape::Str => 0x0e,
            Shape::Bytes => 0x0f,
            Shape::Unit => 0x10,
            Shape::Option(inner) => {
                self.out.push(0x11);
                return self.shape(inner);
            }
            Shape::Seq(element) => {
                self.out.push(0x12);
                return self.shape(element);
            }
            Shape::Map { key, value } => {
                self.out.push(0x13);
                self.shape(key);
                return self.shape(value);
            }
            Shape::Tuple(shapes) => {
                self.out.push(0x14);
                return self.shapes(shapes);
            }
            Shape::UnitStruct => 0x15,
            Shape::NewtypeStruct(inner) => {
                self.out.push(0x16);
                return self.shape(inner);
            }
            Shape::TupleStruct(shapes) => {
                self.out.push(0x17);
                return self.shapes(shapes);
            }
            Shape::Struct(fields) => {
                self.out.push(0x18);
                return self.fields(fields);
            }
            Shape::Enum(variants) => {
                self.out.push(0x19);
                self.count(variants.len());
                for variant in variants {
                    self.name(&variant.name);
                    match &variant.shape {
                        VariantShape::Unit => self.out.push(0),
                        VariantShape::Newtype(inner) => {
                            self.out.push(1);
                            self.shape(inner);
                        }
                        VariantShape::Tuple(shapes) => {
                            self.out.push(2);
                            self.shapes(shapes);
                        }
                        VariantShape::Struct(fields) => {
                            self.out.push(3);
                            self.fields(fields);
                        }
                    }
                }
                return;
            }
            Shape::Named(name) => return self.named(name),
        };
        self.out.push(tag);
    }

    fn named(&mut self, name: &'a str) {
        if let Some(at) = self.enclosing.iter().position(|n| *n == name) {
            self.out.push(0x1a);
            return self.count(at);
        }
        match self.registry.containers.get_key_value(name) {
            Some((name, container)) => {
                self.enclosing.push(name);
                self.shape(container);
                self.enclosing.pop();
            }
            None => {
                self.out.push(0x1b);
                self.name(name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shape::{Argument, MethodKind, Variant};

    fn unary(args: Vec<Shape>, result: Shape, registry: Registry) -> Signature {
        Signature {
            kind: MethodKind::Unary,
            args: args
                .into_iter()
                .enumerate()
                .map(|(i, shape)| Argument {
                    name: format!("a{i}"),
                    shape,
                })
                .collect(),
            input_stream: None,
            result,
            registry,
        }
    }

    #[test]
    fn fnv_matches_published_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn halves_are_arguments_then_result() {
        let sig = unary(vec![Shape::I64, Shape::I64], Shape::I64, Registry::new());
        // (i64, i64): tuple tag, count 2, two i64 tags.
        assert_eq!(args_bytes(&sig), [0x14, 2, 0, 0, 0, 0x04, 0x04]);
        assert_eq!(result_bytes(&sig), [0x04]);
        let expected = (u64::from(fold(fnv1a64(&[0x14, 2, 0, 0, 0, 4, 4])) & 0x7fff_ffff) << 32)
            | u64::from(fold(fnv1a64(&[0x04])));
        assert_eq!(sig.fingerprint(), expected);
        let unsigned = unary(vec![Shape::U64, Shape::U64], Shape::I64, Registry::new());
        assert_eq!(
            Difference::between(sig.fingerprint(), unsigned.fingerprint()),
            Some(Difference::Arguments)
        );
        let other_result = unary(vec![Shape::I64, Shape::I64], Shape::U64, Registry::new());
        assert_eq!(
            Difference::between(sig.fingerprint(), other_result.fingerprint()),
            Some(Difference::Result)
        );
        assert_eq!(Difference::between(1, 1), None);
    }

    #[test]
    fn container_names_do_not_count_but_field_names_do() {
        let point = |x: &str| {
            Shape::Struct(vec![
                Field {
                    name: x.into(),
                    shape: Shape::I32,
                },
                Field {
                    name: "y".into(),
                    shape: Shape::I32,
                },
            ])
        };
        let mut a = Registry::new();
        a.insert("Point", point("x"));
        let mut b = Registry::new();
        b.insert("Coordinates", point("x"));
        let mut c = Registry::new();
        c.insert("Point", point("z"));
        let named = |n: &str| Shape::Named(n.into());
        assert_eq!(
            canonical_bytes(&named("Point"), &a),
            canonical_bytes(&named("Coordinates"), &b)
        );
        assert_ne!(
            canonical_bytes(&named("Point"), &a),
            canonical_bytes(&named("Point"), &c)
        );
    }

    #[test]
    fn recursion_becomes_a_back_reference() {
        let mut registry = Registry::new();
        registry.insert(
            "List",
            Shape::Enum(vec![
                Variant {
                    name: "Nil".into(),
                    shape: VariantShape::Unit,
                },
                Variant {
                    name: "Cons".into(),
                    shape: VariantShape::Tuple(vec![Shape::I64, Shape::Named("List".into())]),
                },
            ]),
        );
        let bytes = canonical_bytes(&Shape::Named("List".into()), &registry);
        let mut expected = vec![0x19, 2, 0, 0, 0];
        expected.extend_from_slice(&[3, 0, 0, 0]);
        expected.extend_from_slice(b"Nil");
        expected.push(0);
        expected.extend_from_slice(&[4, 0, 0, 0]);
        expected.extend_from_slice(b"Cons");
        expected.extend_from_slice(&[2, 2, 0, 0, 0, 0x04, 0x1a, 0, 0, 0, 0]);
        assert_eq!(bytes, expected);
    }

    #[test]
    fn streams_are_marked() {
        let mut sig = unary(vec![], Shape::U8, Registry::new());
        let plain = sig.fingerprint();
        sig.kind = MethodKind::ServerStream;
        assert_eq!(result_bytes(&sig), [STREAM, 0x06]);
        assert_eq!(
            Difference::between(plain, sig.fingerprint()),
            Some(Difference::Result)
        );
        sig.kind = MethodKind::Bidi;
        sig.input_stream = Some(Argument {
            name: "data".into(),
            shape: Shape::U8,
        });
        assert_eq!(args_bytes(&sig), [0x14, 0, 0, 0, 0, STREAM, 0x06]);
    }

    /// Vectors for implementations in other languages (docs/PROTOCOL.md cites them).
    #[test]
    fn fixed_vectors() {
        // add(a: i64, b: i64) -> i64: arguments bytes 14 02000000 04 04, result bytes 04.
        let add = unary(vec![Shape::I64, Shape::I64], Shape::I64, Registry::new());
        assert_eq!(fold(fnv1a64(&args_bytes(&add))), 0x4ed4_f67b);
        assert_eq!(fold(fnv1a64(&result_bytes(&add))), 0x2962_085f);
        assert_eq!(add.fingerprint(), 0x4ed4_f67b_2962_085f);
        // ping() -> (): arguments bytes 14 00000000, result bytes 10.
        let ping = unary(vec![], Shape::Unit, Registry::new());
        assert_eq!(ping.fingerprint(), 0x780a_1024_2962_1e43);
    }

    #[test]
    fn zero_is_never_a_fingerprint() {
        assert_eq!(combine(0, 0), 1);
        assert_eq!(combine(1, 2), (1 << 32) | 2);
        assert_eq!(combine(u32::MAX, 5), 0x7fff_ffff_0000_0005);
        assert_eq!(combine(0x8000_0000, 0), 1);
    }
}
