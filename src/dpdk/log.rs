//! DPDK's log into `tracing` (target `dpdk`), so its lines carry the
//! same timestamps, levels and format as ours (see `crate::log`).

use std::os::raw::{c_char, c_int};

use super::ffi;

/// Routes DPDK's log from now on (call before `rte_eal_init`, so EAL's
/// own start-up lines are routed too). Without it DPDK writes to stderr.
pub fn route() -> Result<(), String> {
    // SAFETY: `emit` is a plain function valid for the whole process; the
    // shim keeps the FILE it opens for DPDK for the same lifetime.
    let rc = unsafe { ffi::vs_route_log(Some(emit)) };
    if rc == 0 {
        Ok(())
    } else {
        Err("DPDK's log could not be routed (fopencookie failed)".into())
    }
}

/// DPDK's levels (RTE_LOG_EMERG = 1 ... RTE_LOG_DEBUG = 8) as tracing's:
/// errors and warnings as such, notices as info, info as debug (EAL's
/// start-up chatter), debug as trace.
fn level(l: c_int) -> tracing::Level {
    match l {
        ..=4 => tracing::Level::ERROR,
        5 => tracing::Level::WARN,
        6 => tracing::Level::INFO,
        7 => tracing::Level::DEBUG,
        _ => tracing::Level::TRACE,
    }
}

/// DPDK warnings that say nothing about this process on a machine set up
/// as documented, shown at debug: EAL looks for every hugepage size and
/// warns of the sizes without free pages (1 GB ones, where vswitchd runs
/// on the 2 MB pages it asked for; a real shortage fails its mempools
/// with their own error).
const BENIGN: &[&str] = &["EAL: No free 1048576 kB hugepages reported on node"];

/// The shim's callback: one message (possibly several lines) of DPDK's.
extern "C" fn emit(lvl: c_int, logtype: c_int, msg: *const c_char, len: usize) {
    if msg.is_null() {
        return;
    }
    // SAFETY: the shim passes the buffer and length stdio gave its write
    // function, valid for the duration of this call.
    let bytes = unsafe { std::slice::from_raw_parts(msg.cast::<u8>(), len) };
    let text = String::from_utf8_lossy(bytes);
    for line in text.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
        let level = if BENIGN.iter().any(|b| line.starts_with(b)) {
            tracing::Level::DEBUG
        } else {
            level(lvl)
        };
        // tracing's macros need a level known at compile time.
        match level {
            tracing::Level::ERROR => tracing::error!(target: "dpdk", logtype, "{line}"),
            tracing::Level::WARN => tracing::warn!(target: "dpdk", logtype, "{line}"),
            tracing::Level::INFO => tracing::info!(target: "dpdk", logtype, "{line}"),
            tracing::Level::DEBUG => tracing::debug!(target: "dpdk", logtype, "{line}"),
            _ => tracing::trace!(target: "dpdk", logtype, "{line}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpdk_levels_map_to_tracing_levels() {
        assert_eq!(level(1), tracing::Level::ERROR);
        assert_eq!(level(4), tracing::Level::ERROR);
        assert_eq!(level(5), tracing::Level::WARN);
        assert_eq!(level(6), tracing::Level::INFO);
        assert_eq!(level(7), tracing::Level::DEBUG);
        assert_eq!(level(8), tracing::Level::TRACE);
    }
}
