#!/usr/bin/env bash
# Creates the ModelOpt reference environment used to (re)generate the conformance goldens:
#   $MQDIST_DEPS/venv-ref (default ~/.cache/mqdist/venv-ref), CPU only, pinned by requirements.txt.
# torch and nvidia-modelopt are installed with --no-deps so that no nvidia-* CUDA wheel is pulled.
# torch's libtorch_cuda.so still names three CUDA libraries that are not on this machine
# (libcufile, libcusparseLt, libnvshmem_host); no code path on CPU calls into them, so empty
# shared objects with those SONAMEs are placed next to libtorch (its RPATH has $ORIGIN) to let
# `import torch` load. Everything else CUDA comes from /usr/local/cuda-13.0/lib (ld.so.conf).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
DEPS=${MQDIST_DEPS:-$HOME/.cache/mqdist}
VENV=$DEPS/venv-ref
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
pip=("$VENV/bin/pip" install -q --disable-pip-version-check)
"${pip[@]}" --no-deps "torch==2.11.0" "nvidia-modelopt==$(sed -n 's/^nvidia-modelopt==//p' "$here/requirements.txt")"
"${pip[@]}" --no-deps -r <(grep -v -e '^torch==' -e '^nvidia-modelopt==' -e '^#' "$here/requirements.txt")
lib=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/torch/lib
# Each stub defines (as an abort()ing function) exactly the symbols libtorch imports from it, with
# the symbol version the import asks for (nvshmem's are versioned "NVSHMEM").
stub() {  # soname symbol-regex version-node
  local so=$1 re=$2 ver=$3 tmp
  [ -e "$lib/$so" ] && return 0
  tmp=$(mktemp -d)
  nm -D --undefined-only "$lib"/*.so | awk '{print $NF}' | sed 's/@.*//' | grep -E "$re" | sort -u |
    sed 's/.*/void &(void) { __builtin_trap(); }/' > "$tmp/stub.c"
  if [ -n "$ver" ]; then echo "$ver { global: *; };" > "$tmp/ver.map"; else echo "{ global: *; };" > "$tmp/ver.map"; fi
  gcc -shared -fPIC "$tmp/stub.c" -Wl,--version-script="$tmp/ver.map" -Wl,-soname,"$so" -o "$lib/$so"
  rm -rf "$tmp"
}
stub libcufile.so.0 '^cuFile' ''
stub libcusparseLt.so.0 '^cusparseLt' ''
stub libnvshmem_host.so.3 '^nvshmem' NVSHMEM
"$VENV/bin/python" -c 'import torch, modelopt, modelopt.torch.quantization as mtq; print("venv-ref ok: torch", torch.__version__, "modelopt", modelopt.__version__)'
