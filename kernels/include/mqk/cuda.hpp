#pragma once
/// CUDA kernels: the same numerics as mqk/ref.hpp over device pointers and a stream, bit for bit
/// (the per-element arithmetic is the shared code of mqk/detail/numerics.hpp; tests/cuda checks
/// every kernel x dtype x odd shape against the reference). The element type is chosen by DType
/// (float, __half,
/// __nv_bfloat16); computation is fp32 and the output has the input's dtype. Every launch checks
/// the launch status and throws mqk::CudaError on failure or on invalid arguments. Launches are
/// asynchronous on `stream`; amax arguments are device pointers.
///
/// Design: elementwise kernels (INT, FP8, amax) are grid-stride loops over 16-byte vectors. Block
/// kernels (NVFP4, MX) give each thread V consecutive 16-byte vectors (V = 2 by default where a
/// block has at least two) and each block to G = block*sizeof(T)/(16 V) consecutive lanes, reducing
/// the block max with warp shuffles when G > 1; they need cols % block == 0, 16-byte aligned x and
/// y and block*sizeof(T)/16 a power of two <= 32, else a one-thread-per-block scalar path runs
/// (partial last blocks, any block size). NVFP4 on bf16/fp16 compares packed pairs of elements (see
/// block_quant.cu). Example (bf16 weight (out, in), NVFP4 with its global amax on device):
///
///   mqk::launch_nvfp4_fake_quant(w, w_q, mqk::DType::kBF16, out, in, 16, d_global_amax, stream);
#include <cuda_runtime_api.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "mqk/ref.hpp"

namespace mqk {

class CudaError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class DType : int { kF32 = 0, kF16, kBF16 };

/// Number of visible CUDA devices; 0 (never an error) on a machine without a GPU or driver.
int cuda_device_count();

/// INT-N fake quant (ref: int_fake_quant_ref, same IntZeroAmaxMode meaning). Unlike the reference,
/// a negative input with is_unsigned does not raise (the device cannot): it is clamped to 0.
/// Callers check the sign on the host side.
void launch_int_fake_quant(const void* x, void* y, DType dt, int64_t n, const float* amax,
                           AmaxLayout layout, int num_bits, bool is_unsigned, bool narrow_range,
                           cudaStream_t stream,
                           IntZeroAmaxMode zero = IntZeroAmaxMode::kCudaKernel);
/// FP8 E4M3 fake quant (ref: fp8_fake_quant_ref, same Fp8ScaleMode meaning).
void launch_fp8_fake_quant(const void* x, void* y, DType dt, int64_t n, const float* amax,
                           AmaxLayout layout, cudaStream_t stream,
                           Fp8ScaleMode mode = Fp8ScaleMode::kDivide);
/// NVFP4 fake quant (ref: nvfp4_fake_quant_ref). global_amax is a device pointer to one float.
void launch_nvfp4_fake_quant(const void* x, void* y, DType dt, int64_t rows, int64_t cols,
                             int block, const float* global_amax, cudaStream_t stream);
void launch_nvfp4_static_fake_quant(const void* x, void* y, DType dt, int64_t rows, int64_t cols,
                                    int block, const float* block_amax, const float* global_amax,
                                    bool four_over_six, cudaStream_t stream);
/// MX fake quant along cols (ref: mx_fake_quant_ref); any block >= 1 (ModelOpt uses 8, 16, 32).
void launch_mx_fake_quant(const void* x, void* y, DType dt, int64_t rows, int64_t cols, int block,
                          ElemFormat elem, cudaStream_t stream);
/// Tuning knob of the vectorised block kernels (benchmarks): 16-byte vectors per thread, 1 or 2
/// (default 2). Results do not depend on it. Not thread-safe: set it before launching.
void set_block_quant_vectors_per_thread(int vectors);
/// out: one float (device); max |x| over n elements (NaN propagates; 0 for n == 0). out is first
/// zeroed with cudaMemsetAsync on `stream`.
void launch_amax(const void* x, DType dt, int64_t n, float* out, cudaStream_t stream);

}  // namespace mqk
