#!/usr/bin/env python3
"""ModelOpt 0.47.0's own GPU fake-quant speed, next to a device-to-device copy, in one process.

The counterpart of bench_kernels_cuda (same tensor: bf16 8192 x 8192, same table format) for the
kernels ModelOpt's TensorQuantizer uses by default on an H100:
  nvfp4 dynamic   Triton fp4_fake_quant_block (tensor_quant._dynamic_block_quantize_impl on sm >= 8.9)
  nvfp4 static    Triton static_blockwise_fp4_fake_quant (StaticBlockScaleQuantizer's forward)
  fp8 per-tensor  CUDA extension fake_e4m3fy (scaled_e4m3_impl, scalar amax)
  int8 per-tensor CUDA extension fake_tensor_quant (fake_quant_impl)
  mxfp8 / mxfp4   CUDA extension fused_amax_convert (block 32, E8M0 scales)
and, as "TensorQuantizer ..." rows, the whole calibrated TensorQuantizer.forward for NVFP4 and FP8.

Timing: torch.cuda events around `inner` back-to-back calls (so Python launch overhead overlaps the
GPU work instead of being timed), after 5 warm-up calls; the median over `iters` samples, divided by
`inner`. The copy row is x.clone() timed the same way. GB/s counts bytes read + written.

    python3 tests/bench/bench_gpu_modelopt.py [--rows 8192 --cols 8192 --iters 50 --inner 10]
        [--ours ours.md]   # also print ours-vs-ModelOpt from a bench_kernels_cuda table

Not a test: nothing is asserted (CONVENTIONS: benchmarks are separate programs).
"""

import argparse
import re
import statistics
import sys
import warnings

import torch

warnings.filterwarnings("ignore")


def median_ms(fn, iters, inner):
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    ts = []
    for _ in range(iters):
        a.record()
        for _ in range(inner):
            fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b) / inner)
    return statistics.median(ts)


def rows_modelopt(x, args):
    import modelopt
    from modelopt.torch.kernels.quantization import gemm as triton_kernel
    from modelopt.torch.quantization import extensions
    from modelopt.torch.quantization.config import QuantizerAttributeConfig
    from modelopt.torch.quantization.nn import TensorQuantizer

    print(f"ModelOpt {modelopt.__version__}, torch {torch.__version__}", file=sys.stderr)
    amax = x.abs().amax().float().reshape(())
    nb = x.numel() // 16
    block_amax = x.float().reshape(nb, 16).abs().amax(dim=1, keepdim=True)
    ext = extensions.get_cuda_ext(raise_if_failed=False)
    ext_fp8 = extensions.get_cuda_ext_fp8(raise_if_failed=False)
    ext_mx = extensions.get_cuda_ext_mx(raise_if_failed=False)

    def tq(cfg):
        q = TensorQuantizer(QuantizerAttributeConfig(**cfg)).cuda()
        q.disable_quant()
        q.enable_calib()
        with torch.no_grad():
            q(x)
        q.load_calib_amax()
        q.enable_quant()
        q.disable_calib()
        return q

    out = []
    out.append(("nvfp4 dynamic (block 16)", lambda: triton_kernel.fp4_fake_quant_block(x, amax)))
    out.append(("nvfp4 static (block 16)",
                lambda: triton_kernel.static_blockwise_fp4_fake_quant(x, block_amax, block_amax.amax())))
    if ext_fp8 is not None:
        out.append(("fp8 e4m3 per-tensor", lambda: ext_fp8.fake_e4m3fy(x, amax)))
    if ext is not None:
        out.append(("int8 per-tensor", lambda: ext.fake_tensor_quant(x, amax, 8, False, False)))
    if ext_mx is not None:
        out.append(("mxfp8 e4m3 (block 32)",
                    lambda: ext_mx.fused_amax_convert(x, 32, ext_mx.Types.E4M3, ext_mx.Types.E8M0, None)))
        out.append(("mxfp4 e2m1 (block 32)",
                    lambda: ext_mx.fused_amax_convert(x, 32, ext_mx.Types.E2M1, ext_mx.Types.E8M0, None)))
    for name, cfg in [
        ("TensorQuantizer nvfp4 dynamic", {"num_bits": (2, 1),
                                           "block_sizes": {-1: 16, "type": "dynamic", "scale_bits": (4, 3)}}),
        ("TensorQuantizer fp8 per-tensor", {"num_bits": (4, 3), "axis": None}),
    ]:
        try:
            q = tq(cfg)
            out.append((name, lambda q=q: q(x)))
        except Exception as e:  # a config ModelOpt rejects on this machine: reported, not fatal
            print(f"{name}: {type(e).__name__}: {e}", file=sys.stderr)
    return out


def parse_table(path):
    rows = {}
    for line in open(path):
        m = re.match(r"\|\s*([^|]+?)\s*\|\s*([0-9.]+)\s*\|\s*([0-9.]+)\s*\|", line)
        if m:
            rows[m.group(1)] = (float(m.group(2)), float(m.group(3)))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=8192)
    ap.add_argument("--cols", type=int, default=8192)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--inner", type=int, default=10)
    ap.add_argument("--ours", default=None, help="bench_kernels_cuda output to compare with")
    args = ap.parse_args()
    torch.manual_seed(0)
    x = torch.randn(args.rows, args.cols, device="cuda").to(torch.bfloat16)
    nbytes = x.numel() * x.element_size()
    rw = 2.0 * nbytes
    table = [("torch x.clone() D2D (reference)", lambda: x.clone(), rw)]
    for name, fn in rows_modelopt(x, args):
        table.append((name, fn, rw + (x.numel() // 16 * 4 if "static" in name else 0)))
    p = torch.cuda.get_device_properties(0)
    print(f"device: {p.name} ({p.multi_processor_count} SMs), bf16 {args.rows} x {args.cols} "
          f"({nbytes / 2**20:.1f} MiB), median of {args.iters} samples of {args.inner} calls after 5 warmup\n")
    print("| kernel (ModelOpt) | median ms | GB/s (read+write) | vs D2D copy |\n|---|---:|---:|---:|")
    copy_gbs = None
    res = {}
    for name, fn, traffic in table:
        try:
            ms = median_ms(fn, args.iters, args.inner)
        except Exception as e:
            print(f"| {name} | failed: {type(e).__name__}: {str(e)[:80]} | | |")
            continue
        gbs = traffic / (ms * 1e-3) / 1e9
        copy_gbs = copy_gbs or gbs
        res[name] = (ms, gbs)
        print(f"| {name} | {ms:.3f} | {gbs:.0f} | {100 * gbs / copy_gbs:.0f}% |", flush=True)
    if args.ours:
        ours = parse_table(args.ours)
        oc = ours.get("cudaMemcpyAsync D2D (reference)")
        print("\n| kernel | mqdist ms | mqdist GB/s | mqdist vs copy | ModelOpt ms | ModelOpt GB/s | speedup vs ModelOpt |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for name, (oms, ogbs) in ours.items():
            mo = res.get(name)
            rel = f"{100 * ogbs / oc[1]:.0f}%" if oc else ""
            mstr = f"{mo[0]:.3f} | {mo[1]:.0f} | {mo[0] / oms:.1f}x" if mo else "- | - | -"
            print(f"| {name} | {oms:.3f} | {ogbs:.0f} | {rel} | {mstr} |")


if __name__ == "__main__":
    main()
