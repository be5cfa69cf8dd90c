#!/usr/bin/env bash
# The benchmark suite in one command: set up the machine, build, run the
# criterion micro-benchmarks and harnesses P, V, K, D and C, and write the table.
#
#   bash scripts/bench.sh                 full run -> benches/RESULTS.md + benches/results.json
#   bash scripts/bench.sh --harness P     one harness -> target/bench/results.{md,json}
#   bash scripts/bench.sh --smoke         seconds per harness (what CI runs as tests)
#
# The forwarding core of every switch is CPU 1, the traffic apps and control
# threads CPU 0 (see benches/src/lib.rs). Nothing else should run meanwhile.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release -p vswitchd -p vsbench -p vswitch-agent

md=benches/RESULTS.md
json=benches/results.json
micro=1
for a in "$@"; do
    case "$a" in
    --smoke | --harness* )
        md=target/bench/results.md
        json=target/bench/results.json
        micro=0
        ;;
    esac
done
mkdir -p target/bench
crit=()
if [ "$micro" = 1 ]; then
    taskset -c 1 cargo bench -p vsbench --bench stages
    crit=(--criterion target/criterion)
fi
target/release/vsbench run "$@" "${crit[@]}" --md "$md" --json "$json"
echo "bench: wrote $md and $json"
