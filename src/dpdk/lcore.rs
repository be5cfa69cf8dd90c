//! Launching work on EAL worker lcores.
//!
//! Workers run on EAL lcores (not plain threads) so `rte_lcore_id()` is set:
//! mempool per-lcore caches, which make mbuf alloc/free cheap, exist only for
//! EAL lcores.

use std::os::raw::{c_int, c_void};

use super::ffi;

/// Worker lcore ids EAL knows about, in order (the main lcore excluded).
pub fn worker_lcores() -> Vec<u32> {
    let mut out = Vec::new();
    // SAFETY: iteration queries of EAL state after init.
    let mut l = unsafe { ffi::rte_get_next_lcore(u32::MAX, 1, 0) };
    while l < ffi::RTE_MAX_LCORE {
        out.push(l);
        // SAFETY: as above.
        l = unsafe { ffi::rte_get_next_lcore(l, 1, 0) };
    }
    out
}

type Job = Box<dyn FnOnce() + Send + 'static>;

extern "C" fn trampoline(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the Box<Job> leaked by `launch`, passed to exactly
    // one lcore and reclaimed exactly once here.
    let job: Box<Job> = unsafe { Box::from_raw(arg as *mut Job) };
    // A panic must not unwind into C.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)) {
        Ok(()) => 0,
        Err(_) => {
            tracing::error!("a worker lcore panicked; stopping");
            std::process::abort();
        }
    }
}

/// Runs `job` on worker lcore `lcore`.
pub fn launch(lcore: u32, job: impl FnOnce() + Send + 'static) -> Result<(), String> {
    let boxed: Box<Job> = Box::new(Box::new(job));
    let arg = Box::into_raw(boxed) as *mut c_void;
    // SAFETY: trampoline has the lcore_function_t ABI and owns arg.
    let rc = unsafe { ffi::rte_eal_remote_launch(Some(trampoline), arg, lcore) };
    if rc < 0 {
        // SAFETY: the launch failed, so the lcore never took ownership.
        drop(unsafe { Box::from_raw(arg as *mut Job) });
        return Err(format!(
            "cannot launch on lcore {lcore}: {}",
            super::strerror(rc)
        ));
    }
    Ok(())
}

/// Waits for every worker lcore to return.
pub fn wait_all() {
    // SAFETY: called from the main lcore.
    unsafe { ffi::rte_eal_mp_wait_lcore() };
}
