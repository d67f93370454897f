//! The shapes the converter walks: the serde data model, as far as it crosses the wire.
//!
//! A stand-in until the reflection service's `rpc_core::shape::Shape` lands; the converter
//! only needs this much of a type's structure.

/// The structure of one type, as bincode sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// `bool`: one byte, 0 or 1.
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
    /// `char`.
    Char,
    /// `String`, `&str`.
    String,
    /// Byte buffers serialized as bytes (`serde_bytes`).
    Bytes,
    /// `()` and unit structs: nothing on the wire.
    Unit,
    /// `Option<T>`.
    Option(Box<Shape>),
    /// `Vec<T>` and other sequences.
    Seq(Box<Shape>),
    /// `HashMap<K, V>` and other maps.
    Map(Box<Shape>, Box<Shape>),
    /// Tuples, tuple structs and arrays: the elements one after another.
    Tuple(Vec<Shape>),
    /// A struct with named fields, in declaration order.
    Struct {
        /// The struct's name.
        name: String,
        /// Its fields.
        fields: Vec<(String, Shape)>,
    },
    /// An enum (`Result` and `Option`-like types included): a variant index, then the variant.
    Enum {
        /// The enum's name.
        name: String,
        /// Its variants, by index.
        variants: Vec<(String, Variant)>,
    },
}

/// What follows an enum's variant index.
#[derive(Debug, Clone, PartialEq)]
pub enum Variant {
    /// Nothing.
    Unit,
    /// One value.
    Newtype(Shape),
    /// Values one after another.
    Tuple(Vec<Shape>),
    /// Named fields one after another.
    Struct(Vec<(String, Shape)>),
}

impl Shape {
    /// `Result<T, E>`, as serde sees it: an enum with `Ok` (index 0) and `Err` (index 1).
    pub fn result(ok: Shape, err: Shape) -> Shape {
        Shape::Enum {
            name: "Result".into(),
            variants: vec![
                ("Ok".into(), Variant::Newtype(ok)),
                ("Err".into(), Variant::Newtype(err)),
            ],
        }
    }

    /// A short name for error messages: `i64`, `string`, `array`, `Point`.
    pub fn describe(&self) -> String {
        match self {
            Shape::Bool => "bool".into(),
            Shape::I8 => "i8".into(),
            Shape::I16 => "i16".into(),
            Shape::I32 => "i32".into(),
            Shape::I64 => "i64".into(),
            Shape::I128 => "i128".into(),
            Shape::U8 => "u8".into(),
            Shape::U16 => "u16".into(),
            Shape::U32 => "u32".into(),
            Shape::U64 => "u64".into(),
            Shape::U128 => "u128".into(),
            Shape::F32 => "f32".into(),
            Shape::F64 => "f64".into(),
            Shape::Char => "char".into(),
            Shape::String => "string".into(),
            Shape::Bytes => "bytes".into(),
            Shape::Unit => "null".into(),
            Shape::Option(inner) => format!("{} or null", inner.describe()),
            Shape::Seq(_) => "array".into(),
            Shape::Map(..) => "map".into(),
            Shape::Tuple(items) => format!("array of {}", items.len()),
            Shape::Struct { name, .. } => format!("struct {name}"),
            Shape::Enum { name, .. } => format!("enum {name}"),
        }
    }
}
