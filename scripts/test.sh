#!/usr/bin/env bash
# README command 2: set up the machine, then run every test: unit and property
# tests of the crates, and integration tests against real DPDK PMDs, testpmd
# and network namespaces. Root, Debian 12. Tests run one at a time: they share
# two cores, and DPDK's poll-mode threads must not starve each other.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --workspace --all-targets
cargo test --workspace -- --test-threads=1
