//! Finding a type's [`Shape`] by tracing its `Deserialize` impl.
//!
//! The tracer is a serde [`Deserializer`] that answers every request a type makes with a
//! sample value and writes down what was asked for: `deserialize_i64` records
//! [`Shape::I64`], `deserialize_struct("Point", ["x", "y"])` records a struct with those
//! fields and goes on to trace each of them. This is the approach of the `serde-reflection`
//! crate, written here rather than taken as a dependency: what the framework needs (owned
//! argument and result types, traced once per method, names that never reach the
//! fingerprint) fits in one file, where `serde-reflection` would bring four crates, a
//! registry keyed by bare names (two `Result<_, _>` of different types collide) and a
//! format with unification variables to convert.
//!
//! - **Enums** are traced one variant per visit (a `Deserialize` impl builds one value),
//!   so the type is traced again, pass after pass, until every variant of every enum it
//!   reaches has been seen.
//! - **Recursion**: a container met again inside itself is recorded as
//!   [`Shape::Named`], and its value is made up by *sampling*: options are `None`,
//!   sequences and maps empty, and an enum takes its first variant that is known to end.
//!   When sampling comes back to a container it is already inside, the innermost enum
//!   variant chosen on the way is marked as one that does not end, and the pass starts
//!   over.
//! - **Identity**: a container is known by its Rust type (`std::any::type_name` of the
//!   value its visitor builds), so two instances of one generic type are two containers;
//!   it is *named* by its serde name, with `#2`, `#3`, ... for a second and third container
//!   that share it.
//!
//! Like bincode, the tracer is not self-describing (`is_human_readable` is false): a type
//! that needs `deserialize_any` (`#[serde(untagged)]`, `#[serde(flatten)]`) cannot be
//! traced, and would not cross the wire either. A type that refuses the sample values
//! (`NonZeroU8` is offered 1; a string that must parse is offered `""`) cannot be traced
//! either: its method then carries no fingerprint.

use std::any::type_name;
use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, EnumAccess, IntoDeserializer, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};
use serde::Deserializer;

use super::{Field, Registry, Shape, Variant, VariantShape};

/// Why a type's shape could not be found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TraceError {
    /// The type refused the sample value the tracer offered.
    #[error("a type refused the tracer's sample value ({reason}); its shape cannot be traced")]
    Refused {
        /// The type's own error message.
        reason: String,
    },
    /// The type asks for something a format that is not self-describing cannot give.
    #[error("a type calls `{method}`, which needs a self-describing format (bincode is not one either): untagged or flattened serde attributes?")]
    Unsupported {
        /// The `Deserializer` method it called.
        method: &'static str,
    },
    /// An enum without variants: no value of it exists.
    #[error("enum {name} has no variants, so no value of it can be made")]
    NoVariants {
        /// The enum's serde name.
        name: String,
    },
    /// A type with no finite value (every way through it leads back into it).
    #[error("type {name} has no finite value")]
    Infinite {
        /// The container's name.
        name: String,
    },
    /// A type asked for a part (an element, a field) it never read.
    #[error("a type asked for {what} but never read it")]
    Incomplete {
        /// What was left unread.
        what: &'static str,
    },
    /// Tracing did not settle (every pass found more to trace).
    #[error("tracing did not settle after {passes} passes")]
    TooManyPasses {
        /// How many passes were made.
        passes: usize,
    },
}

/// The most passes one type may take: one per enum variant reached, plus a restart per
/// variant found not to end. Far more than any type of an RPC signature needs.
const MAX_PASSES: usize = 10_000;

/// Traces types into one shared set of containers.
#[derive(Debug, Default)]
pub struct Tracer {
    /// Container (by Rust type) to its registry name.
    names: HashMap<&'static str, String>,
    /// Registry names given out.
    taken: HashSet<String>,
    /// Struct-like containers recorded, by Rust type.
    structs: HashMap<&'static str, Shape>,
    /// Enums met, by Rust type: their variants so far.
    enums: HashMap<&'static str, EnumState>,
    /// Struct-like containers recorded with nothing left to trace beneath them.
    done: HashSet<&'static str>,
    /// Enum variants whose sampling leads back into a container it is inside.
    non_terminal: HashSet<(&'static str, usize)>,
    /// Containers being recorded in this pass, outermost first.
    path: Vec<&'static str>,
    /// Containers being sampled in this pass, with the variant chosen for enums.
    sampling: Vec<(&'static str, Option<usize>)>,
    /// How many enum visits in this pass left their enum with variants still to trace.
    pending: usize,
}

#[derive(Debug)]
struct EnumState {
    names: &'static [&'static str],
    variants: Vec<Option<VariantShape>>,
    /// Whether the variant was recorded with nothing left to trace beneath it.
    done: Vec<bool>,
}

impl EnumState {
    fn is_done(&self) -> bool {
        self.done.iter().all(|done| *done)
    }

    /// The variant to record next: one never seen, else one with more to trace beneath.
    fn next(&self) -> usize {
        self.variants
            .iter()
            .position(Option::is_none)
            .or_else(|| self.done.iter().position(|done| !done))
            .unwrap_or(0)
    }
}

impl Tracer {
    /// A tracer with no containers yet.
    pub fn new() -> Tracer {
        Tracer::default()
    }

    /// The shape of `T`. Containers it reaches are added to the tracer's registry (see
    /// [`into_registry`](Self::into_registry)) and referred to by [`Shape::Named`].
    pub fn trace<T: DeserializeOwned>(&mut self) -> Result<Shape, TraceError> {
        for _ in 0..MAX_PASSES {
            self.path.clear();
            self.sampling.clear();
            self.pending = 0;
            let mut out = None;
            let de = Tracing {
                tracer: self,
                out: Some(&mut out),
            };
            match T::deserialize(de) {
                Ok(_) if self.pending == 0 => {
                    return out.ok_or(TraceError::Incomplete { what: "a value" })
                }
                Ok(_) | Err(Failure::Restart) => continue,
                Err(Failure::Error(err)) => return Err(err),
            }
        }
        Err(TraceError::TooManyPasses { passes: MAX_PASSES })
    }

    /// The containers traced so far, by name.
    pub fn into_registry(self) -> Registry {
        let mut registry = Registry::new();
        for (key, name) in self.names {
            if let Some(shape) = self.structs.get(key) {
                registry.insert(name, shape.clone());
            } else if let Some(state) = self.enums.get(key) {
                let variants = state
                    .names
                    .iter()
                    .zip(&state.variants)
                    .filter_map(|(name, shape)| {
                        Some(Variant {
                            name: (*name).to_owned(),
                            shape: shape.clone()?,
                        })
                    })
                    .collect();
                registry.insert(name, Shape::Enum(variants));
            }
        }
        registry
    }

    fn name_for(&mut self, key: &'static str, serde_name: &str) -> String {
        if let Some(name) = self.names.get(key) {
            return name.clone();
        }
        let mut name = serde_name.to_owned();
        let mut n = 2;
        while self.taken.contains(&name) {
            name = format!("{serde_name}#{n}");
            n += 1;
        }
        self.taken.insert(name.clone());
        self.names.insert(key, name.clone());
        name
    }

    fn display_name(&self, key: &'static str) -> String {
        self.names
            .get(key)
            .cloned()
            .unwrap_or_else(|| key.to_owned())
    }

    /// Enters a struct-like container: recorded, unless it is already being recorded
    /// (recursion) or fully recorded before, in which case its value is sampled.
    fn enter(
        &mut self,
        key: &'static str,
        serde_name: &str,
        out: Option<&mut Option<Shape>>,
    ) -> Result<Entry, Failure> {
        if let Some(out) = out {
            *out = Some(Shape::Named(self.name_for(key, serde_name)));
            if !self.path.contains(&key) && !self.done.contains(key) {
                self.path.push(key);
                return Ok(Entry::Record {
                    pending: self.pending,
                });
            }
        }
        self.push_sample(key, None)?;
        Ok(Entry::Sample)
    }

    fn leave_record(&mut self, key: &'static str, shape: Shape, pending: usize) {
        self.path.pop();
        self.structs.insert(key, shape);
        if self.pending == pending {
            self.done.insert(key);
        }
    }

    fn push_sample(&mut self, key: &'static str, variant: Option<usize>) -> Result<(), Failure> {
        if let Some(start) = self.sampling.iter().position(|(k, _)| *k == key) {
            return Err(self.dead_end(start, key));
        }
        self.sampling.push((key, variant));
        Ok(())
    }

    /// Sampling came back into `key` (entered at `start`): the innermost variant chosen
    /// since does not end. Mark it and start over.
    fn dead_end(&mut self, start: usize, key: &'static str) -> Failure {
        match self.sampling[start..]
            .iter()
            .rev()
            .find_map(|(k, v)| v.map(|v| (*k, v)))
        {
            Some(choice) => {
                self.non_terminal.insert(choice);
                Failure::Restart
            }
            None => Failure::Error(TraceError::Infinite {
                name: self.display_name(key),
            }),
        }
    }

    /// The variant of enum `key` to sample: the first not known to loop. If all loop, the
    /// enum cannot be sampled here: the innermost enum choice around it is to blame.
    fn sample_variant(&mut self, key: &'static str, count: usize) -> Result<usize, Failure> {
        if let Some(index) = (0..count).find(|i| !self.non_terminal.contains(&(key, *i))) {
            return Ok(index);
        }
        match self
            .sampling
            .iter()
            .rev()
            .find_map(|(k, v)| v.map(|v| (*k, v)))
        {
            Some(choice) => {
                self.non_terminal.insert(choice);
                Err(Failure::Restart)
            }
            None => Err(Failure::Error(TraceError::Infinite {
                name: self.display_name(key),
            })),
        }
    }
}

enum Entry {
    Record { pending: usize },
    Sample,
}

/// The tracer's error inside serde: a real failure, or "start the pass over".
#[derive(Debug)]
enum Failure {
    Restart,
    Error(TraceError),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Restart => f.write_str("tracing restarts"),
            Failure::Error(err) => err.fmt(f),
        }
    }
}

impl std::error::Error for Failure {}

impl de::Error for Failure {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Failure::Error(TraceError::Refused {
            reason: msg.to_string(),
        })
    }
}

fn unsupported(method: &'static str) -> Failure {
    Failure::Error(TraceError::Unsupported { method })
}

fn complete(slots: Vec<Option<Shape>>) -> Result<Vec<Shape>, Failure> {
    slots
        .into_iter()
        .collect::<Option<Vec<Shape>>>()
        .ok_or(Failure::Error(TraceError::Incomplete {
            what: "an element or field",
        }))
}

fn fields(names: &[&str], shapes: Vec<Shape>) -> Vec<Field> {
    names
        .iter()
        .zip(shapes)
        .map(|(name, shape)| Field {
            name: (*name).to_owned(),
            shape,
        })
        .collect()
}

/// The deserializer handed to the type being traced: `out` is where the shape goes, or
/// `None` while sampling.
struct Tracing<'t, 'a> {
    tracer: &'t mut Tracer,
    out: Option<&'a mut Option<Shape>>,
}

macro_rules! primitive {
    ($($method:ident => $shape:ident, $visit:ident($value:expr);)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Failure> {
                if let Some(out) = self.out {
                    *out = Some(Shape::$shape);
                }
                visitor.$visit($value)
            }
        )*
    };
}

macro_rules! unsupported {
    ($($method:ident)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Failure> {
                Err(unsupported(stringify!($method)))
            }
        )*
    };
}

impl<'de> Deserializer<'de> for Tracing<'_, '_> {
    type Error = Failure;

    primitive! {
        deserialize_bool => Bool, visit_bool(false);
        deserialize_i8 => I8, visit_i8(1);
        deserialize_i16 => I16, visit_i16(1);
        deserialize_i32 => I32, visit_i32(1);
        deserialize_i64 => I64, visit_i64(1);
        deserialize_i128 => I128, visit_i128(1);
        deserialize_u8 => U8, visit_u8(1);
        deserialize_u16 => U16, visit_u16(1);
        deserialize_u32 => U32, visit_u32(1);
        deserialize_u64 => U64, visit_u64(1);
        deserialize_u128 => U128, visit_u128(1);
        deserialize_f32 => F32, visit_f32(1.0);
        deserialize_f64 => F64, visit_f64(1.0);
        deserialize_char => Char, visit_char('a');
        deserialize_str => Str, visit_str("");
        deserialize_string => Str, visit_string(String::new());
        deserialize_bytes => Bytes, visit_bytes(&[]);
        deserialize_byte_buf => Bytes, visit_byte_buf(Vec::new());
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Failure> {
        if let Some(out) = self.out {
            *out = Some(Shape::Unit);
        }
        visitor.visit_unit()
    }

    unsupported! { deserialize_any deserialize_identifier deserialize_ignored_any }

    fn is_human_readable(&self) -> bool {
        false
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Failure> {
        let Tracing { tracer, out } = self;
        let Some(out) = out else {
            return visitor.visit_none();
        };
        let mut inner = None;
        let value = visitor.visit_some(Tracing {
            tracer,
            out: Some(&mut inner),
        })?;
        let inner = complete(vec![inner])?.remove(0);
        *out = Some(Shape::Option(Box::new(inner)));
        Ok(value)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Failure> {
        let Tracing { tracer, out } = self;
        let Some(out) = out else {
            return visitor.visit_seq(Elements::sample(tracer, 0));
        };
        let mut slots = vec![None];
        let value = visitor.visit_seq(Elements::record(tracer, &mut slots))?;
        *out = Some(Shape::Seq(Box::new(complete(slots)?.remove(0))));
        Ok(value)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Failure> {
        let Tracing { tracer, out } = self;
        let Some(out) = out else {
            return visitor.visit_map(Entries {
                tracer,
                key: None,
                value: None,
                left: 0,
            });
        };
        let (mut key, mut value) = (None, None);
        let visited = visitor.visit_map(Entries {
            tracer,
            key: Some(&mut key),
            value: Some(&mut value),
            left: 1,
        })?;
        let mut both = complete(vec![key, value])?.into_iter();
        if let (Some(key), Some(value)) = (both.next(), both.next()) {
            *out = Some(Shape::Map {
                key: Box::new(key),
                value: Box::new(value),
            });
        }
        Ok(visited)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Failure> {
        let Tracing { tracer, out } = self;
        let Some(out) = out else {
            return visitor.visit_seq(Elements::sample(tracer, len));
        };
        let mut slots = vec![None; len];
        let value = visitor.visit_seq(Elements::record(tracer, &mut slots))?;
        *out = Some(Shape::Tuple(complete(slots)?));
        Ok(value)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Failure> {
        let key = type_name::<V::Value>();
        match self.tracer.enter(key, name, self.out)? {
            Entry::Record { pending } => {
                let value = visitor.visit_unit()?;
                self.tracer.leave_record(key, Shape::UnitStruct, pending);
                Ok(value)
            }
            Entry::Sample => {
                let value = visitor.visit_unit()?;
                self.tracer.sampling.pop();
                Ok(value)
            }
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Failure> {
        let key = type_name::<V::Value>();
        let tracer = self.tracer;
        match tracer.enter(key, name, self.out)? {
            Entry::Record { pending } => {
                let mut inner = None;
                let value = visitor.visit_newtype_struct(Tracing {
                    tracer: &mut *tracer,
                    out: Some(&mut inner),
                })?;
                let inner = complete(vec![inner])?.remove(0);
                tracer.leave_record(key, Shape::NewtypeStruct(Box::new(inner)), pending);
                Ok(value)
            }
            Entry::Sample => {
                let value = visitor.visit_newtype_struct(Tracing {
                    tracer: &mut *tracer,
                    out: None,
                })?;
                tracer.sampling.pop();
                Ok(value)
            }
        }
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Failure> {
        let key = type_name::<V::Value>();
        let tracer = self.tracer;
        match tracer.enter(key, name, self.out)? {
            Entry::Record { pending } => {
                let mut slots = vec![None; len];
                let value = visitor.visit_seq(Elements::record(tracer, &mut slots))?;
                tracer.leave_record(key, Shape::TupleStruct(complete(slots)?), pending);
                Ok(value)
            }
            Entry::Sample => {
                let value = visitor.visit_seq(Elements::sample(tracer, len))?;
                tracer.sampling.pop();
                Ok(value)
            }
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        names: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Failure> {
        let key = type_name::<V::Value>();
        let tracer = self.tracer;
        match tracer.enter(key, name, self.out)? {
            Entry::Record { pending } => {
                let mut slots = vec![None; names.len()];
                let value = visitor.visit_seq(Elements::record(tracer, &mut slots))?;
                let shape = Shape::Struct(fields(names, complete(slots)?));
                tracer.leave_record(key, shape, pending);
                Ok(value)
            }
            Entry::Sample => {
                let value = visitor.visit_seq(Elements::sample(tracer, names.len()))?;
                tracer.sampling.pop();
                Ok(value)
            }
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Failure> {
        let key = type_name::<V::Value>();
        let Tracing { tracer, out } = self;
        if variants.is_empty() {
            return Err(Failure::Error(TraceError::NoVariants { name: name.into() }));
        }
        let record = match out {
            Some(out) => {
                *out = Some(Shape::Named(tracer.name_for(key, name)));
                let state = tracer.enums.entry(key).or_insert_with(|| EnumState {
                    names: variants,
                    variants: vec![None; variants.len()],
                    done: vec![false; variants.len()],
                });
                (!tracer.path.contains(&key) && !state.is_done()).then(|| state.next())
            }
            None => None,
        };
        match record {
            Some(index) => {
                tracer.path.push(key);
                let pending = tracer.pending;
                let mut shape = None;
                let value = visitor.visit_enum(Choice {
                    tracer: &mut *tracer,
                    name: variants[index],
                    out: Some(&mut shape),
                })?;
                tracer.path.pop();
                let shape = shape.ok_or(Failure::Error(TraceError::Incomplete {
                    what: "an enum variant",
                }))?;
                let done = tracer.pending == pending;
                if let Some(state) = tracer.enums.get_mut(key) {
                    state.variants[index] = Some(shape);
                    state.done[index] = done;
                    if !state.is_done() {
                        tracer.pending += 1;
                    }
                }
                Ok(value)
            }
            None => {
                let index = tracer.sample_variant(key, variants.len())?;
                tracer.push_sample(key, Some(index))?;
                let value = visitor.visit_enum(Choice {
                    tracer: &mut *tracer,
                    name: variants[index],
                    out: None,
                })?;
                tracer.sampling.pop();
                Ok(value)
            }
        }
    }
}

/// The elements of a sequence, tuple or struct: recorded into slots, or sampled.
struct Elements<'t, 'a> {
    tracer: &'t mut Tracer,
    slots: Option<std::slice::IterMut<'a, Option<Shape>>>,
    left: usize,
}

impl<'t, 'a> Elements<'t, 'a> {
    fn record(tracer: &'t mut Tracer, slots: &'a mut [Option<Shape>]) -> Self {
        Elements {
            tracer,
            left: slots.len(),
            slots: Some(slots.iter_mut()),
        }
    }

    fn sample(tracer: &'t mut Tracer, len: usize) -> Self {
        Elements {
            tracer,
            slots: None,
            left: len,
        }
    }
}

impl<'de> SeqAccess<'de> for Elements<'_, '_> {
    type Error = Failure;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Failure> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        let out = self.slots.as_mut().and_then(Iterator::next);
        seed.deserialize(Tracing {
            tracer: &mut *self.tracer,
            out,
        })
        .map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

/// The one entry of a recorded map (or none, sampling).
struct Entries<'t, 'a> {
    tracer: &'t mut Tracer,
    key: Option<&'a mut Option<Shape>>,
    value: Option<&'a mut Option<Shape>>,
    left: usize,
}

impl<'de> MapAccess<'de> for Entries<'_, '_> {
    type Error = Failure;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Failure> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(Tracing {
            tracer: &mut *self.tracer,
            out: self.key.take(),
        })
        .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Failure> {
        seed.deserialize(Tracing {
            tracer: &mut *self.tracer,
            out: self.value.take(),
        })
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

/// The variant chosen for one enum value; records what it carries into `out`.
struct Choice<'t, 'a> {
    tracer: &'t mut Tracer,
    name: &'static str,
    out: Option<&'a mut Option<VariantShape>>,
}

impl<'de, 't, 'a> EnumAccess<'de> for Choice<'t, 'a> {
    type Error = Failure;
    type Variant = Choice<'t, 'a>;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, Self), Failure> {
        // By name, as a derived `Deserialize` accepts it (and `#[serde(rename)]` applies).
        let variant =
            seed.deserialize(IntoDeserializer::<Failure>::into_deserializer(self.name))?;
        Ok((variant, self))
    }
}

impl<'de> VariantAccess<'de> for Choice<'_, '_> {
    type Error = Failure;

    fn unit_variant(self) -> Result<(), Failure> {
        if let Some(out) = self.out {
            *out = Some(VariantShape::Unit);
        }
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Failure> {
        let Some(out) = self.out else {
            return seed.deserialize(Tracing {
                tracer: self.tracer,
                out: None,
            });
        };
        let mut inner = None;
        let value = seed.deserialize(Tracing {
            tracer: self.tracer,
            out: Some(&mut inner),
        })?;
        *out = Some(VariantShape::Newtype(Box::new(
            complete(vec![inner])?.remove(0),
        )));
        Ok(value)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, Failure> {
        let Some(out) = self.out else {
            return visitor.visit_seq(Elements::sample(self.tracer, len));
        };
        let mut slots = vec![None; len];
        let value = visitor.visit_seq(Elements::record(self.tracer, &mut slots))?;
        *out = Some(VariantShape::Tuple(complete(slots)?));
        Ok(value)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        names: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Failure> {
        let Some(out) = self.out else {
            return visitor.visit_seq(Elements::sample(self.tracer, names.len()));
        };
        let mut slots = vec![None; names.len()];
        let value = visitor.visit_seq(Elements::record(self.tracer, &mut slots))?;
        *out = Some(VariantShape::Struct(fields(names, complete(slots)?)));
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::collections::{BTreeMap, HashMap};

    /// A type's shape, and the registry by name.
    fn traced<T: DeserializeOwned>() -> (Shape, BTreeMap<String, Shape>) {
        let mut tracer = Tracer::new();
        let shape = tracer.trace::<T>().expect("traceable");
        let registry = tracer.into_registry();
        let map = registry
            .iter()
            .map(|(name, shape)| (name.to_owned(), shape.clone()))
            .collect();
        (shape, map)
    }

    fn named(name: &str) -> Shape {
        Shape::Named(name.into())
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

    #[test]
    fn primitives_and_std_containers() {
        type Id = i64;
        assert_eq!(traced::<Id>().0, Shape::I64);
        assert_eq!(traced::<std::primitive::i64>().0, Shape::I64);
        assert_eq!(traced::<u64>().0, Shape::U64);
        assert_eq!(traced::<String>().0, Shape::Str);
        assert_eq!(traced::<Vec<u8>>().0, Shape::Seq(Box::new(Shape::U8)));
        assert_eq!(traced::<Box<str>>().0, Shape::Str);
        assert_eq!(traced::<()>().0, Shape::Unit);
        assert_eq!(traced::<char>().0, Shape::Char);
        assert_eq!(
            traced::<Option<Vec<bool>>>().0,
            Shape::Option(Box::new(Shape::Seq(Box::new(Shape::Bool))))
        );
        assert_eq!(
            traced::<HashMap<String, Vec<f64>>>().0,
            Shape::Map {
                key: Box::new(Shape::Str),
                value: Box::new(Shape::Seq(Box::new(Shape::F64))),
            }
        );
        assert_eq!(
            traced::<(u8, [i16; 2], i128, u128, f32)>().0,
            Shape::Tuple(vec![
                Shape::U8,
                Shape::Tuple(vec![Shape::I16, Shape::I16]),
                Shape::I128,
                Shape::U128,
                Shape::F32
            ])
        );
    }

    #[derive(Deserialize)]
    #[allow(dead_code)] // Only traced, never read.
    enum Every {
        Unit,
        Newtype(u32),
        Tuple(u8, String),
        Struct {
            #[serde(rename = "renamed")]
            a: bool,
            b: Option<Box<Every>>,
        },
    }

    #[test]
    fn enums_with_every_kind_of_variant() {
        let (shape, registry) = traced::<Every>();
        assert_eq!(shape, named("Every"));
        assert_eq!(
            registry["Every"],
            Shape::Enum(vec![
                variant("Unit", VariantShape::Unit),
                variant("Newtype", VariantShape::Newtype(Box::new(Shape::U32))),
                variant("Tuple", VariantShape::Tuple(vec![Shape::U8, Shape::Str])),
                variant(
                    "Struct",
                    VariantShape::Struct(vec![
                        field("renamed", Shape::Bool),
                        field("b", Shape::Option(Box::new(named("Every")))),
                    ])
                ),
            ])
        );
    }

    #[derive(Deserialize)]
    #[allow(dead_code)] // Only traced, never read.
    struct Tree {
        value: i32,
        children: Vec<Tree>,
        parent: Option<Box<Tree>>,
    }

    /// The recursive variant comes first, so sampling has to learn to avoid it.
    #[derive(Deserialize)]
    #[allow(dead_code)] // Only traced, never read.
    enum Expr {
        Add(Box<Expr>, Box<Expr>),
        Neg(Box<Expr>),
        Lit(i64),
    }

    #[derive(Deserialize)]
    #[allow(dead_code)] // Only traced, never read.
    struct Holder {
        expr: Expr,
        tree: Tree,
    }

    #[test]
    fn recursive_types_refer_to_themselves_by_name() {
        let (shape, registry) = traced::<Tree>();
        assert_eq!(shape, named("Tree"));
        assert_eq!(
            registry["Tree"],
            Shape::Struct(vec![
                field("value", Shape::I32),
                field("children", Shape::Seq(Box::new(named("Tree")))),
                field("parent", Shape::Option(Box::new(named("Tree")))),
            ])
        );

        let (_, registry) = traced::<Holder>();
        assert_eq!(
            registry["Expr"],
            Shape::Enum(vec![
                variant(
                    "Add",
                    VariantShape::Tuple(vec![named("Expr"), named("Expr")])
                ),
                variant("Neg", VariantShape::Newtype(Box::new(named("Expr")))),
                variant("Lit", VariantShape::Newtype(Box::new(Shape::I64))),
            ])
        );
        assert!(registry.contains_key("Tree") && registry.contains_key("Holder"));
    }

    #[derive(Deserialize)]
    #[allow(dead_code)] // Only traced, never read.
    enum MathError {
        DivideByZero,
        Overflow { at: u64 },
    }

    #[derive(Deserialize)]
    #[allow(dead_code)] // Only traced, never read.
    struct Meters(f64);

    #[derive(Deserialize)]
    #[allow(dead_code)] // Only traced, never read.
    struct Point(i32, i32);

    #[derive(Deserialize)]
    #[allow(dead_code)] // Only traced, never read.
    struct Marker;

    #[test]
    fn results_and_struct_kinds() {
        let mut tracer = Tracer::new();
        let a = tracer.trace::<Result<i64, MathError>>().expect("traceable");
        let b = tracer
            .trace::<Result<String, MathError>>()
            .expect("traceable");
        let c = tracer
            .trace::<(Meters, Point, Marker)>()
            .expect("traceable");
        let registry = tracer.into_registry();
        // Two instances of one generic enum are two containers.
        assert_eq!((a, b), (named("Result"), named("Result#2")));
        let result = |ok: Shape| {
            Shape::Enum(vec![
                variant("Ok", VariantShape::Newtype(Box::new(ok))),
                variant("Err", VariantShape::Newtype(Box::new(named("MathError")))),
            ])
        };
        assert_eq!(registry.get("Result"), Some(&result(Shape::I64)));
        assert_eq!(registry.get("Result#2"), Some(&result(Shape::Str)));
        assert_eq!(
            registry.get("MathError"),
            Some(&Shape::Enum(vec![
                variant("DivideByZero", VariantShape::Unit),
                variant(
                    "Overflow",
                    VariantShape::Struct(vec![field("at", Shape::U64)])
                ),
            ]))
        );
        assert_eq!(
            c,
            Shape::Tuple(vec![named("Meters"), named("Point"), named("Marker")])
        );
        assert_eq!(
            registry.get("Meters"),
            Some(&Shape::NewtypeStruct(Box::new(Shape::F64)))
        );
        assert_eq!(
            registry.get("Point"),
            Some(&Shape::TupleStruct(vec![Shape::I32, Shape::I32]))
        );
        assert_eq!(registry.get("Marker"), Some(&Shape::UnitStruct));
    }

    #[derive(Deserialize)]
    #[allow(dead_code)] // Only traced, never read.
    enum Outer {
        Wrap(Middle),
        Stop,
    }

    #[derive(Deserialize)]
    #[allow(dead_code)] // Only traced, never read.
    struct Middle {
        inner: Vec<Inner>,
        back: Option<Box<Outer>>,
    }

    #[derive(Deserialize)]
    #[allow(dead_code)] // Only traced, never read.
    enum Inner {
        P,
        Q(u8),
        R { s: String, again: Box<Outer> },
    }

    #[derive(Deserialize)]
    #[allow(dead_code)] // Only traced, never read.
    struct Top {
        first: Middle,
        second: (Inner, Outer),
    }

    #[test]
    fn mutually_recursive_enums_reached_from_several_places_are_traced_whole() {
        let (shape, registry) = traced::<Top>();
        assert_eq!(shape, named("Top"));
        assert_eq!(
            registry["Outer"],
            Shape::Enum(vec![
                variant("Wrap", VariantShape::Newtype(Box::new(named("Middle")))),
                variant("Stop", VariantShape::Unit),
            ])
        );
        assert_eq!(
            registry["Inner"],
            Shape::Enum(vec![
                variant("P", VariantShape::Unit),
                variant("Q", VariantShape::Newtype(Box::new(Shape::U8))),
                variant(
                    "R",
                    VariantShape::Struct(vec![
                        field("s", Shape::Str),
                        field("again", named("Outer"))
                    ])
                ),
            ])
        );
        assert_eq!(
            registry["Middle"],
            Shape::Struct(vec![
                field("inner", Shape::Seq(Box::new(named("Inner")))),
                field("back", Shape::Option(Box::new(named("Outer")))),
            ])
        );
        assert_eq!(registry.len(), 4);
    }

    #[derive(Deserialize)]
    #[allow(dead_code)] // Only traced, never read.
    enum Never {}

    #[derive(Deserialize)]
    #[allow(dead_code)] // Only traced, never read.
    #[serde(untagged)]
    enum Untagged {
        A(u8),
        B(String),
    }

    #[derive(Deserialize)]
    #[allow(dead_code)] // Only traced, never read.
    enum Endless {
        More(Box<Endless>),
    }

    #[test]
    fn untraceable_types_are_errors() {
        let mut tracer = Tracer::new();
        assert!(matches!(
            tracer.trace::<Never>(),
            Err(TraceError::NoVariants { .. })
        ));
        assert!(matches!(
            tracer.trace::<Untagged>(),
            Err(TraceError::Unsupported { .. })
        ));
        assert!(matches!(
            tracer.trace::<Endless>(),
            Err(TraceError::Infinite { .. })
        ));
        assert!(matches!(
            tracer.trace::<std::num::NonZeroU8>(),
            Ok(Shape::U8)
        ));
    }
}
