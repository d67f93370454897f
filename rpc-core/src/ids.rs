//! Maps keyed by ids, hashed with a multiplication or two instead of SipHash.
//!
//! [`IdMap`] is for ids this side chose or that are already uniformly spread (its own
//! request ids, method ids): with a fixed multiplicative hash, ids that differ only in their
//! high bits share a bucket, which a hostile peer could use to slow lookups down.
//! [`PeerIdMap`] is for ids a peer picks (the request ids a server is sent): its hash is
//! keyed with random numbers drawn per map, so a peer cannot tell which ids collide.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};

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

/// A `HashMap` keyed by ids a peer picks, with [`KeyedIdHasher`]s keyed per map.
pub type PeerIdMap<K, V> = HashMap<K, V, KeyedIds>;

/// Builds [`KeyedIdHasher`]s with two random keys drawn when the map is made.
#[derive(Debug, Clone, Copy)]
pub struct KeyedIds {
    keys: [u64; 2],
}

impl Default for KeyedIds {
    fn default() -> Self {
        // The standard library's per-map random keys, without another dependency.
        let random = RandomState::new();
        KeyedIds {
            keys: [random.hash_one(1u8), random.hash_one(2u8) | 1],
        }
    }
}

impl BuildHasher for KeyedIds {
    type Hasher = KeyedIdHasher;

    fn build_hasher(&self) -> KeyedIdHasher {
        KeyedIdHasher {
            keys: self.keys,
            hash: 0,
        }
    }
}

/// Hashes a `u64` by two rounds of a keyed folded multiply (the mixing step of foldhash and
/// aHash): the id xor one key, multiplied by the other into 128 bits, the halves xored. About
/// ten instructions where SipHash takes about 150, on every stream item and cancel received.
#[derive(Debug, Clone, Copy)]
pub struct KeyedIdHasher {
    keys: [u64; 2],
    hash: u64,
}

impl KeyedIdHasher {
    #[inline]
    fn mix(&self, value: u64) -> u64 {
        // Two rounds: after one, ids that differ only in their high bits still fill only
        // part of the low bits, which pick the bucket.
        let once = fold(value ^ self.keys[0], self.keys[1]);
        fold(once ^ self.keys[1], self.keys[0] | 1)
    }
}

/// Multiplies into 128 bits and xors the halves.
#[inline]
fn fold(a: u64, b: u64) -> u64 {
    let full = u128::from(a) * u128::from(b);
    (full as u64) ^ ((full >> 64) as u64)
}

impl Hasher for KeyedIdHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only integer keys are expected; this keeps the Hasher contract for any input.
        for &b in bytes {
            self.hash = self.mix(self.hash.rotate_left(8) ^ u64::from(b));
        }
    }

    #[inline]
    fn write_u64(&mut self, id: u64) {
        self.hash = self.mix(self.hash ^ id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_ids_that_differ_only_high_spread_over_buckets() {
        // The ids a hostile peer would pick against a plain multiplicative hash: multiples
        // of 2^48. Under the keyed hash their low bits (what picks a bucket) still differ.
        let ids = KeyedIds::default();
        let buckets: std::collections::HashSet<u64> =
            (0..1024u64).map(|i| ids.hash_one(i << 48) & 1023).collect();
        assert!(
            buckets.len() > 512,
            "only {} of 1024 buckets used",
            buckets.len()
        );
        let mut map: PeerIdMap<u64, u64> = PeerIdMap::default();
        for i in 0..1000u64 {
            map.insert(i << 48, i);
        }
        assert!((0..1000u64).all(|i| map.get(&(i << 48)) == Some(&i)));
    }

    #[test]
    fn two_maps_hash_an_id_differently() {
        let (a, b) = (KeyedIds::default(), KeyedIds::default());
        assert_ne!(a.hash_one(7u64), b.hash_one(7u64));
    }

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
