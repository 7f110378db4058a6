#pragma once
// Private helpers of the CUDA kernels: error checks, dtype dispatch, 16-byte vector loads/stores and
// launch geometry.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <type_traits>

#include "mqk/cuda.hpp"
#include "mqk/detail/numerics.hpp"

#define MQK_CUDA_CHECK(expr)                                                                       \
  do {                                                                                             \
    const cudaError_t mqk_err_ = (expr);                                                           \
    if (mqk_err_ != cudaSuccess)                                                                   \
      throw ::mqk::CudaError(std::string(__FILE__) + ":" + std::to_string(__LINE__) + ": " + #expr + \
                             ": " + cudaGetErrorString(mqk_err_));                                 \
  } while (0)

// After every <<<>>>: reports launch-configuration errors at the launch site.
#define MQK_CUDA_LAUNCH_CHECK() MQK_CUDA_CHECK(cudaGetLastError())

namespace mqk::cuda_detail {

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_f32(float v);
template <>
__device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half from_f32<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// kVec elements of T in one 16-byte transaction.
template <typename T>
struct alignas(16) Vec16 {
  static constexpr int kVec = 16 / static_cast<int>(sizeof(T));
  T v[kVec];
};

template <typename T>
__device__ __forceinline__ void load16(const T* p, float (&out)[Vec16<T>::kVec]) {
  const Vec16<T> raw = *reinterpret_cast<const Vec16<T>*>(p);
#pragma unroll
  for (int i = 0; i < Vec16<T>::kVec; ++i) out[i] = to_f32(raw.v[i]);
}

template <typename T>
__device__ __forceinline__ void store16(T* p, const float (&in)[Vec16<T>::kVec]) {
  Vec16<T> raw;
#pragma unroll
  for (int i = 0; i < Vec16<T>::kVec; ++i) raw.v[i] = from_f32<T>(in[i]);
  *reinterpret_cast<Vec16<T>*>(p) = raw;
}

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

constexpr int kThreads = 256;

// Enough blocks to fill the device several times over; kernels are grid-stride loops.
inline int grid_for(int64_t work_items) {
  static thread_local int sms = -1;
  if (sms < 0) {
    int dev = 0;
    MQK_CUDA_CHECK(cudaGetDevice(&dev));
    MQK_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  }
  const int64_t want = (work_items + kThreads - 1) / kThreads;
  const int64_t cap = static_cast<int64_t>(sms) * 16;
  return static_cast<int>(want < 1 ? 1 : (want < cap ? want : cap));
}

template <typename Fn>
void dispatch_dtype(DType dt, Fn&& fn) {
  switch (dt) {
    case DType::kF32: return fn(float{});
    case DType::kF16: return fn(__half{});
    case DType::kBF16: return fn(__nv_bfloat16{});
  }
  throw CudaError("mqk: unknown DType " + std::to_string(static_cast<int>(dt)));
}

}  // namespace mqk::cuda_detail
