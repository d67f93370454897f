//! The shapes of the values a method sends and returns, in a language-neutral form.
//!
//! A [`Shape`] describes a type as the serde data model sees it, which is what decides its
//! bytes on the wire: `type Id = i64;`, `std::primitive::i64` and `i64` are one shape, `i64`
//! and `u64` are two. Structs and enums (*containers*) are described once, in a
//! [`Registry`] under their serde name, and referred to elsewhere by that name
//! ([`Shape::Named`]); that is also how a recursive type refers to itself.
//!
//! A method's [`Signature`] gathers the shapes of its arguments and result. Two uses:
//!
//! - [`fingerprint`]: a 64-bit hash of a signature that travels in every request header, so
//!   a server refuses a call whose client was built from a different signature
//!   ([`Error::SignatureMismatch`](crate::Error::SignatureMismatch)) instead of misreading
//!   its arguments;
//! - reflection: a server describes its methods to any client that asks (the built-in
//!   `rpc.Reflection` service, see [`reflection`](crate::reflection)). Every type here derives serde's traits, so a description
//!   can be printed as JSON.
//!
//! Shapes are found by [`trace`]: a serde `Deserializer` that records what a type asks for.
//!
//! ```
//! use rpc::shape::{MethodKind, Shape, Signature};
//!
//! let signature = Signature::builder(MethodKind::Unary)
//!     .arg::<i64>("a")
//!     .arg::<i64>("b")
//!     .result::<Option<String>>()
//!     .build()
//!     .expect("traceable");
//! assert_eq!(signature.args[1].shape, Shape::I64);
//! assert_eq!(signature.result, Shape::Option(Box::new(Shape::Str)));
//! assert_ne!(signature.fingerprint(), 0);
//! ```

pub mod fingerprint;
pub mod trace;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use trace::TraceError;

/// The shape of a value in the serde data model, the form every type takes on its way to
/// the wire.
///
/// The container variants ([`UnitStruct`](Shape::UnitStruct) to [`Enum`](Shape::Enum)) are
/// found in a [`Registry`], under the container's name; anywhere else a container is
/// referred to by [`Named`](Shape::Named).
///
/// Decoding one refuses nesting deeper than [`MAX_DEPTH`], so a description from a peer
/// cannot exhaust the stack.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
// The derives make inherent `Shape::serialize`/`Shape::deserialize`; the trait impls below
// wrap them, the latter with the depth limit.
#[serde(remote = "Self", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Shape {
    /// `bool`.
    Bool,
    /// `i8`.
    I8,
    /// `i16`.
    I16,
    /// `i32`.
    I32,
    /// `i64`.
    I64,
    /// `i128`.
    I128,
    /// `u8`.
    U8,
    /// `u16`.
    U16,
    /// `u32`.
    U32,
    /// `u64`.
    U64,
    /// `u128`.
    U128,
    /// `f32`.
    F32,
    /// `f64`.
    F64,
    /// `char`: one Unicode scalar value.
    Char,
    /// A UTF-8 string (`String`).
    Str,
    /// A byte string (`serde_bytes::ByteBuf`; a `Vec<u8>` is a [`Seq`](Shape::Seq) of
    /// [`U8`](Shape::U8)).
    Bytes,
    /// `()`.
    Unit,
    /// An optional value (`Option<T>`).
    Option(Box<Shape>),
    /// A sequence of any length (`Vec<T>`, sets, ...).
    Seq(Box<Shape>),
    /// A map (`HashMap<K, V>`, `BTreeMap<K, V>`).
    Map {
        /// The keys' shape.
        key: Box<Shape>,
        /// The values' shape.
        value: Box<Shape>,
    },
    /// A tuple, or an array of fixed length, in order.
    Tuple(Vec<Shape>),
    /// A struct without fields (`struct Marker;`).
    UnitStruct,
    /// A struct with one unnamed field (`struct Meters(f64);`).
    NewtypeStruct(Box<Shape>),
    /// A struct with unnamed fields (`struct Point(i32, i32);`).
    TupleStruct(Vec<Shape>),
    /// A struct with named fields, in order.
    Struct(Vec<Field>),
    /// An enum: its variants, in order (a variant is sent as its index in this list).
    Enum(Vec<Variant>),
    /// The container of this name in the [`Registry`].
    Named(String),
}

impl Shape {
    /// The Rust name of a scalar shape: `bool`, an integer, a float or `char`; `None` for
    /// every other shape.
    ///
    /// ```
    /// use rpc::shape::Shape;
    /// assert_eq!(Shape::I64.scalar_name(), Some("i64"));
    /// assert_eq!(Shape::Str.scalar_name(), None);
    /// ```
    pub fn scalar_name(&self) -> Option<&'static str> {
        Some(match self {
            Shape::Bool => "bool",
            Shape::I8 => "i8",
            Shape::I16 => "i16",
            Shape::I32 => "i32",
            Shape::I64 => "i64",
            Shape::I128 => "i128",
            Shape::U8 => "u8",
            Shape::U16 => "u16",
            Shape::U32 => "u32",
            Shape::U64 => "u64",
            Shape::U128 => "u128",
            Shape::F32 => "f32",
            Shape::F64 => "f64",
            Shape::Char => "char",
            _ => return None,
        })
    }
}

/// How deeply shapes may nest inside one another (not counting [`Shape::Named`]
/// references, which end a description) when one is decoded.
pub const MAX_DEPTH: usize = 128;

thread_local! {
    /// Shapes being decoded on this thread, one inside the other.
    static DEPTH: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

impl Serialize for Shape {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Shape::serialize(self, serializer)
    }
}

impl<'de> Deserialize<'de> for Shape {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Shape, D::Error> {
        /// Leaves one level, however the level ends (an error, a panic in a visitor).
        struct Level;
        impl Drop for Level {
            fn drop(&mut self) {
                DEPTH.with(|depth| depth.set(depth.get().saturating_sub(1)));
            }
        }
        let depth = DEPTH.with(|depth| {
            depth.set(depth.get() + 1);
            depth.get()
        });
        let _level = Level;
        if depth > MAX_DEPTH {
            return Err(serde::de::Error::custom(format_args!(
                "shape nested more than {MAX_DEPTH} deep"
            )));
        }
        Shape::deserialize(deserializer)
    }
}

/// A named field of a struct or struct variant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Field {
    /// The field's serde name (after `#[serde(rename)]`).
    pub name: String,
    /// The field's shape.
    pub shape: Shape,
}

/// A variant of an enum.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Variant {
    /// The variant's serde name.
    pub name: String,
    /// What the variant carries.
    pub shape: VariantShape,
}

/// What an enum variant carries.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum VariantShape {
    /// Nothing (`None`).
    Unit,
    /// One unnamed value (`Some(T)`).
    Newtype(Box<Shape>),
    /// Unnamed values, in order.
    Tuple(Vec<Shape>),
    /// Named fields, in order.
    Struct(Vec<Field>),
}

/// The containers (structs and enums) a set of shapes refers to, by name.
///
/// A name is the container's serde name (`#[serde(rename)]` applies), without its module
/// path. Two different containers that share a name (say `Result<i64, E>` and
/// `Result<String, E>`) are told apart by a suffix: `Result`, `Result#2`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Registry {
    containers: BTreeMap<String, Shape>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// The container called `name`: one of the container variants of [`Shape`].
    pub fn get(&self, name: &str) -> Option<&Shape> {
        self.containers.get(name)
    }

    /// Every container, by name, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Shape)> {
        self.containers
            .iter()
            .map(|(name, shape)| (name.as_str(), shape))
    }

    /// How many containers there are.
    pub fn len(&self) -> usize {
        self.containers.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.containers.is_empty()
    }

    /// Adds or replaces the container called `name`.
    pub fn insert(&mut self, name: impl Into<String>, container: Shape) {
        self.containers.insert(name.into(), container);
    }
}

/// How a method's values flow: which side, if any, sends a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum MethodKind {
    /// Arguments in, one value out.
    Unary,
    /// Arguments in, a stream of items out.
    ServerStream,
    /// Arguments and a stream of items in, one value out.
    ClientStream,
    /// Arguments and a stream in, a stream out.
    Bidi,
}

impl MethodKind {
    /// Whether the client sends a stream after the arguments.
    pub const fn has_input_stream(self) -> bool {
        matches!(self, MethodKind::ClientStream | MethodKind::Bidi)
    }

    /// Whether the server answers with a stream.
    pub const fn has_output_stream(self) -> bool {
        matches!(self, MethodKind::ServerStream | MethodKind::Bidi)
    }
}

/// A named argument of a method.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Argument {
    /// The parameter's name in the trait (names are for people: they are not part of the
    /// fingerprint).
    pub name: String,
    /// The argument's shape; for the stream a client sends, the shape of one item.
    pub shape: Shape,
}

/// The shapes of a method's arguments and result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// Which side sends a stream.
    pub kind: MethodKind,
    /// The arguments sent in the request body, in order (their tuple is the body).
    pub args: Vec<Argument>,
    /// For [`ClientStream`](MethodKind::ClientStream) and [`Bidi`](MethodKind::Bidi)
    /// methods, the stream the client sends (the trait method's last parameter): its name
    /// and the shape of one item.
    pub input_stream: Option<Argument>,
    /// The result's shape; for a method that answers with a stream, the shape of one item.
    pub result: Shape,
    /// The containers the shapes above refer to.
    pub registry: Registry,
}

impl Signature {
    /// Starts tracing the signature of a method of `kind`; see [`SignatureBuilder`].
    pub fn builder(kind: MethodKind) -> SignatureBuilder {
        SignatureBuilder {
            kind,
            tracer: trace::Tracer::new(),
            args: Vec::new(),
            input_stream: None,
            result: None,
            error: None,
        }
    }

    /// The signature's 64-bit fingerprint, never 0; see [`fingerprint`].
    pub fn fingerprint(&self) -> u64 {
        fingerprint::of(self)
    }
}

/// Traces a [`Signature`] type by type: every argument, the client's stream if any, the
/// result. The types share one [`Registry`].
#[derive(Debug)]
pub struct SignatureBuilder {
    kind: MethodKind,
    tracer: trace::Tracer,
    args: Vec<Argument>,
    input_stream: Option<Argument>,
    result: Option<Shape>,
    error: Option<TraceError>,
}

impl SignatureBuilder {
    /// Adds an argument of type `T`, sent in the request body.
    #[must_use]
    pub fn arg<T: serde::de::DeserializeOwned>(mut self, name: &str) -> SignatureBuilder {
        if let Some(shape) = self.trace::<T>() {
            self.args.push(Argument {
                name: name.to_owned(),
                shape,
            });
        }
        self
    }

    /// Sets the stream the client sends, whose items are `T`.
    #[must_use]
    pub fn input_stream<T: serde::de::DeserializeOwned>(mut self, name: &str) -> SignatureBuilder {
        if let Some(shape) = self.trace::<T>() {
            self.input_stream = Some(Argument {
                name: name.to_owned(),
                shape,
            });
        }
        self
    }

    /// Sets the result type (for a method that answers with a stream, the item type).
    #[must_use]
    pub fn result<T: serde::de::DeserializeOwned>(mut self) -> SignatureBuilder {
        self.result = self.trace::<T>();
        self
    }

    /// The signature, or the first type that could not be traced. A method without a
    /// result returns `()`.
    pub fn build(self) -> Result<Signature, TraceError> {
        if let Some(err) = self.error {
            return Err(err);
        }
        Ok(Signature {
            kind: self.kind,
            args: self.args,
            input_stream: self.input_stream,
            result: self.result.unwrap_or(Shape::Unit),
            registry: self.tracer.into_registry(),
        })
    }

    fn trace<T: serde::de::DeserializeOwned>(&mut self) -> Option<Shape> {
        if self.error.is_some() {
            return None;
        }
        match self.tracer.trace::<T>() {
            Ok(shape) => Some(shape),
            Err(err) => {
                self.error = Some(err);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Bincode, Codec};

    /// `depth` options around a bool, as bincode writes them.
    fn nested(depth: usize) -> Vec<u8> {
        let mut shape = Shape::Bool;
        for _ in 0..depth {
            shape = Shape::Option(Box::new(shape));
        }
        let mut buf = bytes::BytesMut::new();
        Bincode.encode(&shape, &mut buf).expect("encodes");
        buf.to_vec()
    }

    #[test]
    fn decoding_refuses_shapes_nested_too_deep() {
        let fine = nested(MAX_DEPTH - 1);
        assert!(Bincode.decode::<Shape>(&fine).is_ok());
        let err = Bincode
            .decode::<Shape>(&nested(MAX_DEPTH))
            .expect_err("too deep");
        assert!(err.to_string().contains("nested more than 128"), "{err}");
        // Forged bytes far deeper than any encoder would write fail the same way, and the
        // depth count is back to zero after each attempt.
        let mut forged = vec![17u8; 100_000];
        forged.push(0);
        assert!(Bincode.decode::<Shape>(&forged).is_err());
        assert!(Bincode.decode::<Shape>(&fine).is_ok());
        DEPTH.with(|depth| assert_eq!(depth.get(), 0));
    }

    #[test]
    fn shapes_round_trip_through_bincode() {
        let shape = Shape::Map {
            key: Box::new(Shape::Str),
            value: Box::new(Shape::Named("Point".into())),
        };
        let mut buf = bytes::BytesMut::new();
        Bincode.encode(&shape, &mut buf).expect("encodes");
        assert_eq!(Bincode.decode::<Shape>(&buf).expect("decodes"), shape);
    }
}
