// Block fake quant along the last dim (NVFP4 dynamic and static, MX). Fast path: when the blocks
// tile the rows exactly and are a whole number of 16-byte vectors, each thread owns V consecutive
// vectors (a chunk) and a group of G = block * sizeof(T) / (16 V) consecutive lanes owns one block;
// the block max is reduced with warp shuffles, so every load and store is a 16-byte access.
// Otherwise (partial last block, misaligned pointers, odd block sizes) one thread handles one block
// with scalar accesses. NVFP4 on 16-bit types compares packed element pairs (see E2m1PackedBins).
#include "common.cuh"

namespace mqk {
namespace {

using namespace cuda_detail;

// NVFP4 elements without a per-element division, bit-identical to detail::nvfp4_quant_one.
//
// The reference computes a = RN(|x| / s) (IEEE fp32) and then the E2M1 index
//   (a > 0.25) + (a >= 0.75) + (a > 1.25) + (a >= 1.75) + (a > 2.5) + (a >= 3.5) + (a > 5).
// Rounding is monotone, so each test is a test on the exact quotient r = |x| / s against a midpoint
// m of two neighbouring fp32 numbers: RN(r) >= t  <=>  r >= t - ulp/2 (the tie goes to t, whose
// last significand bit is 0) and RN(r) > t  <=>  r > t + ulp/2 (the tie goes back to t). That gives
//   m = 0.25 + 2^-26, 0.75 - 2^-25, 1.25 + 2^-24, 1.75 - 2^-24, 2.5 + 2^-23, 3.5 - 2^-23,
//       5 + 2^-22,
// each an odd 25-bit integer times a power of two. r >= m  <=>  |x| >= s * m, and s * m (s an fp32,
// odd 24-bit significand times the odd 25-bit one) has more than 24 significant bits, so it is
// never an fp32: |x| >= s * m  <=>  |x| >= RU(s * m), the smallest fp32 above it, and ">" and ">="
// agree. So per block the 7 thresholds c_i = RU(s * m_i) are computed once, with one fused
// multiply-add rounded upwards, fma_ru(s, t_i, s * d_i) (s * d_i is exact for 2^-100 <= s <=
// FLT_MAX; any other s, also NaN, subnormal and Inf, takes the exact double product and a
// rounded-up conversion), and each element costs 7 compares and 7 selects among the block's 8
// products q_k * s (the reference's q * block_scale, the same fp32 multiplication). The compares
// are written as !(|x| < c_i), so a NaN element selects 6 like the reference's NaN quotient.
// Checked against detail::nvfp4_quant_one on 10^9 (x, s) pairs around every threshold (s over all
// binades, subnormal, 0, Inf, NaN) on the CPU, and by the GPU tests (tests/cuda, including exact
// E2M1 ties).
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
      b.c[i] = __double2float_ru(static_cast<double>(s) *
                                 (static_cast<double>(kT[i]) + static_cast<double>(kD[i])));
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

// 16-bit element types (bf16, fp16) take a packed path: the 7 thresholds c_i and the 8 values q_k *
// s are rounded to T once per block and duplicated into both halves of a 32-bit word, and each pair
// of elements costs 7 packed compares (HSET2) and 7 bitwise selects (LOP3), with no conversion to
// fp32. Exactness: an element x of type T is a T value, so |x| >= c (c an fp32 threshold) <=> |x|
// >= RU_T(c), the smallest T value >= c (RU of an fp32 RU is the RU of the exact product, and an
// overflow gives +Inf, which no finite |x| reaches); the compares are unordered (NaN |x| selects 6,
// as above). The output is the reference's from_f32<T>(x >= 0 ? q*s : 0 - q*s): the T rounding is
// symmetric, so it is RN_T(q*s) with its sign bit flipped where x < 0 or NaN and q*s != 0 (the fp32
// product, before rounding: a product that rounds to a T zero still gives -0). The packed path only
// runs for block scales 2^-100 <= s <= FLT_MAX, where q*s = 0 exactly when q = 0, i.e. |x| < c_0;
// any other s (0, subnormal, Inf, NaN) runs the fp32 element code above for that block.
template <typename T>
struct Half2Of;
template <>
struct Half2Of<__half> {
  using type = __half2;
};
template <>
struct Half2Of<__nv_bfloat16> {
  using type = __nv_bfloat162;
};

template <typename T>
__device__ __forceinline__ uint32_t geu_mask(uint32_t a, uint32_t b) {
  using P = typename Half2Of<T>::type;
  return __hgeu2_mask(*reinterpret_cast<const P*>(&a), *reinterpret_cast<const P*>(&b));
}
template <typename T>
__device__ __forceinline__ uint32_t ltu_mask(uint32_t a, uint32_t b) {
  using P = typename Half2Of<T>::type;
  return __hltu2_mask(*reinterpret_cast<const P*>(&a), *reinterpret_cast<const P*>(&b));
}
__device__ __forceinline__ uint32_t dup16(unsigned short b) {
  return static_cast<uint32_t>(b) * 0x10001u;
}
// RU / RN of a positive fp32 (finite or +Inf, never NaN) to T, in both halves. For bf16 the
// rounding is integer arithmetic on the fp32 bits (a carry into the exponent is the correct next
// binade, and past the largest finite value it gives +Inf) instead of F2F conversions, which issue
// at a fraction of the ALU rate.
template <typename T>
__device__ __forceinline__ uint32_t dup_ru(float v) {
  if constexpr (std::is_same_v<T, __half>) {
    return dup16(__half_as_ushort(__float2half_ru(v)));
  } else {
    return __byte_perm(__float_as_uint(v) + 0xffffu, 0u, 0x3232);
  }
}
template <typename T>
__device__ __forceinline__ uint32_t dup_rn(float v) {
  if constexpr (std::is_same_v<T, __half>) {
    return dup16(__half_as_ushort(__float2half_rn(v)));
  } else {
    const uint32_t u = __float_as_uint(v);
    return __byte_perm(u + 0x7fffu + ((u >> 16) & 1u), 0u, 0x3232);
  }
}
// fp32 value of the T whose bits are the low 16 bits of b.
template <typename T>
__device__ __forceinline__ float f32_of_bits16(uint32_t b) {
  if constexpr (std::is_same_v<T, __half>)
    return __half2float(__ushort_as_half(static_cast<unsigned short>(b)));
  else
    return __uint_as_float(b << 16);
}

struct E2m1PackedBins {
  uint32_t c[7];
  uint32_t v[8];  // v[0] (= +0) unused
};

// False (bins unset) outside the packed path's scale range. For bf16 the values use exponent
// arithmetic: q*s for q = 0.5, 1, 2, 4 is s times a power of two, and 3s, 6s are 2x, 4x the fp32
// product 1.5s (exact scalings in fp32), so, RN_bf16 commuting with powers of two in the normal
// range, RN_bf16(q*s) is RN_bf16(s) or RN_bf16(RN_f32(1.5 s)) with 1 or 2 added to (or 1 taken
// from) the exponent field; s <= 2^124 keeps 6s and the rounded values finite, and 0.5 s >= 2^-101
// normal.
template <typename T>
__device__ __forceinline__ bool e2m1_packed_bins(float s, E2m1PackedBins& b) {
  constexpr float kT[7] = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f};
  constexpr float kD[7] = {0x1p-26f, -0x1p-25f, 0x1p-24f, -0x1p-24f, 0x1p-23f, -0x1p-23f, 0x1p-22f};
  constexpr float kQ[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
  constexpr bool kBf16 = std::is_same_v<T, __nv_bfloat16>;
  if (!(s >= 0x1p-100f && s <= (kBf16 ? 0x1p124f : 3.40282347e38f))) return false;
#pragma unroll
  for (int i = 0; i < 7; ++i) b.c[i] = dup_ru<T>(__fmaf_ru(s, kT[i], s * kD[i]));
  if constexpr (kBf16) {
    constexpr uint32_t kExp1 = 0x00800080u;  // +1 in both exponent fields
    const uint32_t one = dup_rn<T>(s), three_halves = dup_rn<T>(1.5f * s);
    b.v[1] = one - kExp1;
    b.v[2] = one;
    b.v[3] = three_halves;
    b.v[4] = one + kExp1;
    b.v[5] = three_halves + kExp1;
    b.v[6] = one + 2 * kExp1;
    b.v[7] = three_halves + 2 * kExp1;
  } else {
#pragma unroll
    for (int k = 1; k < 8; ++k) b.v[k] = dup_rn<T>(kQ[k] * s);
  }
  return true;
}

// Two elements (the halves of w) of a block with packed bins. kNoNan: the block has no NaN element
// (dynamic NVFP4: a NaN makes the block max NaN, and such blocks never reach the packed path), so
// "x < 0 or NaN" is the sign bit.
template <typename T, bool kNoNan>
__device__ __forceinline__ uint32_t nvfp4_quant_pair(uint32_t w, const E2m1PackedBins& b) {
  const uint32_t ax = w & 0x7fff7fffu;
  const uint32_t m0 = geu_mask<T>(ax, b.c[0]);
  uint32_t v = b.v[1] & m0;
#pragma unroll
  for (int i = 1; i < 7; ++i) {
    const uint32_t m = geu_mask<T>(ax, b.c[i]);
    v = (v & ~m) | (b.v[i + 1] & m);
  }
  const uint32_t neg = kNoNan ? w : ltu_mask<T>(w, 0u);
  return v ^ (neg & m0 & 0x80008000u);
}

// The fp32 element path for one chunk (V vectors) with block scale s, for blocks outside the packed
// path's scale range. Rare, so it is out of line and re-reads its input: inlined, its registers
// (the fp32 bins, the double-precision threshold fallback) would count against the occupancy of
// every block of the kernel.
template <typename T, int V>
__device__ __noinline__ void nvfp4_chunk_fp32(const T* __restrict__ x, T* __restrict__ y, float s) {
  constexpr int kVec = Vec16<T>::kVec;
  const E2m1Bins fb = e2m1_bins(s);
  for (int v = 0; v < V; ++v) {
    const Vec16<T> raw = *reinterpret_cast<const Vec16<T>*>(x + v * kVec);
    float buf[kVec];
#pragma unroll
    for (int k = 0; k < kVec; ++k) buf[k] = nvfp4_quant_bins(to_f32(raw.v[k]), fb);
    store16(y + v * kVec, buf);
  }
}

// NaN-propagating max of the magnitudes in both halves (packed HMNMX2); any NaN gives a NaN.
template <typename T>
__device__ __forceinline__ uint32_t hmax2_nan_bits(uint32_t a, uint32_t b) {
  using P = typename Half2Of<T>::type;
  const P r = __hmax2_nan(*reinterpret_cast<const P*>(&a), *reinterpret_cast<const P*>(&b));
  return *reinterpret_cast<const uint32_t*>(&r);
}

// setup() runs once per thread before the grid-stride loop: it reads the per-tensor amax and
// derives the per-tensor constants, so that the per-block work is only the block's own scale.
// block_scale() is the NVFP4 block scale s (packed path); scale()/quant() are the fp32 element
// path.
struct Nvfp4DynamicOp {
  static constexpr bool kNeedsMax = true;
  static constexpr bool kNvfp4 = true;
  const float* global_amax;
  float gs = 0.0f;
  __device__ void setup() { gs = detail::nvfp4_global_scale(*global_amax); }
  __device__ float block_scale(float bmax, int64_t) const {
    return detail::nvfp4_block_scale(bmax, gs);
  }
  __device__ E2m1Bins scale(float bmax, int64_t bi) const {
    return e2m1_bins(block_scale(bmax, bi));
  }
  __device__ float quant(float x, const E2m1Bins& b) const { return nvfp4_quant_bins(x, b); }
};

struct Nvfp4StaticOp {
  static constexpr bool kNeedsMax = false;
  static constexpr bool kNvfp4 = true;
  const float* block_amax;
  const float* global_amax;
  bool four_over_six;
  detail::Fp8Scales fp8{};
  __device__ void setup() {
    fp8 = detail::fp8_scales(detail::nvfp4_static_scale_amax(*global_amax, four_over_six));
  }
  __device__ float block_scale(float, int64_t bi) const {
    return detail::nvfp4_static_block_scale(block_amax[bi], fp8);
  }
  __device__ E2m1Bins scale(float bmax, int64_t bi) const {
    return e2m1_bins(block_scale(bmax, bi));
  }
  __device__ float quant(float x, const E2m1Bins& b) const { return nvfp4_quant_bins(x, b); }
};

// Scalar constants of an element format: usable by value in device code (the traits table itself is
// host data).
template <ElemFormat F>
struct MxOp {
  static constexpr bool kNeedsMax = true;
  static constexpr bool kNvfp4 = false;
  __device__ void setup() {}
  static constexpr int kMbits = elem_traits(F).mbits;
  static constexpr int kEmin = elem_traits(F).emin;
  static constexpr float kMax = elem_traits(F).max;
  static constexpr bool kInteger = elem_traits(F).integer;
  static constexpr bool kNanToMax = elem_traits(F).nan_to_max;
  __device__ detail::MxScales scale(float bmax, int64_t) const {
    return detail::mx_scales(bmax, kMax);
  }
  __device__ float quant(float x, detail::MxScales s) const {
    const detail::ElemGrid g{kMbits, kEmin, kMax, kInteger, kNanToMax};
    return detail::mx_quant_one(x, s, g);
  }
};

// Vectors per thread in the vectorised block kernel (set_block_quant_vectors_per_thread).
int g_vectors_per_thread = 2;

// One work item ("chunk") is V consecutive 16-byte vectors of one thread; a block is G consecutive
// chunks of G consecutive lanes (G * V = block * sizeof(T) / 16), whose max is reduced with warp
// shuffles when G > 1. V = 2 gives a bf16/fp16 block of 16 to one thread: no shuffle and the
// per-block work (block scale, thresholds) done once, at the cost of two half-coalesced 16-byte
// accesses per instruction (the pair covers whole 32-byte sectors).
// Minimum resident blocks per SM asked of the compiler (registers per thread <= 64K / (256 * it)).
#ifndef MQK_BLOCK_VEC_MIN_BLOCKS
#define MQK_BLOCK_VEC_MIN_BLOCKS 1
#endif

template <typename T, int G, int V, typename Op>
__global__ void __launch_bounds__(kThreads, MQK_BLOCK_VEC_MIN_BLOCKS)
    block_vec_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t nblocks, Op op) {
  constexpr int kVec = Vec16<T>::kVec;
  constexpr bool kPacked = Op::kNvfp4 && sizeof(T) == 2;
  op.setup();
  const int lane = threadIdx.x & 31;
  const int64_t total = nblocks * G;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  // Warp-uniform trip count: every lane runs every iteration, so the shuffles see the full warp.
  for (int64_t base = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x - lane;
       base < total; base += stride) {
    const int64_t c = base + lane;
    const bool active = c < total;
    // Raw 16-byte vectors stay in registers as loaded and are widened (or compared packed) where
    // used.
    Vec16<T> raw[V];
    float m = 0.0f;
    if (active) {
#pragma unroll
      for (int v = 0; v < V; ++v)
        raw[v] = *reinterpret_cast<const Vec16<T>*>(x + (c * V + v) * kVec);
      if constexpr (Op::kNeedsMax) {
        if constexpr (kPacked) {
          // Packed max of the magnitudes. Exact for numbers; a NaN anywhere gives a NaN block max
          // (its payload may differ from detail::absmax_update's, but such a block's outputs are
          // all NaN).
          uint32_t mx = 0;
#pragma unroll
          for (int v = 0; v < V; ++v) {
            const uint32_t* w = reinterpret_cast<const uint32_t*>(&raw[v]);
#pragma unroll
            for (int j = 0; j < 4; ++j) mx = hmax2_nan_bits<T>(mx, w[j] & 0x7fff7fffu);
          }
          mx = hmax2_nan_bits<T>(mx, __byte_perm(mx, 0, 0x1032));
          m = f32_of_bits16<T>(mx & 0xffffu);
        } else {
#pragma unroll
          for (int v = 0; v < V; ++v)
#pragma unroll
            for (int k = 0; k < kVec; ++k) m = detail::absmax_update(m, to_f32(raw[v].v[k]));
        }
      }
    }
    if constexpr (Op::kNeedsMax && G > 1) {
#pragma unroll
      for (int off = 1; off < G; off <<= 1)
        m = detail::absmax_update(m, __shfl_xor_sync(0xffffffffu, m, off));
    }
    if (!active) continue;
    const int64_t bi = c / G;
    if constexpr (kPacked) {
      const float s = op.block_scale(m, bi);
      E2m1PackedBins pb;
      if (e2m1_packed_bins<T>(s, pb)) {
#pragma unroll
        for (int v = 0; v < V; ++v) {
          uint4 out;
          const uint32_t* w = reinterpret_cast<const uint32_t*>(&raw[v]);
          out.x = nvfp4_quant_pair<T, Op::kNeedsMax>(w[0], pb);
          out.y = nvfp4_quant_pair<T, Op::kNeedsMax>(w[1], pb);
          out.z = nvfp4_quant_pair<T, Op::kNeedsMax>(w[2], pb);
          out.w = nvfp4_quant_pair<T, Op::kNeedsMax>(w[3], pb);
          *reinterpret_cast<uint4*>(y + (c * V + v) * kVec) = out;
        }
        continue;
      }
      nvfp4_chunk_fp32<T, V>(x + c * V * kVec, y + c * V * kVec, s);
    } else {
      const auto s = op.scale(m, bi);
#pragma unroll
      for (int v = 0; v < V; ++v) {
        float buf[kVec];
#pragma unroll
        for (int k = 0; k < kVec; ++k) buf[k] = op.quant(to_f32(raw[v].v[k]), s);
        store16(y + (c * V + v) * kVec, buf);
      }
    }
  }
}

template <typename T, typename Op>
__global__ void block_scalar_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t rows,
                                    int64_t cols, int block, Op op) {
  op.setup();
  const int64_t nb = (cols + block - 1) / block;
  const int64_t total = rows * nb;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t bi = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; bi < total;
       bi += stride) {
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

template <typename T, int V, typename Op>
void launch_vec_v(int g, const T* x, T* y, int64_t nblocks, Op op, cudaStream_t stream) {
  const int grid = grid_for(nblocks * g / V + 1);
  switch (g / V) {
    case 1:
      block_vec_kernel<T, 1, V><<<grid, kThreads, 0, stream>>>(x, y, nblocks, op);
      break;
    case 2:
      block_vec_kernel<T, 2, V><<<grid, kThreads, 0, stream>>>(x, y, nblocks, op);
      break;
    case 4:
      block_vec_kernel<T, 4, V><<<grid, kThreads, 0, stream>>>(x, y, nblocks, op);
      break;
    case 8:
      block_vec_kernel<T, 8, V><<<grid, kThreads, 0, stream>>>(x, y, nblocks, op);
      break;
    case 16:
      block_vec_kernel<T, 16, V><<<grid, kThreads, 0, stream>>>(x, y, nblocks, op);
      break;
    case 32:
      block_vec_kernel<T, 32, V><<<grid, kThreads, 0, stream>>>(x, y, nblocks, op);
      break;
    default:
      throw CudaError("mqk: internal: bad group size " + std::to_string(g));
  }
  MQK_CUDA_LAUNCH_CHECK();
}

template <typename T, typename Op>
void launch_vec(int g, const T* x, T* y, int64_t nblocks, Op op, cudaStream_t stream) {
  if (g >= 2 && g_vectors_per_thread >= 2) return launch_vec_v<T, 2>(g, x, y, nblocks, op, stream);
  launch_vec_v<T, 1>(g, x, y, nblocks, op, stream);
}

template <typename Op>
void launch_blocks(const char* name, const void* x, void* y, DType dt, int64_t rows, int64_t cols,
                   int block, Op op, cudaStream_t stream) {
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
    const bool vec = cols % block == 0 && bytes % 16 == 0 && g <= 32 && (g & (g - 1)) == 0 &&
                     aligned16(x) && aligned16(y);
    if (vec) {
      launch_vec(static_cast<int>(g), xt, yt, rows * (cols / block), op, stream);
    } else {
      const int64_t nb = (cols + block - 1) / block;
      block_scalar_kernel<T>
          <<<grid_for(rows * nb), kThreads, 0, stream>>>(xt, yt, rows, cols, block, op);
      MQK_CUDA_LAUNCH_CHECK();
    }
  });
}

}  // namespace

void set_block_quant_vectors_per_thread(int v) {
  if (v != 1 && v != 2)
    throw CudaError("set_block_quant_vectors_per_thread: 1 or 2, got " + std::to_string(v));
  g_vectors_per_thread = v;
}

void launch_nvfp4_fake_quant(const void* x, void* y, DType dt, int64_t rows, int64_t cols,
                             int block, const float* global_amax, cudaStream_t stream) {
  launch_blocks("launch_nvfp4_fake_quant", x, y, dt, rows, cols, block, Nvfp4DynamicOp{global_amax},
                stream);
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
    case ElemFormat::kE4M3:
      return launch_blocks(name, x, y, dt, rows, cols, block, MxOp<ElemFormat::kE4M3>{}, stream);
    case ElemFormat::kE5M2:
      return launch_blocks(name, x, y, dt, rows, cols, block, MxOp<ElemFormat::kE5M2>{}, stream);
    case ElemFormat::kE3M2:
      return launch_blocks(name, x, y, dt, rows, cols, block, MxOp<ElemFormat::kE3M2>{}, stream);
    case ElemFormat::kE2M3:
      return launch_blocks(name, x, y, dt, rows, cols, block, MxOp<ElemFormat::kE2M3>{}, stream);
    case ElemFormat::kE2M1:
      return launch_blocks(name, x, y, dt, rows, cols, block, MxOp<ElemFormat::kE2M1>{}, stream);
    case ElemFormat::kInt8:
      return launch_blocks(name, x, y, dt, rows, cols, block, MxOp<ElemFormat::kInt8>{}, stream);
  }
  throw CudaError("launch_mx_fake_quant: unknown element format " +
                  std::to_string(static_cast<int>(elem)));
}

}  // namespace mqk
