//! A cache-line prefetch: the one hint safe Rust lacks (core's prefetch
//! intrinsics are unstable). A burst's table lookups issue their lines'
//! prefetches first, then look up: the memory latencies overlap instead
//! of adding up, which is what a table larger than the caches (the
//! session table for 64k flows: 16 MB) is bound by.
#![allow(unsafe_code)]

/// Asks the CPU to bring the cache line holding `*p` into its caches.
#[inline(always)]
pub fn line<T>(p: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is a hint. It never faults and changes no
    // architectural state; `p` is a valid reference besides.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
            (p as *const T).cast::<i8>(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
