#!/usr/bin/env python3
"""Translate ModelOpt's preset YAML (modelopt_recipes/configs) into mqdist's JSON configs.

Each YAML file becomes one JSON file at the same relative path (configs/numerics/fp8.yaml ->
configs/numerics/fp8.json), translated entry by entry:
  - the "# modelopt-schema: modelopt.torch.quantization.config.X" preamble -> "$schema": "X"
  - the description comment above it -> "$comment"
  - the YAML header document ("imports:") and a list body (second document) -> "imports" and "$list"
  - import paths "configs/numerics/fp8" -> "numerics/fp8.json" (relative to mqdist's configs/)
  - int keys (-1) -> JSON string keys ("-1"); empty values -> null; "e4m3"-style strings are kept
    (mqdist converts them under num_bits / scale_bits like ModelOpt's loader does)
Nothing is resolved here: $import markers are kept, so the JSON tree mirrors the YAML tree.

It also writes configs/presets.json, the name index (ModelOpt constant -> file, hf_ptq qformat
names -> file).

Usage: python3 configs/tools/yaml_to_json.py [--recipes <modelopt_recipes dir>] [--out configs]

Source: the modelopt_recipes package of nvidia-modelopt 0.47.0 installed in the conformance venv
(~/.cache/mqdist/venv-ref, the same ModelOpt the goldens come from). It differs from the reference
snapshot (/work/shared/reference/modelopt_recipes, commit a2fbac7bad8a) only by one extra default
exclusion, '*self_attention.conv1d*' (Megatron-Core's name of the GatedDeltaNet conv), and by
diffusers-only LayerNorm exclusions / an extra diffusers preset.
"""

import argparse
import json
import re
from pathlib import Path

import yaml

DEFAULT_RECIPES = (Path.home() / ".cache/mqdist/venv-ref/lib/python3.11/site-packages/modelopt_recipes")
SCHEMA_RE = re.compile(r"^\s*#\s*modelopt-schema:\s*(\S+)\s*$")
SUBDIRS = ["numerics", "ptq/units", "ptq/presets/model", "ptq/presets/kv", "ptq/presets/diffusers"]

# modelopt/torch/quantization/config.py: constant -> preset YAML (same order as there).
CONSTANTS = {
    "INT8_DEFAULT_CFG": "ptq/presets/model/int8",
    "INT8_SMOOTHQUANT_CFG": "ptq/presets/model/int8_smoothquant",
    "INT8_WEIGHT_ONLY_CFG": "ptq/presets/model/int8_weight_only",
    "FP8_DEFAULT_CFG": "ptq/presets/model/fp8",
    "MAMBA_MOE_FP8_AGGRESSIVE_CFG": "ptq/presets/model/mamba_moe_fp8_aggressive",
    "MAMBA_MOE_FP8_CONSERVATIVE_CFG": "ptq/presets/model/mamba_moe_fp8_conservative",
    "FP8_PER_CHANNEL_PER_TOKEN_CFG": "ptq/presets/model/fp8_per_channel_per_token",
    "FP8_2D_BLOCKWISE_WEIGHT_ONLY_CFG": "ptq/presets/model/fp8_2d_blockwise_weight_only",
    "INT4_BLOCKWISE_WEIGHT_ONLY_CFG": "ptq/presets/model/int4_blockwise_weight_only",
    "INT4_AWQ_CFG": "ptq/presets/model/int4_awq",
    "W4A8_AWQ_BETA_CFG": "ptq/presets/model/w4a8_awq_beta",
    "MXFP8_DEFAULT_CFG": "ptq/presets/model/mxfp8",
    "MXFP6_DEFAULT_CFG": "ptq/presets/model/mxfp6",
    "MXFP4_DEFAULT_CFG": "ptq/presets/model/mxfp4",
    "W4A8_MXFP4_FP8_CFG": "ptq/presets/model/w4a8_mxfp4_fp8",
    "MXINT8_DEFAULT_CFG": "ptq/presets/model/mxint8",
    "FP8_KV_CFG": "ptq/presets/kv/fp8",
    "FP8_AFFINE_KV_CFG": "ptq/presets/kv/fp8_affine",
    "NVFP4_DEFAULT_CFG": "ptq/presets/model/nvfp4",
    "NVFP4_FOUR_OVER_SIX_CFG": "ptq/presets/model/nvfp4_four_over_six",
    "NVFP4_W4A4_WEIGHT_MSE_FP8_SWEEP_CFG": "ptq/presets/model/nvfp4_w4a4_weight_mse_fp8_sweep",
    "NVFP4_W4A4_WEIGHT_LOCAL_HESSIAN_CFG": "ptq/presets/model/nvfp4_w4a4_weight_local_hessian",
    "MAMBA_MOE_NVFP4_AGGRESSIVE_CFG": "ptq/presets/model/mamba_moe_nvfp4_aggressive",
    "MAMBA_MOE_NVFP4_CONSERVATIVE_CFG": "ptq/presets/model/mamba_moe_nvfp4_conservative",
    "NVFP4_AWQ_LITE_CFG": "ptq/presets/model/nvfp4_awq_lite",
    "NVFP4_AWQ_CLIP_CFG": "ptq/presets/model/nvfp4_awq_clip",
    "NVFP4_AWQ_FULL_CFG": "ptq/presets/model/nvfp4_awq_full",
    "NVFP4_AFFINE_KV_CFG": "ptq/presets/kv/nvfp4_affine",
    "NVFP4_KV_CFG": "ptq/presets/kv/nvfp4",
    "NVFP4_FP8_MHA_CONFIG": "ptq/presets/model/nvfp4_fp8_mha",
    "NVFP4_KV_ROTATE_CFG": "ptq/presets/kv/nvfp4_rotate",
    "NVFP4_SVDQUANT_DEFAULT_CFG": "ptq/presets/model/nvfp4_svdquant",
    "W4A8_NVFP4_FP8_CFG": "ptq/presets/model/w4a8_nvfp4_fp8",
    "W4A16_NVFP4_CFG": "ptq/presets/model/w4a16_nvfp4",
    "MXFP4_MLP_WEIGHT_ONLY_CFG": "ptq/presets/model/mxfp4_mlp_weight_only",
    "NVFP4_MLP_WEIGHT_ONLY_CFG": "ptq/presets/model/nvfp4_mlp_weight_only",
    "NVFP4_EXPERTS_ONLY_CFG": "ptq/presets/model/nvfp4_experts_only",
    "NVFP4_MLP_ONLY_CFG": "ptq/presets/model/nvfp4_mlp_only",
    "NVFP4_OMLP_ONLY_CFG": "ptq/presets/model/nvfp4_omlp_only",
}

# Recipe presets that ModelOpt does not export as constants, under the names the conformance goldens
# (tests/conformance/gen_presets.py) give them.
EXTRA = {
    "FP8_KV_CAST_CFG": "ptq/presets/kv/fp8_cast",
    "NVFP4_KV_CAST_CFG": "ptq/presets/kv/nvfp4_cast",
}


def header_comment(text: str) -> str | None:
    """The description comment block right above the schema line (license header skipped)."""
    lines = text.splitlines()
    block: list[str] = []
    after_blank = False
    for line in lines:
        if SCHEMA_RE.match(line):
            break
        s = line.strip()
        if not s:
            after_blank = True
            continue
        if not s.startswith("#"):
            break
        if after_blank:
            block, after_blank = [], False
        block.append(s.lstrip("#").strip())
    text = " ".join(x for x in block if x)
    return text or None


def keys_to_json(obj):
    """YAML int keys -> JSON string keys, recursively; list/dict order preserved."""
    if isinstance(obj, dict):
        return {str(k) if not isinstance(k, str) else k: keys_to_json(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [keys_to_json(v) for v in obj]
    return obj


def import_path(p: str) -> str:
    if p.startswith("configs/"):
        p = p[len("configs/"):]
    return p + ".json"


def translate(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    schema = None
    for line in text.splitlines():
        m = SCHEMA_RE.match(line)
        if m:
            schema = m.group(1).rsplit(".", 1)[-1]
    docs = list(yaml.safe_load_all(text))
    out: dict = {}
    comment = header_comment(text)
    if comment:
        out["$comment"] = comment
    if schema:
        out["$schema"] = schema
    if len(docs) == 2:
        header, body = docs
        imports = (header or {}).get("imports") or {}
    else:
        body = docs[0]
        imports = {}
        if isinstance(body, dict) and "imports" in body:
            imports = body["imports"] or {}
            body = {k: v for k, v in body.items() if k != "imports"}
    if imports:
        out["imports"] = {alias: import_path(p) for alias, p in imports.items()}
    body = keys_to_json(body)
    if isinstance(body, list):
        out["$list"] = body
    else:
        out.update(body)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipes", default=str(DEFAULT_RECIPES))
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1]))
    args = ap.parse_args()
    src_root = Path(args.recipes) / "configs"
    out_root = Path(args.out)
    index: dict = {"constants": {}, "extra": {}, "model": {}, "kv": {}, "diffusers": {}}
    for sub in SUBDIRS:
        for yml in sorted((src_root / sub).glob("*.yaml")):
            rel = yml.relative_to(src_root).with_suffix(".json")
            dst = out_root / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_text(json.dumps(translate(yml), indent=2) + "\n", encoding="utf-8")
            kind = sub.rsplit("/", 1)[-1]
            if sub.startswith("ptq/presets/"):
                index[kind][yml.stem] = rel.as_posix()
    for name, p in sorted(CONSTANTS.items()):
        assert (out_root / (p + ".json")).is_file(), p
        index["constants"][name] = p + ".json"
    for name, p in sorted(EXTRA.items()):
        assert (out_root / (p + ".json")).is_file(), p
        index["extra"][name] = p + ".json"
    (out_root / "presets.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
