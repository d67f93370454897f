//! Shapes and signatures as text for people: Rust-like type names and definitions.

use std::fmt::Write;

use rpc::shape::{Field, MethodKind, Registry, Shape, Signature, VariantShape};

/// Renders shapes, looking up the structs and enums they name in a registry.
#[derive(Debug, Clone, Copy)]
pub struct Types<'a> {
    registry: &'a Registry,
}

impl<'a> Types<'a> {
    /// Renders shapes whose containers are in `registry`.
    pub fn new(registry: &'a Registry) -> Self {
        Types { registry }
    }

    /// A shape as a Rust-like type: `i64`, `Vec<String>`, `Option<Point>`, `(u8, bool)`,
    /// `Result<i64, MathError>`.
    pub fn shape(&self, shape: &Shape) -> String {
        if let Some(scalar) = shape.scalar_name() {
            return scalar.into();
        }
        match shape {
            Shape::Str => "String".into(),
            Shape::Bytes => "bytes".into(),
            Shape::Unit => "()".into(),
            Shape::Option(inner) => format!("Option<{}>", self.shape(inner)),
            Shape::Seq(item) => format!("Vec<{}>", self.shape(item)),
            Shape::Map { key, value } => {
                format!("Map<{}, {}>", self.shape(key), self.shape(value))
            }
            Shape::Tuple(items) if items.len() == 1 => format!("({},)", self.shape(&items[0])),
            Shape::Tuple(items) => format!("({})", self.list(items)),
            Shape::Named(name) => match self.result(name) {
                Some((ok, err)) => format!("Result<{}, {}>", self.shape(ok), self.shape(err)),
                None => name.clone(),
            },
            // Containers appear under their names; an inline one in full.
            container => self.definition("_", container),
        }
    }

    /// `Ok` and `Err` of the container `name`, if it is a `Result` (shown as `Result<T, E>`
    /// rather than defined).
    fn result(&self, name: &str) -> Option<(&'a Shape, &'a Shape)> {
        if name != "Result" && !name.starts_with("Result#") {
            return None;
        }
        let Some(Shape::Enum(variants)) = self.registry.get(name) else {
            return None;
        };
        match &variants[..] {
            [ok, err] if ok.name == "Ok" && err.name == "Err" => match (&ok.shape, &err.shape) {
                (VariantShape::Newtype(ok), VariantShape::Newtype(err)) => Some((ok, err)),
                _ => None,
            },
            _ => None,
        }
    }

    fn list(&self, shapes: &[Shape]) -> String {
        shapes
            .iter()
            .map(|s| self.shape(s))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn fields(&self, fields: &[Field]) -> String {
        let fields: Vec<String> = fields
            .iter()
            .map(|f| format!("{}: {}", f.name, self.shape(&f.shape)))
            .collect();
        format!("{{ {} }}", fields.join(", "))
    }

    /// The definition of the container `name`: `struct Point { x: i32, y: i32 }`,
    /// `enum MathError { DivisionByZero, Overflow }`.
    pub fn definition(&self, name: &str, container: &Shape) -> String {
        match container {
            Shape::UnitStruct => format!("struct {name};"),
            Shape::NewtypeStruct(inner) => format!("struct {name}({});", self.shape(inner)),
            Shape::TupleStruct(items) => format!("struct {name}({});", self.list(items)),
            Shape::Struct(f) => format!("struct {name} {}", self.fields(f)),
            Shape::Enum(variants) => {
                let variants: Vec<String> = variants
                    .iter()
                    .map(|v| match &v.shape {
                        VariantShape::Unit => v.name.clone(),
                        VariantShape::Newtype(inner) => {
                            format!("{}({})", v.name, self.shape(inner))
                        }
                        VariantShape::Tuple(items) => format!("{}({})", v.name, self.list(items)),
                        VariantShape::Struct(f) => format!("{} {}", v.name, self.fields(f)),
                        _ => format!("{} (?)", v.name),
                    })
                    .collect();
                format!("enum {name} {{ {} }}", variants.join(", "))
            }
            other => format!("type {name} = {};", self.shape(other)),
        }
    }
}

/// A method's kind as the tool prints it.
pub fn kind(kind: MethodKind) -> &'static str {
    match kind {
        MethodKind::Unary => "unary",
        MethodKind::ServerStream => "server streaming",
        MethodKind::ClientStream => "client streaming",
        MethodKind::Bidi => "bidirectional streaming",
        _ => "unknown kind",
    }
}

/// A method's signature for `rpc describe`: its declaration, kind, fingerprint and the
/// definitions of the types it names.
pub fn signature(method: &str, signature: &Signature) -> String {
    let types = Types::new(&signature.registry);
    let name = method.rsplit_once('.').map_or(method, |(_, name)| name);
    let mut args: Vec<String> = signature
        .args
        .iter()
        .map(|a| format!("{}: {}", a.name, types.shape(&a.shape)))
        .collect();
    if let Some(stream) = &signature.input_stream {
        args.push(format!(
            "{}: Stream<{}>",
            stream.name,
            types.shape(&stream.shape)
        ));
    }
    let result = if signature.kind.has_output_stream() {
        format!("Stream<{}>", types.shape(&signature.result))
    } else {
        types.shape(&signature.result)
    };
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(out, "{method} ({})", kind(signature.kind));
    let _ = writeln!(out, "  fn {name}({}) -> {result}", args.join(", "));
    let _ = writeln!(out, "  fingerprint {:#018x}", signature.fingerprint());
    for (name, container) in signature.registry.iter() {
        if types.result(name).is_none() {
            let _ = writeln!(out, "  {}", types.definition(name, container));
        }
    }
    out
}
