//! The integrity check both sides compute over a transfer.

/// FNV-1a, 64 bits: a fast, dependency-free integrity check against truncation or
/// corruption. Not cryptographic: it catches accidents, not an adversary.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fnv(u64);

impl Fnv {
    pub(crate) fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// The checksum of everything given to [`update`](Self::update) so far.
    pub(crate) fn value(self) -> u64 {
        self.0
    }
}
