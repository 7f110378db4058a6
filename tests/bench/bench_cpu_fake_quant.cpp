// CPU fake-quant throughput of mq::quant::TensorQuantizer::forward, per format and dtype.
//
//   bench_cpu_fake_quant [--rows 4096] [--cols 4096] [--repeat 10] [--threads N] [--only SUBSTR]
//                        [--dtypes float32,bfloat16[,float16]]
//
// Each timed call is the fake quant of an already max-calibrated quantizer (as
// tests/bench/bench_cpu_modelopt.py times ModelOpt's), after 2 warm-up calls. Prints one row per
// (format, dtype): median and min wall time, and GB/s counting the input read plus the output
// written.
// --only keeps the formats whose name contains SUBSTR (e.g. `--only fp8`); --dtypes picks the input
// dtypes (as bench_cpu_modelopt.py's --dtypes).
// Not a test: nothing is asserted.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "mq/quant/tensor_quantizer.hpp"

namespace {

using mq::config::BlockSizes;
using mq::config::NumBits;
using mq::config::QuantizerAttributeConfig;

struct Format {
  std::string name;
  QuantizerAttributeConfig cfg;
};

std::vector<Format> formats() {
  std::vector<Format> f;
  QuantizerAttributeConfig c;
  f.push_back({"int8 per-tensor", c});
  c.axis = mq::config::Axis{{0}, false};
  f.push_back({"int8 per-channel (axis 0)", c});
  QuantizerAttributeConfig e;
  e.num_bits = NumBits::floating(4, 3);
  f.push_back({"fp8 e4m3 per-tensor", e});
  e.axis = mq::config::Axis{{0}, false};
  f.push_back({"fp8 e4m3 per-channel (axis 0)", e});
  QuantizerAttributeConfig i4;
  i4.num_bits = NumBits::integer(4);
  i4.block_sizes = BlockSizes{};
  i4.block_sizes->axes[-1] = 128;
  i4.block_sizes->type = "static";
  f.push_back({"int4 block 128 (static)", i4});
  QuantizerAttributeConfig n;
  n.num_bits = NumBits::floating(2, 1);
  n.block_sizes = BlockSizes{};
  n.block_sizes->axes[-1] = 16;
  n.block_sizes->type = "dynamic";
  n.block_sizes->scale_bits = NumBits::floating(4, 3);
  f.push_back({"nvfp4 dynamic block 16", n});
  QuantizerAttributeConfig ns = n;
  ns.block_sizes->type = "static";
  f.push_back({"nvfp4 static block 16", ns});
  QuantizerAttributeConfig m4;
  m4.num_bits = NumBits::floating(2, 1);
  m4.block_sizes = BlockSizes{};
  m4.block_sizes->axes[-1] = 32;
  m4.block_sizes->type = "dynamic";
  m4.block_sizes->scale_bits = NumBits::floating(8, 0);
  f.push_back({"mxfp4 block 32", m4});
  QuantizerAttributeConfig m8 = m4;
  m8.num_bits = NumBits::floating(4, 3);
  f.push_back({"mxfp8 block 32", m8});
  return f;
}

long arg(int argc, char** argv, const char* name, long dflt) {
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], name) == 0) return std::strtol(argv[i + 1], nullptr, 10);
  return dflt;
}

const char* sarg(int argc, char** argv, const char* name, const char* dflt) {
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], name) == 0) return argv[i + 1];
  return dflt;
}

}  // namespace

int main(int argc, char** argv) {
  const long rows = arg(argc, argv, "--rows", 4096);
  const long cols = arg(argc, argv, "--cols", 4096);
  const long repeat = std::max(1L, arg(argc, argv, "--repeat", 10));
  const long threads = arg(argc, argv, "--threads", 0);
  const std::string only = sarg(argc, argv, "--only", "");
  const std::string dtypes =
      std::string(",") + sarg(argc, argv, "--dtypes", "float32,bfloat16") + ",";
  if (threads > 0) at::set_num_threads(static_cast<int>(threads));
  std::printf("mqdist CPU fake quant: %ld x %ld, %ld timed calls after 2 warm-up, %d threads\n",
              rows, cols, repeat, at::get_num_threads());
  std::printf("%-32s %-9s %10s %10s %10s\n", "format", "dtype", "median ms", "min ms", "GB/s");
  at::manual_seed(0);
  const at::Tensor base = at::randn({rows, cols});
  for (at::ScalarType dt : {at::kFloat, at::kBFloat16, at::kHalf}) {
    const char* dname = dt == at::kFloat ? "float32" : dt == at::kBFloat16 ? "bfloat16" : "float16";
    if (dtypes.find(std::string(",") + dname + ",") == std::string::npos) continue;
    const at::Tensor x = base.to(dt);
    const double bytes =
        2.0 * static_cast<double>(x.numel()) * static_cast<double>(x.element_size());
    for (const auto& f : formats()) {
      if (f.name.find(only) == std::string::npos) continue;
      mq::quant::TensorQuantizer q(f.cfg);
      mq::quant::calibrate_and_fake_quant(q, x);
      for (int w = 0; w < 2; ++w) q.forward(x);
      std::vector<double> ms;
      for (long r = 0; r < repeat; ++r) {
        auto t0 = std::chrono::steady_clock::now();
        at::Tensor y = q.forward(x);
        auto t1 = std::chrono::steady_clock::now();
        ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
      }
      std::sort(ms.begin(), ms.end());
      const double med = ms[ms.size() / 2];
      std::printf("%-32s %-9s %10.2f %10.2f %10.2f\n", f.name.c_str(), dname, med, ms.front(),
                  bytes / (med * 1e-3) / 1e9);
    }
  }
  return 0;
}
