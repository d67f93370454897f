//! A counting global allocator (installed by the binary), switched on with `--allocs`.
//!
//! When off, each allocation pays one relaxed load of a flag; when on, one relaxed
//! `fetch_add` on a shared counter (which the two worker threads contend for, so the
//! throughput in a table from an `--allocs` run reads a little low: take throughput from runs
//! without it).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

static ENABLED: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);

/// Counts calls to `alloc`, `alloc_zeroed` and `realloc` (each is one allocator call).
pub struct Counting;

/// Starts counting.
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Allocator calls so far.
pub fn count() -> u64 {
    ALLOCS.load(Ordering::Relaxed)
}

#[inline]
fn note() {
    if ENABLED.load(Ordering::Relaxed) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
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
