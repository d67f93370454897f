//! A counting global allocator (installed by the binary), always on: every table has
//! allocations per call next to calls/s, from the same run.
//!
//! Each thread counts on a counter of its own (one of [`SHARDS`] cache-line-sized slots,
//! picked once per thread), so counting costs one uncontended atomic add per allocation and
//! the worker threads do not fight over one cache line. [`count`] sums the slots.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Counter slots; threads beyond this many share slots (still counted exactly).
const SHARDS: usize = 64;

/// One counter on a cache line of its own.
#[repr(align(128))]
struct Shard(AtomicU64);

static COUNTS: [Shard; SHARDS] = [const { Shard(AtomicU64::new(0)) }; SHARDS];
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    // A `const` thread-local of a type without `Drop` needs no lazy registration, so the
    // allocator may touch it from any allocation, including the first ones of a thread.
    static SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// Counts calls to `alloc`, `alloc_zeroed` and `realloc` (each is one allocator call).
pub struct Counting;

/// Allocator calls so far, in every thread of this process.
pub fn count() -> u64 {
    COUNTS.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
}

#[inline]
fn note() {
    let slot = SLOT
        .try_with(|s| {
            let mut i = s.get();
            if i == usize::MAX {
                i = NEXT_SLOT.fetch_add(1, Ordering::Relaxed) % SHARDS;
                s.set(i);
            }
            i
        })
        // A thread being torn down: count on the first slot.
        .unwrap_or(0);
    COUNTS[slot].0.fetch_add(1, Ordering::Relaxed);
}

// SAFETY: forwards every call to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        System.realloc(ptr, layout, new_size)
    }
}
