// max|x| over a buffer. Magnitudes are compared as fp32 bit patterns (sign cleared), which orders
// finite < Inf < NaN, so the reduction is an unsigned max and the final step an atomicMax; a NaN
// anywhere propagates as torch's amax does.
#include "common.cuh"

namespace mqk {
namespace {

using namespace cuda_detail;

template <typename T, bool kVectorized>
__global__ void __launch_bounds__(kThreads) amax_kernel(const T* __restrict__ x, int64_t n,
                                                        unsigned int* __restrict__ out) {
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  unsigned int m = 0;
  auto update = [&m](float v) {
    const unsigned int b = detail::bits_of(v) & 0x7fffffffu;
    m = b > m ? b : m;
  };
  int64_t done = 0;
  if constexpr (kVectorized) {
    constexpr int kVec = Vec16<T>::kVec;
    const int64_t nvec = n / kVec;
    for (int64_t v = tid; v < nvec; v += stride) {
      float buf[kVec];
      load16(x + v * kVec, buf);
#pragma unroll
      for (int k = 0; k < kVec; ++k) update(buf[k]);
    }
    done = nvec * kVec;
  }
  for (int64_t i = done + tid; i < n; i += stride) update(to_f32(x[i]));

  for (int off = 16; off > 0; off >>= 1) {
    const unsigned int o = __shfl_xor_sync(0xffffffffu, m, off);
    m = o > m ? o : m;
  }
  __shared__ unsigned int warp_max[kThreads / 32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) warp_max[warp] = m;
  __syncthreads();
  if (warp == 0) {
    m = lane < kThreads / 32 ? warp_max[lane] : 0u;
    for (int off = 16; off > 0; off >>= 1) {
      const unsigned int o = __shfl_xor_sync(0xffffffffu, m, off);
      m = o > m ? o : m;
    }
    if (lane == 0) atomicMax(out, m);
  }
}

}  // namespace

void launch_amax(const void* x, DType dt, int64_t n, float* out, cudaStream_t stream) {
  // 0.0f has the bit pattern 0: the identity of the unsigned max (and amax of an empty tensor).
  MQK_CUDA_CHECK(cudaMemsetAsync(out, 0, sizeof(float), stream));
  if (n <= 0) return;
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    const T* xt = static_cast<const T*>(x);
    unsigned int* o = reinterpret_cast<unsigned int*>(out);
    if (aligned16(x)) {
      amax_kernel<T, true><<<grid_for(n / Vec16<T>::kVec + 1), kThreads, 0, stream>>>(xt, n, o);
    } else {
      amax_kernel<T, false><<<grid_for(n), kThreads, 0, stream>>>(xt, n, o);
    }
    MQK_CUDA_LAUNCH_CHECK();
  });
}

}  // namespace mqk
