"""Writes configs/examples/tensors.safetensors: two bf16 weights shaped like real linear layers.

Values are synthetic but weight-like: per-output-channel scales that vary by ~4x, a heavy-tailed
(Student-t, 4 dof) body, and a few outlier input channels, as in trained LLM projections.
Deterministic (seeded). Run with the reference env (torch 2.11.0, safetensors 0.8.0):
    /root/.cache/mqdist/venv-ref/bin/python configs/examples/make_example.py
"""
import os

import torch
from safetensors.torch import save_file


def weight_like(out_f, in_f, seed):
    torch.manual_seed(seed)
    t = torch.distributions.StudentT(4.0)
    body = t.sample((out_f, in_f))
    row_scale = torch.exp(torch.empty(out_f, 1).uniform_(-0.7, 0.7)) * 0.02
    w = body * row_scale
    outliers = torch.randperm(in_f)[: max(1, in_f // 32)]
    w[:, outliers] *= 6.0
    return w.to(torch.bfloat16)


def main():
    tensors = {
        "model.layers.0.mlp.up_proj.weight": weight_like(64, 128, 1),
        "model.layers.0.self_attn.o_proj.weight": weight_like(33, 48, 2),
    }
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tensors.safetensors")
    save_file(tensors, path, metadata={"format": "pt", "source": "configs/examples/make_example.py"})
    print(path, os.path.getsize(path), "bytes")


if __name__ == "__main__":
    main()
