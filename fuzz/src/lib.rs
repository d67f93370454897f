//! Helpers shared by the fuzz targets: a global allocator that measures how much memory a
//! decode reserves, so a target can check rpc-core's promise that decoding never reserves
//! memory in proportion to a length the input merely claims.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Counts live heap bytes and the high-water mark since the last [`reset_peak`].
pub struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let live = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            // Count the old block as live until the move is done, as the allocator must.
            grew(new_size);
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` and returns its result with the most heap memory it held at once, beyond what
/// was live when it started.
pub fn measure<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let r = f();
    let peak = PEAK.load(Ordering::Relaxed);
    (r, peak.saturating_sub(base))
}

/// The floor of the allocation bound, in bytes: 64 KiB as `rpc_core::codec`'s docs promise,
/// or `RPC_FUZZ_ALLOC_FLOOR_KIB` KiB when set (to look past a known finding).
pub fn alloc_floor() -> usize {
    static FLOOR: OnceLock<usize> = OnceLock::new();
    *FLOOR.get_or_init(|| {
        std::env::var("RPC_FUZZ_ALLOC_FLOOR_KIB")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(64)
            * 1024
    })
}

/// Bytes one container element may take when reserved ahead of its data: the largest
/// element the targets decode is 48 bytes (`(String, Vec<u8>)`, `(String, Vec<u32>)`), and a
/// hash map reserves up to ~2.3 buckets of element plus control byte per element.
const PER_ELEMENT: usize = 128;

/// The most a decode of `input_len` bytes may reserve according to `rpc_core::codec`'s docs:
/// `max(64 KiB, 256 * input_len)` for strings and byte buffers, plus `input_len` container
/// elements in all.
pub fn decode_alloc_bound(input_len: usize) -> usize {
    alloc_floor()
        .max(input_len.saturating_mul(256))
        .saturating_add(input_len.saturating_mul(PER_ELEMENT))
}

/// Runs a decode of `input_len` bytes and panics if it reserved more than
/// [`decode_alloc_bound`].
pub fn bounded_decode<R>(what: &str, input_len: usize, f: impl FnOnce() -> R) -> R {
    let (r, peak) = measure(f);
    let bound = decode_alloc_bound(input_len);
    assert!(
        peak <= bound,
        "{what}: decoding {input_len} bytes reserved {peak} bytes at once (bound {bound})"
    );
    r
}
