#!/usr/bin/env bash
# Fuzzes the transport's wire codec with libFuzzer (clang-14, ASan + UBSan).
#
#   scripts/fuzz.sh                 build tests/transport/fuzz/frame_fuzzer and run it for
#                                   ${FUZZ_SECONDS:-60} s on the seed corpus
#   scripts/fuzz.sh --regen-corpus  rewrite tests/transport/fuzz/corpus/ from make_corpus.cpp
#   scripts/fuzz.sh --sanitize-tests  build the transport tests with -fsanitize=address,undefined
#                                   (gcc, the project's CMake) and run them with ctest -L transport
#   scripts/fuzz.sh --tsan-tests    the same with -fsanitize=thread
#
# Environment:
#   FUZZ_BUILD_DIR  build folder (default: <repo>/build-fuzz)
#   FUZZ_SECONDS    fuzzing time in seconds (default 60); run longer with e.g. FUZZ_SECONDS=3600
#   FUZZ_JOBS       parallel fuzzing processes (default 1; libFuzzer -jobs/-workers)
#   CXX_FUZZ        the clang++ to use (default clang++-14)
# New inputs found while fuzzing go to $FUZZ_BUILD_DIR/corpus (the repo corpus is only read).
# A crash leaves crash-* / leak-* / timeout-* files in $FUZZ_BUILD_DIR and exits non-zero; replay
# one with: $FUZZ_BUILD_DIR/frame_fuzzer $FUZZ_BUILD_DIR/crash-<hash>
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${FUZZ_BUILD_DIR:-$root/build-fuzz}
seconds=${FUZZ_SECONDS:-60}
jobs=${FUZZ_JOBS:-1}
cxx=${CXX_FUZZ:-clang++-14}
seed_corpus=$root/tests/transport/fuzz/corpus
mkdir -p "$build_dir"

common_flags=(-std=c++20 -g -O1 -I"$root/include" -fno-omit-frame-pointer)

case "${1:-}" in
  --regen-corpus)
    "$cxx" "${common_flags[@]}" "$root/tests/transport/fuzz/make_corpus.cpp" \
      "$root/src/transport/codec.cpp" -o "$build_dir/make_corpus"
    rm -rf "$seed_corpus"
    mkdir -p "$seed_corpus"
    "$build_dir/make_corpus" "$seed_corpus"
    echo "wrote $(ls "$seed_corpus" | wc -l) seed files to $seed_corpus"
    exit 0
    ;;
  --sanitize-tests | --tsan-tests)
    if [ "$1" = --tsan-tests ]; then
      asan_dir=$build_dir/tsan-tests
      sanitize="-fsanitize=thread -Wno-tsan"  # libstdc++ fences: harmless -Wtsan noise
    else
      asan_dir=$build_dir/asan-tests
      sanitize="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
    fi
    cmake -S "$root" -B "$asan_dir" -DCMAKE_BUILD_TYPE=Debug -DRAFTSYNC_WARNINGS_AS_ERRORS=ON \
      -DRAFTSYNC_BUILD_EXAMPLES=OFF -DRAFTSYNC_BUILD_BENCHMARKS=OFF \
      -DCMAKE_CXX_FLAGS="$sanitize -fno-omit-frame-pointer"
    cmake --build "$asan_dir" -j "${JOBS:-2}" \
      --target transport_codec_test transport_tcp_test transport_raft_tcp_test
    cd "$asan_dir"
    ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
      ctest --no-tests=error --output-on-failure -L transport -R '^transport_'
    exit 0
    ;;
  "") ;;
  *)
    echo "usage: $0 [--regen-corpus | --sanitize-tests | --tsan-tests]" >&2
    exit 2
    ;;
esac

start=$(date +%s)
"$cxx" "${common_flags[@]}" -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  "$root/tests/transport/fuzz/frame_fuzzer.cpp" "$root/src/transport/codec.cpp" \
  -o "$build_dir/frame_fuzzer"
built=$(date +%s)
echo "fuzz: built frame_fuzzer in $((built - start)) s; fuzzing for ${seconds} s"
mkdir -p "$build_dir/corpus"
cd "$build_dir"
parallel=()
if [ "$jobs" -gt 1 ]; then parallel=(-jobs="$jobs" -workers="$jobs"); fi
"$build_dir/frame_fuzzer" -max_total_time="$seconds" -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
  -print_final_stats=1 "${parallel[@]}" "$build_dir/corpus" "$seed_corpus"
echo "fuzz: done in $(( $(date +%s) - start )) s (build $((built - start)) s + run)"
