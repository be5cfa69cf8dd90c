#!/usr/bin/env bash
# README command 2: set up the machine, then run every test: unit and property
# tests of the crates, and integration tests against real DPDK PMDs, testpmd
# and network namespaces. Root, Debian 12. Tests run one at a time: they share
# two cores, and DPDK's poll-mode threads must not starve each other.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --workspace --all-targets
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace -- --test-threads=1 2>&1 | tee "$log" || status=$?
# cargo prints one result line per test binary, the last often a doc-test run
# with nothing in it: close with the totals.
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
