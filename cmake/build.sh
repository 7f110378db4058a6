#!/usr/bin/env bash
# Configure (once) and build mqdist into ${MQ_BUILD_DIR:-build}. Runs setup.sh first.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
prefix=$(bash "$root/cmake/setup.sh" | tail -n 1)
build=${MQ_BUILD_DIR:-$root/build}
if [ ! -f "$build/build.ninja" ]; then
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=${MQ_BUILD_TYPE:-Release} \
        -DCMAKE_PREFIX_PATH="$prefix" ${MQ_CMAKE_ARGS:-} >&2
fi
cmake --build "$build" -j "${MQ_JOBS:-$(nproc)}" "$@" >&2
echo "$build"
