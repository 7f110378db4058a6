// Per-element fake quant (INT-N, FP8 E4M3) with a per-tensor or per-channel amax: a grid-stride loop
// over 16-byte vectors, scalar tail.
#include "common.cuh"

namespace mqk {
namespace {

using namespace cuda_detail;

struct IntOp {
  detail::IntBounds b;
  IntZeroAmaxMode zero;
  __device__ float operator()(float x, float amax) const { return detail::int_fake_quant_one(x, amax, b, zero); }
};

struct Fp8Op {
  bool reciprocal;
  __device__ float operator()(float x, float amax) const {
    return detail::fp8_fake_quant_one(x, detail::fp8_scales(amax, reciprocal));
  }
};

template <typename T, bool kVectorized, bool kPerTensor, typename Op>
__global__ void elementwise_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t n,
                                   const float* __restrict__ amax, AmaxLayout layout, Op op) {
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const float amax0 = kPerTensor ? amax[0] : 0.0f;
  auto amax_of = [&](int64_t i) { return kPerTensor ? amax0 : amax[layout.index(i)]; };
  int64_t done = 0;
  if constexpr (kVectorized) {
    constexpr int kVec = Vec16<T>::kVec;
    const int64_t nvec = n / kVec;
    for (int64_t v = tid; v < nvec; v += stride) {
      float buf[kVec];
      load16(x + v * kVec, buf);
#pragma unroll
      for (int k = 0; k < kVec; ++k) buf[k] = op(buf[k], amax_of(v * kVec + k));
      store16(y + v * kVec, buf);
    }
    done = nvec * kVec;
  }
  for (int64_t i = done + tid; i < n; i += stride) y[i] = from_f32<T>(op(to_f32(x[i]), amax_of(i)));
}

template <typename Op>
void launch_elementwise(const void* x, void* y, DType dt, int64_t n, const float* amax, AmaxLayout layout,
                        Op op, cudaStream_t stream) {
  if (n <= 0) return;
  if (layout.axis_len < 1 || layout.inner < 1)
    throw CudaError("mqk: invalid AmaxLayout axis_len=" + std::to_string(layout.axis_len) +
                    " inner=" + std::to_string(layout.inner));
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    const T* xt = static_cast<const T*>(x);
    T* yt = static_cast<T*>(y);
    const bool vec = aligned16(x) && aligned16(y);
    const bool per_tensor = layout.axis_len == 1;
    const int grid = grid_for(vec ? n / Vec16<T>::kVec + 1 : n);
    if (vec && per_tensor)
      elementwise_kernel<T, true, true><<<grid, kThreads, 0, stream>>>(xt, yt, n, amax, layout, op);
    else if (vec)
      elementwise_kernel<T, true, false><<<grid, kThreads, 0, stream>>>(xt, yt, n, amax, layout, op);
    else if (per_tensor)
      elementwise_kernel<T, false, true><<<grid, kThreads, 0, stream>>>(xt, yt, n, amax, layout, op);
    else
      elementwise_kernel<T, false, false><<<grid, kThreads, 0, stream>>>(xt, yt, n, amax, layout, op);
    MQK_CUDA_LAUNCH_CHECK();
  });
}

}  // namespace

void launch_int_fake_quant(const void* x, void* y, DType dt, int64_t n, const float* amax,
                           AmaxLayout layout, int num_bits, bool is_unsigned, bool narrow_range,
                           cudaStream_t stream, IntZeroAmaxMode zero) {
  if (num_bits < 2 || num_bits > 16)
    throw CudaError("launch_int_fake_quant: num_bits must be in [2, 16], got " + std::to_string(num_bits));
  launch_elementwise(x, y, dt, n, amax, layout,
                     IntOp{detail::int_bounds(num_bits, is_unsigned, narrow_range), zero}, stream);
}

void launch_fp8_fake_quant(const void* x, void* y, DType dt, int64_t n, const float* amax,
                           AmaxLayout layout, cudaStream_t stream, Fp8ScaleMode mode) {
  launch_elementwise(x, y, dt, n, amax, layout, Fp8Op{mode == Fp8ScaleMode::kReciprocal}, stream);
}

}  // namespace mqk
