//! Shared set-up of the integration tests: configs with unique DPDK
//! prefixes and socket paths under a per-test temp dir.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::Path;

use testbed::vswitchd::{TempDir, Vswitchd};

/// The daemon binary cargo built for these tests.
pub fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_vswitchd"))
}

/// `[eal]`, `[workers]`, `[control]` and one bridge `vpc1`, unique to `dir`.
pub fn header(dir: &TempDir) -> String {
    Vswitchd::config_header(dir, 256, "vpc1")
}

/// Starts vswitchd or fails the test with its output.
pub fn start(dir: &TempDir, config: &str) -> Vswitchd {
    Vswitchd::start(bin(), dir, config).unwrap_or_else(|e| panic!("{e}"))
}
