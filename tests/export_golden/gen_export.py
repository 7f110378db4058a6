#!/usr/bin/env python3
"""ModelOpt unified-HF-checkpoint goldens for tests/unit/export (mq::hf_export::export_hf_checkpoint).

Run with the reference venv (nvidia-modelopt 0.47.0, transformers 5.14.1, torch 2.11):
    /root/.cache/mqdist/venv-ref/bin/python tests/export_golden/gen_export.py            # CPU presets
    /root/.cache/mqdist/venv-ref/bin/python tests/export_golden/gen_export.py --fp4-mx-on-cpu  # NVFP4 / MX
    python tests/export_golden/gen_export.py --gpu --out $OUT   # NVFP4 / MX with ModelOpt on CUDA
                                                                # (run_gpu.sh on the `run` device)

The committed NVFP4 / MX goldens come from --fp4-mx-on-cpu: max calibration only collects amaxes (it
never fake-quantizes, which is what needs CUDA/Triton in ModelOpt), and ModelOpt's export math
(NVFP4QTensor, MXFP4QTensor, MXFP8QTensor) is plain fp32 torch, IEEE-identical on CPU and GPU. The --gpu
path is kept to confirm this on a device (no device was lent when these goldens were made).

Writes tests/export_golden/<model>/:
    source/                 the tiny HF checkpoint (save_pretrained, bf16) the C++ side loads
    calib_ids.safetensors   input_ids (2, 16) int64: the calibration batch (one forward, no mask)
    <preset>/               ModelOpt's export_hf_checkpoint output, verbatim (model.safetensors,
                            config.json, hf_quant_config.json, generation_config.json), plus
                            quantizer_state.safetensors: every `*_quantizer.*` buffer of the model
                            right after calibration (before export), so the C++ test can check the
                            export math independently of calibration.

Every preset runs with its algorithm forced to "max" (AWQ / SmoothQuant presets then give their export
layout without those algorithms: no pre_quant_scale). "fp8_kv" is FP8_DEFAULT_CFG with FP8_KV_CFG
appended the way hf_ptq does (update_quant_cfg_with_kv_cache_quant).

The tiny model: LlamaForCausalLM, hidden 128 (INT4 block 128), 4 heads of 32, 2 KV heads (GQA),
intermediate 128, vocab 32, 1 layer, untied lm_head, bf16; norm weights randomised.
"""
import argparse
import copy
import json
import os
import shutil
import sys
import time

import torch
import transformers
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, LlamaConfig, Qwen3MoeConfig

import modelopt
import modelopt.torch.quantization as mtq
from modelopt.torch.export import export_hf_checkpoint

HERE = os.path.dirname(os.path.abspath(__file__))

CPU_PRESETS = {
    "fp8": "FP8_DEFAULT_CFG",
    "fp8_pc_pt": "FP8_PER_CHANNEL_PER_TOKEN_CFG",
    "int8_sq": "INT8_DEFAULT_CFG",
    "int8_wo": "INT8_WEIGHT_ONLY_CFG",
    "int4_awq": "INT4_AWQ_CFG",
    "w4a8_awq": "W4A8_AWQ_BETA_CFG",
    "fp8_kv": ("FP8_DEFAULT_CFG", "FP8_KV_CFG"),
}
# INT4_AWQ_CFG, max-calibrated, then AWQ-style pre_quant_scales set by hand (bf16, in [0.5, 1.5)):
# q/k/v each a different one (export resmooths them to their mean and re-scales the weights), gate/up one
# shared (folded into post_attention_layernorm), o_proj / down_proj their own (exported as pre_quant_scale).
PQS_PRESETS = {"int4_awq_pqs": "INT4_AWQ_CFG"}

GPU_PRESETS = {
    "nvfp4": "NVFP4_DEFAULT_CFG",
    "w4a16_nvfp4": "W4A16_NVFP4_CFG",
    "mxfp8": "MXFP8_DEFAULT_CFG",
    "mxfp4": "MXFP4_DEFAULT_CFG",
}


def tiny_llama():
    cfg = LlamaConfig(vocab_size=32, hidden_size=128, intermediate_size=128, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      initializer_range=0.05, tie_word_embeddings=False, rope_theta=10000.0)
    torch.manual_seed(20261123)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
    return model.to(torch.bfloat16).eval()


def tiny_qwen3_moe():
    cfg = Qwen3MoeConfig(vocab_size=32, hidden_size=64, intermediate_size=64, moe_intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                         num_experts=4, num_experts_per_tok=2, norm_topk_prob=True, decoder_sparse_step=1,
                         max_position_embeddings=64, initializer_range=0.05, tie_word_embeddings=False)
    torch.manual_seed(20261124)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
    return model.to(torch.bfloat16).eval()


MOE_PRESETS = {
    "fp8": "FP8_DEFAULT_CFG",
    "nvfp4": "NVFP4_DEFAULT_CFG",
}


def preset_cfg(spec):
    if isinstance(spec, tuple):
        main, kv = (getattr(mtq, s) for s in spec)
        cfg = copy.deepcopy(main)
        cfg["quant_cfg"] = list(cfg["quant_cfg"]) + list(copy.deepcopy(kv["quant_cfg"]))
    else:
        cfg = copy.deepcopy(getattr(mtq, spec))
    cfg["algorithm"] = "max"
    return cfg


def set_awq_scales(model):
    g = torch.Generator().manual_seed(11)
    for layer in model.model.layers:
        hidden = layer.self_attn.q_proj.in_features
        for n in ("q_proj", "k_proj", "v_proj"):
            getattr(layer.self_attn, n).input_quantizer.pre_quant_scale = (
                0.5 + torch.rand(hidden, generator=g)).to(torch.bfloat16)
        shared = (0.5 + torch.rand(hidden, generator=g)).to(torch.bfloat16)
        layer.mlp.gate_proj.input_quantizer.pre_quant_scale = shared
        layer.mlp.up_proj.input_quantizer.pre_quant_scale = shared
        for m in (layer.self_attn.o_proj, layer.mlp.down_proj):
            m.input_quantizer.pre_quant_scale = (0.5 + torch.rand(m.in_features, generator=g)).to(torch.bfloat16)


def quantizer_state(model):
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()
            if "_quantizer." in k}


def export_one(name, spec, src, ids, out_root, device, after_calib=None):
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.bfloat16,
                                                 attn_implementation="eager").to(device).eval()
    cfg = preset_cfg(spec)
    mtq.quantize(model, cfg, forward_loop=lambda m: m(ids.to(device)))
    if after_calib is not None:
        after_calib(model)
    d = os.path.join(out_root, name)
    shutil.rmtree(d, ignore_errors=True)
    with torch.no_grad():
        state = quantizer_state(model)
        export_hf_checkpoint(model, export_dir=d)
    state = {k: v.cpu() for k, v in state.items()}
    save_file(state, os.path.join(d, "quantizer_state.safetensors"),
              metadata={"modelopt": modelopt.__version__, "torch": torch.__version__,
                        "preset": json.dumps(spec), "device": str(device)})
    files = sorted(os.listdir(d))
    size = sum(os.path.getsize(os.path.join(d, f)) for f in files)
    print(f"{name}: {files} {size} bytes", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gpu", action="store_true", help="run the NVFP4 / MX presets on CUDA")
    ap.add_argument("--fp4-mx-on-cpu", action="store_true",
                    help="run the NVFP4 / MX presets on the CPU (max calibration never fake-quantizes, "
                         "and export is pure torch)")
    ap.add_argument("--out", default=HERE, help="output root (default: next to this script)")
    ap.add_argument("--only", nargs="*", help="preset names to run")
    ap.add_argument("--pqs", action="store_true", help="the llama INT4 AWQ preset with pre_quant_scales")
    ap.add_argument("--moe", action="store_true", help="the tiny Qwen3-MoE (FP8, NVFP4) on the CPU")
    ap.add_argument("--budget-s", type=float, default=1e9, help="skip presets once this many s passed")
    args = ap.parse_args()
    assert transformers.__version__ == "5.14.1", transformers.__version__
    assert modelopt.__version__ == "0.47.0", modelopt.__version__
    if args.moe:
        root = os.path.join(args.out, "qwen3_moe")
        src = os.path.join(root, "source")
        ids_path = os.path.join(root, "calib_ids.safetensors")
        os.makedirs(root, exist_ok=True)
        shutil.rmtree(src, ignore_errors=True)
        tiny_qwen3_moe().save_pretrained(src, safe_serialization=True)
        torch.manual_seed(8)
        save_file({"input_ids": torch.randint(0, 32, (2, 16), dtype=torch.int64)}, ids_path)
        from safetensors.torch import load_file
        ids = load_file(ids_path)["input_ids"]
        for name, spec in MOE_PRESETS.items():
            export_one(name, spec, src, ids, root, torch.device("cpu"))
        return 0
    root = os.path.join(args.out, "llama")
    src = os.path.join(root, "source")
    ids_path = os.path.join(root, "calib_ids.safetensors")
    if args.pqs:
        from safetensors.torch import load_file
        ids = load_file(ids_path)["input_ids"]
        for name, spec in PQS_PRESETS.items():
            export_one(name, spec, src, ids, root, torch.device("cpu"), after_calib=set_awq_scales)
        return 0
    if args.fp4_mx_on_cpu:
        device = torch.device("cpu")
        presets = GPU_PRESETS
    elif args.gpu:
        # The source checkpoint and ids come from the CPU run (committed), copied to --out.
        if not os.path.exists(src):
            shutil.copytree(os.path.join(HERE, "llama", "source"), src)
            shutil.copy(os.path.join(HERE, "llama", "calib_ids.safetensors"), ids_path)
        device = torch.device("cuda")
        presets = GPU_PRESETS
    else:
        os.makedirs(root, exist_ok=True)
        model = tiny_llama()
        shutil.rmtree(src, ignore_errors=True)
        model.save_pretrained(src, safe_serialization=True)
        torch.manual_seed(7)
        ids = torch.randint(0, 32, (2, 16), dtype=torch.int64)
        save_file({"input_ids": ids}, ids_path)
        device = torch.device("cpu")
        presets = CPU_PRESETS
    from safetensors.torch import load_file
    ids = load_file(ids_path)["input_ids"]
    t0 = time.time()
    for name, spec in presets.items():
        if args.only and name not in args.only:
            continue
        if time.time() - t0 > args.budget_s:
            print(f"{name}: skipped (time budget of {args.budget_s} s spent)", flush=True)
            continue
        export_one(name, spec, src, ids, root, device)
        print(f"  at {time.time() - t0:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
