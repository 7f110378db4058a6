#!/usr/bin/env bash
# One CLI test case: cli_test.sh <case> <mqdist> <mqdist_cli_check> <source dir>
# "ok" cases run mqdist on configs/examples/tensors.safetensors and compare its output with the library
# (mqdist_cli_check, bit for bit) plus expected names/dtypes/shapes. "error" cases expect exit code 1,
# exactly one stderr line "mqdist: ..." containing a given text, and no output file (nor temporary).
set -uo pipefail
case_name=$1 mqdist=$2 check=$3 src=$4
example=$src/configs/examples/tensors.safetensors
work=$(mktemp -d "${TMPDIR:-/tmp}/mqdist_cli.XXXXXX")
trap 'rm -rf "$work"' EXIT
out=$work/out.safetensors
up=model.layers.0.mlp.up_proj.weight
o=model.layers.0.self_attn.o_proj.weight

fail() { echo "FAIL [$case_name]: $*" >&2; exit 1; }

# ok <fake|real> <quantizer|attr> <spec> [expectations...] -- runs mqdist, then the checker.
ok() {
  local mode=$1 kind=$2 spec=$3; shift 3
  local args=(tensor --in "$example" --out "$out")
  [ "$kind" = quantizer ] && args+=(--quantizer "$spec") || args+=(--attr "$spec")
  [ "$mode" = real ] && args+=(--real)
  "$mqdist" "${args[@]}" >"$work/stdout" 2>"$work/stderr"
  local rc=$?
  [ $rc -eq 0 ] || fail "exit code $rc: $(cat "$work/stderr")"
  [ -s "$work/stderr" ] && fail "unexpected stderr: $(cat "$work/stderr")"
  [ -f "$out" ] || fail "no output file"
  "$check" "$example" "$out" "$mode" "$kind" "$spec" "$@" || fail "output differs from the library"
  grep -q "$up" "$work/stdout" || fail "no summary line for $up: $(cat "$work/stdout")"
  cat "$work/stdout"
}

# error <expected text> <mqdist args...>
error() {
  local text=$1; shift
  "$mqdist" "$@" >"$work/stdout" 2>"$work/stderr"
  local rc=$?
  [ $rc -eq 1 ] || fail "exit code $rc, expected 1 (stderr: $(cat "$work/stderr"))"
  [ "$(wc -l <"$work/stderr")" -eq 1 ] || fail "stderr is not one line: $(cat "$work/stderr")"
  grep -q '^mqdist: ' "$work/stderr" || fail "stderr does not start with 'mqdist: ': $(cat "$work/stderr")"
  grep -qF -- "$text" "$work/stderr" || fail "stderr lacks '$text': $(cat "$work/stderr")"
  [ -e "$out" ] && fail "an output file was left behind"
  [ -z "$(ls -A "$work" | grep -v '^std')" ] || fail "stray files: $(ls -A "$work")"
  cat "$work/stderr"
}

case $case_name in
  nvfp4_weight)
    ok fake quantizer NVFP4_DEFAULT_CFG:weight \
      "$up:BF16:64x128" "$up._amax:BF16:scalar" "$o:BF16:33x48" "$o._amax:BF16:scalar" ;;
  fp8_input)
    ok fake quantizer FP8_DEFAULT_CFG:input "$up:BF16:64x128" "$up._amax:BF16:scalar" "$o._amax:BF16:scalar" ;;
  int8_attr)
    ok fake attr '{"num_bits": 8, "axis": 0}' "$up._amax:BF16:64x1" "$o._amax:BF16:33x1" ;;
  w4a8_sequential)
    ok fake quantizer W4A8_AWQ_BETA_CFG:weight "$up.0._amax:BF16:64x1" "$up.1._amax:BF16:scalar" \
      "$o.0._amax:BF16:33x1" ;;
  nvfp4_real)
    ok real quantizer NVFP4_DEFAULT_CFG:weight \
      "$up:U8:64x64" "model.layers.0.mlp.up_proj.weight_scale:F8_E4M3:64x8" \
      "model.layers.0.mlp.up_proj.weight_scale_2:F32:scalar" \
      "$o:U8:33x24" "model.layers.0.self_attn.o_proj.weight_scale:F8_E4M3:33x3" \
      "model.layers.0.self_attn.o_proj.weight_scale_2:F32:scalar" ;;
  fp8_real)
    ok real quantizer FP8_DEFAULT_CFG:weight \
      "$up:F8_E4M3:64x128" "model.layers.0.mlp.up_proj.weight_scale:F32:scalar" ;;
  int8_real)
    ok real attr '{"num_bits": 8, "axis": 0}' \
      "$up:I8:64x128" "model.layers.0.mlp.up_proj.weight_scale:F32:64" ;;
  help)
    "$mqdist" --help >"$work/stdout" 2>"$work/stderr" || fail "--help failed"
    grep -q 'mqdist tensor' "$work/stdout" || fail "--help lacks the tensor usage"
    grep -q 'NVFP4_DEFAULT_CFG' "$work/stdout" || fail "--help lacks the presets"
    grep -q -- '--cfg <job.json>' "$work/stdout" || fail "--help lacks the job usage" ;;
  job_embedded)
    # The README's main job with smaller data through --set: exit 0, quality line, a complete export.
    "$mqdist" --cfg "$src/configs/jobs/tiny_dense_nvfp4.json" --quiet --set calib.num_samples=8 \
      --set eval.max_windows=4 --set "output=$out" >"$work/stdout" 2>"$work/stderr" || fail "exit $?: $(cat "$work/stderr")"
    [ -s "$work/stderr" ] && fail "unexpected stderr: $(cat "$work/stderr")"
    grep -q '^quality: perplexity [0-9.]* -> [0-9.]* (.*) with NVFP4_DEFAULT_CFG$' "$work/stdout" || fail "no quality line"
    for f in model.safetensors hf_quant_config.json config.json tokenizer.json mqdist_job.json \
             mqdist_state/quantizer_state.json; do [ -f "$out/$f" ] || fail "export lacks $f"; done
    grep -q '"quant_algo": "NVFP4"' "$out/hf_quant_config.json" || fail "hf_quant_config.json: not NVFP4"
    cat "$work/stdout" ;;
  job_yaml_recipe)
    # A ModelOpt recipe YAML, verbatim from the 0.47.0 recipe library, as the job's quant config:
    # NVFP4 W4A4 plus the FP8 KV-cache cast (constant amax 448), exported with kv_cache_quant_algo FP8.
    recipe=$src/configs/modelopt_recipes/general/ptq/nvfp4_default-kv_fp8_cast.yaml
    "$mqdist" --cfg "$src/configs/jobs/tiny_dense_nvfp4.json" --quiet --set calib.num_samples=8 \
      --set eval.max_windows=4 --set "quant=$recipe" --set "output=$out" >"$work/stdout" 2>"$work/stderr" \
      || fail "exit $?: $(cat "$work/stderr")"
    grep -q "^quality: perplexity [0-9.]* -> [0-9.]* (.*) with $recipe\$" "$work/stdout" || fail "no quality line"
    grep -q '"quant_algo": "NVFP4"' "$out/hf_quant_config.json" || fail "hf_quant_config.json: not NVFP4"
    grep -q '"kv_cache_quant_algo": "FP8"' "$out/hf_quant_config.json" || fail "hf_quant_config.json: no FP8 KV cache"
    cat "$work/stdout" ;;
  err_job_yaml_not_ptq)
    error "only PTQ recipes" --cfg "$src/configs/jobs/tiny_dense_nvfp4.json" \
      --set "quant=$src/configs/modelopt_recipes/general/auto_quantize/nvfp4_fp8_at_5p4bits.yaml" --set "output=$out" ;;
  job_dry_run)
    "$mqdist" --cfg "$src/configs/jobs/tiny_moe_nvfp4.json" --dry-run --set "output=$out" \
      >"$work/stdout" 2>"$work/stderr" || fail "exit $?: $(cat "$work/stderr")"
    grep -q 'Qwen3MoeForCausalLM, 2 layers, hidden 256, 8 experts top-2' "$work/stdout" || fail "no model line"
    grep -q 'dry run: nothing loaded, nothing written' "$work/stdout" || fail "no dry-run line"
    [ -e "$out" ] && fail "dry run wrote $out"
    cat "$work/stdout" ;;
  err_job_bad_set)
    error "configs/jobs/tiny_dense_nvfp4.json: calib.seq_len: 0 must be > 0" \
      --cfg "$src/configs/jobs/tiny_dense_nvfp4.json" --set calib.seq_len=0 --set "output=$out" ;;
  err_job_algorithm)
    error "calibration algorithm 'awq_lite' of INT4_AWQ_CFG is not implemented in mqdist yet" \
      --cfg "$src/configs/jobs/tiny_dense_nvfp4.json" --set quant=INT4_AWQ_CFG --set "output=$out" ;;
  err_job_missing)
    error "no_such_job.json: cannot open job file" --cfg "$work/no_such_job.json" ;;
  err_job_with_mode)
    error "take no mode" tensor --cfg "$src/configs/jobs/tiny_dense_nvfp4.json" ;;
  version)
    v=$("$mqdist" --version) || fail "--version failed"
    [[ $v == "mqdist 0."* ]] || fail "--version printed '$v'" ;;
  err_missing_input)
    error "$work/absent.safetensors: cannot open" tensor --quantizer NVFP4_DEFAULT_CFG:weight \
      --in "$work/absent.safetensors" --out "$out" ;;
  err_corrupt_input)
    cut=$(mktemp "${TMPDIR:-/tmp}/mqdist_cut.XXXXXX")
    head -c 1000 "$example" >"$cut"
    error "truncated" tensor --quantizer NVFP4_DEFAULT_CFG:weight --in "$cut" --out "$out"
    rm -f "$cut" ;;
  err_bad_json)
    error "--attr: invalid JSON" tensor --attr '{"num_bits": 8,' --in "$example" --out "$out" ;;
  err_bad_attr)
    error "num_bits" tensor --attr '{"num_bits": 0}' --in "$example" --out "$out" ;;
  err_unknown_field)
    error "frobnicate" tensor --attr '{"frobnicate": 1}' --in "$example" --out "$out" ;;
  err_unknown_preset)
    error "NO_SUCH_CFG" tensor --quantizer NO_SUCH_CFG:weight --in "$example" --out "$out" ;;
  err_bad_role)
    error "must be 'weight' or 'input'" tensor --quantizer NVFP4_DEFAULT_CFG:output --in "$example" --out "$out" ;;
  err_no_role)
    error "is not <PRESET>:<weight|input>" tensor --quantizer NVFP4_DEFAULT_CFG --in "$example" --out "$out" ;;
  err_both_specs)
    error "exactly one of --quantizer" tensor --quantizer NVFP4_DEFAULT_CFG:weight --attr '{"num_bits": 8}' \
      --in "$example" --out "$out" ;;
  err_no_out)
    error "--out" tensor --quantizer NVFP4_DEFAULT_CFG:weight --in "$example" ;;
  err_unknown_option)
    error "frobnicate" tensor --frobnicate --quantizer NVFP4_DEFAULT_CFG:weight --in "$example" --out "$out" ;;
  err_unknown_mode)
    error "unknown mode 'quantise'" quantise --in "$example" ;;
  err_real_input)
    error "--real exports weights" tensor --quantizer FP8_DEFAULT_CFG:input --real --in "$example" --out "$out" ;;
  err_real_shape)
    # INT4 packs two output rows per byte: the 33-row o_proj cannot be exported.
    error "tensor '$o'" tensor --quantizer INT4_BLOCKWISE_WEIGHT_ONLY_CFG:weight --real \
      --in "$example" --out "$out" ;;
  *) fail "unknown case" ;;
esac
echo "PASS [$case_name]"
