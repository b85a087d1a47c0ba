#!/usr/bin/env bash
# Builds raftsync (same configure as scripts/test.sh) and runs the three-node demo: three nodes
# replicating data/node1, data/node2 and data/node3 over loopback TCP (examples/three_node).
#
#   scripts/demo.sh            interactive: edit any of the folders from another terminal and
#                              watch the others follow; Ctrl-C stops
#   scripts/demo.sh --check    scripted: creates, modifies, renames and deletes files on different
#                              nodes, stops and restarts a node; exits 0 only if all three trees
#                              end identical
#   scripts/demo.sh --raft     the Raft core alone: three in-memory nodes (examples/raft_cluster)
#
#   BUILD_DIR   build folder (default: build)       DATA_DIR  folders (default: data)
#   JOBS        parallel build jobs (default: number of cores)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${BUILD_DIR:-$root/build}
jobs=${JOBS:-$(nproc)}
data_dir=${DATA_DIR:-$root/data}

"$root/scripts/install-deps.sh"
cmake -S "$root" -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRAFTSYNC_WARNINGS_AS_ERRORS=ON
if [[ "${1:-}" == "--raft" ]]; then
  cmake --build "$build_dir" -j "$jobs" --target raft_cluster_example
  exec "$build_dir/examples/raft_cluster/raft_cluster_example"
fi
cmake --build "$build_dir" -j "$jobs" --target three_node_example
args=(--data "$data_dir")
if [[ "${1:-}" == "--check" ]]; then
  args+=(--check)
elif [[ $# -gt 0 ]]; then
  echo "usage: scripts/demo.sh [--check | --raft]" >&2
  exit 2
fi
exec "$build_dir/examples/three_node/three_node_example" "${args[@]}"
