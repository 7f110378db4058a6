"""Golden HF-export tensors from ModelOpt itself, for tests/unit/export/hf_tensors_test.cpp.

For each case: an nn.Linear (bias-free) in the case's dtype gets the preset with mtq.quantize (max
calibration on a small activation batch `x`, unless the preset's algorithm is None; AWQ presets are calibrated with "max" instead, since the
test checks the export math, not AWQ), then ModelOpt's own `_export_quantized_weight` runs on CPU.
Stored per case `<case>`: `<case>/w` (the weight), `<case>/x` (the calibration batch), and every
tensor the export registered (`<case>/weight`, `<case>/weight_scale`, `<case>/weight_scale_2`,
`<case>/input_scale`). The case list (name, preset, dtype, calibrated) is in __metadata__["cases"] (JSON).

Run with the reference env (ModelOpt 0.47.0, torch 2.11.0, safetensors 0.8.0):
    /root/.cache/mqdist/venv-ref/bin/python tests/unit/export/make_golden.py
writes tests/unit/export/golden/hf_export_golden.safetensors.
"""
import copy
import json
import os
import warnings

import torch
import modelopt
import modelopt.torch.quantization as mtq
from modelopt.torch.export.unified_export_hf import _export_quantized_weight
from safetensors.torch import save_file

warnings.filterwarnings("ignore")

# (case, preset, dtype, out, in)
CASES = [
    ("fp8_bf16", "FP8_DEFAULT_CFG", torch.bfloat16, 16, 256),
    ("fp8_fp16", "FP8_DEFAULT_CFG", torch.float16, 16, 256),
    ("fp8_fp32", "FP8_DEFAULT_CFG", torch.float32, 16, 256),
    ("fp8_pc_pt", "FP8_PER_CHANNEL_PER_TOKEN_CFG", torch.bfloat16, 33, 64),
    ("fp8_pb_wo", "FP8_2D_BLOCKWISE_WEIGHT_ONLY_CFG", torch.bfloat16, 136, 256),
    ("int8_sq", "INT8_DEFAULT_CFG", torch.bfloat16, 33, 48),
    ("int8_wo", "INT8_WEIGHT_ONLY_CFG", torch.float32, 16, 64),
    ("int4_awq", "INT4_AWQ_CFG", torch.bfloat16, 16, 256),
    ("w4a8_awq", "W4A8_AWQ_BETA_CFG", torch.bfloat16, 16, 256),
    ("nvfp4_bf16", "NVFP4_DEFAULT_CFG", torch.bfloat16, 33, 64),
    ("nvfp4_fp32", "NVFP4_DEFAULT_CFG", torch.float32, 16, 128),
    ("w4a16_nvfp4", "W4A16_NVFP4_CFG", torch.bfloat16, 16, 64),
    ("w4a8_nvfp4_fp8", "W4A8_NVFP4_FP8_CFG", torch.bfloat16, 16, 128),
    ("mxfp4", "MXFP4_DEFAULT_CFG", torch.bfloat16, 16, 128),
    ("w4a8_mxfp4_fp8", "W4A8_MXFP4_FP8_CFG", torch.bfloat16, 16, 64),
    ("mxfp8", "MXFP8_DEFAULT_CFG", torch.bfloat16, 16, 128),
]


def weight(out_f, in_f, dtype, gen):
    # Weight-like values: Gaussian with a few larger outliers and one all-zero row block.
    w = torch.randn(out_f, in_f, generator=gen) * 0.02
    w[torch.rand(out_f, in_f, generator=gen) < 0.01] *= 20
    w[0, :16] = 0
    return w.to(dtype)


def main():
    gen = torch.Generator().manual_seed(1234)
    tensors, cases = {}, []
    for case, preset, dtype, out_f, in_f in CASES:
        lin = torch.nn.Sequential(torch.nn.Linear(in_f, out_f, bias=False)).to(dtype)
        with torch.no_grad():
            lin[0].weight.copy_(weight(out_f, in_f, dtype, gen))
        x = (torch.randn(8, in_f, generator=gen) * 1.5).to(dtype)
        w = lin[0].weight.detach().clone()
        cfg = copy.deepcopy(getattr(mtq, preset))
        algo = cfg.get("algorithm")
        if algo is not None and algo != "max":
            cfg["algorithm"] = "max"
        mtq.quantize(lin, cfg, lambda m: m(x))
        _export_quantized_weight(lin[0], dtype)
        tensors[f"{case}/w"] = w
        tensors[f"{case}/x"] = x
        exported = []
        for k, v in lin[0].state_dict().items():
            if "quantizer" in k:
                continue
            tensors[f"{case}/{k}"] = v.detach().clone().contiguous()
            exported.append(k)
        cases.append({"case": case, "preset": preset, "dtype": str(dtype).replace("torch.", ""),
                      "calibrated": cfg.get("algorithm") is not None, "exported": sorted(exported)})
    meta = {"cases": json.dumps(cases), "modelopt": modelopt.__version__, "torch": torch.__version__}
    here = os.path.dirname(os.path.abspath(__file__))
    os.makedirs(os.path.join(here, "golden"), exist_ok=True)
    path = os.path.join(here, "golden", "hf_export_golden.safetensors")
    save_file(tensors, path, metadata=meta)
    print(path, os.path.getsize(path), "bytes")


if __name__ == "__main__":
    main()
