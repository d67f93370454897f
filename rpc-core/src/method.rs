//! Stable method identifiers.
//!
//! A method is named on the wire by a 64-bit hash of `"Service.method"`, computed at compile
//! time. Adding, removing or reordering methods in a trait never changes the id of another
//! method, so an older peer keeps working and a newer method is answered with
//! [`Error::UnknownMethod`](crate::Error::UnknownMethod) rather than a wrong handler.

use std::fmt;

/// The wire id of one method: FNV-1a (64-bit) of `"Service.method"`.
///
/// ```
/// use rpc::MethodId;
/// const ADD: MethodId = MethodId::of("Calculator", "add");
/// assert_eq!(ADD, MethodId::of("Calculator", "add"));
/// assert_ne!(ADD, MethodId::of("Calculator", "sub"));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MethodId(u64);

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

const fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(FNV_PRIME);
        i += 1;
    }
    hash
}

impl MethodId {
    /// The id of `method` in `service`; usable in `const` items and `match` patterns.
    pub const fn of(service: &str, method: &str) -> MethodId {
        let hash = fnv1a(FNV_OFFSET, service.as_bytes());
        let hash = fnv1a(hash, b".");
        MethodId(fnv1a(hash, method.as_bytes()))
    }

    /// Wraps a raw id read off the wire.
    pub const fn from_u64(raw: u64) -> MethodId {
        MethodId(raw)
    }

    /// The raw id as it travels on the wire.
    pub const fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Debug for MethodId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MethodId({:#018x})", self.0)
    }
}

impl fmt::Display for MethodId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#018x}", self.0)
    }
}

/// A method of a service: its names (for logs and errors), its wire id, whether it is
/// idempotent, and the fingerprint of its signature.
///
/// ```
/// use rpc::{Method, MethodId};
/// const ADD: Method = Method::new("Calculator", "add");
/// assert_eq!(ADD.id(), MethodId::of("Calculator", "add"));
/// assert_eq!(ADD.to_string(), "Calculator.add");
///
/// // Running it twice does no harm: a call that may have run can be retried.
/// const GET: Method = Method::new("Store", "get").idempotent();
/// assert!(GET.is_idempotent() && !ADD.is_idempotent());
/// assert_eq!(GET.id(), MethodId::of("Store", "get"));
/// ```
///
/// The id is the method's identity on the wire, and it never depends on the idempotent flag:
/// the flag is the caller's knowledge, it does not travel. Equality (`==`, and matching a
/// `const` in a `match`, which needs the derived `PartialEq`) compares every field, flag
/// included; a hand-written `rpc::Service` that marks a method
/// idempotent uses the same constant in its method list and in its `match`. Compare
/// [`id`](Self::id)s to ask whether two values name the same method.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Method {
    service: &'static str,
    name: &'static str,
    id: MethodId,
    /// The signature fingerprint in the low 63 bits (a fingerprint's top bit is always 0),
    /// the idempotent flag in the top bit: one word, so that a `Method` stays 48 bytes. It
    /// is copied into every call's futures on both sides, and 8 bytes more there measured
    /// about 85 instructions per call (callgrind, `rpc-bench/examples/inproc.rs`) in moves
    /// that became `memcpy` calls.
    fingerprint_and_flag: u64,
}

/// The idempotent flag's bit in [`Method::fingerprint_and_flag`].
const IDEMPOTENT: u64 = 1 << 63;

impl fmt::Debug for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Method")
            .field("service", &self.service)
            .field("name", &self.name)
            .field("id", &self.id)
            .field("idempotent", &self.is_idempotent())
            .field("fingerprint", &format_args!("{:#018x}", self.fingerprint()))
            .finish()
    }
}

impl Method {
    /// Describes `service.name`, computing its id at compile time when used in a `const`.
    pub const fn new(service: &'static str, name: &'static str) -> Method {
        Method {
            service,
            name,
            id: MethodId::of(service, name),
            fingerprint_and_flag: 0,
        }
    }

    /// This method, with the fingerprint of its signature (see
    /// [`shape::fingerprint`](crate::shape::fingerprint)): a client sends it with every
    /// call, and a server that knows its own refuses a call whose fingerprint differs with
    /// [`Error::SignatureMismatch`](crate::Error::SignatureMismatch), before decoding
    /// anything. `#[rpc::service]` computes it, once per method, from the argument and
    /// result types. 0, the value [`Method::new`] starts with, means "not given": no check.
    /// A fingerprint's top bit is always 0; it is cleared here. The id does not change.
    #[must_use]
    pub const fn with_fingerprint(self, fingerprint: u64) -> Method {
        Method {
            fingerprint_and_flag: (self.fingerprint_and_flag & IDEMPOTENT)
                | (fingerprint & !IDEMPOTENT),
            ..self
        }
    }

    /// The signature fingerprint set by [`with_fingerprint`](Self::with_fingerprint); 0 when
    /// none was given.
    pub const fn fingerprint(&self) -> u64 {
        self.fingerprint_and_flag & !IDEMPOTENT
    }

    /// This method, marked idempotent: running it twice has the effect of running it once,
    /// so a call that may have run (its connection died after the request was written) may
    /// be sent again. `#[rpc::service]` marks the methods written with `#[idempotent]`. The
    /// id does not change.
    #[must_use]
    pub const fn idempotent(self) -> Method {
        Method {
            fingerprint_and_flag: self.fingerprint_and_flag | IDEMPOTENT,
            ..self
        }
    }

    /// Whether the method is marked [`idempotent`](Self::idempotent); `false` for
    /// [`Method::new`].
    pub const fn is_idempotent(&self) -> bool {
        self.fingerprint_and_flag & IDEMPOTENT != 0
    }

    /// The service (trait) name.
    pub const fn service(&self) -> &'static str {
        self.service
    }

    /// The method name.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// The wire id.
    pub const fn id(&self) -> MethodId {
        self.id
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.service, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_is_fnv1a_of_qualified_name() {
        // Reference value computed from the FNV-1a specification for "Calculator.add".
        let expected = fnv1a(FNV_OFFSET, b"Calculator.add");
        assert_eq!(MethodId::of("Calculator", "add").as_u64(), expected);
    }

    #[test]
    fn fnv1a_matches_published_vectors() {
        // Test vectors from the FNV reference (http://www.isthe.com/chongo/tech/comp/fnv/).
        assert_eq!(fnv1a(FNV_OFFSET, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(FNV_OFFSET, b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn the_idempotent_flag_leaves_names_and_id_alone() {
        const PLAIN: Method = Method::new("Store", "get");
        const MARKED: Method = PLAIN.idempotent();
        assert!(!PLAIN.is_idempotent());
        assert!(MARKED.is_idempotent());
        assert_eq!(MARKED.id(), PLAIN.id());
        assert_eq!(MARKED.id(), MethodId::of("Store", "get"));
        assert_eq!((MARKED.service(), MARKED.name()), ("Store", "get"));
        assert_eq!(MARKED.to_string(), "Store.get");
        // Marking twice is marking once.
        assert_eq!(MARKED.idempotent(), MARKED);
    }

    #[test]
    fn fingerprint_and_flag_are_independent() {
        const PLAIN: Method = Method::new("Store", "get");
        let both = PLAIN.idempotent().with_fingerprint(0x7123_4567_89ab_cdef);
        assert!(both.is_idempotent());
        assert_eq!(both.fingerprint(), 0x7123_4567_89ab_cdef);
        let other_order = PLAIN.with_fingerprint(0x7123_4567_89ab_cdef).idempotent();
        assert_eq!(both, other_order);
        // The top bit is never part of a fingerprint, and never sets the flag.
        let top = PLAIN.with_fingerprint(u64::MAX);
        assert!(!top.is_idempotent());
        assert_eq!(top.fingerprint(), u64::MAX >> 1);
        assert_eq!(std::mem::size_of::<Method>(), 48);
        let debug = format!("{both:?}");
        assert!(
            debug.contains("idempotent: true") && debug.contains("0x712345"),
            "{debug}"
        );
    }

    #[test]
    fn id_depends_on_service_and_method_not_on_position() {
        let a = MethodId::of("A", "run");
        let b = MethodId::of("B", "run");
        assert_ne!(a, b);
        // The separator keeps "ab.c" and "a.bc" apart.
        assert_ne!(MethodId::of("ab", "c"), MethodId::of("a", "bc"));
    }
}
