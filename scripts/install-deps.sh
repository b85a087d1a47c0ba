#!/usr/bin/env bash
# Installs the Debian 12 packages raftsync needs to build, test, run the demo and benchmarks.
# Idempotent and fast when everything is present (one dpkg query, no network).
set -euo pipefail

packages=(
  build-essential cmake pkg-config git
  libboost1.74-dev libboost-filesystem1.74-dev libboost-system1.74-dev
  libuv1-dev libfmt-dev catch2 libssl-dev
  clang-14 libclang-rt-14-dev   # libFuzzer + sanitizers for the frame-decoder fuzz target
  iproute2 nftables procps psmisc python3  # chaos harness: namespaces, partitions, processes
  faketime                                 # chaos harness: the clock fault (libfaketime)
)
if [[ "${RAFTSYNC_WITH_WINDOWS:-0}" == 1 ]]; then
  packages+=(g++-mingw-w64-x86-64-posix wine wine64)
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  exit 0
fi

echo "install-deps: installing ${missing[*]}" >&2
sudo_cmd=()
if [[ $(id -u) != 0 ]]; then sudo_cmd=(sudo); fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
