//! Drivers for the real components vswitchd is tested, benchmarked and
//! demonstrated against: network namespaces, `dpdk-testpmd` containers on
//! virtio-user, and the `vswitchd` daemon itself.
//!
//! Every handle is a guard: dropping it (also while a failing test unwinds)
//! stops the process or deletes the namespace, so a failed run leaves no
//! namespaces, TAPs, sockets or hugepage files behind. Every wait is
//! bounded; names and paths are unique per process so runs do not collide.

pub mod etcd;
pub mod netns;
pub mod ovs;
pub mod process;
pub mod testpmd;
pub mod vswitchd;

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A name unique in this machine right now: `prefix` + pid + counter,
/// short enough for interface and netns names.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}{}-{}",
        std::process::id() % 100_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes; returns
/// whether it held. The bounded replacement for sleeps in tests.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs a command to completion: its stdout, or an error that shows the
/// command and its stderr.
pub fn run(c: &mut Command) -> Result<String, String> {
    let out = c.output().map_err(|e| format!("{c:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{c:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
