#!/usr/bin/env python3
"""ModelOpt's own CPU fake-quant speed: the baseline that mqdist's CPU reference is compared with.

Times ModelOpt 0.47.0 TensorQuantizer.forward on the CPU (its eager torch paths: _tensor_quant for
INT, _fp8_eager for FP8, the static-block reshape for INT4 block 128) on fixed tensors, after one
max-calibration pass, so each timed call is exactly the fake-quant of a calibrated quantizer.

    ~/.cache/mqdist/venv-ref/bin/python tests/bench/bench_cpu_modelopt.py [--rows 4096 --cols 4096]
        [--repeat 10] [--threads N] [--json out.json]

Prints one table row per (format, dtype): median and min wall time of `repeat` calls after 2
warm-up calls, and GB/s counting the input read plus the output written.
Not a test: nothing is asserted (CONVENTIONS: benchmarks are separate programs).
"""

import argparse
import json
import platform
import statistics
import sys
import time
import warnings

import torch

import modelopt
from modelopt.torch.quantization.config import QuantizerAttributeConfig
from modelopt.torch.quantization.nn import TensorQuantizer

warnings.filterwarnings("ignore")

FORMATS = [
    ("int8 per-tensor", {"num_bits": 8, "axis": None}),
    ("int8 per-channel (axis 0)", {"num_bits": 8, "axis": 0}),
    ("fp8 e4m3 per-tensor", {"num_bits": (4, 3), "axis": None}),
    ("fp8 e4m3 per-channel (axis 0)", {"num_bits": (4, 3), "axis": 0}),
    ("int4 block 128 (static)", {"num_bits": 4, "block_sizes": {-1: 128, "type": "static"}}),
]


def calibrated(cfg, x):
    q = TensorQuantizer(QuantizerAttributeConfig(**cfg))
    q.disable_quant()
    q.enable_calib()
    with torch.no_grad():
        q(x)
    q.load_calib_amax()
    q.enable_quant()
    q.disable_calib()
    return q


def time_calls(fn, repeat):
    for _ in range(2):
        fn()
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), min(ts)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--cols", type=int, default=4096)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--json", default=None, help="also write the rows as JSON here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    gen = torch.Generator().manual_seed(0)
    base = torch.randn(args.rows, args.cols, generator=gen)
    rows = []
    print(f"ModelOpt {modelopt.__version__}, torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, tensor {args.rows}x{args.cols}, median of {args.repeat}",
          file=sys.stderr)
    header = f"| {'format':30} | {'dtype':8} | {'median ms':>9} | {'min ms':>8} | {'GB/s':>6} |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for dname in args.dtypes.split(","):
        dtype = getattr(torch, dname)
        x = base.to(dtype)
        for name, cfg in FORMATS:
            q = calibrated(cfg, x)
            with torch.no_grad():
                med, best = time_calls(lambda: q(x), args.repeat)
            gbs = 2 * x.numel() * x.element_size() / med / 1e9
            rows.append({"format": name, "dtype": dname, "median_ms": med * 1e3, "min_ms": best * 1e3,
                         "gb_per_s": gbs, "shape": [args.rows, args.cols]})
            print(f"| {name:30} | {dname:8} | {med * 1e3:9.1f} | {best * 1e3:8.1f} | {gbs:6.2f} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"modelopt_version": modelopt.__version__, "torch_version": torch.__version__,
                       "threads": torch.get_num_threads(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
