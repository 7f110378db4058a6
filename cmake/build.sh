#!/usr/bin/env bash
# Configure (once) and build mqdist into ${MQ_BUILD_DIR:-build}. Runs setup.sh first.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
prefix=$(bash "$root/cmake/setup.sh" | tail -n 1)
build=${MQ_BUILD_DIR:-$root/build}
# ccache (when installed): paths below the checkout are hashed relative to it, so every clone on this
# machine shares one cache.
export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$root} CCACHE_NOHASHDIR=${CCACHE_NOHASHDIR:-true}
if [ ! -f "$build/build.ninja" ]; then
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=${MQ_BUILD_TYPE:-Release} \
        -DCMAKE_PREFIX_PATH="$prefix" ${MQ_CMAKE_ARGS:-} >&2
fi
cmake --build "$build" -j "${MQ_JOBS:-$(nproc)}" "$@" >&2
echo "$build"
