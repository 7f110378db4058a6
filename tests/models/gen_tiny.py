#!/usr/bin/env python3
"""Tiny random HF decoder checkpoints + golden logits for tests/unit/models (mq::models parity).

Run with the reference venv (transformers 5.14.1, torch 2.11 CPU):
    /root/.cache/mqdist/venv-ref/bin/python tests/models/gen_tiny.py
Writes tests/models/tiny/<name>/ (config.json + safetensors exactly as save_pretrained writes them)
and tests/models/tiny/<name>/golden.safetensors with
    input_ids       (2, 8) int64     batch 0 full, batch 1 left-padded by 3
    attention_mask  (2, 8) int64
    logits          (2, 8, V) fp32   HF eager attention, model loaded from the saved files in fp32
    logits_nomask   (1, 8, V) fp32   input_ids[0:1] without an attention_mask
    inv_freq        (head_dim/2,)    the rotary embedding's inv_freq buffer
    logits_native   (2, 8, V) fp32   (bf16 checkpoints only) the same forward computed in bf16, up-cast
    expert_counts   (L, E) int64     (MoE only) tokens routed to each expert by the masked batch, counted
                                     like HF's one_hot(top_k_index) over every token, pads included

Each family is a small config (hidden 64, 2 layers, vocab 200) chosen to hit one code path:
    llama          LlamaForCausalLM, default rope, tied embeddings, fp32, one file
    llama3_bias    LlamaForCausalLM, llama3 rope scaling, attention_bias + mlp_bias, untied, bf16
    qwen2          Qwen2ForCausalLM (q/k/v bias), linear rope scaling, tied, bf16; config.json
                   rewritten to the legacy form (top-level rope_theta + rope_scaling {"type": "linear"})
    qwen3          Qwen3ForCausalLM (q/k norm, head_dim 24 != hidden/heads), bf16, sharded (index.json)
    mixtral        MixtralForCausalLM, 4 experts top-2, sliding_window 5, bf16, sharded
    qwen3_moe      Qwen3MoeForCausalLM, 6 experts top-2, norm_topk_prob, layer 1 dense (mlp_only_layers), bf16
bf16 checkpoints are loaded in fp32 for the goldens (the up-cast is exact), so every golden is an fp32
forward of the same weights the C++ side reads.
"""
import json
import os
import shutil

import torch
import transformers
from safetensors.torch import save_file
from transformers import (AutoModelForCausalLM, LlamaConfig, MixtralConfig, Qwen2Config, Qwen3Config,
                          Qwen3MoeConfig)

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "tiny")

COMMON = dict(vocab_size=200, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=128, initializer_range=0.05)


def families():
    return [
        ("llama", LlamaConfig(**COMMON, intermediate_size=64, tie_word_embeddings=True,
                              rope_theta=10000.0), torch.float32, None),
        ("llama3_bias", LlamaConfig(**COMMON, intermediate_size=64, tie_word_embeddings=False,
                                    attention_bias=True, mlp_bias=True, rms_norm_eps=1e-5,
                                    rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0,
                                                     "factor": 8.0, "low_freq_factor": 1.0,
                                                     "high_freq_factor": 4.0,
                                                     "original_max_position_embeddings": 16}),
         torch.bfloat16, None),
        ("qwen2", Qwen2Config(**COMMON, intermediate_size=64, tie_word_embeddings=True,
                              rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0}),
         torch.bfloat16, None),
        ("qwen3", Qwen3Config(**COMMON, intermediate_size=64, head_dim=24, tie_word_embeddings=False),
         torch.bfloat16, "100KB"),
        ("mixtral", MixtralConfig(**COMMON, intermediate_size=32, num_local_experts=4, num_experts_per_tok=2,
                                  sliding_window=5, tie_word_embeddings=False),
         torch.bfloat16, "100KB"),
        ("qwen3_moe", Qwen3MoeConfig(**COMMON, intermediate_size=64, moe_intermediate_size=32, head_dim=16,
                                     num_experts=6, num_experts_per_tok=2, norm_topk_prob=True,
                                     decoder_sparse_step=1, mlp_only_layers=[1], tie_word_embeddings=True),
         torch.bfloat16, None),
    ]


def legacy_rope(path):
    """transformers < 5 wrote rope_theta at the top level and the scaling under rope_scaling."""
    with open(path) as f:
        cfg = json.load(f)
    rp = cfg.pop("rope_parameters")
    cfg["rope_theta"] = rp.pop("rope_theta")
    rp["type"] = rp.pop("rope_type")
    cfg["rope_scaling"] = rp
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")


def count_experts(model, ids, mask, num_experts):
    """Per-layer expert token counts, recorded on the router's top-k indices."""
    counts = []
    hooks = []
    for layer in model.model.layers:
        gate = getattr(layer.mlp, "gate", None)
        if gate is None or not hasattr(gate, "top_k"):
            counts.append(None)
            continue
        slot = len(counts)
        counts.append(torch.zeros(num_experts, dtype=torch.int64))

        def hook(mod, inp, out, slot=slot):
            idx = out[2]  # (tokens, top_k)
            counts[slot] += torch.bincount(idx.reshape(-1), minlength=num_experts)
        hooks.append(gate.register_forward_hook(hook))
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
    for h in hooks:
        h.remove()
    return torch.stack([c if c is not None else torch.zeros(num_experts, dtype=torch.int64) for c in counts])


def main():
    assert transformers.__version__ == "5.14.1", transformers.__version__
    torch.manual_seed(1234)
    ids = torch.randint(3, 200, (2, 8), dtype=torch.int64)
    mask = torch.ones(2, 8, dtype=torch.int64)
    mask[1, :3] = 0
    ids[1, :3] = 0  # pad id
    for name, cfg, dtype, shard in families():
        torch.manual_seed(sum(map(ord, name)))
        cfg._attn_implementation = "eager"
        model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").eval()
        # Norm weights are ones at init; randomise them so a missing/misplaced norm would show.
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n.endswith("norm.weight"):
                    p.copy_(1.0 + 0.2 * torch.randn_like(p))
                elif n.endswith(".bias"):
                    p.copy_(0.1 * torch.randn_like(p))
        d = os.path.join(OUT, name)
        shutil.rmtree(d, ignore_errors=True)
        model.to(dtype).save_pretrained(d, safe_serialization=True,
                                        **({"max_shard_size": shard} if shard else {}))
        for extra in ("generation_config.json",):
            p = os.path.join(d, extra)
            if os.path.exists(p):
                os.remove(p)
        if name == "qwen2":
            legacy_rope(os.path.join(d, "config.json"))
        ref = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
        with torch.no_grad():
            logits = ref(input_ids=ids, attention_mask=mask).logits.float()
            logits_nomask = ref(input_ids=ids[0:1]).logits.float()
        golden = {"input_ids": ids, "attention_mask": mask, "logits": logits.contiguous(),
                  "logits_nomask": logits_nomask.contiguous(),
                  "inv_freq": ref.model.rotary_emb.inv_freq.float().contiguous()}
        if dtype != torch.float32:
            native = AutoModelForCausalLM.from_pretrained(d, dtype=dtype, attn_implementation="eager").eval()
            with torch.no_grad():
                golden["logits_native"] = native(input_ids=ids, attention_mask=mask).logits.float().contiguous()
        n_exp = getattr(cfg, "num_local_experts", None) or getattr(cfg, "num_experts", None)
        if n_exp:
            golden["expert_counts"] = count_experts(ref, ids, mask, n_exp)
        save_file(golden, os.path.join(d, "golden.safetensors"),
                  metadata={"transformers": transformers.__version__, "torch": torch.__version__})
        files = sorted(os.listdir(d))
        size = sum(os.path.getsize(os.path.join(d, f)) for f in files)
        print(f"{name}: {files} {size} bytes, |logits|max {logits.abs().max():.4f}")
        with open(os.path.join(d, "config.json")) as f:
            json.load(f)


if __name__ == "__main__":
    main()
