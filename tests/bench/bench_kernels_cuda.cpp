// Fake-quant kernel bandwidth on the GPU against a device-to-device copy of the same bytes.
// Usage: bench_kernels_cuda [rows cols iters]   (default 8192 8192 50). Prints a markdown table:
// median time per call (cudaEvent, after warmup) and effective bandwidth (bytes read + written).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "mqk/cuda.hpp"

namespace {

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}

float median_ms(const std::function<void()>& fn, int iters, cudaStream_t s) {
  for (int i = 0; i < 5; ++i) fn();
  check(cudaStreamSynchronize(s), "warmup");
  cudaEvent_t a, b;
  check(cudaEventCreate(&a), "event");
  check(cudaEventCreate(&b), "event");
  std::vector<float> ms(iters);
  for (int i = 0; i < iters; ++i) {
    check(cudaEventRecord(a, s), "record");
    fn();
    check(cudaEventRecord(b, s), "record");
    check(cudaEventSynchronize(b), "sync");
    check(cudaEventElapsedTime(&ms[i], a, b), "elapsed");
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::nth_element(ms.begin(), ms.begin() + iters / 2, ms.end());
  return ms[iters / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t rows = argc > 1 ? std::atoll(argv[1]) : 8192;
  const int64_t cols = argc > 2 ? std::atoll(argv[2]) : 8192;
  const int iters = argc > 3 ? std::atoi(argv[3]) : 50;
  if (mqk::cuda_device_count() == 0) {
    std::printf("no CUDA device\n");
    return 0;
  }
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, 0), "props");
  const int64_t n = rows * cols;
  const size_t bytes = static_cast<size_t>(n) * sizeof(__nv_bfloat16);

  std::vector<__nv_bfloat16> host(n);
  std::mt19937 rng(0);
  std::normal_distribution<float> d(0.0f, 1.0f);
  for (auto& v : host) v = __float2bfloat16_rn(d(rng));

  void *x = nullptr, *y = nullptr;
  float *amax = nullptr, *block_amax = nullptr;
  check(cudaMalloc(&x, bytes), "malloc x");
  check(cudaMalloc(&y, bytes), "malloc y");
  check(cudaMalloc(&amax, sizeof(float)), "malloc amax");
  check(cudaMalloc(&block_amax, static_cast<size_t>(n / 16) * sizeof(float)), "malloc block amax");
  check(cudaMemcpy(x, host.data(), bytes, cudaMemcpyHostToDevice), "upload");
  cudaStream_t s;
  check(cudaStreamCreate(&s), "stream");
  mqk::launch_amax(x, mqk::DType::kBF16, n, amax, s);
  {
    std::vector<float> ba(n / 16, 4.0f);
    check(cudaMemcpy(block_amax, ba.data(), ba.size() * sizeof(float), cudaMemcpyHostToDevice),
          "upload amax");
  }
  check(cudaStreamSynchronize(s), "sync");

  using mqk::DType;
  using mqk::ElemFormat;
  struct Row {
    std::string name;
    std::function<void()> fn;
    double traffic;  // bytes moved per call
  };
  const double rw = 2.0 * static_cast<double>(bytes);
  const std::vector<Row> table = {
      {"cudaMemcpyAsync D2D (reference)",
       [&] { check(cudaMemcpyAsync(y, x, bytes, cudaMemcpyDeviceToDevice, s), "copy"); }, rw},
      {"nvfp4 dynamic (block 16)",
       [&] { mqk::launch_nvfp4_fake_quant(x, y, DType::kBF16, rows, cols, 16, amax, s); }, rw},
      {"nvfp4 static (block 16)",
       [&] {
         mqk::launch_nvfp4_static_fake_quant(x, y, DType::kBF16, rows, cols, 16, block_amax, amax,
                                             false, s);
       },
       rw + static_cast<double>(n / 16) * 4},
      {"nvfp4 dynamic (block 16), 1 vector/thread",
       [&] {
         mqk::set_block_quant_vectors_per_thread(1);
         mqk::launch_nvfp4_fake_quant(x, y, DType::kBF16, rows, cols, 16, amax, s);
         mqk::set_block_quant_vectors_per_thread(2);
       },
       rw},
      {"nvfp4 static (block 16), 1 vector/thread",
       [&] {
         mqk::set_block_quant_vectors_per_thread(1);
         mqk::launch_nvfp4_static_fake_quant(x, y, DType::kBF16, rows, cols, 16, block_amax, amax,
                                             false, s);
         mqk::set_block_quant_vectors_per_thread(2);
       },
       rw + static_cast<double>(n / 16) * 4},
      {"fp8 e4m3 per-tensor",
       [&] { mqk::launch_fp8_fake_quant(x, y, DType::kBF16, n, amax, {}, s); }, rw},
      {"int8 per-tensor",
       [&] { mqk::launch_int_fake_quant(x, y, DType::kBF16, n, amax, {}, 8, false, false, s); },
       rw},
      {"mxfp8 e4m3 (block 32)",
       [&] { mqk::launch_mx_fake_quant(x, y, DType::kBF16, rows, cols, 32, ElemFormat::kE4M3, s); },
       rw},
      {"mxfp4 e2m1 (block 32)",
       [&] { mqk::launch_mx_fake_quant(x, y, DType::kBF16, rows, cols, 32, ElemFormat::kE2M1, s); },
       rw},
      {"mxfp4 e2m1 (block 32), 1 vector/thread",
       [&] {
         mqk::set_block_quant_vectors_per_thread(1);
         mqk::launch_mx_fake_quant(x, y, DType::kBF16, rows, cols, 32, ElemFormat::kE2M1, s);
         mqk::set_block_quant_vectors_per_thread(2);
       },
       rw},
      {"amax (read only)", [&] { mqk::launch_amax(x, DType::kBF16, n, amax, s); },
       static_cast<double>(bytes)},
  };

  std::printf("device: %s (%d SMs), bf16 %lld x %lld (%.1f MiB), median of %d after 5 warmup\n\n",
              prop.name, prop.multiProcessorCount, static_cast<long long>(rows),
              static_cast<long long>(cols), static_cast<double>(bytes) / (1 << 20), iters);
  std::printf("| kernel | median ms | GB/s (read+write) | vs D2D copy |\n|---|---:|---:|---:|\n");
  double copy_gbs = 0;
  for (const auto& r : table) {
    const float ms = median_ms(r.fn, iters, s);
    const double gbs = r.traffic / (ms * 1e-3) / 1e9;
    if (copy_gbs == 0) copy_gbs = gbs;
    std::printf("| %s | %.3f | %.0f | %.0f%% |\n", r.name.c_str(), ms, gbs, 100.0 * gbs / copy_gbs);
  }
  check(cudaGetLastError(), "final");
  cudaStreamDestroy(s);
  cudaFree(x);
  cudaFree(y);
  cudaFree(amax);
  cudaFree(block_amax);
  return 0;
}
