//! Inputs found by the fuzz targets in `fuzz/`, kept as regression tests.
//!
//! Fuzz finding F1: bincode's size limit (see `rpc_core::codec`) is only charged for strings
//! and byte buffers decoded by bincode itself; serde's `Vec`, `HashMap` and the like were
//! given the claimed element count as a size hint and preallocated up to 1 MiB each
//! (`serde::__private::size_hint::cautious`) before a single element was read, so a 5- to
//! 13-byte input reserved 1-1.6 MiB. Decoding now caps the hints at one element per input
//! byte for the whole decode; `decode_memory_stays_bounded_by_the_input` holds the bound.

use std::alloc::System;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use bytes::Bytes;
use rpc_core::message::decode_frame;
use rpc_core::{Bincode, Codec};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// `fuzz/artifacts/codec/crash-b3cbd175161fd39c95c25cabf9164ccf6fffd899` without its first
/// byte (0x59, which picked `HashMap<String, Vec<u32>>`): a map claiming 0x3da5002b entries.
const CODEC_MAP: &[u8] = &[0xfc, 0x2b, 0x00, 0xa5, 0x3d];

/// From `fuzz/artifacts/envelope_decoder/`: a request header whose metadata claims 127
/// entries, the first key claiming 0xf6ff bytes.
const ENVELOPE_METADATA: &[u8] = &[0x00, 0x10, 0x00, 0x00, 0x7f, 0xfb, 0xff, 0xf6];

/// A request header (tag 0, id 0, method 0, no timeout) whose metadata claims 2^60 entries.
const HEADER_FORGED_METADATA: &[u8] = &[0, 0, 0, 0, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0x10];

/// A `(Vec<u8>,)` argument tuple whose vector claims 2^60 bytes.
const ARGS_FORGED_VEC: &[u8] = &FORGED;

/// A varint length claiming 2^60 elements, as bincode's standard configuration writes it.
const FORGED: [u8; 9] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0x10];

/// `Vec<Vec<String>>`: the outer and first inner vector each claim 2^60 elements.
const NESTED_FORGED: [u8; 18] = {
    let mut bytes = [0; 18];
    let mut i = 0;
    while i < 18 {
        bytes[i] = FORGED[i % 9];
        i += 1;
    }
    bytes
};

/// A recursive type, fed 100 nested levels each claiming 2^60 children (the input ends in
/// the innermost). Capped per container, each of the 100 open levels could reserve the whole
/// input length (100 x 900 x 24 bytes = 2.1 MB); capped per decode, they share it.
#[derive(Debug, serde::Deserialize)]
#[allow(dead_code)]
struct Tree(Vec<Tree>);

fn deep_tree() -> &'static [u8] {
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BYTES.get_or_init(|| FORGED.repeat(100))
}

#[derive(Debug, serde::Deserialize)]
#[allow(dead_code)]
enum Shape {
    Points { first: u8, set: HashSet<u64> },
}

/// What `rpc_core::codec` documents for strings and byte buffers (bincode's limit): at most
/// 256 times the input, 64 KiB at least.
fn limit_bound(input_len: usize) -> usize {
    (64 * 1024).max(256 * input_len)
}

/// What containers may reserve ahead of their elements, per `rpc_core::codec`: one element
/// per input byte over the whole decode. `element` is the largest container element in the
/// decoded type; for `Vec`, `VecDeque` and the like that is `input_len * element` bytes.
fn vec_reserve(input_len: usize, element: usize) -> usize {
    input_len * element
}

/// The same for hash maps and sets: hashbrown's table for `input_len` entries (power of two
/// buckets at 7/8 load, at least 4, one control byte per bucket plus one group of 16, the
/// control bytes aligned to 16): about 2.3 times `input_len * entry` at worst.
fn hash_reserve(input_len: usize, entry: usize) -> usize {
    let buckets = match input_len {
        0..4 => 4,
        4..8 => 8,
        n => (n * 8).div_ceil(7).next_power_of_two(),
    };
    (buckets * entry).next_multiple_of(16) + buckets + 16
}

/// Bytes allocated while `f` runs. The counter is process-wide, so this file holds a single
/// test: no other test's allocations can be counted.
fn allocated(f: impl FnOnce() -> bool) -> (bool, usize) {
    let region = Region::new(GLOBAL);
    let refused = f();
    (refused, region.change().bytes_allocated)
}

#[test]
fn decode_memory_stays_bounded_by_the_input() {
    use std::mem::size_of;
    // What, input, decode (true if refused), what containers may reserve beyond the limit.
    type Case = (
        &'static str,
        &'static [u8],
        fn(&'static [u8]) -> bool,
        usize,
    );
    let cases: [Case; 9] = [
        (
            "HashMap<String, Vec<u32>> (codec crash)",
            CODEC_MAP,
            |b| Bincode.decode::<HashMap<String, Vec<u32>>>(b).is_err(),
            hash_reserve(CODEC_MAP.len(), size_of::<(String, Vec<u32>)>()),
        ),
        // The header has its own codec; its preallocation is checked against the same bound.
        (
            "Header (envelope_decoder crash)",
            ENVELOPE_METADATA,
            |b| decode_frame(Bytes::from_static(b)).is_err(),
            0,
        ),
        (
            "Header, metadata claiming 2^60 entries",
            HEADER_FORGED_METADATA,
            |b| decode_frame(Bytes::from_static(b)).is_err(),
            0,
        ),
        (
            "(Vec<u8>,) claiming 2^60 bytes",
            ARGS_FORGED_VEC,
            |b| Bincode.decode::<(Vec<u8>,)>(b).is_err(),
            vec_reserve(ARGS_FORGED_VEC.len(), 1),
        ),
        (
            "Vec<Vec<String>>, both claiming 2^60 elements",
            &NESTED_FORGED,
            |b| Bincode.decode::<Vec<Vec<String>>>(b).is_err(),
            vec_reserve(NESTED_FORGED.len(), size_of::<Vec<String>>()),
        ),
        (
            "Tree(Vec<Tree>), 100 levels claiming 2^60 children",
            deep_tree(),
            |b| Bincode.decode::<Tree>(b).is_err(),
            vec_reserve(deep_tree().len(), size_of::<Tree>()),
        ),
        (
            "BTreeMap<u64, VecDeque<u64>>, both claiming 2^60",
            &NESTED_FORGED,
            |b| Bincode.decode::<BTreeMap<u64, VecDeque<u64>>>(b).is_err(),
            vec_reserve(NESTED_FORGED.len(), size_of::<u64>()),
        ),
        (
            "Option<Vec<String>> claiming 2^60",
            &[1, 0xfd, 0, 0, 0, 0, 0, 0, 0x10],
            |b| Bincode.decode::<Option<Vec<String>>>(b).is_err(),
            vec_reserve(9, size_of::<String>()),
        ),
        (
            "enum struct variant, HashSet<u64> claiming 2^60",
            &[0, 7, 0xfd, 0, 0, 0, 0, 0, 0, 0x10],
            |b| Bincode.decode::<Shape>(b).is_err(),
            hash_reserve(10, size_of::<u64>()),
        ),
    ];
    let mut over = Vec::new();
    for (what, input, decode, containers) in cases {
        let bound = limit_bound(input.len()) + containers;
        let (refused, bytes) = allocated(|| decode(input));
        // Whatever it allocated, the input must be refused, with an error and no panic.
        assert!(refused, "{what}: forged input decoded");
        if bytes > bound {
            over.push(format!(
                "{what}: {} input bytes allocated {bytes} bytes (bound {bound})",
                input.len()
            ));
        }
    }
    assert!(over.is_empty(), "{}", over.join("\n"));
}
