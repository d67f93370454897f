//! A serde [`Deserializer`] wrapper that caps the size hints containers preallocate from.
//!
//! bincode hands serde's container visitors (`Vec`, `VecDeque`, `HashMap`, `BTreeSet`, ...)
//! the element count written in front of the container as [`SeqAccess::size_hint`] /
//! [`MapAccess::size_hint`], and those visitors reserve room for up to 1 MiB of elements
//! from it before reading a single one. [`Bounded`] sits between bincode and the visitors
//! and rations those hints from a [`Budget`] shared by the whole decode: every hint a visitor
//! asks for is cut to what is left of the budget, and then taken from it. With a budget of
//! one element per input byte, the counts all containers of one decode are told to reserve
//! add up to at most the input length, however deep or recursive the type.
//!
//! A hint is only a hint: a visitor keeps reading elements past it, so honest input decodes
//! exactly as before. Honest input never even sees a smaller hint unless it holds elements
//! that take no bytes on the wire (`()`, empty structs), since every other element of every
//! container starts at a byte of its own; those containers just grow as elements arrive.
//!
//! Owned strings and byte buffers are asked of the inner deserializer as borrowed ones (the
//! input is a slice), so their visitors copy exactly the bytes once rather than bincode
//! zeroing a buffer first; see [`Bounded::deserialize_byte_buf`].
//!
//! Everything else is forwarded untouched: every `deserialize_*` call goes to the inner
//! deserializer with a wrapped visitor, and the wrapped visitor passes every `visit_*` on,
//! wrapping only the accessors it is given so nested values go through [`Bounded`] again.
//! The wrappers are a reference wide and inline away, so a decode without containers costs
//! what it did without them.

use std::cell::Cell;
use std::fmt;

use serde::de::{
    DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor,
};

/// How many container elements, summed over one decode, may still be hinted to visitors.
#[derive(Debug)]
pub(super) struct Budget(Cell<usize>);

impl Budget {
    /// A budget of `elements` hinted elements in all.
    #[inline]
    pub(super) fn new(elements: usize) -> Self {
        Budget(Cell::new(elements))
    }

    /// Grants as much of `claimed` as is left, and takes it from the budget.
    #[inline]
    fn grant(&self, claimed: usize) -> usize {
        let left = self.0.get();
        let granted = claimed.min(left);
        self.0.set(left - granted);
        granted
    }

    /// Caps `hint` for an accessor that was granted `granted` at its first `size_hint`
    /// ([`NOT_ASKED`] if none yet). Asking again is free: the first grant is remembered, so a
    /// visitor calling `size_hint` repeatedly is charged once.
    #[inline]
    fn cap(&self, hint: Option<usize>, granted: &Cell<usize>) -> Option<usize> {
        let hint = hint?;
        let before = granted.get();
        Some(if before == NOT_ASKED {
            let now = self.grant(hint);
            granted.set(now);
            now
        } else {
            hint.min(before)
        })
    }
}

/// An accessor's grant before its first `size_hint`. Never a real grant: the budget is an
/// input length, and no slice holds `usize::MAX` bytes.
const NOT_ASKED: usize = usize::MAX;

/// A [`DeserializeSeed`] whose value is deserialized through [`Bounded`].
///
/// `Seed::new(PhantomData::<T>, &budget)` decodes a `T`; it also wraps the seeds visitors
/// pass to sequence, map and enum accessors.
pub(super) struct Seed<'b, S> {
    seed: S,
    budget: &'b Budget,
}

impl<'b, S> Seed<'b, S> {
    /// Wraps `seed` so that what it deserializes draws its size hints from `budget`.
    #[inline]
    pub(super) fn new(seed: S, budget: &'b Budget) -> Self {
        Seed { seed, budget }
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Seed<'_, S> {
    type Value = S::Value;

    #[inline]
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<S::Value, D::Error> {
        self.seed.deserialize(Bounded {
            inner: deserializer,
            budget: self.budget,
        })
    }
}

/// The deserializer wrapper: forwards everything to `inner`, with the visitor wrapped.
struct Bounded<'b, D> {
    inner: D,
    budget: &'b Budget,
}

impl<'b, D> Bounded<'b, D> {
    #[inline]
    fn wrap<V>(&self, visitor: V) -> Wrap<'b, V> {
        Wrap {
            visitor,
            budget: self.budget,
        }
    }
}

/// Forwards `deserialize_*` methods that take only a visitor.
macro_rules! forward_deserialize {
    ($($method:ident)*) => {
        $(
            #[inline]
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
                let visitor = self.wrap(visitor);
                self.inner.$method(visitor)
            }
        )*
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Bounded<'_, D> {
    type Error = D::Error;

    forward_deserialize! {
        deserialize_any deserialize_bool
        deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 deserialize_i128
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_u128
        deserialize_f32 deserialize_f64 deserialize_char
        deserialize_str deserialize_bytes
        deserialize_option deserialize_unit deserialize_seq deserialize_map
        deserialize_identifier deserialize_ignored_any
    }

    /// Decoding from a slice, the bytes can be lent: the visitor copies exactly them
    /// (`visit_borrowed_bytes`), instead of the inner decoder zeroing a buffer and copying
    /// into it. Every visitor that accepts an owned buffer accepts a borrowed one too (serde
    /// falls back from `visit_byte_buf` to `visit_bytes`, never the other way), and
    /// serde_json treats this hint the same way.
    #[inline]
    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        let visitor = self.wrap(visitor);
        self.inner.deserialize_bytes(visitor)
    }

    /// As [`deserialize_byte_buf`](Self::deserialize_byte_buf), for strings.
    #[inline]
    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        let visitor = self.wrap(visitor);
        self.inner.deserialize_str(visitor)
    }

    #[inline]
    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let visitor = self.wrap(visitor);
        self.inner.deserialize_unit_struct(name, visitor)
    }

    #[inline]
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let visitor = self.wrap(visitor);
        self.inner.deserialize_newtype_struct(name, visitor)
    }

    #[inline]
    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let visitor = self.wrap(visitor);
        self.inner.deserialize_tuple(len, visitor)
    }

    #[inline]
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let visitor = self.wrap(visitor);
        self.inner.deserialize_tuple_struct(name, len, visitor)
    }

    #[inline]
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let visitor = self.wrap(visitor);
        self.inner.deserialize_struct(name, fields, visitor)
    }

    #[inline]
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let visitor = self.wrap(visitor);
        self.inner.deserialize_enum(name, variants, visitor)
    }

    #[inline]
    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

/// The visitor wrapper: forwards every `visit_*`, wrapping the accessors it is handed.
struct Wrap<'b, V> {
    visitor: V,
    budget: &'b Budget,
}

/// Forwards `visit_*` methods that take a plain value.
macro_rules! forward_visit {
    ($($method:ident($ty:ty))*) => {
        $(
            #[inline]
            fn $method<E: serde::de::Error>(self, v: $ty) -> Result<V::Value, E> {
                self.visitor.$method(v)
            }
        )*
    };
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Wrap<'_, V> {
    type Value = V::Value;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.visitor.expecting(formatter)
    }

    forward_visit! {
        visit_bool(bool)
        visit_i8(i8) visit_i16(i16) visit_i32(i32) visit_i64(i64) visit_i128(i128)
        visit_u8(u8) visit_u16(u16) visit_u32(u32) visit_u64(u64) visit_u128(u128)
        visit_f32(f32) visit_f64(f64) visit_char(char)
        visit_str(&str) visit_borrowed_str(&'de str) visit_string(String)
        visit_bytes(&[u8]) visit_borrowed_bytes(&'de [u8]) visit_byte_buf(Vec<u8>)
    }

    #[inline]
    fn visit_none<E: serde::de::Error>(self) -> Result<V::Value, E> {
        self.visitor.visit_none()
    }

    #[inline]
    fn visit_unit<E: serde::de::Error>(self) -> Result<V::Value, E> {
        self.visitor.visit_unit()
    }

    #[inline]
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<V::Value, D::Error> {
        self.visitor.visit_some(Bounded {
            inner: deserializer,
            budget: self.budget,
        })
    }

    #[inline]
    fn visit_newtype_struct<D: Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<V::Value, D::Error> {
        self.visitor.visit_newtype_struct(Bounded {
            inner: deserializer,
            budget: self.budget,
        })
    }

    #[inline]
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        self.visitor.visit_seq(Seq {
            access: seq,
            budget: self.budget,
            granted: Cell::new(NOT_ASKED),
        })
    }

    #[inline]
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.visitor.visit_map(Map {
            access: map,
            budget: self.budget,
            granted: Cell::new(NOT_ASKED),
        })
    }

    #[inline]
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        self.visitor.visit_enum(Enum {
            access: data,
            budget: self.budget,
        })
    }
}

/// A sequence whose size hint is rationed and whose elements go through [`Bounded`].
struct Seq<'b, A> {
    access: A,
    budget: &'b Budget,
    /// What the budget granted at the first `size_hint`, if asked yet.
    granted: Cell<usize>,
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Seq<'_, A> {
    type Error = A::Error;

    #[inline]
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        self.access.next_element_seed(Seed::new(seed, self.budget))
    }

    #[inline]
    fn size_hint(&self) -> Option<usize> {
        self.budget.cap(self.access.size_hint(), &self.granted)
    }
}

/// A map whose size hint is rationed and whose keys and values go through [`Bounded`].
struct Map<'b, A> {
    access: A,
    budget: &'b Budget,
    /// What the budget granted at the first `size_hint`, if asked yet.
    granted: Cell<usize>,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Map<'_, A> {
    type Error = A::Error;

    #[inline]
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        self.access.next_key_seed(Seed::new(seed, self.budget))
    }

    #[inline]
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.access.next_value_seed(Seed::new(seed, self.budget))
    }

    #[inline]
    fn next_entry_seed<K: DeserializeSeed<'de>, V: DeserializeSeed<'de>>(
        &mut self,
        kseed: K,
        vseed: V,
    ) -> Result<Option<(K::Value, V::Value)>, A::Error> {
        self.access
            .next_entry_seed(Seed::new(kseed, self.budget), Seed::new(vseed, self.budget))
    }

    #[inline]
    fn size_hint(&self) -> Option<usize> {
        self.budget.cap(self.access.size_hint(), &self.granted)
    }
}

/// An enum whose variant tag and contents go through [`Bounded`].
struct Enum<'b, A> {
    access: A,
    budget: &'b Budget,
}

impl<'b, 'de, A: EnumAccess<'de>> EnumAccess<'de> for Enum<'b, A> {
    type Error = A::Error;
    type Variant = Variant<'b, A::Variant>;

    #[inline]
    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Self::Variant), A::Error> {
        let (value, access) = self.access.variant_seed(Seed::new(seed, self.budget))?;
        Ok((
            value,
            Variant {
                access,
                budget: self.budget,
            },
        ))
    }
}

/// The contents of an enum variant, deserialized through [`Bounded`].
struct Variant<'b, A> {
    access: A,
    budget: &'b Budget,
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for Variant<'_, A> {
    type Error = A::Error;

    #[inline]
    fn unit_variant(self) -> Result<(), A::Error> {
        self.access.unit_variant()
    }

    #[inline]
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        self.access
            .newtype_variant_seed(Seed::new(seed, self.budget))
    }

    #[inline]
    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        let visitor = Wrap {
            visitor,
            budget: self.budget,
        };
        self.access.tuple_variant(len, visitor)
    }

    #[inline]
    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        let visitor = Wrap {
            visitor,
            budget: self.budget,
        };
        self.access.struct_variant(fields, visitor)
    }
}
