//! The hash of fixed-size keys in whole 64-bit words, shared by the
//! session table and vswitch's flow cache: FxHash's rotate-xor-multiply
//! step per word, then a fold of the high bits into the low ones (both
//! tables index buckets with the low bits and tag entries with the high).
//!
//! Why not SipHash (std's default) or a crate: keys here are a handful
//! of words a frame's sender chooses only within its own addresses and
//! ports, looked up per packet; SipHash costs several times more per
//! word. Flooding one bucket costs the sender its own share (per-port
//! limits), not the table.

/// The hash of `words`.
#[inline]
pub fn words(words: &[u64]) -> u64 {
    let mut h = 0u64;
    for &w in words {
        h = (h.rotate_left(5) ^ w).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    h ^ h >> 29
}
