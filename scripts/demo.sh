#!/usr/bin/env bash
# README command 1: set up the machine, build, and run the demo on vswitchd's
# embedded default config (configs/demo.toml). Root, Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --bins -p vswitchd -p testbed
exec target/release/demo target/release/vswitchd
