#!/usr/bin/env python3
"""Golden TensorQuantizer data from ModelOpt itself, for tests/conformance/conformance_test.cpp.

For every distinct quantizer attribute config used by a ModelOpt preset (weight, input and KV/bmm
quantizers of the 39 mtq.config.choices plus the KV cast recipes), this script builds ModelOpt's
real ``TensorQuantizer`` (``SequentialQuantizer`` for list cfgs), runs ModelOpt's max-calibration
state machine on a battery of tensors when the format needs a calibrated amax, fake-quantizes, and
stores input / output / buffers as safetensors plus a JSON manifest.

    --device cpu  (default): formats whose ModelOpt path runs on CPU (INT, FP8, static blocks,
                             sequential W4A8, FP8 affine bias, constant amax) and the real-quant
                             (fake_quant=False, compress path) QTensor formats.
                             Writes golden/manifest.json and golden/cpu/<cfg>.safetensors.
    --device cuda:           formats whose ModelOpt path needs CUDA (NVFP4 dynamic through Triton and
                             through the CUDA extension, NVFP4 static/4-over-6, MX*), plus an
                             INT/FP8 cross-check of ModelOpt's CUDA kernels against its CPU path.
                             Writes <out>/manifest_cuda.json and <out>/cuda.safetensors.
    --replay-cpu-manifest:   every case of golden/manifest.json (its stored input, its loaded amax,
                             config and calibration) through ModelOpt on --device tensors; writes
                             <out>/manifest_cuda_replay.json and <out>/cuda_replay.safetensors (only
                             results that differ from the CPU goldens; equal ones reference golden/cpu).
                             On CUDA: ModelOpt's own CUDA result for every CPU case
                             (tests/conformance/run_cuda_goldens.sh); on CPU: a self-check that
                             reproduces every CPU golden.

Manifest layout (both devices):
    {"generator", "device", "torch_version", "modelopt_version", "triton_version"?, "gpu"?,
     "skipped": [{"cfg_id", "cfg", "reason"}],
     "cases": [{
        "id":          unique, "<cfg_id>/<pattern>_<shape>/<dtype>",
        "cfg_id":      short name of the attribute config,
        "cfg":         attribute config as a JSON object exactly as the config parser reads it
                       (model_dump(exclude_unset=True); tuples -> lists, int keys -> "-1");
                       a JSON list for a SequentialQuantizer,
        "cfg_sources": ["<PRESET>:<quantizer_name pattern>", ...],
        "kind":        "fake_quant" | "real_quant",
        "shape", "dtype" ("float32" | "bfloat16" | "float16"),
        "file":        safetensors path relative to this manifest,
        "tensors":     {role: key in that file}; roles: input, output (ModelOpt's result), and the
                       quantizer state after the run: _amax, _global_amax, _bias_value (prefixed
                       "0."/"1." for the stages of a SequentialQuantizer); real quant:
                       quantized_data, _scale, _double_scale, _scale_zeros, dequantized; cuda:
                       output_cuda_ext, output_cpu_path, output_ieee; cpu: output_modelopt_cuda,
        "expect":      {"cpu": role, "cuda": role}: the stored tensor that mqdist must reproduce bit
                       for bit when it runs on that device (usually "output"),
        "annotation":  why `expect` names another tensor than "output", if it does,
        "amax_source": "calibrated" (ModelOpt max-calib state machine run on `input`, then quant)
                       | "loaded" (the stored _amax was assigned before the forward)
                       | "dynamic" (no _amax: computed from the input at every call)
                       | "constant" (use_constant_amax),
        "calibrated":  amax_source == "calibrated",
        "modelopt_path": which ModelOpt code produced `output`,
        "tolerance":   {"kind": "exact"} or {"kind": "ieee_reference", ...} (see notes),
        "notes":       free text
     }]}

Calibration replicates mtq's enable_stats_collection / finish_stats_collection for one quantizer:
disable_quant + enable_calib, forward(input), load_calib_amax (and load_calib_bias for a static
affine bias), enable_quant + disable_calib, then forward(input) again for the output. Static NVFP4
weights are then promoted to StaticBlockScaleQuantizer with global_amax = max(per-block amax), as
promote_static_block_weight_quantizers does.

NVFP4 on CUDA: ModelOpt's reference path on sm >= 8.9 is Triton ``fp4_fake_quant_block``, whose
fp32 divisions compile to approximate ``div.full.f32``. ``output`` is the Triton result,
``output_cuda_ext`` the CUDA-extension fallback (DISABLE_TRITON_KERNEL=True), and ``output_ieee``
(present only when it differs from ``output``) is the same Triton algorithm evaluated with IEEE fp32
arithmetic on the CPU (torch): mqdist's CPU reference follows IEEE, so the C++ test requires
bit-equality with output_ieee where present and reports the Triton difference.

Run: ~/.cache/mqdist/venv-ref/bin/python tests/conformance/gen_golden.py [--device cuda --out DIR]
"""

import argparse
import json
import math
import os
import sys
import warnings

import numpy as np
import torch
from safetensors.torch import save_file

import modelopt
import modelopt.torch.quantization as mtq
from modelopt.torch.opt.config_loader import load_config
from modelopt.torch.quantization import tensor_quant
from modelopt.torch.quantization.config import QuantizeConfig, QuantizerAttributeConfig
from modelopt.torch.quantization.nn import SequentialQuantizer, TensorQuantizer
from modelopt.torch.quantization.nn.modules.tensor_quantizer import StaticBlockScaleQuantizer
from modelopt.torch.quantization.utils import reduce_amax

warnings.filterwarnings("ignore")
HERE = os.path.dirname(os.path.abspath(__file__))
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
EXTRA_RECIPES = {
    "FP8_KV_CAST_CFG": "configs/ptq/presets/kv/fp8_cast",
    "NVFP4_KV_CAST_CFG": "configs/ptq/presets/kv/nvfp4_cast",
}


# ----------------------------------------------------------------------------------------------
# Config collection
# ----------------------------------------------------------------------------------------------
def to_json(v):
    if isinstance(v, dict):
        return {str(k): to_json(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [to_json(x) for x in v]
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if hasattr(v, "model_dump"):
        return to_json(v.model_dump(exclude_unset=True))
    raise TypeError(f"cannot serialise {type(v).__name__}")


def preset_dicts():
    for name in sorted(mtq.config.choices):
        yield name, getattr(mtq.config, name)
    for name, path in sorted(EXTRA_RECIPES.items()):
        yield name, load_config(path, schema_type=QuantizeConfig).model_dump(exclude_unset=True)


def collect_cfgs():
    """Distinct enabled attribute configs of all presets -> {json_key: (py_cfg, sources)}."""
    found = {}
    for pname, preset in preset_dicts():
        qc = QuantizeConfig(**preset)
        for e in qc.quant_cfg:
            if e.cfg is None or e.enable is False:
                continue
            cfgs = e.cfg if isinstance(e.cfg, list) else [e.cfg]
            py = [c.model_dump(exclude_unset=True) for c in cfgs]
            key = json.dumps(to_json(py if isinstance(e.cfg, list) else py[0]), sort_keys=True)
            src = f"{pname}:{e.quantizer_name}" + (f"@{e.parent_class}" if e.parent_class else "")
            entry = found.setdefault(key, (py if isinstance(e.cfg, list) else py[0], []))
            entry[1].append(src)
    return found


def cfg_kind(cfg):
    """Classify one (non-sequential) attribute config."""
    nb = cfg.get("num_bits", 8)
    bs = cfg.get("block_sizes") or {}
    if bs.get("scale_bits") == (8, 0):
        return "mx"
    if nb == (2, 1) and bs.get("scale_bits") == (4, 3):
        return "nvfp4_static" if bs.get("type", "static") == "static" else "nvfp4_dynamic"
    if isinstance(nb, tuple):
        return "fp8"
    return "int"


def cfg_id(cfg):
    if isinstance(cfg, list):
        return "seq_" + "__".join(cfg_id(c) for c in cfg)
    nb = cfg.get("num_bits", 8)
    bs = cfg.get("block_sizes") or {}
    kind = cfg_kind(cfg)
    if kind == "mx":
        name = {(2, 1): "mxfp4", (3, 2): "mxfp6_e3m2", (2, 3): "mxfp6_e2m3", (4, 3): "mxfp8",
                (5, 2): "mxfp8_e5m2", 8: "mxint8"}[nb]
    elif kind.startswith("nvfp4"):
        name = "nvfp4" + ("_static" if kind == "nvfp4_static" else "")
    elif kind == "fp8":
        name = "fp8"
    else:
        name = f"int{nb}" + ("u" if cfg.get("unsigned") else "") + ("n" if cfg.get("narrow_range") else "")
    ints = {k: v for k, v in bs.items() if isinstance(k, int)}
    if ints:
        name += "_b" + "x".join("all" if v is None else str(v) for k, v in sorted(ints.items(), reverse=True))
    elif "axis" in cfg and cfg["axis"] is not None:
        ax = cfg["axis"] if isinstance(cfg["axis"], (list, tuple)) else [cfg["axis"]]
        name += "_axis" + "_".join(str(a).replace("-", "m") for a in ax)
    else:
        name += "_pt"
    if cfg.get("type") == "dynamic":
        name += "_dyn"
    if bs.get("four_over_six"):
        name += "_4o6"
    if cfg.get("bias"):
        name += "_bias"
    if cfg.get("use_constant_amax"):
        name += "_constamax"
    if cfg.get("constant_amax") is not None:
        name += f"_const{cfg['constant_amax']:g}"
    if cfg.get("rotate"):
        name += "_rot"
    return name


def needs_cuda(cfg):
    if isinstance(cfg, list):
        return any(needs_cuda(c) for c in cfg)
    return cfg_kind(cfg) in ("mx", "nvfp4_dynamic", "nvfp4_static")


def needs_hadamard(cfg):
    if isinstance(cfg, list):
        return any(needs_hadamard(c) for c in cfg)
    r = cfg.get("rotate")
    return bool(r.get("enable") if isinstance(r, dict) else r)


# ----------------------------------------------------------------------------------------------
# Input battery
# ----------------------------------------------------------------------------------------------
E4M3_POS = None


def e4m3_values():
    global E4M3_POS
    if E4M3_POS is None:
        codes = torch.arange(0, 127, dtype=torch.uint8)  # 0x00..0x7e: +0 .. 448
        E4M3_POS = codes.view(torch.float8_e4m3fn).float()
    return E4M3_POS


def fill(shape, values):
    """Tile a 1-D list of values over `shape` (row-major), fp32."""
    n = int(np.prod(shape))
    v = torch.tensor(values, dtype=torch.float32)
    reps = (n + v.numel() - 1) // v.numel()
    return v.repeat(reps)[:n].reshape(shape).clone()


def boundary_tensor(kind, cfg, shape, gen):
    """Values sitting exactly on the format's rounding boundaries, for a calibrated amax that makes
    the scale a power of two (so the boundaries survive the fp32 scaling exactly)."""
    if kind == "int":
        nb = cfg.get("num_bits", 8)
        unsigned = bool(cfg.get("unsigned"))
        maxb = 2 ** (nb - 1 + int(unsigned)) - 1
        step = 2.0 ** -6
        amax = maxb * step
        lo = 0 if unsigned else -(maxb + 1)
        halves = [(k + 0.5) * step for k in range(lo, maxb)]
        vals = [amax] + halves + [-amax if not unsigned else 0.0]
    elif kind == "fp8":
        e = e4m3_values()
        mids = ((e[1:] + e[:-1]) / 2).tolist()
        vals = [448.0, -448.0] + mids + [-m for m in mids[::3]] + e.tolist()[::5]
    else:  # E2M1 thresholds, scaled so that block scale == 1 (NVFP4: global amax 2688; MX: bmax 6)
        thr = [0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 6.0]
        grid = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]
        eps = [t - 2 ** -10 for t in thr] + [t + 2 ** -10 for t in thr[:-1]]
        vals = thr + [-t for t in thr] + grid + [6.0] + eps + [-6.0]
    x = fill(shape, vals)
    if kind in ("nvfp4_dynamic", "nvfp4_static"):
        x.view(-1)[0] = 2688.0  # global amax 2688 -> gs = 1; blocks with bmax 6 get scale 1
        # make every 16-block (other than the first) contain a 6 so its scale is exactly 1
        flat = x.view(-1, shape[-1])
        bs = 16
        for c in range(0, shape[-1], bs):
            flat[:, c] = 6.0
        x.view(-1)[0] = 2688.0
    if kind == "mx":
        flat = x.view(-1, shape[-1])
        bsz = (cfg.get("block_sizes") or {}).get(-1, 32)
        for c in range(0, shape[-1], bsz):
            flat[:, c] = 6.0
    return x


def pattern_tensor(pattern, kind, cfg, shape, dtype, gen):
    big = 1.0e30
    tiny = 1.0e-6 if dtype == torch.float16 else 1.0e-30
    if pattern == "normal":
        x = torch.randn(shape, generator=gen)
    elif pattern == "studentt":
        z = torch.randn(shape, generator=gen)
        chi = torch.randn((3,) + tuple(shape), generator=gen).pow(2).sum(0) / 3.0
        x = z / chi.sqrt()  # Student-t, 3 degrees of freedom: heavy tails
    elif pattern == "zeros":
        x = torch.zeros(shape)
    elif pattern == "const":
        x = torch.full(shape, 0.7)
    elif pattern == "negconst":
        x = torch.full(shape, -3.25)
    elif pattern == "boundary":
        x = boundary_tensor(kind, cfg, shape, gen)
    elif pattern == "tiny":
        x = torch.randn(shape, generator=gen) * tiny
    elif pattern == "huge":
        if dtype == torch.float16:  # stay finite: fp16 max is 65504
            x = (torch.rand(shape, generator=gen) * 2 - 1) * 6.0e4
        else:
            x = torch.randn(shape, generator=gen) * big
    elif pattern == "mixedmag":
        # every run of 8 elements sits in a different binade (2^-40 .. 2^4): small runs give
        # subnormal or underflowing FP8 block scales, large ones saturate
        n = int(np.prod(shape))
        e = torch.arange((n + 7) // 8, dtype=torch.float32).remainder(23) * 2 - 40
        x = torch.randn(n, generator=gen) * torch.pow(2.0, e).repeat_interleave(8)[:n]
        x = x.reshape(shape)
    elif pattern == "nonfinite":
        x = torch.randn(shape, generator=gen)
        flat = x.view(-1)
        flat[1], flat[3], flat[5], flat[7] = float("nan"), float("inf"), float("-inf"), -0.0
    else:
        raise ValueError(pattern)
    return x.to(dtype)


# ----------------------------------------------------------------------------------------------
# Running ModelOpt
# ----------------------------------------------------------------------------------------------
def build(cfg, device):
    if isinstance(cfg, list):
        q = SequentialQuantizer(*[TensorQuantizer(QuantizerAttributeConfig(**c)) for c in cfg])
    else:
        q = TensorQuantizer(QuantizerAttributeConfig(**cfg))
    return q.to(device)


def leaves(q):
    return list(q) if isinstance(q, SequentialQuantizer) else [q]


def calibrate(q, x):
    """mtq enable_stats_collection -> forward -> finish_stats_collection, for one quantizer tree.
    SequentialQuantizer: every stage sees the raw input (quant off in all stages)."""
    for m in leaves(q):
        if m._disabled:
            continue
        if m._use_constant_amax or m._constant_amax is not None:
            m.disable_quant()
        elif m._calibrator is not None:
            m.disable_quant()
            m.enable_calib()
        else:
            m.disable()
    with torch.no_grad():
        q(x)
    for m in leaves(q):
        if m._disabled:
            continue
        if m._use_constant_amax or m._constant_amax is not None:
            m.enable_quant()
            continue
        cal = m._calibrator
        if cal is not None and not m._dynamic and cal.compute_amax() is not None:
            m.load_calib_amax()
        if m.bias_calibrator is not None and m.bias_type == "static":
            m.load_calib_bias()
        m.enable_quant()
        m.disable_calib()
    # promote_static_block_weight_quantizers for NVFP4 static
    for m in leaves(q):
        if m.is_enabled and m.is_static_block_quant and m.amax is not None and m.is_nvfp4_static:
            StaticBlockScaleQuantizer.from_tensor_quantizer(
                m, global_amax=reduce_amax(m.amax.clone().detach(), axis=None)
            )


def amax_mode(cfg):
    cfgs = cfg if isinstance(cfg, list) else [cfg]
    if any(c.get("use_constant_amax") for c in cfgs):
        return "constant"
    if all(c.get("type") == "dynamic" or cfg_kind(c) == "mx" for c in cfgs):
        return "dynamic"
    return "calibrated"


def state_tensors(q):
    out = {}
    qs = leaves(q)
    for i, m in enumerate(qs):
        pre = f"{i}." if isinstance(q, SequentialQuantizer) else ""
        for b in ("_amax", "_global_amax", "_bias_value", "_scale", "_double_scale", "_scale_zeros"):
            t = getattr(m, b, None)
            if isinstance(t, torch.Tensor):
                out[pre + b] = t.detach().cpu().contiguous()
    return out


# ----------------------------------------------------------------------------------------------
# fp32 emulation of ModelOpt's GPU NVFP4 / FP8 arithmetic (torch CPU, IEEE fp32 operations)
# ----------------------------------------------------------------------------------------------
# What the emulations reproduce (each verified bit for bit against the H100 run, see README.md):
#  * torch on CUDA evaluates `tensor / python_scalar` as `tensor * fp32(1 / scalar)`: NVFP4's global
#    scale is gs = global_amax * fp32(1/2688) (not global_amax / 2688), and static NVFP4's
#    `amax / 6.0` is amax * fp32(1/6).
#  * ModelOpt's CUDA extension fake_e4m3fy divides: scale = fp32(448 / amax), inv = fp32(1 / scale);
#    the eager torch path (CPU, and GPU for a multi-dim amax) evaluates `448.0 / amax` through
#    Tensor.__rdiv__, i.e. fp32(fp32(1 / amax) * 448).
#  * Triton's fp32 `/` is div.full.f32 (not IEEE): |x| / block_scale can land on the other side of
#    an E2M1 threshold at an exact tie. The emulation divides exactly (IEEE), so it differs from
#    Triton only there; mqdist follows the emulation.
#  * Triton negates a float as `0 - q`, so `tl.where(x >= 0, q, -q)` never yields -0: the emulations
#    write `0.0 - q` (torch's `-q` would give -0 for negative inputs that round to zero).
_R2688 = torch.tensor(1.0) / torch.tensor(2688.0)
_R6 = torch.tensor(1.0) / torch.tensor(6.0)


def _e2m1_round(a):
    return torch.where(a <= 0.25, 0.0, torch.where(a < 0.75, 0.5, torch.where(a <= 1.25, 1.0,
           torch.where(a < 1.75, 1.5, torch.where(a <= 2.5, 2.0, torch.where(a < 3.5, 3.0,
           torch.where(a <= 5.0, 4.0, 6.0)))))))


def emulate_nvfp4_dynamic(x, global_amax, block):
    """ModelOpt fp4_fake_quant_block (Triton) with IEEE division, any block size."""
    shape, dtype = x.shape, x.dtype
    x2 = x.reshape(-1, shape[-1]).float().cpu()
    n = x2.shape[1]
    pad = (-n) % block
    xp = torch.nn.functional.pad(x2, (0, pad)).reshape(x2.shape[0], -1, block)
    gs = global_amax.float().cpu().reshape(()) * _R2688
    gs = torch.where(gs > 0, gs, torch.tensor(1e-12, dtype=torch.float32))
    bmax = xp.abs().amax(-1, keepdim=True)
    s = torch.minimum(bmax / (torch.tensor(6.0) * gs), torch.tensor(448.0))
    s = s.to(torch.float8_e4m3fn).float() * gs
    s = torch.where(s >= torch.tensor(1e-5, dtype=torch.float32), s, torch.tensor(1.0))
    q = _e2m1_round(xp.abs() / s) * s
    y = torch.where(xp >= 0, q, 0.0 - q).reshape(x2.shape[0], -1)[:, :n]
    return y.to(dtype).reshape(shape).contiguous()


def fp8_cuda_ext_scales(amax):
    a = amax.float().cpu()
    a = torch.where(a <= 2 ** -24, torch.ones_like(a), a)
    scale = torch.tensor(448.0) / a
    return scale, torch.tensor(1.0) / scale


def emulate_fp8_cuda_ext(x, amax):
    """ModelOpt's CUDA fake_e4m3fy(_with_axis): IEEE-divided scale (amax broadcastable to x)."""
    scale, inv = fp8_cuda_ext_scales(amax)
    q = (x.float().cpu() * scale).clamp(-448.0, 448.0).to(torch.float8_e4m3fn).float()
    return (q * inv).to(x.dtype)


def emulate_nvfp4_static(xb, amax, global_amax, fp8_norm_max):
    """StaticBlockScaleQuantizer forward on GPU: compute_fp4_scales (torch CUDA + fake_e4m3fy) and the
    Triton static_blockwise_fp4_fake_quant kernel. xb: the (nblocks, bs) block view of the input."""
    dtype = xb.dtype
    xf = xb.float().cpu()
    scale = amax.float().cpu().reshape(-1, 1) * _R6
    a = (global_amax.float().cpu() * (448.0 / fp8_norm_max)) * _R6
    sc, inv = fp8_cuda_ext_scales(a)
    s_q = (scale * sc).clamp(-448.0, 448.0).to(torch.float8_e4m3fn).float() * inv
    zero = s_q == 0
    safe = torch.where(zero | s_q.isnan() | s_q.isinf(), torch.ones_like(s_q), s_q)
    q = _e2m1_round(xf.abs() / safe) * safe
    y = torch.where(xf >= 0, q, 0.0 - q)
    y = torch.where(zero, torch.zeros_like(y), y)
    return y.to(dtype)


def n_diff(a, b):
    """Elements whose bits differ (the sign of zero counts; NaN payloads do not)."""
    a, b = a.reshape(-1).float().cpu(), b.reshape(-1).float().cpu()
    return int((((a != b) | (torch.signbit(a) != torch.signbit(b))) & ~(a.isnan() & b.isnan())).sum())


def annotate_gpu_case(case, tensors):
    """Adds output_ieee / tolerance / expect to a CUDA-manifest case from its stored tensors.
    `expect` names the stored tensor that mqdist must reproduce bit for bit, per device."""
    cfg = case["cfg"]
    c0 = cfg[0] if isinstance(cfg, list) else cfg
    bs = c0.get("block_sizes") or {}
    kind = ("nvfp4_dynamic" if c0.get("num_bits") == [2, 1] and bs.get("scale_bits") == [4, 3]
            and bs.get("type") == "dynamic" else
            "nvfp4_static" if c0.get("num_bits") == [2, 1] and bs.get("scale_bits") == [4, 3] else
            "mx" if bs.get("scale_bits") == [8, 0] else "other")
    x, y = tensors["input"], tensors["output"]
    notes = []
    ref = None
    if kind == "nvfp4_dynamic":
        block = bs["-1"]
        if c0.get("use_constant_amax"):
            gamax = torch.tensor(448.0)
        elif "_amax" in tensors:
            gamax = tensors["_amax"]
        else:
            gamax = x.float().abs().amax()
        ref = emulate_nvfp4_dynamic(x, gamax, block)
        if block != 16:
            notes.append(f"ModelOpt bug: its Triton path ignores block_sizes[-1]={block} and quantizes "
                         f"with 16-element blocks (fp4_fake_quant_block is called without block_size); "
                         f"mqdist implements the configured block: output_ieee")
    elif kind == "nvfp4_static":
        b = bs["-1"]
        x2 = x.reshape(-1, x.shape[-1])
        pad = (-x2.shape[-1]) % b
        xb = torch.nn.functional.pad(x2.float(), (0, pad)).to(x.dtype).reshape(-1, b)
        ref = emulate_nvfp4_static(xb, tensors["_amax"], tensors["_global_amax"],
                                   256.0 if bs.get("four_over_six") else 448.0)
        ref = ref.reshape(x2.shape[0], -1)[:, : x2.shape[-1]].reshape(x.shape).contiguous()
    tensors.pop("output_ieee", None)
    expect = {"cuda": "output", "cpu": "output"}
    tol = {"kind": "exact"}
    if ref is not None:
        nd = n_diff(ref, y)
        if nd:
            tensors["output_ieee"] = ref
            expect = {"cuda": "output_ieee", "cpu": "output_ieee"}
            tol = {"kind": "ieee_reference", "reference": "output_ieee", "modelopt_mismatch_elements": nd}
            if not notes:
                notes.append(f"{nd} element(s) of ModelOpt's Triton output lie on an E2M1 tie that "
                             "Triton's approximate fp32 division (div.full.f32) rounds the other way; "
                             "output_ieee divides exactly and is what mqdist reproduces")
    if "output_cpu_path" in tensors:
        expect["cpu"] = "output_cpu_path"
        notes.append("ModelOpt's CPU eager path (output_cpu_path) differs from its CUDA kernel here: "
                     "mqdist on CPU follows the CPU path, on GPU the CUDA kernel")
    if "output_cuda_ext" in tensors:
        notes.append(f"CUDA-extension fallback (DISABLE_TRITON_KERNEL, double-precision scale math) "
                     f"differs from the Triton output in {n_diff(tensors['output_cuda_ext'], y)} element(s)")
    case["expect"] = expect
    case["tolerance"] = tol
    case["annotation"] = "; ".join(notes)


def annotate_cpu_case(case, tensors, q):
    """CPU manifest: mqdist on CPU reproduces ModelOpt's CPU output. For FP8 through ModelOpt's CUDA
    kernel (scalar or 1-D amax), the GPU result differs where the divided scale differs from the
    eager reciprocal one: stored as output_modelopt_cuda (emulated) when it differs."""
    expect = {"cpu": "output", "cuda": "output"}
    notes = []
    stages = leaves(q)
    if (case["kind"] == "fake_quant" and len(stages) == 1 and isinstance(stages[0]._num_bits, tuple)
            and not stages[0]._block_sizes and case["amax_source"] in ("calibrated", "loaded", "constant")):
        m = stages[0]
        amax = torch.tensor(448.0) if m._use_constant_amax else m._amax.detach().cpu()
        if amax.squeeze().ndim <= 1 and not m._bias:
            alt = emulate_fp8_cuda_ext(tensors["input"], amax)
            nd = n_diff(alt, tensors["output"])
            if nd:
                tensors["output_modelopt_cuda"] = alt
                expect["cuda"] = "output_modelopt_cuda"
                notes.append(f"ModelOpt's CUDA kernel divides 448/amax where its CPU eager path multiplies "
                             f"by the reciprocal: {nd} element(s) differ (output_modelopt_cuda)")
    case["expect"] = expect
    case["tolerance"] = {"kind": "exact"}
    case["annotation"] = "; ".join(notes)


# ----------------------------------------------------------------------------------------------
# Case generation
# ----------------------------------------------------------------------------------------------
def shapes_for(cfg):
    """(pattern list for the first shape, extra shapes run with the 'normal' pattern)."""
    c0 = cfg[0] if isinstance(cfg, list) else cfg
    kind = cfg_kind(c0)
    bs = c0.get("block_sizes") or {}
    if c0.get("bias"):
        return (2, 3, 5, 16), [(1, 2, 7, 8)]
    ints = {k: v for k, v in bs.items() if isinstance(k, int)}
    if -2 in ints and ints[-2]:  # 2-D blocks
        return (12, 40), [(130, 136), (1, 130)]
    if ints.get(-1) and kind in ("int", "fp8"):
        b = ints[-1]
        return (3, 2 * b), [(5, b + 72), (1, b + 2)]
    if kind in ("nvfp4_dynamic", "nvfp4_static", "mx"):
        b = ints.get(-1, 16)
        return (4, 4 * b), [(33, 2 * b), (1, b + 8), (2, 3, 2 * b)]
    if ints and all(v is None for v in ints.values()):
        return (4, 6, 24), [(1, 17), (33, 40)]
    return (33, 40), [(1, 17), (2, 5, 24)]


def patterns_for(cfg, device):
    pats = ["normal", "studentt", "zeros", "const", "negconst", "boundary", "tiny", "huge", "mixedmag"]
    return pats


def run_case(cfg, x, device, mode):
    q = build(cfg, device)
    xd = x.to(device)
    if mode == "calibrated":
        calibrate(q, xd)
    with torch.no_grad():
        y = q(xd)
    return q, y


class Writer:
    def __init__(self, device, out_dir, single_file):
        self.device, self.out_dir, self.single = device, out_dir, single_file
        self.cases, self.skipped, self.tensors = [], [], {}
        self.files = {}

    def add(self, case, file_key, tensors):
        fname = "cuda.safetensors" if self.single else f"cpu/{file_key}.safetensors"
        store = self.files.setdefault(fname, {})
        keys = {}
        for role, t in tensors.items():
            k = f"{case['id']}/{role}"
            store[k] = t.detach().cpu().contiguous().clone()
            keys[role] = k
        case["file"] = fname
        case["tensors"] = keys
        self.cases.append(case)

    def save(self, manifest_name, extra):
        for fname, store in self.files.items():
            path = os.path.join(self.out_dir, fname)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            save_file(store, path, metadata={"generator": "tests/conformance/gen_golden.py"})
            os.chmod(path, 0o644)
        doc = {
            "generator": "tests/conformance/gen_golden.py",
            "device": self.device,
            "torch_version": torch.__version__,
            "modelopt_version": modelopt.__version__,
            **extra,
            "num_cases": len(self.cases),
            "skipped": self.skipped,
            "cases": self.cases,
        }
        with open(os.path.join(self.out_dir, manifest_name), "w") as f:
            json.dump(doc, f, indent=1, allow_nan=False)
            f.write("\n")


def dt_name(dtype):
    return {v: k for k, v in DTYPES.items()}[dtype]


def shape_str(s):
    return "x".join(str(d) for d in s)


def fake_quant_cases(w, cfgs, device, cuda_mode):
    for key, (cfg, sources) in cfgs.items():
        cid = cfg_id(cfg)
        jcfg = to_json(cfg)
        if needs_hadamard(cfg):
            w.skipped.append({"cfg_id": cid, "cfg": jcfg, "cfg_sources": sources,
                              "reason": "rotate=True needs the fast_hadamard_transform CUDA package, "
                                        "not installed in the reference environment"})
            continue
        cuda_only = needs_cuda(cfg)
        if cuda_only != cuda_mode and not (cuda_mode and crosscheck_cfg(cfg)):
            if cuda_only and not cuda_mode:
                w.skipped.append({"cfg_id": cid, "cfg": jcfg, "cfg_sources": sources,
                                  "reason": "ModelOpt's path needs CUDA: see manifest_cuda.json"})
            continue
        crosscheck = cuda_mode and not cuda_only
        mode = amax_mode(cfg)
        first_shape, extra_shapes = shapes_for(cfg)
        runs = [(p, first_shape) for p in patterns_for(cfg, device)] + [("normal", s) for s in extra_shapes]
        if crosscheck:
            runs = [("normal", first_shape), ("boundary", first_shape), ("studentt", extra_shapes[0])]
        if not cuda_mode and not isinstance(cfg, list) and mode == "calibrated" and cfg_kind(cfg) in ("int", "fp8") \
                and not cfg.get("bias") and not (cfg.get("block_sizes")):
            runs.append(("nonfinite", first_shape))
        for dtype in DTYPES.values():
            for pattern, shape in runs:
                gen = torch.Generator().manual_seed(seed_of(cid, pattern, shape))
                x = pattern_tensor(pattern, cfg_kind(cfg[0] if isinstance(cfg, list) else cfg),
                                   cfg[0] if isinstance(cfg, list) else cfg, shape, dtype, gen)
                case_mode = mode
                notes = []
                case_id = f"{cid}/{pattern}_{shape_str(shape)}/{dt_name(dtype)}"
                try:
                    if pattern == "nonfinite":
                        # MaxCalibrator asserts on NaN/Inf: load a finite amax instead and run
                        # ModelOpt's CPU eager path on the non-finite input.
                        case_mode = "loaded"
                        q = build(cfg, device)
                        amax_ref = build(cfg, device)
                        calibrate(amax_ref, torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0).to(device))
                        q.amax = amax_ref.amax.clone()
                        with torch.no_grad():
                            y = q(x.to(device))
                        notes.append("NaN/Inf input with a loaded finite amax (CPU eager path): "
                                     "NaN stays NaN, +-Inf clamps to +-amax (INT) or +-448*inv (FP8)")
                    else:
                        q, y = run_case(cfg, x, device, case_mode)
                except Exception as e:  # record what ModelOpt refuses, never silently drop
                    w.skipped.append({"cfg_id": cid, "case": case_id, "cfg": jcfg,
                                      "reason": f"ModelOpt raised {type(e).__name__}: {str(e)[:200]}"})
                    continue
                tensors = {"input": x, "output": y.to(x.dtype) if y.dtype != x.dtype else y}
                tensors.update(state_tensors(q))
                try:
                    path = describe_path(cfg, device, x, q, tensors, notes)
                    if crosscheck:
                        _, ycpu = run_case(cfg, x, "cpu", case_mode)
                        yc = y.cpu()
                        diff = int(((ycpu != yc) & ~(ycpu.isnan() & yc.isnan())).sum())
                        notes.append(f"cross-check: ModelOpt CUDA kernel vs its CPU eager path differ in "
                                     f"{diff} of {y.numel()} elements")
                        if diff:
                            tensors["output_cpu_path"] = ycpu
                except Exception as e:
                    w.skipped.append({"cfg_id": cid, "case": case_id, "cfg": jcfg,
                                      "reason": f"generator post-processing raised {type(e).__name__}: "
                                                f"{str(e)[:200]}"})
                    continue
                case = {
                    "id": case_id, "cfg_id": cid, "cfg": jcfg, "cfg_sources": sources,
                    "kind": "fake_quant", "shape": list(shape), "dtype": dt_name(dtype),
                    "pattern": pattern, "amax_source": case_mode,
                    "calibrated": case_mode == "calibrated",
                    "modelopt_path": path, "notes": "; ".join(notes),
                }
                if cuda_mode:
                    annotate_gpu_case(case, tensors)
                else:
                    annotate_cpu_case(case, tensors, q)
                w.add(case, cid, tensors)


def seed_of(cid, pattern, shape):
    s = f"{cid}|{pattern}|{shape_str(shape)}"
    h = 1469598103934665603
    for ch in s.encode():
        h = ((h ^ ch) * 1099511628211) % (1 << 64)
    return h % (2 ** 31)


def crosscheck_cfg(cfg):
    """CPU formats also run through ModelOpt's CUDA kernels on the GPU (INT8/FP8 per-tensor/channel)."""
    if isinstance(cfg, list) or cfg.get("bias") or cfg.get("use_constant_amax"):
        return False
    return cfg_kind(cfg) in ("int", "fp8") and not cfg.get("block_sizes")


def describe_path(cfg, device, x, q, tensors, notes):
    """Names the ModelOpt code that produced the output; on CUDA also runs the NVFP4 CUDA-extension
    fallback on the same input (output_cuda_ext)."""
    c0 = cfg[0] if isinstance(cfg, list) else cfg
    kind = cfg_kind(c0)
    if isinstance(cfg, list):
        return "SequentialQuantizer: stage-by-stage CPU eager paths"
    if device == "cpu":
        if kind == "int":
            return "tensor_quant._tensor_quant (CPU eager)"
        return "tensor_quant._fp8_eager (CPU eager)"
    if kind == "nvfp4_dynamic":
        triton_used = (tensor_quant.triton_kernel.IS_AVAILABLE
                       and hasattr(tensor_quant.triton_kernel, "fp4_fake_quant_block"))
        if c0.get("bias"):
            notes.append("affine bias is ignored by DynamicBlockQuantizationFunction (ModelOpt "
                         "behaviour): _bias_value is calibrated on x - bias and only exported")
        else:
            tensor_quant.DISABLE_TRITON_KERNEL = True
            try:
                q2 = build(cfg, device)
                if q.amax is not None:
                    q2.amax = q.amax.clone()
                with torch.no_grad():
                    tensors["output_cuda_ext"] = q2(x.to(device)).cpu()
            except Exception as e:
                notes.append(f"CUDA ext path raised {type(e).__name__}: {str(e)[:120]}")
            finally:
                tensor_quant.DISABLE_TRITON_KERNEL = False
        return ("triton fp4_fake_quant_block (fp4_kernel_hopper.py)" if triton_used
                else "CUDA ext fused_amax_convert")
    if kind == "nvfp4_static":
        return "triton static_blockwise_fp4_fake_quant (StaticBlockScaleQuantizer, promoted)"
    if kind == "mx":
        return "CUDA ext fused_amax_convert (tensor_quant_mx.cu, --use_fast_math)"
    if kind == "int":
        return "CUDA ext fake_tensor_quant(_with_axis)"
    return "CUDA ext fake_e4m3fy(_with_axis)"


def reannotate(out_dir):
    """Recomputes the emulated columns (output_ieee, expect, tolerance, annotation) of an existing
    manifest_cuda.json + cuda.safetensors without a GPU. ModelOpt's own outputs are left untouched."""
    from safetensors.torch import load_file
    path = os.path.join(out_dir, "manifest_cuda.json")
    doc = json.load(open(path))
    store = load_file(os.path.join(out_dir, "cuda.safetensors"))
    for case in doc["cases"]:
        case.pop("tolerance", None)
        # drop what earlier generator versions wrote into notes about the emulation
        case["notes"] = "; ".join(n for n in case["notes"].split("; ")
                                  if n and "IEEE" not in n and "CUDA-ext fallback" not in n
                                  and "ModelOpt bug" not in n and "_bias_value'" not in n)
        tensors = {role: store[key] for role, key in case["tensors"].items()}
        for role in list(case["tensors"]):
            if role == "output_ieee":
                del store[case["tensors"].pop(role)]
        annotate_gpu_case(case, tensors)
        for role, t in tensors.items():
            k = f"{case['id']}/{role}"
            if role not in case["tensors"]:
                store[k] = t.contiguous().clone()
                case["tensors"][role] = k
    doc["annotated_by"] = "gen_golden.py --reannotate (CPU, torch %s)" % torch.__version__
    save_file(store, os.path.join(out_dir, "cuda.safetensors"),
              metadata={"generator": "tests/conformance/gen_golden.py"})
    os.chmod(os.path.join(out_dir, "cuda.safetensors"), 0o644)
    with open(path, "w") as f:
        json.dump(doc, f, indent=1, allow_nan=False)
        f.write("\n")
    print(f"re-annotated {len(doc['cases'])} cases in {path}", file=sys.stderr)


# ----------------------------------------------------------------------------------------------
# Real quantization (fake_quant=False, the compress path)
# ----------------------------------------------------------------------------------------------
REAL_CFGS = {
    "rq_fp8_pt": {"num_bits": (4, 3), "axis": None, "fake_quant": False},
    "rq_fp8_axis0": {"num_bits": (4, 3), "axis": 0, "fake_quant": False},
    "rq_int8_axis0": {"num_bits": 8, "axis": 0, "fake_quant": False},
    "rq_int8_pt": {"num_bits": 8, "axis": None, "fake_quant": False},
    "rq_int4_b128": {"num_bits": 4, "block_sizes": {-1: 128, "type": "static"}, "fake_quant": False},
    "rq_int4_b64": {"num_bits": 4, "block_sizes": {-1: 64}, "fake_quant": False},
    "rq_nf4_b64_s256": {"num_bits": 4, "block_sizes": {-1: 64, "scale_bits": 8,
                                                      "scale_block_sizes": {-1: 256}}, "fake_quant": False},
    "rq_mxfp4": {"num_bits": (2, 1), "block_sizes": {-1: 32, "type": "dynamic", "scale_bits": (8, 0)},
                 "fake_quant": False},
    "rq_mxfp8": {"num_bits": (4, 3), "block_sizes": {-1: 32, "type": "dynamic", "scale_bits": (8, 0)},
                 "fake_quant": False},
    "rq_nvfp4": {"num_bits": (2, 1), "block_sizes": {-1: 16, "type": "dynamic", "scale_bits": (4, 3)},
                 "fake_quant": False},
}


def real_quant_cases(w, device):
    for cid, cfg in REAL_CFGS.items():
        jcfg = to_json(cfg)
        kind = cfg_kind(cfg)
        calib = kind in ("int", "fp8", "nvfp4_dynamic") and not cfg.get("block_sizes", {}).get(-1) \
            or kind == "nvfp4_dynamic"
        if cid.startswith("rq_int4") or cid.startswith("rq_nf4"):
            calib = False
        shapes = [("normal", (4, 256)), ("studentt", (2, 512)), ("boundary", (2, 256)), ("zeros", (1, 256))]
        for dtype in DTYPES.values():
            for pattern, shape in shapes:
                if pattern == "boundary" and kind not in ("int", "fp8", "mx", "nvfp4_dynamic"):
                    continue
                gen = torch.Generator().manual_seed(seed_of(cid, pattern, shape))
                bkind = "int" if kind == "int" else kind
                x = pattern_tensor(pattern, bkind, {"num_bits": cfg["num_bits"]} if kind == "int" else cfg,
                                   shape, dtype, gen)
                case_id = f"{cid}/{pattern}_{shape_str(shape)}/{dt_name(dtype)}"
                try:
                    q = build(cfg, device)
                    if calib:
                        calibrate(q, x.to(device))
                    with torch.no_grad():
                        qt = q(x.to(device))
                    data = qt._quantized_data
                    try:
                        deq = q(qt)  # TensorQuantizer dequantizes its own QTensor (_dequantize=True)
                    except Exception:
                        deq = None
                except Exception as e:
                    w.skipped.append({"cfg_id": cid, "case": case_id, "cfg": jcfg,
                                      "reason": f"ModelOpt raised {type(e).__name__}: {str(e)[:200]}"})
                    continue
                tensors = {"input": x, "quantized_data": data}
                tensors.update(state_tensors(q))
                if deq is not None:
                    tensors["dequantized"] = deq
                case = {
                    "id": case_id, "cfg_id": cid, "cfg": jcfg, "cfg_sources": [],
                    "kind": "real_quant", "shape": list(shape), "dtype": dt_name(dtype),
                    "pattern": pattern, "amax_source": "calibrated" if calib else "dynamic",
                    "calibrated": calib, "qtensor_class": type(qt).__name__,
                    "quantized_dtype": str(data.dtype).replace("torch.", ""),
                    "modelopt_path": f"TensorQuantizer._real_quantize -> {type(qt).__name__}.quantize",
                    "notes": "", "expect": {"cpu": "quantized_data", "cuda": "quantized_data"},
                }
                w.add(case, cid, tensors)

# ----------------------------------------------------------------------------------------------
# Replay of the CPU manifest on another device (--replay-cpu-manifest)
# ----------------------------------------------------------------------------------------------
REPLAY_MANIFEST = "manifest_cuda_replay.json"
REPLAY_FILE = "cuda_replay.safetensors"
# Fields of a CPU case that a replay case repeats, so that it is self-contained except for tensors
# (cfg_sources: see the CPU case of the same id).
REPLAY_COPY = ("id", "cfg_id", "cfg", "kind", "shape", "dtype", "pattern",
               "amax_source", "calibrated", "qtensor_class", "quantized_dtype")


def bits_equal(a, b):
    """Same dtype, shape and bits (NaN payloads and only those ignored; the sign of zero counts)."""
    if a.dtype != b.dtype or tuple(a.shape) != tuple(b.shape):
        return False
    if a.is_floating_point():
        return n_diff(a, b) == 0
    return bool(torch.equal(a.cpu(), b.cpu()))


def replay_describe(case, device):
    if device == "cpu":
        return "replay on CPU: " + case["modelopt_path"]
    if case["kind"] == "real_quant":
        cls = case.get("qtensor_class", "QTensor")
        kern = {"INT4QTensor": " (CUDA ext INT4_quantize / INT4_dequantize kernels)",
                "NF4QTensor": " (CUDA ext NF4_quantize / NF4_dequantize kernels)"}.get(cls, " (torch on CUDA)")
        return f"TensorQuantizer._real_quantize -> {cls}.quantize on CUDA tensors{kern}"
    cfg = case["cfg"]
    if isinstance(cfg, list):
        return "SequentialQuantizer on CUDA tensors: stage-by-stage ModelOpt CUDA paths"
    c0 = cfg
    fp8 = isinstance(c0.get("num_bits"), list)
    if c0.get("block_sizes"):
        return ("tensor_quant._fp8_eager on CUDA tensors (block-reshaped, multi-dim amax)" if fp8
                else "tensor_quant fake_tensor_quant on CUDA tensors (block-reshaped)")
    return ("CUDA ext fake_e4m3fy(_with_axis) (ModelOpt's FP8 CUDA kernel; eager torch-on-CUDA for a "
            "multi-dim amax)" if fp8 else "CUDA ext fake_tensor_quant(_with_axis)")


def replay_cpu_manifest(device, out_dir, golden_dir, extra):
    """Feeds every case of <golden_dir>/manifest.json (its stored input, its loaded amax, its config
    and calibration procedure) through ModelOpt on `device` tensors and writes
    <out_dir>/manifest_cuda_replay.json + <out_dir>/cuda_replay.safetensors. A result tensor that is
    bit-identical to the CPU golden of the same role is not stored again: the case references the CPU
    file ({"file": "cpu/<cfg>.safetensors", "key": ...}); only differing results go to the replay file.
    Run with --device cpu this reproduces the CPU goldens exactly (every tensor references cpu/*)."""
    from safetensors.torch import load_file
    cpu_doc = json.load(open(os.path.join(golden_dir, "manifest.json")))
    py_cfgs = {json.dumps(to_json(py), sort_keys=True): py for py, _ in collect_cfgs().values()}
    for cid, cfg in REAL_CFGS.items():
        py_cfgs[json.dumps(to_json(cfg), sort_keys=True)] = cfg
    stores = {}

    def cpu_tensor(case, role):
        f = case["file"]
        if f not in stores:
            stores[f] = load_file(os.path.join(golden_dir, f))
        return stores[f][case["tensors"][role]]

    out_store, cases, skipped = {}, [], []
    n_stored = 0
    for cc in cpu_doc["cases"]:
        cid = cc["id"]
        rc = {k: cc[k] for k in REPLAY_COPY if k in cc}
        key = json.dumps(cc["cfg"], sort_keys=True)
        if key not in py_cfgs:
            skipped.append({"case": cid, "cfg_id": cc["cfg_id"],
                            "reason": "generator: config of the CPU case not found among the presets"})
            continue
        cfg = py_cfgs[key]
        x = cpu_tensor(cc, "input")
        mode = cc["amax_source"]
        try:
            if cc["kind"] == "real_quant":
                q = build(cfg, device)
                if cc["calibrated"]:
                    calibrate(q, x.to(device))
                with torch.no_grad():
                    qt = q(x.to(device))
                res = {"quantized_data": qt._quantized_data}
                if "dequantized" in cc["tensors"]:
                    with torch.no_grad():
                        res["dequantized"] = q(qt)
            else:
                if mode == "loaded":
                    q = build(cfg, device)
                    q.amax = cpu_tensor(cc, "_amax").clone().to(device)
                    with torch.no_grad():
                        y = q(x.to(device))
                else:
                    q, y = run_case(cfg, x, device, mode)
                res = {"output": y.to(x.dtype) if y.dtype != x.dtype else y}
            if device == "cuda":
                torch.cuda.synchronize()
            res.update(state_tensors(q))
            res = {r: t.detach().cpu().contiguous() for r, t in res.items()}
        except Exception as e:  # record what ModelOpt on this device refuses, never fail the run
            skipped.append({"case": cid, "cfg_id": cc["cfg_id"],
                            "reason": f"ModelOpt on {device} raised {type(e).__name__}: {str(e)[:300]}"})
            if device == "cuda":
                try:
                    torch.cuda.synchronize()
                except Exception:
                    pass
            continue
        refs, diff_vs_cpu = {"input": {"file": cc["file"], "key": cc["tensors"]["input"]}}, {}
        for role, t in res.items():
            if role in cc["tensors"] and bits_equal(t, cpu_tensor(cc, role)):
                refs[role] = {"file": cc["file"], "key": cc["tensors"][role]}
                continue
            k = f"{cid}/{role}"
            out_store[k] = t.clone()
            refs[role] = {"file": REPLAY_FILE, "key": k}
            n_stored += 1
            if role in cc["tensors"]:
                c = cpu_tensor(cc, role)
                diff_vs_cpu[role] = (n_diff(t, c) if t.is_floating_point() and t.shape == c.shape
                                     and t.dtype == c.dtype else "dtype/shape/bits")
            else:
                diff_vs_cpu[role] = "not in the CPU golden"
        for role in cc["tensors"]:
            if role not in res and role != "input" and not role.startswith("output"):
                diff_vs_cpu[role] = "not produced on " + device
        notes = []
        out_role = "quantized_data" if cc["kind"] == "real_quant" else "output"
        # The CPU golden's expect.cuda is what the CPU generator predicted (emulated) for ModelOpt's
        # CUDA path; say whether ModelOpt on this device agrees.
        pred = cc["expect"]["cuda"]
        if pred != out_role and device == "cuda":
            nd = n_diff(res[out_role], cpu_tensor(cc, pred))
            notes.append(f"the CPU manifest's predicted CUDA result ({pred}, emulated) differs from "
                         f"ModelOpt's {device} output in {nd} element(s)")
        if out_role in diff_vs_cpu:
            notes.append(f"ModelOpt on {device} differs from its CPU golden: {out_role} "
                         f"{diff_vs_cpu[out_role]} element(s)")
        rc.update({
            "modelopt_path": replay_describe(cc, device),
            "expect": {device: out_role},
            "annotation": "; ".join(notes),
            "tensors": refs,
            "diff_vs_cpu": diff_vs_cpu,
        })
        cases.append(rc)
    if out_store:
        path = os.path.join(out_dir, REPLAY_FILE)
        save_file(out_store, path, metadata={"generator": "tests/conformance/gen_golden.py"})
        os.chmod(path, 0o644)
    doc = {
        "generator": "tests/conformance/gen_golden.py --replay-cpu-manifest",
        "device": device,
        "torch_version": torch.__version__,
        "modelopt_version": modelopt.__version__,
        **extra,
        "source_manifest": "manifest.json",
        "source_num_cases": len(cpu_doc["cases"]),
        "tensors_stored": n_stored,
        "num_cases": len(cases),
        "skipped": skipped,
        "cases": cases,
    }
    with open(os.path.join(out_dir, REPLAY_MANIFEST), "w") as f:
        json.dump(doc, f, indent=1, allow_nan=False)
        f.write("\n")
    print(f"replay on {device}: {len(cases)} cases ({n_stored} tensors differ from the CPU goldens), "
          f"{len(skipped)} skipped -> {out_dir}", file=sys.stderr)
    for s_ in skipped:
        print("skipped:", s_["case"], "-", s_["reason"][:200], file=sys.stderr)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--out", default=os.path.join(HERE, "golden"))
    ap.add_argument("--reannotate", action="store_true",
                    help="recompute the emulated columns of <out>/manifest_cuda.json on the CPU")
    ap.add_argument("--replay-cpu-manifest", action="store_true",
                    help="run every case of golden/manifest.json (same inputs, amaxes, configs, "
                         "calibration) through ModelOpt on --device and write "
                         "<out>/manifest_cuda_replay.json + <out>/cuda_replay.safetensors")
    args = ap.parse_args()
    if args.reannotate:
        reannotate(args.out)
        return
    torch.manual_seed(0)
    cuda = args.device == "cuda"
    extra = {}
    if cuda:
        # Build ModelOpt's JIT CUDA extensions once, up front: a failed build is then recorded
        # once (cases using it are listed under "skipped") instead of being retried per case.
        import time

        from modelopt.torch.quantization import extensions
        built = {}
        for name in ("get_cuda_ext", "get_cuda_ext_fp8", "get_cuda_ext_mx"):
            t0 = time.time()
            ext = getattr(extensions, name)(raise_if_failed=False)
            built[name] = ext is not None
            print(f"{name}: {'ok' if ext is not None else 'FAILED'} in {time.time() - t0:.0f}s", file=sys.stderr)
        extra["cuda_extensions_built"] = built
        extra["gpu"] = torch.cuda.get_device_name(0)
        try:
            import triton
            extra["triton_version"] = triton.__version__
        except ImportError:
            extra["triton_version"] = None
    if args.replay_cpu_manifest:
        os.makedirs(args.out, exist_ok=True)
        replay_cpu_manifest(args.device, args.out, os.path.join(HERE, "golden"), extra)
        return
    cfgs = collect_cfgs()
    w = Writer(args.device, args.out, single_file=cuda)
    fake_quant_cases(w, cfgs, args.device, cuda)
    if cuda:
        extra["nvfp4_triton_available"] = bool(tensor_quant.triton_kernel.IS_AVAILABLE and hasattr(
            tensor_quant.triton_kernel, "fp4_fake_quant_block"))
    else:
        real_quant_cases(w, args.device)
    w.save("manifest_cuda.json" if cuda else "manifest.json", extra)
    print(f"{len(w.cases)} cases, {len(w.skipped)} skipped -> {args.out}", file=sys.stderr)
    for s in w.skipped:
        print("skipped:", s.get("case", s["cfg_id"]), "-", s["reason"][:150], file=sys.stderr)


if __name__ == "__main__":
    main()
