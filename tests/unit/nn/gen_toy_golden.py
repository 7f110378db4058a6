"""Goldens for tests/unit/nn/toy_golden_test.cpp: a small torch model quantized with ModelOpt on CPU.

Run with the reference venv (ModelOpt 0.47.0, torch 2.11 CPU):
    /root/.cache/mqdist/venv-ref/bin/python tests/unit/nn/gen_toy_golden.py
Writes tests/unit/nn/golden/toy_weights.safetensors (weights + calibration/eval ids) and, per config,
toy_<name>.json (config, quantizer names, enabled flags, summary lines) + toy_<name>.safetensors (every
_amax / _global_amax / _pre_quant_scale buffer and the model output).
"""
import copy
import json
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

import modelopt
import modelopt.torch.quantization as mtq

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(16, 32)
        self.fc1 = nn.Linear(32, 48, bias=True)
        self.fc2 = nn.Linear(48, 32, bias=False)
        self.lm_head = nn.Linear(32, 16, bias=False)

    def forward(self, ids):
        x = self.embed(ids)
        h = F.relu(self.fc1(x))
        y = self.fc2(h) + x
        return self.lm_head(y)


def with_algorithm(cfg, algo):
    cfg = copy.deepcopy(cfg)
    cfg["algorithm"] = algo
    return cfg


# A config in legacy forms: flat dict, "default" key, "nn.*"-scoped parent_class, [!seq] glob.
LEGACY = {
    "quant_cfg": {
        "default": {"enable": False},
        "*weight_quantizer": {"num_bits": 8, "axis": 0},
        "*input_quantizer": {"num_bits": (4, 3), "axis": None},
        "nn.Embedding": {"*weight_quantizer": {"num_bits": 4, "block_sizes": {-1: 8, "type": "static"}}},
        "nn.Linear": {"fc[!1].*": {"enable": False}},
        "*lm_head*weight_quantizer": {"num_bits": (4, 3), "axis": None},
    },
    "algorithm": "max",
}


def json_cfg(cfg):
    """The config as JSON (tuples as lists), for the C++ parser."""
    return json.loads(json.dumps(cfg, default=list))


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    base = Toy()
    calib = [torch.randint(0, 16, (4, 8)) for _ in range(2)]
    evals = torch.randint(0, 16, (3, 8))
    tensors = {k: v.detach().contiguous() for k, v in base.state_dict().items()}
    tensors["calib_ids_0"] = calib[0]
    tensors["calib_ids_1"] = calib[1]
    tensors["eval_ids"] = evals
    save_file(tensors, os.path.join(OUT, "toy_weights.safetensors"))

    presets = {
        "fp8": ("FP8_DEFAULT_CFG", mtq.FP8_DEFAULT_CFG),
        "int8": ("INT8_DEFAULT_CFG", mtq.INT8_DEFAULT_CFG),
        "int4_blockwise": ("INT4_BLOCKWISE_WEIGHT_ONLY_CFG", mtq.INT4_BLOCKWISE_WEIGHT_ONLY_CFG),
        "w4a8": ("W4A8_AWQ_BETA_CFG", with_algorithm(mtq.W4A8_AWQ_BETA_CFG, "max")),
        "legacy": (None, LEGACY),
    }
    for tag, (preset, cfg) in presets.items():
        model = copy.deepcopy(base)

        def loop(m):
            for ids in calib:
                m(ids)

        mtq.quantize(model, cfg, loop)
        with torch.no_grad():
            out = model(evals)
        names, enabled, lines = [], [], []
        buffers = {"output": out.detach().contiguous()}
        for name, mod in model.named_modules():
            if isinstance(mod, mtq.nn.TensorQuantizer):
                names.append(name)
                enabled.append(bool(mod.is_enabled))
                lines.append(f"{name:80} {mod}")
                for b in ("_amax", "_global_amax", "_pre_quant_scale"):
                    t = getattr(mod, b, None)
                    if isinstance(t, torch.Tensor):
                        buffers[f"{name}.{b}"] = t.detach().contiguous()
        meta = {
            "modelopt_version": modelopt.__version__,
            "torch_version": torch.__version__,
            "preset": preset,
            "algorithm_override": "max" if tag == "w4a8" else None,
            "config": json_cfg(cfg) if preset is None else None,
            "quantizers": names,
            "enabled": enabled,
            "summary_lines": lines,
        }
        with open(os.path.join(OUT, f"toy_{tag}.json"), "w") as f:
            json.dump(meta, f, indent=1)
        save_file(buffers, os.path.join(OUT, f"toy_{tag}.safetensors"))
        print(tag, len(names), "quantizers", file=sys.stderr)


if __name__ == "__main__":
    main()
