//! The only module that touches DPDK: a small safe layer over the bindings.
//!
//! `ffi` is the raw bindgen output; the sibling modules wrap it so the rest
//! of the daemon never writes `unsafe`. Each `unsafe` block states why it is
//! sound in a `// SAFETY:` comment.
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

pub mod eal;
pub(crate) mod ffi;
pub mod lcore;
pub mod mbuf;
pub mod mempool;
pub mod port;

use std::ffi::CStr;

/// DPDK's message for an errno value.
pub fn strerror(errnum: i32) -> String {
    // SAFETY: rte_strerror returns a pointer to a static or thread-local,
    // NUL-terminated string that stays valid until the next call here.
    unsafe { CStr::from_ptr(ffi::rte_strerror(errnum.abs())) }
        .to_string_lossy()
        .into_owned()
}

/// The calling thread's `rte_errno`.
pub fn errno() -> i32 {
    // SAFETY: reads a thread-local int through the C shim.
    unsafe { ffi::vs_rte_errno() }
}

/// The TSC: cycles since boot, for busy/idle accounting.
#[inline]
pub fn rdtsc() -> u64 {
    // SAFETY: reads the time-stamp counter; no memory is touched.
    unsafe { ffi::rte_rdtsc() }
}

/// TSC ticks per second (valid after EAL init).
pub fn tsc_hz() -> u64 {
    // SAFETY: a pure query of a value EAL computed at init.
    unsafe { ffi::rte_get_tsc_hz() }
}
