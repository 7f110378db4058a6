// Block fake quant along the last dim (NVFP4 dynamic and static, MX). Fast path: when the blocks tile
// the rows exactly and are a whole number of 16-byte vectors, each thread owns one vector and a group
// of G = block * sizeof(T) / 16 consecutive lanes owns one block; the block max is reduced with warp
// shuffles, so every load and store is a coalesced 16-byte access. Otherwise (partial last block,
// misaligned pointers, odd block sizes) one thread handles one block with scalar accesses.
#include "common.cuh"

namespace mqk {
namespace {

using namespace cuda_detail;

struct Nvfp4DynamicOp {
  static constexpr bool kNeedsMax = true;
  const float* global_amax;
  __device__ float scale(float bmax, int64_t) const {
    return detail::nvfp4_block_scale(bmax, detail::nvfp4_global_scale(*global_amax));
  }
  __device__ float quant(float x, float s) const { return detail::nvfp4_quant_one(x, s); }
};

struct Nvfp4StaticOp {
  static constexpr bool kNeedsMax = false;
  const float* block_amax;
  const float* global_amax;
  bool four_over_six;
  __device__ float scale(float, int64_t bi) const {
    const detail::Fp8Scales fp8 = detail::fp8_scales(detail::nvfp4_static_scale_amax(*global_amax, four_over_six));
    return detail::nvfp4_static_block_scale(block_amax[bi], fp8);
  }
  __device__ float quant(float x, float s) const { return detail::nvfp4_quant_one(x, s); }
};

// Scalar constants of an element format: usable by value in device code (the traits table itself is
// host data).
template <ElemFormat F>
struct MxOp {
  static constexpr bool kNeedsMax = true;
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

// Each warp iteration handles kUnroll independent strips of 32 vectors, loads first, so that more
// 16-byte loads are in flight per thread while the shuffles of the previous strip resolve.
constexpr int kUnroll = 2;

template <typename T, int G, typename Op>
__global__ void __launch_bounds__(kThreads) block_vec_kernel(const T* __restrict__ x, T* __restrict__ y,
                                                             int64_t nblocks, Op op) {
  constexpr int kVec = Vec16<T>::kVec;
  const int lane = threadIdx.x & 31;
  const int64_t total = nblocks * G;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  // Warp-uniform trip count: every lane runs every iteration, so the shuffles see the full warp.
  for (int64_t base = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x - lane; base < total;
       base += stride * kUnroll) {
    float buf[kUnroll][kVec];
    float m[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t v = base + u * stride + lane;
      m[u] = 0.0f;
      if (v < total) {
        load16(x + v * kVec, buf[u]);
        if constexpr (Op::kNeedsMax) {
#pragma unroll
          for (int k = 0; k < kVec; ++k) m[u] = detail::absmax_update(m[u], buf[u][k]);
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
#pragma unroll
        for (int k = 0; k < kVec; ++k) buf[u][k] = op.quant(buf[u][k], s);
        store16(y + v * kVec, buf[u]);
      }
    }
  }
}

template <typename T, typename Op>
__global__ void block_scalar_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t rows, int64_t cols,
                                    int block, Op op) {
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
