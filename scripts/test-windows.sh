#!/usr/bin/env bash
# The Windows leg: cross-compiles the watch module and its tests with mingw-w64 and runs them
# under wine with ctest (ReadDirectoryChangesW and polling backends).
#   scripts/test-windows.sh [extra ctest arguments]
#   BUILD_DIR    build folder (default: build-win)
#   WINEPREFIX   wine prefix (default: $BUILD_DIR/wineprefix, created with wineboot -i)
#   JOBS         parallel build jobs (default: number of cores)
# Installs g++-mingw-w64-x86-64-posix, wine and wine64 with apt-get when missing.
# Exits non-zero if anything fails to build, if no test is found (a wine that cannot start
# makes discovery find nothing, so ctest runs with --no-tests=error) or if a test fails.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${BUILD_DIR:-$root/build-win}
jobs=${JOBS:-$(nproc)}
start=$(date +%s)

RAFTSYNC_WITH_WINDOWS=1 "$root/scripts/install-deps.sh"
installed=$(date +%s)

cmake -S "$root" -B "$build_dir" \
  -DCMAKE_TOOLCHAIN_FILE="$root/cmake/toolchains/mingw-w64.cmake" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DRAFTSYNC_WATCH_ONLY=ON -DRAFTSYNC_WARNINGS_AS_ERRORS=ON \
  -DRAFTSYNC_INSTALL=OFF
cmake --build "$build_dir" -j "$jobs"
built=$(date +%s)

export WINEPREFIX=${WINEPREFIX:-$build_dir/wineprefix}
export WINEDEBUG=-all
export WINEARCH=win64
export DISPLAY=   # no display: wine must not try to open windows
if [[ ! -f "$WINEPREFIX/system.reg" ]]; then
  wineboot -i >/dev/null 2>&1
  wineserver -w
fi

cd "$build_dir"
status=0
ctest --no-tests=error --output-on-failure "$@" || status=$?
wineserver -k >/dev/null 2>&1 || true
finished=$(date +%s)
echo "test-windows: install $((installed - start)) s, build $((built - installed)) s," \
  "wine + tests $((finished - built)) s, total $((finished - start)) s" >&2
exit "$status"
