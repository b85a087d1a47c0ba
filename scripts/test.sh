#!/usr/bin/env bash
# Builds raftsync and runs its test suite: scripts/test.sh [extra ctest arguments]
#   BUILD_DIR   build folder (default: build)
#   JOBS        parallel build and test jobs (default: number of cores)
# Exits non-zero if anything fails to build or any test fails.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${BUILD_DIR:-$root/build}
jobs=${JOBS:-$(nproc)}

"$root/scripts/install-deps.sh"
cmake -S "$root" -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRAFTSYNC_WARNINGS_AS_ERRORS=ON
cmake --build "$build_dir" -j "$jobs"
cd "$build_dir"
ctest --no-tests=error --output-on-failure -j "$jobs" "$@"
