#pragma once
// Scalar numerics shared by the C++ reference (kernels/ref) and the CUDA kernels (kernels/cuda), so
// that host and device round identically. Every step is an fp32 operation with IEEE
// round-to-nearest; no fused multiply-add is formed (no a*b+c expressions), and scaling by powers
// of two is exact.
#include <cstdint>
#include <cstring>

#include "mqk/formats.hpp"
#include "mqk/modes.hpp"

#if defined(__CUDACC__)
#define MQK_HD __host__ __device__ __forceinline__
#else
#define MQK_HD inline
#endif
// For the functions written for vectorised host loops: a call left out of line would stop the loop
// from vectorising.
#if defined(__CUDACC__) || !defined(__GNUC__)
#define MQK_HD_ALWAYS_INLINE MQK_HD
#else
#define MQK_HD_ALWAYS_INLINE inline __attribute__((always_inline))
#endif

#if !defined(__CUDA_ARCH__)
#include <cmath>
#endif

namespace mqk::detail {

MQK_HD uint32_t bits_of(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
#endif
}

MQK_HD float float_of(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}

MQK_HD bool is_nan(float v) { return (bits_of(v) & 0x7fffffffu) > 0x7f800000u; }
MQK_HD bool is_finite(float v) { return (bits_of(v) & 0x7f800000u) != 0x7f800000u; }
MQK_HD float abs_f(float v) { return float_of(bits_of(v) & 0x7fffffffu); }
/// max(|m|, |x|) by comparing magnitude bits: NaN (any payload) wins over Inf over finite values,
/// so a NaN anywhere in a reduction propagates. m must be a magnitude (sign bit clear).
MQK_HD float absmax_update(float m, float x) {
  const uint32_t a = bits_of(m), b = bits_of(x) & 0x7fffffffu;
  return float_of(a > b ? a : b);
}
/// IEEE fp16 bits -> fp32, exactly c10's software conversion (fp16_ieee_to_fp32_value without F16C,
/// from the FP16 library), with the choice between its normal and subnormal results made by a bit
/// mask instead of a select, so that every step runs on every lane and host loops vectorise.
MQK_HD_ALWAYS_INLINE float fp16_bits_to_float(uint16_t h) {
  const uint32_t w = static_cast<uint32_t>(h) << 16;
  const uint32_t two_w = w + w;
  const float normalized =
      float_of((two_w >> 4) + (0xe0u << 23)) * float_of(15u << 23);  // * 2^-112
  const float denormalized = float_of((two_w >> 17) | (126u << 23)) - 0.5f;
  const uint32_t sub = 0u - static_cast<uint32_t>(two_w < (1u << 27));
  return float_of((w & 0x80000000u) | (bits_of(denormalized) & sub) | (bits_of(normalized) & ~sub));
}

/// fp32 -> IEEE fp16 bits, round to nearest even, exactly c10's software conversion
/// (fp16_ieee_from_fp32_value without F16C): overflow gives Inf, any NaN gives 0x7e00 with the
/// sign. Selects are bit masks, as in fp16_bits_to_float.
MQK_HD_ALWAYS_INLINE uint16_t float_to_fp16_bits(float f) {
  const float base0 = (abs_f(f) * float_of(239u << 23)) * float_of(17u << 23);  // * 2^112 * 2^-110
  const uint32_t w = bits_of(f);
  const uint32_t shl1_w = w + w;
  const uint32_t bias0 = shl1_w & 0xff000000u;
  const uint32_t low = 0u - static_cast<uint32_t>(bias0 < 0x71000000u);
  const uint32_t bias = (0x71000000u & low) | (bias0 & ~low);
  const uint32_t b = bits_of(float_of((bias >> 1) + 0x07800000u) + base0);
  const uint32_t nonsign = ((b >> 13) & 0x7c00u) + (b & 0x0fffu);
  const uint32_t nan = 0u - static_cast<uint32_t>(shl1_w > 0xff000000u);
  return static_cast<uint16_t>(((w & 0x80000000u) >> 16) | (0x7e00u & nan) | (nonsign & ~nan));
}

/// Round to nearest integer, ties to even (the default FP environment on the host).
MQK_HD float rint_rne(float v) {
#if defined(__CUDA_ARCH__)
  return rintf(v);
#else
  return std::rint(v);
#endif
}

/// rint_rne by magic-number addition, without a libm call or branches, so that host loops over it
/// vectorise: |v| < 2^23 is added to and subtracted from 2^23 (fp32 ulp 1, so the sum rounds to the
/// nearest integer, ties to even) and gets v's sign back (-0.3 -> -0); larger magnitudes, Inf and
/// NaN come back unchanged. The same bits as rint_rne on an x86-64 host without SSE4.1 (glibc's
/// rint) for every fp32 input, checked over all 2^32 patterns (SSE4.1's roundss would quiet a
/// signalling NaN).
MQK_HD_ALWAYS_INLINE float rint_rne_magic(float v) {
  const uint32_t u = bits_of(v);
  const uint32_t a = u & 0x7fffffffu;
  const uint32_t ac = a < 0x4b000000u ? a : 0x4b000000u;  // 2^23
  const uint32_t r = bits_of((float_of(ac) + 8388608.0f) - 8388608.0f) | (u & 0x80000000u);
  const uint32_t big = 0u - static_cast<uint32_t>(a >= 0x4b000000u);
  return float_of((r & ~big) | (u & big));
}

/// Exactly 2^k for k in [-149, 127] (subnormals included).
MQK_HD float pow2f(int k) {
  if (k >= -126) return float_of(static_cast<uint32_t>(k + 127) << 23);
  return float_of(1u << (k + 149));
}

/// Unbiased exponent of a finite, non-negative fp32 (fp32 subnormals and zero give -127).
MQK_HD int exponent_of(float a) { return static_cast<int>((bits_of(a) >> 23) & 0xffu) - 127; }

/// RNE of a finite magnitude a >= 0 onto an unbounded minifloat grid with `mbits` mantissa bits
/// whose smallest normal binade is 2^emin. The scaling by the grid step is exact, so rint does the
/// rounding.
MQK_HD float grid_round(float a, int mbits, int emin) {
  int e = exponent_of(a);
  if (e < emin) e = emin;
  return rint_rne(a * pow2f(mbits - e)) * pow2f(e - mbits);
}

/// The numeric part of ElemTraits (no name pointer), cheap to pass around in device code.
struct ElemGrid {
  int mbits;
  int emin;
  float max;
  bool integer;
  bool nan_to_max;
};
constexpr ElemGrid grid_of(const ElemTraits& t) {
  return {t.mbits, t.emin, t.max, t.integer, t.nan_to_max};
}

/// Magnitude a >= 0 (or NaN) to an element grid, saturating at t.max (reference §2.6 step 5).
MQK_HD float elem_round_magnitude(float a, const ElemGrid& t) {
  if (is_nan(a)) return t.nan_to_max ? t.max : a;
  if (a >= t.max) return t.max;
  if (t.integer) return rint_rne(a);
  return grid_round(a, t.mbits, t.emin);
}

/// fp32 -> FP8 E4M3 value, RNE, saturating to +-448 (CUDA __NV_SATFINITE); NaN stays NaN.
MQK_HD float e4m3_round_sat(float v) {
  if (is_nan(v)) return v;
  const float a = abs_f(v);
  const float r = a >= 448.0f ? 448.0f : grid_round(a, 3, -6);
  return (bits_of(v) >> 31) ? -r : r;
}

/// e4m3_round_sat by magic-number addition, without rint and without branches, so that host loops
/// over it vectorise: the same fp32 result for every fp32 input (checked over all 2^32 bit
/// patterns), NaN payloads and the sign of zero included. The magnitude, clamped to 448, is added
/// to and subtracted from M = 2^(max(e, -6) + 20), e its binade: M's fp32 ulp 2^(e-3) is the E4M3
/// step of that binade (2^-9 below 2^-6), so fp32 round-to-nearest-even of the sum is E4M3's, and
/// both steps are exact otherwise. Nothing is subnormal on the way, so flush-to-zero and
/// denormals-are-zero give the same result as in e4m3_round_sat. Every lane computes every step;
/// NaN is chosen by a bit mask.
MQK_HD_ALWAYS_INLINE float e4m3_round_sat_magic(float v) {
  const uint32_t u = bits_of(v);
  const uint32_t a = u & 0x7fffffffu;
  // 448 (0x43e00000) caps Inf and NaN too; NaN is restored at the end.
  const uint32_t ac = a < 0x43e00000u ? a : 0x43e00000u;
  // Binade of ac, at least 2^-6 (0x3c800000); M = 2^(e+20): 2^14 for the E4M3 subnormals.
  const uint32_t e = ac & 0x7f800000u;
  const float m = float_of((e < 0x3c800000u ? 0x3c800000u : e) + (20u << 23));
  const uint32_t r = bits_of((float_of(ac) + m) - m) | (u & 0x80000000u);
  const uint32_t nan = 0u - static_cast<uint32_t>(a > 0x7f800000u);
  return float_of((r & ~nan) | (u & nan));
}

/// fp32 -> FP8 E4M3 value as torch's `.to(torch.float8_e4m3fn)`: RNE, and a magnitude that rounds
/// above 448 (|v| > 464, Inf) becomes NaN.
MQK_HD float e4m3_round_torch(float v) {
  if (is_nan(v)) return v;
  const float a = abs_f(v);
  if (a >= 480.0f) return float_of(0x7fc00000u);
  const float r = grid_round(a, 3, -6);
  if (r > 448.0f) return float_of(0x7fc00000u);
  return (bits_of(v) >> 31) ? -r : r;
}

/// Byte of an E4M3 value that is already on the grid (output of e4m3_round_*). NaN -> 0x7f | sign.
MQK_HD uint8_t e4m3_bits_of_value(float r) {
  const uint8_t sign = static_cast<uint8_t>((bits_of(r) >> 24) & 0x80u);
  if (is_nan(r)) return static_cast<uint8_t>(sign | 0x7f);
  const float a = abs_f(r);
  if (a == 0.0f) return sign;
  const int e = exponent_of(a);
  if (e < -6) return static_cast<uint8_t>(sign | static_cast<uint8_t>(a * 512.0f));
  return static_cast<uint8_t>(sign | ((e + 7) << 3) | ((bits_of(a) >> 20) & 7u));
}

/// Value of an E4M3 (fn) byte.
MQK_HD float e4m3_value_of_bits(uint8_t b) {
  const int ef = (b >> 3) & 15;
  const int m = b & 7;
  float a;
  if (ef == 15 && m == 7)
    a = float_of(0x7fc00000u);
  else if (ef == 0)
    a = static_cast<float>(m) * pow2f(-9);
  else
    a = static_cast<float>(8 + m) * pow2f(ef - 10);
  return (b & 0x80) ? -a : a;
}

/// NVFP4 E2M1 index 0..7 of a magnitude with ModelOpt's thresholds (reference §2.5 step 5): ties at
/// 0.25, 1.25, 2.5, 5 go down, ties at 0.75, 1.75, 3.5 go up; NaN and everything above 5 give 6.0
/// (index 7).
MQK_HD int e2m1_index_of(float a) {
  if (is_nan(a)) return 7;
  return (a > 0.25f) + (a >= 0.75f) + (a > 1.25f) + (a >= 1.75f) + (a > 2.5f) + (a >= 3.5f) +
         (a > 5.0f);
}

MQK_HD float e2m1_value_of_index(int i) {
  // A switch rather than kE2M1Values[i]: a runtime index into a host constexpr array is not
  // available in device code.
  switch (i & 7) {
    case 0:
      return 0.0f;
    case 1:
      return 0.5f;
    case 2:
      return 1.0f;
    case 3:
      return 1.5f;
    case 4:
      return 2.0f;
    case 5:
      return 3.0f;
    case 6:
      return 4.0f;
    default:
      return 6.0f;
  }
}

/// Sign convention of ModelOpt's NVFP4 Triton kernels, `tl.where(x >= 0, q, -q)`: x >= 0 keeps +q,
/// otherwise (also NaN) 0 - q, because Triton negates a float as 0 - q. A zero result is therefore
/// always +0 (ModelOpt's Triton NVFP4 never returns -0).
MQK_HD float apply_sign_ge0(float x, float q) { return x >= 0.0f ? q : 0.0f - q; }

/// E8M0 exponent k = ceil(log2(ratio)) from the fp32 bits (the "NV algorithm", cudaRoundPosInf),
/// for ratio > 0 finite: round the exponent up unless the significand is zero, the exponent field
/// is 0xFE (no room), or the value is a subnormal <= 2^-127.
MQK_HD int e8m0_ceil_exponent(float ratio) {
  const uint32_t u = bits_of(ratio);
  const uint32_t ef = (u >> 23) & 0xffu;
  const uint32_t mant = u & 0x7fffffu;
  const bool round_up = mant != 0 && ef != 0xfeu && !(ef == 0 && mant <= 0x400000u);
  return static_cast<int>(ef) - 127 + (round_up ? 1 : 0);
}

/// x / c for a per-tensor constant c, rounded as `mode` says (see ScalarDivMode). With a constant c
/// the reciprocal is folded at compile time, in fp32 with round-to-nearest.
MQK_HD float div_scalar(float x, float c, ScalarDivMode mode) {
  return mode == ScalarDivMode::kReciprocal ? x * (1.0f / c) : x / c;
}

// ---- per-format scale derivations (one place each, used by ref and kernels) ----

/// INT-N bounds (reference §2.2).
struct IntBounds {
  float max_bound;
  float min_bound;
};
MQK_HD IntBounds int_bounds(int num_bits, bool is_unsigned, bool narrow_range) {
  const float mx = static_cast<float>((1 << (num_bits - 1 + (is_unsigned ? 1 : 0))) - 1);
  const float mn = is_unsigned ? 0.0f : (narrow_range ? -mx : -mx - 1.0f);
  return {mx, mn};
}

/// INT-N fake quant of one element with its amax (reference §2.2). A (near) zero amax follows
/// `zero` (IntZeroAmaxMode): the CUDA kernel's amax < 2^-24 -> +0, or the eager path's amax <=
/// 2^-24 -> x * 0.
MQK_HD float int_fake_quant_one(float x, float amax, IntBounds b,
                                IntZeroAmaxMode zero = IntZeroAmaxMode::kCudaKernel) {
  constexpr float kEps = 5.9604644775390625e-08f;  // 2^-24
  if (zero == IntZeroAmaxMode::kEager) {
    if (amax <= kEps) return x * 0.0f;
  } else if (amax < kEps) {
    return 0.0f;
  }
  const float scale = b.max_bound / amax;
  float q = rint_rne(x * scale);
  q = q > b.max_bound ? b.max_bound : q;
  q = q < b.min_bound ? b.min_bound : q;
  return q / scale;
}

/// int_fake_quant_one in a form host loops vectorise: rint_rne_magic for the rounding, and the
/// (near) zero amax result chosen by a bit mask after computing both, instead of an early return.
/// The same result for every input.
MQK_HD_ALWAYS_INLINE float int_fake_quant_one_magic(
    float x, float amax, IntBounds b, IntZeroAmaxMode zero = IntZeroAmaxMode::kCudaKernel) {
  constexpr float kEps = 5.9604644775390625e-08f;  // 2^-24
  const bool eager = zero == IntZeroAmaxMode::kEager;
  const uint32_t tiny = 0u - static_cast<uint32_t>(eager ? amax <= kEps : amax < kEps);
  const float zero_result = eager ? x * 0.0f : 0.0f;
  const float scale = b.max_bound / amax;
  float q = rint_rne_magic(x * scale);
  q = q > b.max_bound ? b.max_bound : q;
  q = q < b.min_bound ? b.min_bound : q;
  return float_of((bits_of(zero_result) & tiny) | (bits_of(q / scale) & ~tiny));
}

/// FP8 per-tensor/channel scales (reference §2.3): amax <= 2^-24 is taken as 1. `reciprocal`
/// selects how 448/amax is rounded: false = one IEEE division (ModelOpt's CUDA extension
/// fake_e4m3fy, used on GPU for a scalar or 1-D amax), true = fp32(fp32(1/amax) * 448) (the eager
/// torch path `448.0 / amax`, which Python evaluates as amax.reciprocal() * 448; used on CPU and
/// for multi-dim amax). The two differ by one ulp of scale for some amax.
struct Fp8Scales {
  float scale;
  float inv;
};
MQK_HD Fp8Scales fp8_scales(float amax, bool reciprocal = false) {
  const float a = amax <= 5.9604644775390625e-08f ? 1.0f : amax;
  const float scale = reciprocal ? (1.0f / a) * 448.0f : 448.0f / a;
  return {scale, 1.0f / scale};
}
MQK_HD float fp8_fake_quant_one(float x, Fp8Scales s) {
  return e4m3_round_sat(x * s.scale) * s.inv;
}
/// fp8_fake_quant_one through e4m3_round_sat_magic: the same result, in a form host loops
/// vectorise.
MQK_HD_ALWAYS_INLINE float fp8_fake_quant_one_magic(float x, Fp8Scales s) {
  return e4m3_round_sat_magic(x * s.scale) * s.inv;
}

/// NVFP4 dynamic: the fp32 global scale gs = global_amax / 2688 (reference §2.5 step 1). ModelOpt
/// computes it with torch on CUDA (`global_amax.float() / (6.0 * 448.0)`), i.e. global_amax *
/// fp32(1/2688): the default kReciprocal. NVFP4 fake quant exists in ModelOpt only on GPU, so both
/// devices use it.
MQK_HD float nvfp4_global_scale(float global_amax,
                                ScalarDivMode mode = ScalarDivMode::kReciprocal) {
  const float gs = div_scalar(global_amax, 2688.0f, mode);
  return gs <= 0.0f ? 1e-12f : gs;
}
/// NVFP4 dynamic: block scale from the block max (steps 3-4).
MQK_HD float nvfp4_block_scale(float bmax, float gs) {
  const float denom = 6.0f * gs;
  float r = bmax / denom;
  r = r > 448.0f ? 448.0f : r;
  const float bs = e4m3_round_sat(r) * gs;
  return bs < 1e-5f ? 1.0f : bs;
}
/// E2M1 magnitude of a >= 0 (or NaN): the thresholds of e2m1_index_of are exactly RNE on the E2M1
/// grid with saturation at 6 and NaN -> 6, so this is computed arithmetically (grid_round),
/// branch-free on the GPU, instead of through the index and a table.
MQK_HD float e2m1_round_value(float a) {
  return elem_round_magnitude(a, ElemGrid{1, 0, 6.0f, false, true});
}

/// NVFP4 element (steps 5): a = |x| / block_scale, E2M1 thresholds, signed q * block_scale. A zero
/// block_scale gives +0 (a = Inf or NaN -> 6, times 0).
MQK_HD float nvfp4_quant_one(float x, float block_scale) {
  return apply_sign_ge0(x, e2m1_round_value(abs_f(x) / block_scale) * block_scale);
}

/// NVFP4 static: (global_amax * (448 / fp8_max)) / 6, the amax of the block-scale FP8 quantizer.
/// ModelOpt's compute_fp4_scales runs with torch on CUDA, where `/ 6.0` is `* fp32(1/6)`
/// (kReciprocal, the default; static NVFP4 exists in ModelOpt only on GPU).
MQK_HD float nvfp4_static_scale_amax(float global_amax, bool four_over_six,
                                     ScalarDivMode mode = ScalarDivMode::kReciprocal) {
  const float ratio = four_over_six ? 1.75f : 1.0f;  // 448/256 and 448/448, exact in fp32
  return div_scalar(global_amax * ratio, 6.0f, mode);
}
/// NVFP4 static block scale: s = block_amax / 6 (`mode` as above) quantized by scaled_e4m3 with
/// amax A. As in the Triton kernel (nvfp4_scalar_quant): a NaN or Inf result is replaced by 1.0
/// (`scale_safe`); a zero result stays 0, and a block with scale 0 comes out all +0
/// (nvfp4_quant_one and the GPU bins give q * 0 = +0 with the sign rule of apply_sign_ge0).
MQK_HD float nvfp4_static_block_scale(float block_amax, Fp8Scales fp8,
                                      ScalarDivMode mode = ScalarDivMode::kReciprocal) {
  const float s = div_scalar(block_amax, 6.0f, mode);
  const float sq = fp8_fake_quant_one(s, fp8);
  return is_finite(sq) ? sq : 1.0f;
}

/// MX scale pair (reference §2.6 steps 1-4).
struct MxScales {
  float scale;
  float unscale;
};
MQK_HD MxScales mx_scales(float bmax, float fmt_max) {
  if (bmax == 0.0f || !is_finite(bmax)) return {1.0f, 1.0f};
  const int k = e8m0_ceil_exponent(bmax / fmt_max);
  return {pow2f(-k), pow2f(k)};
}
/// MX element: sign * convert(|x| * scale) * unscale. The sign follows ModelOpt's CUDA extension
/// (tensor_quant_mx.cu `quantize`), whose `int sign` is set only for x < 0 and x > 0 and compiles
/// to x > 0 ? 1 : -1: x = +-0 (and NaN) give the negative sign, so a zero input comes out as -0.
MQK_HD float mx_quant_one(float x, MxScales s, const ElemGrid& t) {
  const float q = elem_round_magnitude(abs_f(x) * s.scale, t);
  return (x > 0.0f ? q : -q) * s.unscale;
}

}  // namespace mqk::detail
