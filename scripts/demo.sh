#!/usr/bin/env bash
# Builds raftsync (same configure as scripts/test.sh) and runs the current demo: three Raft nodes
# in one process on the in-memory network elect a leader, commit entries, lose the leader,
# re-elect, and the old leader catches up (examples/raft_cluster).
#   BUILD_DIR   build folder (default: build)
#   JOBS        parallel build jobs (default: number of cores)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${BUILD_DIR:-$root/build}
jobs=${JOBS:-$(nproc)}

"$root/scripts/install-deps.sh"
cmake -S "$root" -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRAFTSYNC_WARNINGS_AS_ERRORS=ON
cmake --build "$build_dir" -j "$jobs" --target raft_cluster_example
exec "$build_dir/examples/raft_cluster/raft_cluster_example"
