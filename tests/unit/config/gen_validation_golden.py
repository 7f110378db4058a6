#!/usr/bin/env python3
"""Runs every input of data/validation_corpus.json through ModelOpt's own config validation and writes
data/validation_modelopt.json: for each input, whether ModelOpt accepts it, the first line of its
error, and (attribute / quant_cfg inputs) the model_dump(exclude_unset=True) result.

Inputs use mqdist's JSON conventions; they are turned into what ModelOpt sees from its YAML loader:
"-1" keys under block_sizes / bias / scale_block_sizes become ints, "ExMy" strings under num_bits /
scale_bits become (E, M) tuples, lists under num_bits / scale_bits become tuples.

Run:  ~/.cache/mqdist/venv-ref/bin/python tests/unit/config/gen_validation_golden.py
"""

import json
import os
import warnings
import re
import sys

import modelopt
from modelopt.torch.quantization import config as C

HERE = os.path.dirname(os.path.abspath(__file__))
EXMY = re.compile(r"^[Ee](\d+)[Mm](\d+)$")
INT_KEY = re.compile(r"^-?\d+$")
ALGORITHMS = {
    "max": C.MaxCalibConfig,
    "mse": C.MseCalibConfig,
    "local_hessian": C.LocalHessianCalibConfig,
    "smoothquant": C.SmoothQuantCalibConfig,
    "awq_lite": C.AWQLiteCalibConfig,
    "awq_clip": C.AWQClipCalibConfig,
    "awq_full": C.AWQFullCalibConfig,
    "svdquant": C.SVDQuantConfig,
    "gptq": C.GPTQCalibConfig,
    "nvfp4_act_headroom": C.NVFP4ActHeadroomCalibConfig,
    "lsq": C.LSQConfig,
}


def to_modelopt(v, key=None):
    """mqdist JSON conventions -> the Python values ModelOpt's YAML loader would produce."""
    if isinstance(v, dict):
        int_keys = key in ("block_sizes", "bias", "scale_block_sizes")
        return {
            (int(k) if int_keys and isinstance(k, str) and INT_KEY.match(k) else k): to_modelopt(x, k)
            for k, x in v.items()
        }
    if isinstance(v, list):
        if key in ("num_bits", "scale_bits"):
            return tuple(v)
        return [to_modelopt(x) for x in v]
    if isinstance(v, str) and key in ("num_bits", "scale_bits"):
        m = EXMY.match(v)
        if m:
            return (int(m.group(1)), int(m.group(2)))
    return v


def to_json(v):
    if isinstance(v, dict):
        return {str(k): to_json(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [to_json(x) for x in v]
    if hasattr(v, "model_dump"):
        return to_json(v.model_dump(exclude_unset=True))
    return v


def describe(e):
    """Pydantic: "<loc>: <msg>" of the first error; anything else: its first line."""
    if hasattr(e, "errors"):
        err = e.errors()[0]
        return ".".join(str(x) for x in err["loc"]) + ": " + err["msg"]
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def run(fn):
    try:
        return {"ok": True, "dump": fn()}
    except Exception as e:  # noqa: BLE001 - any failure is a rejection
        return {"ok": False, "error": f"{type(e).__name__}: {describe(e)}"}


def attribute(inp):
    return to_json(C.QuantizerAttributeConfig(**to_modelopt(inp)).model_dump(exclude_unset=True))


def quant_cfg(inp):
    return [to_json(e.model_dump(exclude_unset=True)) for e in C.normalize_quant_cfg_list(to_modelopt(inp))]


def algorithm(inp):
    ALGORITHMS[inp["method"]](**to_modelopt(inp))
    return None


def main():
    warnings.simplefilter("ignore", DeprecationWarning)  # the legacy forms are tested on purpose
    corpus = json.load(open(os.path.join(HERE, "data", "validation_corpus.json")))
    out = {"generator": "tests/unit/config/gen_validation_golden.py", "modelopt_version": modelopt.__version__}
    for kind, fn in (("attribute", attribute), ("quant_cfg", quant_cfg), ("algorithm", algorithm)):
        out[kind] = [run(lambda: fn(item["input"])) for item in corpus[kind]]
    path = os.path.join(HERE, "data", "validation_modelopt.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
