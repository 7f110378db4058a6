#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test (ctest; multi-rank tests run under mpirun).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(bash "$root/cmake/build.sh" | tail -n 1)
cd "$build"
ctest --output-on-failure -j "${MQ_JOBS:-$(nproc)}" --timeout 600 "$@"
