#!/usr/bin/env bash
# Installs everything mqdist needs on a fresh Debian 12 machine. Idempotent: a second run takes seconds.
#   - Debian packages (Open MPI, HDF5, Boost.ProgramOptions, nlohmann-json, libyaml, GoogleTest, ninja, ccache,
#     Slurm + munge for the slurm/ template tests)
#   - LibTorch from PyPI's torch==2.11.0 wheel (no Python deps), unpacked into $MQDIST_DEPS
#     (default ~/.cache/mqdist), a location shared by every clone on the machine.
# Prints the LibTorch CMake prefix on its last line.
set -euo pipefail
TORCH_VERSION=2.11.0
DEPS=${MQDIST_DEPS:-$HOME/.cache/mqdist}
TORCH_DIR=$DEPS/torch-$TORCH_VERSION

need_pkgs=()
# slurm-wlm (slurmctld, slurmd, slurm-client) and munge: the single-node Slurm of tests/slurm. srun
# --mpi=pmix loads libpmix.so from libpmix-dev (Debian's mpi_pmix plugin dlopens the unversioned name).
for p in openmpi-bin libopenmpi-dev libhdf5-dev libboost-program-options-dev nlohmann-json3-dev \
         libgtest-dev ninja-build ccache cmake g++ libyaml-dev \
         slurm-wlm slurmctld slurmd slurm-client munge libpmix-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_pkgs+=("$p")
done
if ((${#need_pkgs[@]})); then
  echo "setup: installing Debian packages: ${need_pkgs[*]}" >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need_pkgs[@]}" >&2
fi

if [ ! -f "$TORCH_DIR/torch/share/cmake/Torch/TorchConfig.cmake" ]; then
  echo "setup: installing LibTorch $TORCH_VERSION (PyPI wheel) into $TORCH_DIR" >&2
  mkdir -p "$DEPS"
  tmp=$(mktemp -d "$DEPS/torch-$TORCH_VERSION.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip install -q --disable-pip-version-check --no-deps --no-compile \
      --target "$tmp" "torch==$TORCH_VERSION" >&2
  rm -rf "$TORCH_DIR"
  mv "$tmp" "$TORCH_DIR"   # atomic publish: a killed install never leaves a half tree behind
  trap - EXIT
fi
echo "$TORCH_DIR/torch/share/cmake"
