#!/usr/bin/env python3
"""Writes a random-weight Llama checkpoint (config.json + model.safetensors) for memory and throughput
benchmarks of mqdist, with the embedded model's tokenizer (vocab 2048) so the shipped text works.
Needs only numpy or torch (safetensors written by hand: 8-byte header length, JSON header, raw data).

usage: make_random_llama.py <out_dir> [--hidden 1024] [--layers 8] [--heads 8] [--kv-heads 8]
                            [--intermediate 4096] [--dtype bfloat16|float32]
"""
import argparse, json, os, shutil, struct

import torch

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("--hidden", type=int, default=1024)
p.add_argument("--layers", type=int, default=8)
p.add_argument("--heads", type=int, default=8)
p.add_argument("--kv-heads", type=int, default=8)
p.add_argument("--intermediate", type=int, default=4096)
p.add_argument("--dtype", default="bfloat16")
a = p.parse_args()
here = os.path.dirname(os.path.abspath(__file__))
tok_src = os.path.join(here, "..", "..", "assets", "models", "mq-tiny-dense")
vocab, hd = 2048, a.hidden // a.heads
dt = {"bfloat16": torch.bfloat16, "float32": torch.float32}[a.dtype]
g = torch.Generator().manual_seed(0)
tensors = {}
def w(name, *shape, one=False):
    t = torch.ones(*shape) if one else torch.randn(*shape, generator=g) * 0.02
    tensors[name] = t.to(dt).contiguous()
w("model.embed_tokens.weight", vocab, a.hidden)
for i in range(a.layers):
    pre = f"model.layers.{i}."
    w(pre + "self_attn.q_proj.weight", a.heads * hd, a.hidden)
    w(pre + "self_attn.k_proj.weight", a.kv_heads * hd, a.hidden)
    w(pre + "self_attn.v_proj.weight", a.kv_heads * hd, a.hidden)
    w(pre + "self_attn.o_proj.weight", a.hidden, a.heads * hd)
    w(pre + "mlp.gate_proj.weight", a.intermediate, a.hidden)
    w(pre + "mlp.up_proj.weight", a.intermediate, a.hidden)
    w(pre + "mlp.down_proj.weight", a.hidden, a.intermediate)
    w(pre + "input_layernorm.weight", a.hidden, one=True)
    w(pre + "post_attention_layernorm.weight", a.hidden, one=True)
w("model.norm.weight", a.hidden, one=True)
w("lm_head.weight", vocab, a.hidden)
os.makedirs(a.out, exist_ok=True)
header, off, blobs = {}, 0, []
names = {torch.bfloat16: "BF16", torch.float32: "F32"}
for k in sorted(tensors):
    t = tensors[k]
    b = t.view(torch.uint8).numpy().tobytes() if t.dtype == torch.bfloat16 else t.numpy().tobytes()
    header[k] = {"dtype": names[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
    off += len(b)
    blobs.append(b)
h = json.dumps(header, separators=(",", ":")).encode()
h += b" " * ((8 - len(h) % 8) % 8)
with open(os.path.join(a.out, "model.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(h)))
    f.write(h)
    for b in blobs:
        f.write(b)
cfg = json.load(open(os.path.join(tok_src, "config.json")))
cfg.update({"hidden_size": a.hidden, "num_hidden_layers": a.layers, "num_attention_heads": a.heads,
            "num_key_value_heads": a.kv_heads, "intermediate_size": a.intermediate, "head_dim": hd,
            "tie_word_embeddings": False, "dtype": a.dtype})
cfg.pop("torch_dtype", None)
json.dump(cfg, open(os.path.join(a.out, "config.json"), "w"), indent=2)
for f in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
    if os.path.exists(os.path.join(tok_src, f)):
        shutil.copy(os.path.join(tok_src, f), a.out)
n = sum(t.numel() for t in tensors.values())
print(f"{a.out}: {n/1e6:.1f} M parameters, {off/1e6:.0f} MB")
