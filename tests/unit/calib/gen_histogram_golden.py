#!/usr/bin/env python3
"""Golden data for HistogramCalibrator (percentile / entropy) from ModelOpt itself.

Run with the reference env:
    /root/.cache/mqdist/venv-ref/bin/python tests/unit/calib/gen_histogram_golden.py
It writes histogram_golden.json next to this file. Inputs are not stored: each batch is described by a
recipe that histogram_calibrator_test.cpp rebuilds bit for bit (integer LCG, values k * 2^-shift, all
exactly representable in the batch dtype); a checksum (sum |x|) guards the rebuild.
"mse" is not covered: ModelOpt's histogram mse passes shifted positional arguments to
fake_tensor_quant, and mqdist implements the intended search instead (tested by brute force).
"""

import json
import math
import os

import modelopt
import numpy as np
import scipy
import torch
from modelopt.torch.quantization.calib import HistogramCalibrator

MASK64 = (1 << 64) - 1


def lcg(state):
    state = (state * 6364136223846793005 + 1442695040888963407) & MASK64
    return state, state >> 33


def make_batch(r):
    """Recipe -> tensor. k = sum of 4 uniform ints in [-512, 512] (|k| <= 2048), optionally an outlier
    multiplier, optionally ReLU'd or zeroed; x = (k >> drop) * 2^-shift."""
    state = r["seed"]
    vals = []
    for _ in range(r["n"]):
        k = 0
        for _ in range(4):
            state, u = lcg(state)
            k += u % 1025 - 512
        state, u = lcg(state)
        if r["outlier_period"] and u % r["outlier_period"] == 0:
            k *= r["outlier_mult"]
        k = int(math.copysign(abs(k) >> r["drop"], k)) if k else 0
        if r["relu"] and k < 0:
            k = 0
        state, u = lcg(state)
        if r["zero_period"] and u % r["zero_period"] == 0:
            k = 0
        vals.append(k * 2.0 ** -r["shift"])
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[r["dtype"]]
    x = torch.tensor(vals, dtype=torch.float64)
    xt = x.to(dtype)
    assert torch.equal(xt.double(), x), "recipe value not exact in dtype"
    return xt.reshape(r["shape"])


def recipe(seed, n, shape, shift=9, drop=0, outlier_period=97, outlier_mult=8, relu=False, zero_period=0,
           dtype="float32"):
    assert math.prod(shape) == n
    return dict(seed=seed, n=n, shape=shape, shift=shift, drop=drop, outlier_period=outlier_period,
                outlier_mult=outlier_mult, relu=relu, zero_period=zero_period, dtype=dtype)


PERCENTILES = [dict(method="percentile", percentile=p) for p in (99.99, 99.9, 99.0, 50.0, 100.0, 0.0)]
ENTROPY_ALL = [
    dict(method="entropy", num_bits=8, unsigned=False),
    dict(method="entropy", num_bits=8, unsigned=True),
    dict(method="entropy", num_bits=4, unsigned=False),
    dict(method="entropy", num_bits=8, unsigned=False, stride=3, start_bin=100),
]
ENTROPY_ONE = [dict(method="entropy", num_bits=8, unsigned=False)]

# The entropy search is O(bins^2) in Python, so most cases use fewer bins than the default 2048.
CASES = [
    dict(name="single_gauss", num_bins=2048, queries=PERCENTILES + ENTROPY_ALL,
         batches=[recipe(1, 6000, [60, 100])]),
    dict(name="grow_three_batches", num_bins=512, queries=PERCENTILES + ENTROPY_ALL,
         batches=[recipe(2, 3000, [3000], outlier_period=0), recipe(3, 2000, [40, 50], outlier_mult=3),
                  recipe(4, 2500, [50, 50], outlier_mult=16)]),
    dict(name="shrink_then_grow", num_bins=512, queries=PERCENTILES + ENTROPY_ONE,
         batches=[recipe(5, 2000, [2000]), recipe(6, 2000, [2000], shift=11), recipe(7, 1500, [1500], shift=8)]),
    dict(name="relu_bf16_zeros", num_bins=512, queries=PERCENTILES + ENTROPY_ONE,
         batches=[recipe(8, 4096, [4, 1024], drop=5, outlier_mult=2, relu=True, zero_period=5, dtype="bfloat16"),
                  recipe(9, 4096, [4, 1024], drop=5, outlier_mult=2, relu=True, zero_period=7, dtype="bfloat16")]),
    dict(name="skip_zeros", num_bins=512, skip_zeros=True, queries=PERCENTILES + ENTROPY_ONE,
         batches=[recipe(10, 3000, [3000], zero_period=3), recipe(11, 3000, [3000], zero_period=2, outlier_mult=4)]),
    dict(name="constant", num_bins=512, queries=PERCENTILES + ENTROPY_ONE,
         batches=[dict(constant=1.0, n=500, shape=[500]), dict(constant=-1.0, n=300, shape=[300])]),
    # The second batch grows the histogram to 7212 bins (long float64 sums in the entropy search).
    dict(name="wide_extension", num_bins=2048,
         queries=PERCENTILES[:2] + [dict(method="entropy", num_bits=8, unsigned=False, stride=16)],
         batches=[recipe(12, 3000, [3000], outlier_period=0),
                  recipe(13, 3000, [3000], outlier_period=3, outlier_mult=4)]),
]


def batch_tensor(b):
    if "constant" in b:
        return torch.full(b["shape"], b["constant"])
    return make_batch(b)


def main():
    out = dict(
        generator="tests/unit/calib/gen_histogram_golden.py",
        modelopt_version=modelopt.__version__,
        torch_version=torch.__version__,
        numpy_version=np.__version__,
        scipy_version=scipy.__version__,
        cases=[],
    )
    for case in CASES:
        xs = [batch_tensor(b) for b in case["batches"]]
        results = []
        hist = edges = None
        for q in case["queries"]:
            cal = HistogramCalibrator(num_bits=q.get("num_bits", 8), unsigned=q.get("unsigned", False),
                                      num_bins=case["num_bins"], skip_zeros=case.get("skip_zeros", False))
            for x in xs:
                cal.collect(x)
            if hist is None:
                hist = cal._calib_hist.int().tolist()
                edges = cal._calib_bin_edges.float()
            kwargs = {k: q[k] for k in ("stride", "start_bin", "percentile") if k in q}
            amax = cal.compute_amax(q["method"], **kwargs)
            results.append(dict(query=q, amax=float(amax.float().item())))
        out["cases"].append(dict(
            name=case["name"],
            num_bins=case["num_bins"],
            skip_zeros=case.get("skip_zeros", False),
            batches=case["batches"],
            checksums=[float(x.double().abs().sum().item()) for x in xs],
            hist=hist,
            num_edges=int(edges.numel()),
            edge1=float(edges[1].item()),
            edge_last=float(edges[-1].item()),
            results=results,
        ))
        print(case["name"], len(hist), [r["amax"] for r in results], flush=True)
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "histogram_golden.json")
    with open(path, "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")
    print("wrote", path, os.path.getsize(path), "bytes")


if __name__ == "__main__":
    main()
