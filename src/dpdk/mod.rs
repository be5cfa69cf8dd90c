//! The only module that touches DPDK: a small safe layer over the bindings.
//!
//! `ffi` is the raw bindgen output; the sibling modules wrap it so the rest
//! of the daemon never writes `unsafe`. Each `unsafe` block states why it is
//! sound in a `// SAFETY:` comment.
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

pub mod eal;
pub(crate) mod ffi;
pub mod lcore;
pub mod log;
pub mod mbuf;
pub mod mempool;
pub mod port;
pub mod vhost;

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

/// DPDK's hugepage heap over every NUMA socket: bytes it holds and bytes
/// allocated from it (mempools, and what libraries such as vhost's
/// allocate per device), from `rte_malloc_get_socket_stats`.
pub fn hugepage_heap() -> (u64, u64) {
    let (mut total, mut used) = (0, 0);
    // SAFETY: a query of EAL's socket table (valid after EAL init).
    let sockets = unsafe { ffi::rte_socket_count() };
    for i in 0..sockets {
        let mut st = ffi::rte_malloc_socket_stats::default();
        // SAFETY: i < rte_socket_count(); st is a valid out struct.
        unsafe {
            let socket = ffi::rte_socket_id_by_idx(i);
            if ffi::rte_malloc_get_socket_stats(socket, &mut st) == 0 {
                total += st.heap_totalsz_bytes as u64;
                used += st.heap_allocsz_bytes as u64;
            }
        }
    }
    (total, used)
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

/// The time base workers and the control thread share (MAC ages, session
/// deadlines, meters): nanoseconds since an epoch TSC, by a multiply and a
/// shift: a poll round reads the clock once, and a 128-bit division by
/// the TSC rate there costs tens of cycles. The 40 fractional bits of the
/// multiplier drift less than 10 ns an hour (a TSC up to 4 GHz).
#[derive(Debug, Clone, Copy)]
pub struct TscClock {
    epoch: u64,
    /// Nanoseconds per TSC tick, times 2^40.
    mult: u64,
}

impl TscClock {
    /// A clock whose zero is now (EAL must be initialised).
    pub fn start() -> TscClock {
        TscClock::new(rdtsc(), tsc_hz())
    }

    /// A clock whose zero is TSC value `epoch`, for a TSC at `hz`.
    pub fn new(epoch: u64, hz: u64) -> TscClock {
        TscClock {
            epoch,
            mult: ((1_000_000_000u128 << 40) / u128::from(hz.max(1))) as u64,
        }
    }

    /// Nanoseconds from the epoch to TSC value `tsc`.
    #[inline]
    pub fn ns_at(&self, tsc: u64) -> u64 {
        ((u128::from(tsc.wrapping_sub(self.epoch)) * u128::from(self.mult)) >> 40) as u64
    }

    /// Nanoseconds since the epoch.
    #[inline]
    pub fn now_ns(&self) -> u64 {
        self.ns_at(rdtsc())
    }
}

#[cfg(test)]
mod tests {
    use super::TscClock;

    #[test]
    fn the_tsc_clock_agrees_with_a_division() {
        for hz in [
            1_000_000_000u64,
            2_095_078_000,
            2_900_000_123,
            3_999_999_999,
        ] {
            let c = TscClock::new(1000, hz);
            for ticks in [0u64, 1, hz - 1, hz, 3600 * hz, 86_400 * hz] {
                let exact = (u128::from(ticks) * 1_000_000_000 / u128::from(hz)) as u64;
                let ns = c.ns_at(1000 + ticks);
                // Within 10 ns an hour (and never ahead of the exact time).
                let bound = 1 + exact / 360_000_000_000;
                assert!(
                    ns <= exact && exact - ns <= bound,
                    "{hz} Hz, {ticks} ticks: {ns} vs {exact}"
                );
            }
        }
    }
}
