// Block fake quant along the last dim (NVFP4 dynamic and static, MX). Fast path: when the blocks tile
// the rows exactly and are a whole number of 16-byte vectors, each thread owns one vector and a group
// of G = block * sizeof(T) / 16 consecutive lanes owns one block; the block max is reduced with warp
// shuffles, so every load and store is a coalesced 16-byte access. Otherwise (partial last block,
// misaligned pointers, odd block sizes) one thread handles one block with scalar accesses.
#include "common.cuh"

namespace mqk {
namespace {

using namespace cuda_detail;

// NVFP4 elements without a per-element division, bit-identical to detail::nvfp4_quant_one.
//
// The reference computes a = RN(|x| / s) (IEEE fp32) and then the E2M1 index
//   (a > 0.25) + (a >= 0.75) + (a > 1.25) + (a >= 1.75) + (a > 2.5) + (a >= 3.5) + (a > 5).
// Rounding is monotone, so each test is a test on the exact quotient r = |x| / s against a midpoint m
// of two neighbouring fp32 numbers: RN(r) >= t  <=>  r >= t - ulp/2 (the tie goes to t, whose last
// significand bit is 0) and RN(r) > t  <=>  r > t + ulp/2 (the tie goes back to t). That gives
//   m = 0.25 + 2^-26, 0.75 - 2^-25, 1.25 + 2^-24, 1.75 - 2^-24, 2.5 + 2^-23, 3.5 - 2^-23, 5 + 2^-22,
// each an odd 25-bit integer times a power of two. r >= m  <=>  |x| >= s * m, and s * m (s an fp32,
// odd 24-bit significand times the odd 25-bit one) has more than 24 significant bits, so it is never
// an fp32: |x| >= s * m  <=>  |x| >= RU(s * m), the smallest fp32 above it, and ">" and ">=" agree.
// So per block the 7 thresholds c_i = RU(s * m_i) are computed once, with one fused multiply-add
// rounded upwards, fma_ru(s, t_i, s * d_i) (s * d_i is exact for 2^-100 <= s <= FLT_MAX; any other s,
// also NaN, subnormal and Inf, takes the exact double product and a rounded-up conversion), and each
// element costs 7 compares and 7 selects among the block's 8 products q_k * s (the reference's
// q * block_scale, the same fp32 multiplication). The compares are written as !(|x| < c_i), so a
// NaN element selects 6 like the reference's NaN quotient. Checked against detail::nvfp4_quant_one
// on 10^9 (x, s) pairs around every threshold (s over all binades, subnormal, 0, Inf, NaN) on the
// CPU, and by the GPU tests (tests/cuda, including exact E2M1 ties).
struct E2m1Bins {
  float c[7];
  float v[8];
};

__device__ __forceinline__ E2m1Bins e2m1_bins(float s) {
  constexpr float kT[7] = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f};
  constexpr float kD[7] = {0x1p-26f, -0x1p-25f, 0x1p-24f, -0x1p-24f, 0x1p-23f, -0x1p-23f, 0x1p-22f};
  constexpr float kQ[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
  E2m1Bins b;
  if (s >= 0x1p-100f && s <= 3.40282347e38f) {
#pragma unroll
    for (int i = 0; i < 7; ++i) b.c[i] = __fmaf_ru(s, kT[i], s * kD[i]);
  } else {
#pragma unroll
    for (int i = 0; i < 7; ++i)
      b.c[i] = __double2float_ru(static_cast<double>(s) * (static_cast<double>(kT[i]) + static_cast<double>(kD[i])));
  }
#pragma unroll
  for (int k = 0; k < 8; ++k) b.v[k] = kQ[k] * s;
  return b;
}

__device__ __forceinline__ float nvfp4_quant_bins(float x, const E2m1Bins& b) {
  const float ax = detail::abs_f(x);
  float v = b.v[0];
#pragma unroll
  for (int i = 0; i < 7; ++i) v = ax < b.c[i] ? v : b.v[i + 1];
  return detail::apply_sign_ge0(x, v);
}

// setup() runs once per thread before the grid-stride loop: it reads the per-tensor amax and derives
// the per-tensor constants, so that the per-block work is only the block's own scale.
struct Nvfp4DynamicOp {
  static constexpr bool kNeedsMax = true;
  const float* global_amax;
  float gs = 0.0f;
  __device__ void setup() { gs = detail::nvfp4_global_scale(*global_amax); }
  __device__ E2m1Bins scale(float bmax, int64_t) const { return e2m1_bins(detail::nvfp4_block_scale(bmax, gs)); }
  __device__ float quant(float x, const E2m1Bins& b) const { return nvfp4_quant_bins(x, b); }
};

struct Nvfp4StaticOp {
  static constexpr bool kNeedsMax = false;
  const float* block_amax;
  const float* global_amax;
  bool four_over_six;
  detail::Fp8Scales fp8{};
  __device__ void setup() {
    fp8 = detail::fp8_scales(detail::nvfp4_static_scale_amax(*global_amax, four_over_six));
  }
  __device__ E2m1Bins scale(float, int64_t bi) const {
    return e2m1_bins(detail::nvfp4_static_block_scale(block_amax[bi], fp8));
  }
  __device__ float quant(float x, const E2m1Bins& b) const { return nvfp4_quant_bins(x, b); }
};

// Scalar constants of an element format: usable by value in device code (the traits table itself is
// host data).
template <ElemFormat F>
struct MxOp {
  static constexpr bool kNeedsMax = true;
  __device__ void setup() {}
  static constexpr int kMbits = elem_traits(F).mbits;
  static constexpr int kEmin = elem_traits(F).emin;
  static constexpr float kMax = elem_traits(F).max;
  static constexpr bool kInteger = elem_traits(F).integer;
  static constexpr bool kNanToMax = elem_traits(F).nan_to_max;
  __device__ detail::MxScales scale(float bmax, int64_t) const { return detail::mx_scales(bmax, kMax); }
  __device__ float quant(float x, detail::MxScales s) const {
    const detail::ElemGrid g{kMbits, kEmin, kMax, kInteger, kNanToMax};
    return detail::mx_quant_one(x, s, g);
  }
};

// Each warp iteration handles kUnroll independent strips of 32 vectors, loads first. With the NVFP4
// threshold path 1 is faster than 2 on the H100 (bf16 8192 x 8192: 2150 vs 1856 GB/s, same run; 2
// needs 76 registers a thread against 60); MX is not slower with 1 (2233 vs 2123 GB/s).
constexpr int kUnroll = 1;

template <typename T, int G, typename Op>
__global__ void __launch_bounds__(kThreads) block_vec_kernel(const T* __restrict__ x, T* __restrict__ y,
                                                             int64_t nblocks, Op op) {
  constexpr int kVec = Vec16<T>::kVec;
  op.setup();
  const int lane = threadIdx.x & 31;
  const int64_t total = nblocks * G;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  // Warp-uniform trip count: every lane runs every iteration, so the shuffles see the full warp.
  for (int64_t base = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x - lane; base < total;
       base += stride * kUnroll) {
    // Raw 16-byte vectors stay in registers as loaded (half the registers of fp32 copies for 16-bit
    // types) and are widened where used.
    Vec16<T> raw[kUnroll];
    float m[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t v = base + u * stride + lane;
      m[u] = 0.0f;
      if (v < total) {
        raw[u] = *reinterpret_cast<const Vec16<T>*>(x + v * kVec);
        if constexpr (Op::kNeedsMax) {
#pragma unroll
          for (int k = 0; k < kVec; ++k) m[u] = detail::absmax_update(m[u], to_f32(raw[u].v[k]));
        }
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if constexpr (Op::kNeedsMax) {
#pragma unroll
        for (int off = 1; off < G; off <<= 1)
          m[u] = detail::absmax_update(m[u], __shfl_xor_sync(0xffffffffu, m[u], off));
      }
      const int64_t v = base + u * stride + lane;
      if (v < total) {
        const auto s = op.scale(m[u], v / G);
        float buf[kVec];
#pragma unroll
        for (int k = 0; k < kVec; ++k) buf[k] = op.quant(to_f32(raw[u].v[k]), s);
        store16(y + v * kVec, buf);
      }
    }
  }
}

template <typename T, typename Op>
__global__ void block_scalar_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t rows, int64_t cols,
                                    int block, Op op) {
  op.setup();
  const int64_t nb = (cols + block - 1) / block;
  const int64_t total = rows * nb;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t bi = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; bi < total; bi += stride) {
    const int64_t r = bi / nb, c0 = (bi % nb) * block;
    const int64_t len = cols - c0 < block ? cols - c0 : block;
    const T* xb = x + r * cols + c0;
    T* yb = y + r * cols + c0;
    float m = 0.0f;
    if constexpr (Op::kNeedsMax) {
      for (int64_t i = 0; i < len; ++i) m = detail::absmax_update(m, to_f32(xb[i]));
    }
    const auto s = op.scale(m, bi);
    for (int64_t i = 0; i < len; ++i) yb[i] = from_f32<T>(op.quant(to_f32(xb[i]), s));
  }
}

template <typename T, typename Op>
void launch_vec(int g, const T* x, T* y, int64_t nblocks, Op op, cudaStream_t stream) {
  const int grid = grid_for(nblocks * g / kUnroll + 1);
  switch (g) {
    case 1: block_vec_kernel<T, 1><<<grid, kThreads, 0, stream>>>(x, y, nblocks, op); break;
    case 2: block_vec_kernel<T, 2><<<grid, kThreads, 0, stream>>>(x, y, nblocks, op); break;
    case 4: block_vec_kernel<T, 4><<<grid, kThreads, 0, stream>>>(x, y, nblocks, op); break;
    case 8: block_vec_kernel<T, 8><<<grid, kThreads, 0, stream>>>(x, y, nblocks, op); break;
    case 16: block_vec_kernel<T, 16><<<grid, kThreads, 0, stream>>>(x, y, nblocks, op); break;
    case 32: block_vec_kernel<T, 32><<<grid, kThreads, 0, stream>>>(x, y, nblocks, op); break;
    default: throw CudaError("mqk: internal: bad group size " + std::to_string(g));
  }
  MQK_CUDA_LAUNCH_CHECK();
}

template <typename Op>
void launch_blocks(const char* name, const void* x, void* y, DType dt, int64_t rows, int64_t cols, int block,
                   Op op, cudaStream_t stream) {
  if (rows < 0 || cols < 0 || block <= 0)
    throw CudaError(std::string(name) + ": invalid shape rows=" + std::to_string(rows) +
                    " cols=" + std::to_string(cols) + " block=" + std::to_string(block));
  if (rows == 0 || cols == 0) return;
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    const T* xt = static_cast<const T*>(x);
    T* yt = static_cast<T*>(y);
    const int64_t bytes = static_cast<int64_t>(block) * static_cast<int64_t>(sizeof(T));
    const int64_t g = bytes / 16;
    const bool vec = cols % block == 0 && bytes % 16 == 0 && g <= 32 && (g & (g - 1)) == 0 && aligned16(x) &&
                     aligned16(y);
    if (vec) {
      launch_vec(static_cast<int>(g), xt, yt, rows * (cols / block), op, stream);
    } else {
      const int64_t nb = (cols + block - 1) / block;
      block_scalar_kernel<T><<<grid_for(rows * nb), kThreads, 0, stream>>>(xt, yt, rows, cols, block, op);
      MQK_CUDA_LAUNCH_CHECK();
    }
  });
}

}  // namespace

void launch_nvfp4_fake_quant(const void* x, void* y, DType dt, int64_t rows, int64_t cols, int block,
                             const float* global_amax, cudaStream_t stream) {
  launch_blocks("launch_nvfp4_fake_quant", x, y, dt, rows, cols, block, Nvfp4DynamicOp{global_amax}, stream);
}

void launch_nvfp4_static_fake_quant(const void* x, void* y, DType dt, int64_t rows, int64_t cols,
                                    int block, const float* block_amax, const float* global_amax,
                                    bool four_over_six, cudaStream_t stream) {
  launch_blocks("launch_nvfp4_static_fake_quant", x, y, dt, rows, cols, block,
                Nvfp4StaticOp{block_amax, global_amax, four_over_six}, stream);
}

void launch_mx_fake_quant(const void* x, void* y, DType dt, int64_t rows, int64_t cols, int block,
                          ElemFormat elem, cudaStream_t stream) {
  const char* name = "launch_mx_fake_quant";
  switch (elem) {
    case ElemFormat::kE4M3: return launch_blocks(name, x, y, dt, rows, cols, block, MxOp<ElemFormat::kE4M3>{}, stream);
    case ElemFormat::kE5M2: return launch_blocks(name, x, y, dt, rows, cols, block, MxOp<ElemFormat::kE5M2>{}, stream);
    case ElemFormat::kE3M2: return launch_blocks(name, x, y, dt, rows, cols, block, MxOp<ElemFormat::kE3M2>{}, stream);
    case ElemFormat::kE2M3: return launch_blocks(name, x, y, dt, rows, cols, block, MxOp<ElemFormat::kE2M3>{}, stream);
    case ElemFormat::kE2M1: return launch_blocks(name, x, y, dt, rows, cols, block, MxOp<ElemFormat::kE2M1>{}, stream);
    case ElemFormat::kInt8: return launch_blocks(name, x, y, dt, rows, cols, block, MxOp<ElemFormat::kInt8>{}, stream);
  }
  throw CudaError("launch_mx_fake_quant: unknown element format " + std::to_string(static_cast<int>(elem)));
}

}  // namespace mqk
