//! JSON to the wire encoding and back, walking a [`Shape`] and the [`Registry`] of the
//! structs and enums it names.
//!
//! [`encode`] writes exactly the bytes `rpc_core::Bincode` (bincode 2, `config::standard()`)
//! writes for the Rust value the JSON stands for; [`decode`] reads them back. The JSON form is
//! serde_json's own for the same value, so what `rpc call` prints can be pasted back in:
//!
//! | shape | JSON |
//! |---|---|
//! | integers | numbers (128-bit ones outside the 64-bit range: decimal strings) |
//! | floats | numbers; `"NaN"`, `"inf"`, `"-inf"` for the values JSON lacks |
//! | bool, string | themselves |
//! | char | a string of one character |
//! | bytes | an array of numbers 0 to 255 |
//! | unit | `null` |
//! | option | `null` for none, else the value |
//! | sequence, tuple | an array (a tuple's of exactly its length) |
//! | map | an object when the keys are strings or chars, else an array of `[key, value]` pairs (an object is accepted for any key: its keys are read as JSON, `{"1": "a"}`) |
//! | struct | an object with every field (an array in field order is accepted too); a tuple struct: an array; a newtype struct: its field; a unit struct: `null` |
//! | enum, `Result` | `"Variant"` for a unit variant, else `{"Variant": payload}`: `{"Ok": 5}` |
//!
//! Errors name the path of the value that does not fit: `$[1]: expected i64, got string`.

use std::fmt;

use serde_json::{Map, Number, Value};

use rpc_core::shape::{Field, Registry, Shape, Variant, VariantShape};

/// A JSON value that does not fit its shape, or bytes that are not an encoding of theirs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConvertError {
    /// Where in the value: `$`, `$[1]`, `$.name`, `$.Ok`.
    pub path: String,
    /// What is wrong there.
    pub message: String,
}

/// The encoding of `value`, read as `shape` (whose named structs and enums are in
/// `registry`).
pub fn encode(shape: &Shape, registry: &Registry, value: &Value) -> Result<Vec<u8>, ConvertError> {
    let mut out = Vec::new();
    Encoder {
        out: &mut out,
        path: Path::root(),
        types: Types { registry },
    }
    .value(shape, value)?;
    Ok(out)
}

/// The JSON form of `bytes`, which must hold exactly one encoding of `shape` (whose named
/// structs and enums are in `registry`).
pub fn decode(shape: &Shape, registry: &Registry, bytes: &[u8]) -> Result<Value, ConvertError> {
    let mut decoder = Decoder {
        input: bytes,
        at: 0,
        path: Path::root(),
        types: Types { registry },
        depth: 0,
    };
    let value = decoder.value(shape)?;
    if decoder.at != bytes.len() {
        return Err(decoder.path.error(format!(
            "{} bytes left over after the value; does the server use another version of the method?",
            bytes.len() - decoder.at
        )));
    }
    Ok(value)
}

/// A path into a JSON value, as `$`, `$[1]`, `$.field`.
#[derive(Debug, Clone)]
struct Path(String);

impl Path {
    fn root() -> Path {
        Path("$".into())
    }

    fn index(&self, i: usize) -> Path {
        Path(format!("{}[{i}]", self.0))
    }

    fn field(&self, name: &str) -> Path {
        let plain = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if plain {
            Path(format!("{}.{name}", self.0))
        } else {
            Path(format!("{}[{name:?}]", self.0))
        }
    }

    fn error(&self, message: impl Into<String>) -> ConvertError {
        ConvertError {
            path: self.0.clone(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Looks up the structs and enums a shape names.
#[derive(Clone, Copy)]
struct Types<'a> {
    registry: &'a Registry,
}

/// How many names may lead to other names before a container: more is a loop.
const MAX_ALIASES: usize = 64;

impl<'a> Types<'a> {
    /// The shape behind `shape`'s names, and the last name on the way (for messages).
    fn resolve<'s>(
        &self,
        mut shape: &'s Shape,
        path: &Path,
    ) -> Result<(Option<&'s str>, &'s Shape), ConvertError>
    where
        'a: 's,
    {
        let mut name = None;
        for _ in 0..MAX_ALIASES {
            let Shape::Named(n) = shape else {
                return Ok((name, shape));
            };
            shape = self
                .registry
                .get(n)
                .ok_or_else(|| path.error(format!("the server's description has no type `{n}`")))?;
            name = Some(n.as_str());
        }
        Err(path.error("the server's description names types in a loop"))
    }

    /// A short name for error messages: `i64`, `string`, `enum MathError`.
    fn describe(&self, shape: &Shape) -> String {
        let (name, shape) = match self.resolve(shape, &Path::root()) {
            Ok(resolved) => resolved,
            Err(_) => return "an unknown type".into(),
        };
        if let Some(scalar) = shape.scalar_name() {
            return scalar.into();
        }
        let name = name.map_or_else(String::new, |n| format!(" {n}"));
        match shape {
            Shape::Str => "string".into(),
            Shape::Bytes => "bytes".into(),
            Shape::Unit | Shape::UnitStruct => format!("null (unit{name})"),
            Shape::Option(inner) => format!("{} or null", self.describe(inner)),
            Shape::Seq(_) => "array".into(),
            Shape::Map { .. } => "map".into(),
            Shape::Tuple(items) => format!("array of {}", items.len()),
            Shape::NewtypeStruct(inner) => self.describe(inner),
            Shape::TupleStruct(items) => format!("array of {} (struct{name})", items.len()),
            Shape::Struct(_) => format!("object (struct{name})"),
            Shape::Enum(_) => format!("enum{name}"),
            _ => "a shape this tool does not know".into(),
        }
    }
}

/// What a JSON value is, for error messages.
fn kind(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("bool {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(_) => "string".into(),
        Value::Array(items) => format!("array of {}", items.len()),
        Value::Object(_) => "object".into(),
    }
}

// --- bincode's integer encoding (config::standard()) ---------------------------------------

/// Largest value written as a single byte.
const SINGLE_BYTE_MAX: u8 = 250;
/// Marks a `u16` (2 bytes, little endian) that follows.
const U16_BYTE: u8 = 251;
/// Marks a `u32` that follows.
const U32_BYTE: u8 = 252;
/// Marks a `u64` that follows.
const U64_BYTE: u8 = 253;
/// Marks a `u128` that follows.
const U128_BYTE: u8 = 254;

fn put_varint(out: &mut Vec<u8>, v: u128) {
    if v <= u128::from(SINGLE_BYTE_MAX) {
        out.push(v as u8);
    } else if let Ok(v) = u16::try_from(v) {
        out.push(U16_BYTE);
        out.extend_from_slice(&v.to_le_bytes());
    } else if let Ok(v) = u32::try_from(v) {
        out.push(U32_BYTE);
        out.extend_from_slice(&v.to_le_bytes());
    } else if let Ok(v) = u64::try_from(v) {
        out.push(U64_BYTE);
        out.extend_from_slice(&v.to_le_bytes());
    } else {
        out.push(U128_BYTE);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// Zigzag: 0, -1, 1, -2, ... become 0, 1, 2, 3, ...
fn zigzag(v: i128) -> u128 {
    if v < 0 {
        (!(v as u128)) * 2 + 1
    } else {
        (v as u128) * 2
    }
}

fn unzigzag(v: u128) -> i128 {
    if v % 2 == 0 {
        (v / 2) as i128
    } else {
        !((v / 2) as i128)
    }
}

/// The integer widths, with their range and whether they are varint-encoded.
#[derive(Debug, Clone, Copy)]
enum Int {
    Signed(u32),
    Unsigned(u32),
}

impl Int {
    fn of(shape: &Shape) -> Option<Int> {
        Some(match shape {
            Shape::I8 => Int::Signed(8),
            Shape::I16 => Int::Signed(16),
            Shape::I32 => Int::Signed(32),
            Shape::I64 => Int::Signed(64),
            Shape::I128 => Int::Signed(128),
            Shape::U8 => Int::Unsigned(8),
            Shape::U16 => Int::Unsigned(16),
            Shape::U32 => Int::Unsigned(32),
            Shape::U64 => Int::Unsigned(64),
            Shape::U128 => Int::Unsigned(128),
            _ => return None,
        })
    }

    fn bits(self) -> u32 {
        match self {
            Int::Signed(bits) | Int::Unsigned(bits) => bits,
        }
    }

    fn fits(self, v: i128, unsigned_big: Option<u128>) -> bool {
        match (self, unsigned_big) {
            (Int::Unsigned(128), Some(_)) => true,
            (_, Some(_)) => false,
            (Int::Signed(128), None) => true,
            (Int::Signed(bits), None) => {
                let max = (1i128 << (bits - 1)) - 1;
                v >= -max - 1 && v <= max
            }
            (Int::Unsigned(bits), None) => v >= 0 && (bits == 128 || v < (1i128 << bits)),
        }
    }
}

// --- encoding ------------------------------------------------------------------------------

struct Encoder<'a> {
    out: &'a mut Vec<u8>,
    path: Path,
    types: Types<'a>,
}

impl<'a> Encoder<'a> {
    fn at(&mut self, path: Path) -> Encoder<'_> {
        Encoder {
            out: self.out,
            path,
            types: self.types,
        }
    }

    fn mismatch(&self, shape: &Shape, value: &Value) -> ConvertError {
        self.path.error(format!(
            "expected {}, got {}",
            self.types.describe(shape),
            kind(value)
        ))
    }

    fn value(&mut self, shape: &Shape, value: &Value) -> Result<(), ConvertError> {
        let (name, resolved) = self.types.resolve(shape, &self.path)?;
        if let Some(int) = Int::of(resolved) {
            return self.int(int, resolved, value);
        }
        match (resolved, value) {
            (Shape::Bool, Value::Bool(b)) => self.out.push(u8::from(*b)),
            (Shape::F32, _) => {
                let v = self.float(resolved, value)?;
                self.out.extend_from_slice(&(v as f32).to_le_bytes());
            }
            (Shape::F64, _) => {
                let v = self.float(resolved, value)?;
                self.out.extend_from_slice(&v.to_le_bytes());
            }
            (Shape::Char, Value::String(s)) => {
                let mut chars = s.chars();
                let (Some(c), None) = (chars.next(), chars.next()) else {
                    return Err(self.path.error(format!(
                        "expected char, got a string of {} characters",
                        s.chars().count()
                    )));
                };
                let mut buf = [0u8; 4];
                self.out
                    .extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
            (Shape::Str, Value::String(s)) => {
                put_varint(self.out, s.len() as u128);
                self.out.extend_from_slice(s.as_bytes());
            }
            (Shape::Bytes, Value::Array(items)) => {
                put_varint(self.out, items.len() as u128);
                for (i, item) in items.iter().enumerate() {
                    self.at(self.path.index(i))
                        .int(Int::Unsigned(8), &Shape::U8, item)?;
                }
            }
            (Shape::Unit | Shape::UnitStruct, Value::Null) => {}
            (Shape::Option(_), Value::Null) => self.out.push(0),
            (Shape::Option(inner), _) => {
                self.out.push(1);
                self.value(inner, value)?;
            }
            (Shape::Seq(item), Value::Array(items)) => {
                put_varint(self.out, items.len() as u128);
                for (i, value) in items.iter().enumerate() {
                    self.at(self.path.index(i)).value(item, value)?;
                }
            }
            (Shape::Map { key, value: val }, _) => self.map(key, val, value)?,
            (Shape::Tuple(shapes) | Shape::TupleStruct(shapes), Value::Array(items)) => {
                self.tuple(shapes, items)?
            }
            // No arguments at all: `[]`, or `null` as serde_json writes `()`.
            (Shape::Tuple(shapes), Value::Null) if shapes.is_empty() => {}
            (Shape::NewtypeStruct(inner), _) => self.value(inner, value)?,
            (Shape::Struct(fields), Value::Object(object)) => self.fields(fields, object)?,
            (Shape::Struct(fields), Value::Array(items)) => {
                let shapes: Vec<Shape> = fields.iter().map(|f| f.shape.clone()).collect();
                self.tuple(&shapes, items)?;
            }
            (Shape::Enum(variants), _) => self.variant(name.unwrap_or("enum"), variants, value)?,
            _ => return Err(self.mismatch(shape, value)),
        }
        Ok(())
    }

    fn int(&mut self, int: Int, shape: &Shape, value: &Value) -> Result<(), ConvertError> {
        // A number, or for the 128-bit widths a decimal string (JSON numbers stop at 64 bits).
        let (small, big): (Option<i128>, Option<u128>) = match value {
            Value::Number(n) => match (n.as_i64(), n.as_u64()) {
                (Some(v), _) => (Some(v.into()), None),
                (None, Some(v)) => (Some(v.into()), None),
                (None, None) => return Err(self.mismatch(shape, value)),
            },
            Value::String(s) if int.bits() == 128 => match (s.parse::<i128>(), s.parse::<u128>()) {
                (Ok(v), _) => (Some(v), None),
                (Err(_), Ok(v)) => (None, Some(v)),
                _ => return Err(self.mismatch(shape, value)),
            },
            _ => return Err(self.mismatch(shape, value)),
        };
        let v = small.unwrap_or(0);
        if !int.fits(v, big) {
            let shown = big.map_or_else(|| v.to_string(), |b| b.to_string());
            return Err(self.path.error(format!(
                "{shown} does not fit in {}",
                self.types.describe(shape)
            )));
        }
        match (int, big) {
            (_, Some(big)) => put_varint(self.out, big),
            // Single bytes are written as they are, never as varints.
            (Int::Signed(8) | Int::Unsigned(8), None) => self.out.push(v as u8),
            (Int::Signed(_), None) => put_varint(self.out, zigzag(v)),
            (Int::Unsigned(_), None) => put_varint(self.out, v as u128),
        }
        Ok(())
    }

    fn float(&self, shape: &Shape, value: &Value) -> Result<f64, ConvertError> {
        match value {
            Value::Number(n) => n.as_f64().ok_or_else(|| self.mismatch(shape, value)),
            Value::String(s) => match s.as_str() {
                "NaN" => Ok(f64::NAN),
                "inf" => Ok(f64::INFINITY),
                "-inf" => Ok(f64::NEG_INFINITY),
                _ => Err(self.mismatch(shape, value)),
            },
            _ => Err(self.mismatch(shape, value)),
        }
    }

    fn tuple(&mut self, shapes: &[Shape], items: &[Value]) -> Result<(), ConvertError> {
        if shapes.len() != items.len() {
            return Err(self.path.error(format!(
                "expected an array of {} values, got {}",
                shapes.len(),
                items.len()
            )));
        }
        for (i, (shape, value)) in shapes.iter().zip(items).enumerate() {
            self.at(self.path.index(i)).value(shape, value)?;
        }
        Ok(())
    }

    fn fields(
        &mut self,
        fields: &[Field],
        object: &Map<String, Value>,
    ) -> Result<(), ConvertError> {
        if let Some(unknown) = object
            .keys()
            .find(|key| !fields.iter().any(|f| f.name == **key))
        {
            return Err(self.path.error(format!("unknown field `{unknown}`")));
        }
        for field in fields {
            let value = object
                .get(&field.name)
                .ok_or_else(|| self.path.error(format!("missing field `{}`", field.name)))?;
            self.at(self.path.field(&field.name))
                .value(&field.shape, value)?;
        }
        Ok(())
    }

    fn map(&mut self, key: &Shape, val: &Shape, value: &Value) -> Result<(), ConvertError> {
        let string_keys = matches!(
            self.types.resolve(key, &self.path)?.1,
            Shape::Str | Shape::Char
        );
        match value {
            Value::Object(object) => {
                put_varint(self.out, object.len() as u128);
                for (k, v) in object {
                    let path = self.path.field(k);
                    let key_value = if string_keys {
                        Value::String(k.clone())
                    } else {
                        // Other keys are written as JSON inside the object key: {"1": ..}.
                        serde_json::from_str(k).map_err(|_| {
                            path.error(format!(
                                "the key is not a JSON {}",
                                self.types.describe(key)
                            ))
                        })?
                    };
                    self.at(path.clone()).value(key, &key_value)?;
                    self.at(path).value(val, v)?;
                }
            }
            Value::Array(pairs) => {
                put_varint(self.out, pairs.len() as u128);
                for (i, pair) in pairs.iter().enumerate() {
                    let path = self.path.index(i);
                    match pair {
                        Value::Array(kv) if kv.len() == 2 => {
                            self.at(path.index(0)).value(key, &kv[0])?;
                            self.at(path.index(1)).value(val, &kv[1])?;
                        }
                        other => {
                            return Err(path.error(format!(
                                "expected a [key, value] pair, got {}",
                                kind(other)
                            )))
                        }
                    }
                }
            }
            other => {
                return Err(self.path.error(format!(
                    "expected map (an object or an array of [key, value] pairs), got {}",
                    kind(other)
                )))
            }
        }
        Ok(())
    }

    fn variant(
        &mut self,
        name: &str,
        variants: &[Variant],
        value: &Value,
    ) -> Result<(), ConvertError> {
        let (tag, payload) = match value {
            Value::String(tag) => (tag.as_str(), None),
            Value::Object(object) if object.len() == 1 => match object.iter().next() {
                Some((tag, payload)) => (tag.as_str(), Some(payload)),
                None => return Err(self.path.error("expected one variant")),
            },
            other => {
                return Err(self.path.error(format!(
                    "expected enum {name} (\"Variant\" or {{\"Variant\": value}}), got {}",
                    kind(other)
                )))
            }
        };
        let Some(index) = variants.iter().position(|v| v.name == tag) else {
            let known: Vec<&str> = variants.iter().map(|v| v.name.as_str()).collect();
            return Err(self.path.error(format!(
                "enum {name} has no variant `{tag}` (it has {})",
                known.join(", ")
            )));
        };
        let variant = &variants[index].shape;
        // The variant index is a u32, varint-encoded.
        put_varint(self.out, index as u128);
        let path = self.path.field(tag);
        match (variant, payload) {
            (VariantShape::Unit, None | Some(Value::Null)) => Ok(()),
            (VariantShape::Newtype(shape), Some(payload)) => self.at(path).value(shape, payload),
            (VariantShape::Tuple(shapes), Some(Value::Array(items))) => {
                self.at(path).tuple(shapes, items)
            }
            (VariantShape::Struct(fields), Some(Value::Object(object))) => {
                self.at(path).fields(fields, object)
            }
            (_, payload) => {
                let holds = match variant {
                    VariantShape::Unit => "takes no value".to_string(),
                    VariantShape::Newtype(shape) => {
                        format!("holds {}", self.types.describe(shape))
                    }
                    VariantShape::Tuple(shapes) => format!("holds an array of {}", shapes.len()),
                    VariantShape::Struct(_) => "holds an object".to_string(),
                    _ => "holds a value this tool does not know".to_string(),
                };
                Err(path.error(format!(
                    "variant `{tag}` of {name} {holds}, got {}",
                    payload.map_or_else(|| "nothing".to_string(), kind)
                )))
            }
        }
    }
}

// --- decoding ------------------------------------------------------------------------------

struct Decoder<'a> {
    input: &'a [u8],
    at: usize,
    path: Path,
    types: Types<'a>,
    /// How many values enclose the one being read.
    depth: usize,
}

/// Most elements a sequence of zero-byte elements (`Vec<()>`) may claim: nothing else bounds
/// it, as such elements use no input.
const MAX_EMPTY_ELEMENTS: u128 = 1 << 20;

/// How deeply values may nest (a recursive type can nest as deep as the input is long).
const MAX_DEPTH: usize = 128;

impl Decoder<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], ConvertError> {
        let left = self.input.len() - self.at;
        if left < n {
            return Err(self.path.error(format!(
                "the input ends inside a value ({left} of {n} bytes left)"
            )));
        }
        let bytes = &self.input[self.at..self.at + n];
        self.at += n;
        Ok(bytes)
    }

    fn byte(&mut self) -> Result<u8, ConvertError> {
        Ok(self.take(1)?[0])
    }

    fn le<const N: usize>(&mut self) -> Result<[u8; N], ConvertError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// A varint of at most `bits` bits, in any of the forms bincode accepts for that width.
    fn varint(&mut self, bits: u32) -> Result<u128, ConvertError> {
        let first = self.byte()?;
        let (v, width) = match first {
            0..=SINGLE_BYTE_MAX => (u128::from(first), 8),
            U16_BYTE => (u16::from_le_bytes(self.le()?).into(), 16),
            U32_BYTE => (u32::from_le_bytes(self.le()?).into(), 32),
            U64_BYTE => (u64::from_le_bytes(self.le()?).into(), 64),
            U128_BYTE => (u128::from_le_bytes(self.le()?), 128),
            _ => (0, 256),
        };
        if width > bits.max(8) {
            return Err(self.path.error(format!(
                "varint marker {first:#04x} is not allowed for a {bits}-bit integer"
            )));
        }
        Ok(v)
    }

    fn len(&mut self, empty_elements: bool) -> Result<usize, ConvertError> {
        let len = self.varint(64)?;
        let left = (self.input.len() - self.at) as u128;
        let bound = if empty_elements {
            MAX_EMPTY_ELEMENTS
        } else {
            left
        };
        if len > bound {
            return Err(self.path.error(format!(
                "a length of {len} cannot fit in the {left} bytes left"
            )));
        }
        Ok(len as usize)
    }

    fn nested<T>(
        &mut self,
        path: Path,
        f: impl FnOnce(&mut Self) -> Result<T, ConvertError>,
    ) -> Result<T, ConvertError> {
        let outer = std::mem::replace(&mut self.path, path);
        let result = f(self);
        self.path = outer;
        result
    }

    fn value(&mut self, shape: &Shape) -> Result<Value, ConvertError> {
        if self.depth >= MAX_DEPTH {
            return Err(self
                .path
                .error(format!("values nest deeper than {MAX_DEPTH} levels")));
        }
        self.depth += 1;
        let value = self.value_inner(shape);
        self.depth -= 1;
        value
    }

    fn value_inner(&mut self, shape: &Shape) -> Result<Value, ConvertError> {
        let types = self.types;
        let (name, shape) = types.resolve(shape, &self.path)?;
        if let Some(int) = Int::of(shape) {
            return self.int(int);
        }
        Ok(match shape {
            Shape::Bool => match self.byte()? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                other => {
                    return Err(self
                        .path
                        .error(format!("bool byte {other} is neither 0 nor 1")))
                }
            },
            Shape::F32 => {
                let v = f32::from_le_bytes(self.le()?);
                float(v.to_string(), f64::from(v))
            }
            Shape::F64 => {
                let v = f64::from_le_bytes(self.le()?);
                float(v.to_string(), v)
            }
            Shape::Char => {
                let first = self.byte()?;
                let width = match first {
                    0x00..=0x7f => 1,
                    0xc0..=0xdf => 2,
                    0xe0..=0xef => 3,
                    0xf0..=0xf7 => 4,
                    _ => {
                        return Err(self
                            .path
                            .error(format!("byte {first:#04x} cannot start a UTF-8 char")))
                    }
                };
                self.at -= 1;
                let text = std::str::from_utf8(self.take(width)?).map(str::to_string);
                Value::String(text.map_err(|_| self.path.error("the char is not valid UTF-8"))?)
            }
            Shape::Str => {
                let len = self.len(false)?;
                let text = std::str::from_utf8(self.take(len)?).map(str::to_string);
                Value::String(text.map_err(|_| self.path.error("the string is not valid UTF-8"))?)
            }
            Shape::Bytes => {
                let len = self.len(false)?;
                Value::Array(self.take(len)?.iter().map(|b| Value::from(*b)).collect())
            }
            Shape::Unit | Shape::UnitStruct => Value::Null,
            Shape::Option(inner) => match self.byte()? {
                0 => Value::Null,
                1 => self.value(inner)?,
                other => {
                    return Err(self
                        .path
                        .error(format!("option tag {other} is neither 0 nor 1")))
                }
            },
            Shape::Seq(item) => {
                let len = self.len(types.is_empty(item))?;
                let mut items = Vec::new();
                for i in 0..len {
                    items.push(self.nested(self.path.index(i), |d| d.value(item))?);
                }
                Value::Array(items)
            }
            Shape::Map { key, value: val } => {
                let len = self.len(types.is_empty(key) && types.is_empty(val))?;
                let as_object =
                    matches!(types.resolve(key, &self.path)?.1, Shape::Str | Shape::Char);
                let mut object = Map::new();
                let mut pairs = Vec::new();
                for i in 0..len {
                    let path = self.path.index(i);
                    let k = self.nested(path.index(0), |d| d.value(key))?;
                    let v = self.nested(path.index(1), |d| d.value(val))?;
                    match (as_object, k) {
                        (true, Value::String(k)) => {
                            object.insert(k, v);
                        }
                        (_, k) => pairs.push(Value::Array(vec![k, v])),
                    }
                }
                if as_object {
                    Value::Object(object)
                } else {
                    Value::Array(pairs)
                }
            }
            Shape::Tuple(shapes) | Shape::TupleStruct(shapes) => Value::Array(self.tuple(shapes)?),
            Shape::NewtypeStruct(inner) => self.value(inner)?,
            Shape::Struct(fields) => Value::Object(self.fields(fields)?),
            Shape::Enum(variants) => {
                let index = self.varint(32)?;
                let Some(variant) = usize::try_from(index).ok().and_then(|i| variants.get(i))
                else {
                    return Err(self.path.error(format!(
                        "variant index {index} is out of range for enum {} ({} variants)",
                        name.unwrap_or("?"),
                        variants.len()
                    )));
                };
                let path = self.path.field(&variant.name);
                let payload = match &variant.shape {
                    VariantShape::Unit => return Ok(Value::String(variant.name.clone())),
                    VariantShape::Newtype(shape) => self.nested(path, |d| d.value(shape))?,
                    VariantShape::Tuple(shapes) => {
                        Value::Array(self.nested(path, |d| d.tuple(shapes))?)
                    }
                    VariantShape::Struct(fields) => {
                        Value::Object(self.nested(path, |d| d.fields(fields))?)
                    }
                    _ => return Err(self.path.error("a variant this tool does not know")),
                };
                let mut object = Map::new();
                object.insert(variant.name.clone(), payload);
                Value::Object(object)
            }
            _ => return Err(self.path.error("a shape this tool does not know")),
        })
    }

    fn int(&mut self, int: Int) -> Result<Value, ConvertError> {
        let (signed, raw) = match int {
            Int::Signed(8) => return Ok(Value::from(self.byte()? as i8)),
            Int::Unsigned(8) => return Ok(Value::from(self.byte()?)),
            Int::Signed(bits) => (true, self.varint(bits)?),
            Int::Unsigned(bits) => (false, self.varint(bits)?),
        };
        let bits = int.bits();
        if signed {
            let v = unzigzag(raw);
            if bits < 128 && (raw >> bits) != 0 {
                return Err(self.path.error(format!("{v} does not fit in i{bits}")));
            }
            Ok(i64::try_from(v).map_or_else(|_| Value::String(v.to_string()), Value::from))
        } else {
            if bits < 128 && (raw >> bits) != 0 {
                return Err(self.path.error(format!("{raw} does not fit in u{bits}")));
            }
            Ok(u64::try_from(raw).map_or_else(|_| Value::String(raw.to_string()), Value::from))
        }
    }

    fn tuple(&mut self, shapes: &[Shape]) -> Result<Vec<Value>, ConvertError> {
        let mut items = Vec::with_capacity(shapes.len());
        for (i, shape) in shapes.iter().enumerate() {
            items.push(self.nested(self.path.index(i), |d| d.value(shape))?);
        }
        Ok(items)
    }

    fn fields(&mut self, fields: &[Field]) -> Result<Map<String, Value>, ConvertError> {
        let mut object = Map::new();
        for field in fields {
            let value = self.nested(self.path.field(&field.name), |d| d.value(&field.shape))?;
            object.insert(field.name.clone(), value);
        }
        Ok(object)
    }
}

/// A float as JSON: the shortest decimal that reads back as the same value, or a string for
/// the values JSON has no number for.
fn float(shortest: String, v: f64) -> Value {
    if v.is_nan() {
        return Value::String("NaN".into());
    }
    if v.is_infinite() {
        return Value::String(if v > 0.0 { "inf" } else { "-inf" }.into());
    }
    shortest
        .parse::<f64>()
        .ok()
        .and_then(Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

impl Types<'_> {
    /// Whether values of `shape` take no bytes at all (bounded: a type that only contains
    /// itself is taken as not empty).
    fn is_empty(&self, shape: &Shape) -> bool {
        self.is_empty_within(shape, MAX_ALIASES)
    }

    fn is_empty_within(&self, shape: &Shape, budget: usize) -> bool {
        if budget == 0 {
            return false;
        }
        match self.resolve(shape, &Path::root()) {
            Ok((_, Shape::Unit | Shape::UnitStruct)) => true,
            Ok((_, Shape::Tuple(items) | Shape::TupleStruct(items))) => {
                items.iter().all(|s| self.is_empty_within(s, budget - 1))
            }
            Ok((_, Shape::NewtypeStruct(inner))) => self.is_empty_within(inner, budget - 1),
            Ok((_, Shape::Struct(fields))) => fields
                .iter()
                .all(|f| self.is_empty_within(&f.shape, budget - 1)),
            _ => false,
        }
    }
}
