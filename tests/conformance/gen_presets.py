#!/usr/bin/env python3
"""Dumps every ModelOpt quantization preset, as ModelOpt itself resolves it, to golden JSON.

Output: tests/conformance/golden/presets_modelopt.json

    {
      "torch_version": ..., "modelopt_version": ...,
      "presets": {
        "<NAME>": {
          "source": "mtq.config" | "recipe:<yaml path>",
          "in_choices": bool,             # listed in mtq.config.choices
          "has_algorithm": bool,          # False: the dict has no "algorithm" key (KV snippets)
          "algorithm": <json>,            # as stored in the preset dict (null when absent)
          "need_calibration": bool,       # need_calibration(QuantizeConfig(**preset)); a preset with
                                          # no "algorithm" key is validated with the default "max"
          "quant_cfg": [ {"quantizer_name": str, "parent_class"?: str,
                          "cfg"?: {...} | [{...}, ...] | null, "enable"?: bool}, ... ]
        }, ...
      }
    }

Every entry is validated through ModelOpt's QuantizeConfig (so the dump is what mtq.quantize
would apply), then written with model_dump(exclude_unset=True): a key is present only when the
recipe set it. Tuples become lists ((4,3) -> [4,3]) and int dict keys become strings
({-1: 16} -> {"-1": 16}); a JSON reader must turn "-1" back into the axis -1.

Run with the reference env:  ~/.cache/mqdist/venv-ref/bin/python tests/conformance/gen_presets.py
"""

import argparse
import json
import os
import sys

import modelopt
import torch
import modelopt.torch.quantization as mtq
from modelopt.torch.opt.config_loader import load_config
from modelopt.torch.quantization.config import QuantizeConfig, need_calibration

HERE = os.path.dirname(os.path.abspath(__file__))

# Recipe files that define a (KV) preset but are not exported as mtq.config constants.
EXTRA_RECIPES = {
    "FP8_KV_CAST_CFG": "configs/ptq/presets/kv/fp8_cast",
    "NVFP4_KV_CAST_CFG": "configs/ptq/presets/kv/nvfp4_cast",
}


def to_json(v):
    """Tuples -> lists, int dict keys -> str, recursively; rejects anything not plain data."""
    if isinstance(v, dict):
        return {str(k): to_json(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [to_json(x) for x in v]
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if hasattr(v, "model_dump"):
        return to_json(v.model_dump(exclude_unset=True))
    raise TypeError(f"cannot serialise {type(v).__name__}: {v!r}")


def dump_entry(entry):
    """One validated QuantizerCfgEntry -> dict with only the fields the recipe set."""
    out = {"quantizer_name": entry.quantizer_name}
    fields = entry.model_fields_set
    if "parent_class" in fields and entry.parent_class is not None:
        out["parent_class"] = entry.parent_class
    if "cfg" in fields:
        cfg = entry.cfg
        if cfg is None:
            out["cfg"] = None
        elif isinstance(cfg, list):
            out["cfg"] = [to_json(c.model_dump(exclude_unset=True)) for c in cfg]
        else:
            out["cfg"] = to_json(cfg.model_dump(exclude_unset=True))
    if "enable" in fields:
        out["enable"] = entry.enable
    return out


def dump_preset(preset):
    qc = QuantizeConfig(**{k: v for k, v in preset.items()})
    return {
        "has_algorithm": "algorithm" in preset,
        "algorithm": to_json(preset.get("algorithm")),
        "need_calibration": bool(need_calibration(qc)),
        "quant_cfg": [dump_entry(e) for e in qc.quant_cfg],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(HERE, "golden", "presets_modelopt.json"))
    args = ap.parse_args()

    presets = {}
    for name in sorted(mtq.config.choices):
        d = dump_preset(getattr(mtq.config, name))
        presets[name] = {"source": "mtq.config", "in_choices": True, **d}
    for name, path in sorted(EXTRA_RECIPES.items()):
        d = dump_preset(load_config(path, schema_type=QuantizeConfig).model_dump(exclude_unset=True))
        presets[name] = {"source": f"recipe:{path}", "in_choices": False, **d}

    # Every PTQ recipe shipped with ModelOpt (general/, huggingface/, models/: a YAML file or a
    # directory with metadata.yml + quantize.yml), loaded by ModelOpt's own recipe loader; mqdist
    # loads the same YAML (vendored verbatim in configs/modelopt_recipes) and must resolve it alike.
    import importlib.resources
    from modelopt.recipe import ModelOptPTQRecipe, load_recipe

    root = importlib.resources.files("modelopt_recipes")
    recipes = {}
    for top in ("general", "huggingface", "models"):
        base = os.path.join(str(root), top)
        for dirpath, dirnames, filenames in sorted(os.walk(base)):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, str(root))
            cands = []
            if "quantize.yml" in filenames or "quantize.yaml" in filenames:
                cands.append(rel_dir)
            cands += [os.path.join(rel_dir, f) for f in sorted(filenames) if f.endswith((".yml", ".yaml"))
                      and f not in ("metadata.yml", "metadata.yaml", "quantize.yml", "quantize.yaml")]
            for rel in cands:
                try:
                    r = load_recipe(os.path.join(str(root), rel))
                except Exception as e:  # snippet files (no metadata) are not recipes
                    print(f"not a recipe: {rel}: {type(e).__name__}", file=sys.stderr)
                    continue
                if not isinstance(r, ModelOptPTQRecipe):
                    continue
                q = r.quantize.model_dump(exclude_unset=True)
                recipes[rel] = {"recipe_type": "ptq", **dump_preset(q)}

    doc = {
        "generator": "tests/conformance/gen_presets.py",
        "torch_version": torch.__version__,
        "modelopt_version": modelopt.__version__,
        "num_choices": len(mtq.config.choices),
        "presets": presets,
        "recipes": recipes,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=False)
        f.write("\n")
    print(f"wrote {len(presets)} presets to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
