//! Maps keyed by ids this side chose or that are already uniformly spread (its own request
//! ids, method ids), hashed with one multiplication instead of SipHash.
//!
//! Not for keys a peer picks freely: with a multiplicative hash, ids that differ only in
//! their high bits share a bucket, which a hostile peer could use to slow lookups down.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A `HashMap` with [`IdHasher`].
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// Hashes a `u64` by multiplying it with a large odd constant (Fibonacci hashing).
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only integer keys are expected; this keeps the Hasher contract for any input.
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_by_id() {
        let mut map: IdMap<u64, &str> = IdMap::default();
        for id in 0..1000 {
            map.insert(id, "x");
        }
        assert_eq!(map.len(), 1000);
        assert!((0..1000).all(|id| map.contains_key(&id)));
    }
}
