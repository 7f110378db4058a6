#pragma once
/// CUDA kernels: the same numerics as mqk/ref.hpp over device pointers and a stream. T is float,
/// __half or __nv_bfloat16 (declared through the launch_* overloads below); computation is in fp32.
/// Every launch checks the launch status (MQK_CUDA_LAUNCH_CHECK) and throws mqk::CudaError on failure.
#include <cstdint>
#include <stdexcept>
#include <string>

#include <cuda_runtime_api.h>

#include "mqk/ref.hpp"

namespace mqk {

class CudaError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class DType : int { kF32 = 0, kF16, kBF16 };

/// Number of visible CUDA devices; 0 (never an error) on a machine without a GPU or driver.
int cuda_device_count();

void launch_int_fake_quant(const void* x, void* y, DType dt, int64_t n, const float* amax,
                           AmaxLayout layout, int num_bits, bool is_unsigned, bool narrow_range,
                           cudaStream_t stream);
void launch_fp8_fake_quant(const void* x, void* y, DType dt, int64_t n, const float* amax,
                           AmaxLayout layout, cudaStream_t stream,
                           Fp8ScaleMode mode = Fp8ScaleMode::kDivide);
/// global_amax is a device pointer to one float.
void launch_nvfp4_fake_quant(const void* x, void* y, DType dt, int64_t rows, int64_t cols, int block,
                             const float* global_amax, cudaStream_t stream);
void launch_nvfp4_static_fake_quant(const void* x, void* y, DType dt, int64_t rows, int64_t cols,
                                    int block, const float* block_amax, const float* global_amax,
                                    bool four_over_six, cudaStream_t stream);
void launch_mx_fake_quant(const void* x, void* y, DType dt, int64_t rows, int64_t cols, int block,
                          ElemFormat elem, cudaStream_t stream);
/// out: one float (device); max |x| over n elements.
void launch_amax(const void* x, DType dt, int64_t n, float* out, cudaStream_t stream);

}  // namespace mqk
