#!/usr/bin/env bash
# Runs every benchmark and writes its JSON (and the replication latency CDF plot) to one folder.
#   scripts/bench.sh [OUT_DIR]        default OUT_DIR: bench-results/<UTC timestamp>
#   BUILD_DIR   build folder (default: build-bench, an optimized build)
#   QUICK=1     shorter runs (fewer samples, a 64 MiB large file instead of 256 MiB, a 5,000-file
#               tree instead of 100,000 for scale_bench)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${BUILD_DIR:-$root/build-bench}
out=${1:-$root/bench-results/$(date -u +%Y%m%dT%H%M%SZ)}
jobs=${JOBS:-$(nproc)}

"$root/scripts/install-deps.sh"
cmake -S "$root" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DRAFTSYNC_BUILD_TESTS=OFF
cmake --build "$build_dir" -j "$jobs" --target raft_core_bench raft_tcp_bench storage_bench \
  watch_latency replication_latency scale_bench
mkdir -p "$out"
samples=200
large=256
scale_args=()
if [[ "${QUICK:-0}" == 1 ]]; then
  samples=50
  large=64
  scale_args=(--files 5000 --burst 2000 --rm 2000)
fi

run() {
  local name=$1
  shift
  echo "== $name" | tee -a "$out/summary.txt"
  "$@" --json "$out/$name.json" | tee -a "$out/summary.txt"
}
run raft_core_bench "$build_dir/benchmarks/raft_core_bench/raft_core_bench"
run raft_tcp_bench "$build_dir/benchmarks/raft_tcp_bench/raft_tcp_bench"
run storage_bench "$build_dir/benchmarks/storage_bench/storage_bench"
run watch_latency "$build_dir/benchmarks/watch_latency/watch_latency"
run replication_latency "$build_dir/benchmarks/replication_latency/replication_latency" \
  --samples "$samples" --large-mib "$large"
# Three raftsync processes under bulk change; the full run generates a 100,000-file tree in a
# fresh folder under /tmp (about 4x its size free needed; --files 1000000 is the long run).
run scale_bench "$build_dir/benchmarks/scale_bench/scale_bench" "${scale_args[@]}"
echo "results in $out (replication latency plot: $out/replication_latency.json.svg)"
