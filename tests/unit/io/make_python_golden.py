"""Prints the safetensors file image that tests/unit/io/safetensors_test.cpp (PythonGolden) expects.

Run with the reference env (safetensors 0.8.0, torch 2.11.0):
    /root/.cache/mqdist/venv-ref/bin/python tests/unit/io/make_python_golden.py
"""
import torch
from safetensors.torch import save

tensors = {
    "bo": torch.tensor([True, False, True]),
    "u8": torch.tensor([1, 2, 255], dtype=torch.uint8),
    "i8": torch.tensor([-1, 2], dtype=torch.int8),
    "e5": torch.tensor([1.0, -2.0], dtype=torch.float8_e5m2),
    "e4": torch.tensor([0.5, 448.0], dtype=torch.float8_e4m3fn),
    "i16": torch.tensor([-300], dtype=torch.int16),
    "u16": torch.tensor([65535], dtype=torch.uint16),
    "f16": torch.tensor([[1.0, -0.5]], dtype=torch.float16),
    "bf16": torch.tensor([3.0, 0.1], dtype=torch.bfloat16),
    "i32": torch.tensor([-7], dtype=torch.int32),
    "u32": torch.tensor([4000000000], dtype=torch.uint32),
    "a.weight": torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float32),
    "scalar": torch.tensor(0.25, dtype=torch.float32),
    "empty": torch.zeros((0, 3), dtype=torch.float32),
    "f64": torch.tensor([0.1], dtype=torch.float64),
    "i64": torch.tensor([-2], dtype=torch.int64),
    "u64": torch.tensor([2**63 + 5], dtype=torch.uint64),
}
print(save(tensors, metadata={"format": "pt"}).hex())
