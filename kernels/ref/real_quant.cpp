// Real quantization (packed storage) references: NVFP4, MXFP4, MXFP8, FP8, INT8, INT4 AWQ, NF4.
// Each block is first built as the packed block struct of mqk/formats.hpp, then copied into the
// planar tensors ModelOpt exports (data and scales as separate tensors).
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "mqk/detail/numerics.hpp"
#include "mqk/ref.hpp"

namespace mqk {
namespace {

using detail::abs_f;
using detail::pow2f;

[[noreturn]] void bad_block(const char* fn, int block) {
  throw std::invalid_argument(std::string(fn) + ": unsupported block size " +
                              std::to_string(block));
}

template <typename Fn>
void dispatch_fp4_block(const char* fn_name, int block, Fn&& fn) {
  switch (block) {
    case 8:
      return fn(std::integral_constant<int, 8>{});
    case 16:
      return fn(std::integral_constant<int, 16>{});
    case 32:
      return fn(std::integral_constant<int, 32>{});
    default:
      bad_block(fn_name, block);
  }
}

template <typename Fn>
void dispatch_nf4_block(int block, Fn&& fn) {
  switch (block) {
    case 16:
      return fn(std::integral_constant<int, 16>{});
    case 32:
      return fn(std::integral_constant<int, 32>{});
    case 64:
      return fn(std::integral_constant<int, 64>{});
    case 128:
      return fn(std::integral_constant<int, 128>{});
    case 256:
      return fn(std::integral_constant<int, 256>{});
    default:
      bad_block("nf4", block);
  }
}

void check_shape(const char* fn, int64_t rows, int64_t cols) {
  if (rows < 0 || cols < 0)
    throw std::invalid_argument(std::string(fn) + ": invalid shape rows=" + std::to_string(rows) +
                                " cols=" + std::to_string(cols));
}

// Copies block `kBlock` elements (zero-padded past `len`) of row r, block b into a local buffer.
template <int kBlock>
void load_block(const float* row, int64_t c0, int64_t cols, float (&buf)[kBlock]) {
  for (int i = 0; i < kBlock; ++i) buf[i] = c0 + i < cols ? row[c0 + i] : 0.0f;
}

// fn(kb, r, b, v) for every block b of every row r of x (rows, cols): kb the block size as an
// integral_constant (8, 16 or 32), v the block's values zero-padded past cols.
template <typename Fn>
void for_each_fp4_block(const char* fn_name, const float* x, int64_t rows, int64_t cols, int block,
                        Fn&& fn) {
  check_shape(fn_name, rows, cols);
  const int64_t nb = (cols + block - 1) / block;
  dispatch_fp4_block(fn_name, block, [&](auto kb) {
    constexpr int B = decltype(kb)::value;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t b = 0; b < nb; ++b) {
        float v[B];
        load_block<B>(x + r * cols, b * B, cols, v);
        fn(kb, r, b, v);
      }
  });
}

// y (rows, cols) = value_of(code) * scale_of(block index r * nb + c / block) for the 4-bit codes
// packed two a byte, low nibble first, (rows, ceil(cols / 2)).
template <typename ScaleOf, typename ValueOf>
void dequantize_nibble_rows(const char* fn_name, const uint8_t* packed, int64_t rows, int64_t cols,
                            int block, ScaleOf&& scale_of, ValueOf&& value_of, float* y) {
  check_shape(fn_name, rows, cols);
  if (block <= 0 || block % 2) bad_block(fn_name, block);
  const int64_t row_bytes = (cols + 1) / 2, nb = (cols + block - 1) / block;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const int nib = (packed[r * row_bytes + c / 2] >> ((c & 1) * 4)) & 0xf;
      const float s = scale_of(r * nb + c / block);
      y[r * cols + c] = value_of(nib) * s;
    }
}

// E8M0 block scale: 2^(e - 127), 0xff is NaN.
float e8m0_scale(uint8_t e) {
  return e == 0xff ? detail::float_of(0x7fc00000u) : pow2f(e - kE8M0Bias);
}

// Two elements a byte, the first in the low nibble.
template <int kBlock, typename Nibble>
void pack_nibble_pairs(const float (&v)[kBlock], uint8_t (&qs)[kBlock / 2], Nibble&& nibble) {
  for (int j = 0; j < kBlock / 2; ++j)
    qs[j] = static_cast<uint8_t>(nibble(v[2 * j]) | (nibble(v[2 * j + 1]) << 4));
}

float absmax_of(const float* v, int64_t n) {
  float m = 0.0f;
  for (int64_t i = 0; i < n; ++i) m = detail::absmax_update(m, v[i]);
  return m;
}

// NVFP4 export nibble (reference §6.4 step 2): searchsorted-left over the bounds plus one at the
// ties 0.75/1.75/3.5, which is e2m1_index_of; sign bit from y < 0 so negative values that round to
// 0 give 0x8.
uint8_t nvfp4_nibble(float y) {
  return static_cast<uint8_t>(((y < 0.0f) ? 8 : 0) | detail::e2m1_index_of(abs_f(y)));
}

// The FP8 block scale of the export path: zero -> 1, clamp to [2^-9, 448], torch cast (RNE).
uint8_t nvfp4_export_scale_bits(float pbs) {
  if (pbs == 0.0f) pbs = 1.0f;
  if (pbs < 0.001953125f) pbs = 0.001953125f;
  if (pbs > 448.0f) pbs = 448.0f;
  return detail::e4m3_bits_of_value(detail::e4m3_round_torch(pbs));
}

template <int kBlock>
Nvfp4Block<kBlock> nvfp4_pack_block(const float (&v)[kBlock], uint8_t scale_bits, float wsf2) {
  Nvfp4Block<kBlock> blk{};
  blk.scale_e4m3 = scale_bits;
  const float denom = detail::e4m3_value_of_bits(scale_bits) * wsf2;
  pack_nibble_pairs<kBlock>(v, blk.qs, [&](float e) { return nvfp4_nibble(e / denom); });
  return blk;
}

// Scatters one packed block into the planar (rows, ceil(cols/2)) data and (rows, nb) scale tensors.
template <typename Block>
void store_nibble_block(const Block& blk, int64_t r, int64_t b, int64_t cols, int block,
                        uint8_t scale, uint8_t* packed, uint8_t* scales) {
  const int64_t row_bytes = (cols + 1) / 2;
  const int64_t nb = (cols + block - 1) / block;
  const int64_t byte0 = b * (block / 2);
  const int64_t nbytes = row_bytes - byte0 < block / 2 ? row_bytes - byte0 : block / 2;
  std::memcpy(packed + r * row_bytes + byte0, blk.qs, static_cast<size_t>(nbytes));
  scales[r * nb + b] = scale;
}

template <typename ScaleOfBlock>
float nvfp4_quantize_impl(const char* fn_name, const float* x, int64_t rows, int64_t cols,
                          int block, float wsf2, ScaleOfBlock&& scale_of_block, uint8_t* packed,
                          uint8_t* scales) {
  const int64_t nb = (cols + block - 1) / block;
  for_each_fp4_block(
      fn_name, x, rows, cols, block, [&](auto kb, int64_t r, int64_t b, const auto& v) {
        constexpr int B = decltype(kb)::value;
        const uint8_t s = scale_of_block(r * nb + b, absmax_of(v, B));
        store_nibble_block(nvfp4_pack_block<B>(v, s, wsf2), r, b, cols, B, s, packed, scales);
      });
  return wsf2;
}

// MXFP4 real-quant element (reference §2.6): ord counts the bounds strictly below |x|/2^k, so ties
// round down; the sign bit is (2 - sign(x)) // 2, i.e. set for x <= 0 (zero is stored as 0b1000).
uint8_t mxfp4_nibble(float x, float scale_pow2) {
  static constexpr float kBounds[7] = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f};
  const float a = abs_f(x) / scale_pow2;
  int ord = 0;
  for (float bnd : kBounds) ord += (a - bnd > 0.0f) ? 1 : 0;
  const int sign = (x > 0.0f || detail::is_nan(x)) ? 0 : 1;
  return static_cast<uint8_t>((sign << 3) | ord);
}

}  // namespace

float nvfp4_quantize_ref(const float* x, int64_t rows, int64_t cols, int block, float global_amax,
                         uint8_t* packed, uint8_t* scales_e4m3, ScalarDivMode div) {
  const float wsf2 = detail::div_scalar(global_amax, 2688.0f, div);
  const float denom = 6.0f * wsf2;
  return nvfp4_quantize_impl(
      "nvfp4_quantize_ref", x, rows, cols, block, wsf2,
      [&](int64_t, float bmax) { return nvfp4_export_scale_bits(bmax / denom); }, packed,
      scales_e4m3);
}

float nvfp4_static_quantize_ref(const float* x, int64_t rows, int64_t cols, int block,
                                const float* block_amax, float global_amax, bool four_over_six,
                                uint8_t* packed, uint8_t* scales_e4m3, ScalarDivMode div) {
  const float m = four_over_six ? kE4M3Max46 : kE4M3Max;
  const float wsf2 = detail::div_scalar(global_amax, 6.0f * m, div);
  const float global_over_6 = detail::div_scalar(global_amax, 6.0f, div);
  return nvfp4_quantize_impl(
      "nvfp4_static_quantize_ref", x, rows, cols, block, wsf2,
      [&](int64_t bi, float) {
        float s = detail::div_scalar(block_amax[bi], 6.0f, div);
        if (s == 0.0f) s = 1.0f;
        return nvfp4_export_scale_bits(s * m / global_over_6);
      },
      packed, scales_e4m3);
}

void nvfp4_dequantize_ref(const uint8_t* packed, const uint8_t* scales_e4m3, float scale_2,
                          int64_t rows, int64_t cols, int block, float* y) {
  dequantize_nibble_rows(
      "nvfp4_dequantize_ref", packed, rows, cols, block,
      // One fp32 scale s8 * scale_2, as the fake-quant block scale, so dequantize(quantize(x))
      // equals the fake quant whenever both pick the same block scale.
      [&](int64_t bi) { return detail::e4m3_value_of_bits(scales_e4m3[bi]) * scale_2; },
      // ModelOpt's E2M1 table holds +0 for the negative-zero code 0x8 (0 - q keeps that +0).
      [](int nib) {
        const float q = detail::e2m1_value_of_index(nib & 7);
        return (nib & 8) ? 0.0f - q : q;
      },
      y);
}

void mxfp4_quantize_ref(const float* x, int64_t rows, int64_t cols, int block, uint8_t* packed,
                        uint8_t* scales_e8m0) {
  for_each_fp4_block("mxfp4_quantize_ref", x, rows, cols, block,
                     [&](auto kb, int64_t r, int64_t b, const auto& v) {
                       constexpr int B = decltype(kb)::value;
                       // torch: ceil(max(log2(amax / 6), -127)) in fp32; log2(0) = -inf takes the
                       // -127 branch.
                       const float l = std::log2(absmax_of(v, B) / 6.0f);
                       const int k = static_cast<int>(std::ceil(l > -127.0f ? l : -127.0f));
                       Mxfp4Block<B> blk{};
                       blk.scale_e8m0 = static_cast<uint8_t>(k + kE8M0Bias);
                       const float p = pow2f(k);
                       pack_nibble_pairs<B>(v, blk.qs, [&](float e) { return mxfp4_nibble(e, p); });
                       store_nibble_block(blk, r, b, cols, B, blk.scale_e8m0, packed, scales_e8m0);
                     });
}

void mxfp4_dequantize_ref(const uint8_t* packed, const uint8_t* scales_e8m0, int64_t rows,
                          int64_t cols, int block, float* y) {
  dequantize_nibble_rows(
      "mxfp4_dequantize_ref", packed, rows, cols, block,
      [&](int64_t bi) { return e8m0_scale(scales_e8m0[bi]); },
      [](int nib) {
        const float q = detail::e2m1_value_of_index(nib & 7);
        return (nib & 8) ? -q : q;
      },
      y);
}

void mxfp8_quantize_ref(const float* x, int64_t rows, int64_t cols, int block, uint8_t* data_e4m3,
                        uint8_t* scales_e8m0) {
  const int64_t nb = (cols + block - 1) / block;
  for_each_fp4_block("mxfp8_quantize_ref", x, rows, cols, block,
                     [&](auto kb, int64_t r, int64_t b, const auto& v) {
                       constexpr int B = decltype(kb)::value;
                       const float bmax = absmax_of(v, B);
                       int k = -127;
                       if (bmax != 0.0f) {
                         const float l = std::ceil(std::log2(bmax / 448.0f));
                         k = l < -127.0f ? -127 : (l > 127.0f ? 127 : static_cast<int>(l));
                       }
                       Mxfp8Block<B> blk{};
                       blk.scale_e8m0 = static_cast<uint8_t>(k + kE8M0Bias);
                       const float inv = pow2f(-k);
                       for (int j = 0; j < B; ++j) {
                         float t = v[j] * inv;
                         t = t > 448.0f ? 448.0f : (t < -448.0f ? -448.0f : t);
                         blk.qs[j] = detail::e4m3_bits_of_value(detail::e4m3_round_torch(t));
                       }
                       const int64_t c0 = b * B, n = cols - c0 < B ? cols - c0 : B;
                       std::memcpy(data_e4m3 + r * cols + c0, blk.qs, static_cast<size_t>(n));
                       scales_e8m0[r * nb + b] = blk.scale_e8m0;
                     });
}

void mxfp8_dequantize_ref(const uint8_t* data_e4m3, const uint8_t* scales_e8m0, int64_t rows,
                          int64_t cols, int block, float* y) {
  check_shape("mxfp8_dequantize_ref", rows, cols);
  if (block <= 0) bad_block("mxfp8_dequantize_ref", block);
  const int64_t nb = (cols + block - 1) / block;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const float s = e8m0_scale(scales_e8m0[r * nb + c / block]);
      y[r * cols + c] = detail::e4m3_value_of_bits(data_e4m3[r * cols + c]) * s;
    }
}

void fp8_quantize_ref(const float* x, int64_t n, const float* scale, AmaxLayout layout,
                      uint8_t* out_e4m3) {
  for (int64_t i = 0; i < n; ++i)
    out_e4m3[i] =
        detail::e4m3_bits_of_value(detail::e4m3_round_torch(x[i] / scale[layout.index(i)]));
}

void int8_quantize_ref(const float* x, int64_t n, const float* scale, AmaxLayout layout,
                       int8_t* out) {
  for (int64_t i = 0; i < n; ++i) {
    float q = detail::rint_rne(x[i] / scale[layout.index(i)]);
    if (detail::is_nan(q)) q = 0.0f;
    q = q > 127.0f ? 127.0f : (q < -128.0f ? -128.0f : q);
    out[i] = static_cast<int8_t>(q);
  }
}

void int4_awq_pack_ref(const float* w, int64_t out_features, int64_t in_features, int block,
                       const float* scale, uint8_t* packed) {
  check_shape("int4_awq_pack_ref", out_features, in_features);
  if (out_features % 2)
    throw std::invalid_argument("int4_awq_pack_ref: out_features must be even, got " +
                                std::to_string(out_features));
  if (block <= 0) bad_block("int4_awq_pack_ref", block);
  const int64_t nb = (in_features + block - 1) / block;
  auto q = [&](int64_t r, int64_t c) {
    float v = detail::rint_rne(w[r * in_features + c] / scale[r * nb + c / block]);
    if (detail::is_nan(v)) v = 0.0f;
    v = v > 7.0f ? 7.0f : (v < -8.0f ? -8.0f : v);
    return static_cast<uint8_t>(static_cast<int>(v) & 0xf);
  };
  for (int64_t j = 0; j < out_features / 2; ++j)
    for (int64_t c = 0; c < in_features; ++c)
      packed[j * in_features + c] = static_cast<uint8_t>(q(2 * j, c) | (q(2 * j + 1, c) << 4));
}

void nf4_quantize_ref(const float* x, int64_t n, int block, uint8_t* packed, float* scales) {
  if (n < 0) throw std::invalid_argument("nf4_quantize_ref: negative n");
  float lut[16];
  for (int i = 0; i < 16; ++i) lut[i] = nf4_lut(i);
  const int64_t nb = (n + block - 1) / block;
  dispatch_nf4_block(block, [&](auto kb) {
    constexpr int B = decltype(kb)::value;
    for (int64_t b = 0; b < nb; ++b) {
      float v[B];
      load_block<B>(x, b * B, n, v);
      Nf4Block<B> blk{};
      blk.scale = absmax_of(v, B);
      auto index = [&](float e) {
        if (blk.scale == 0.0f) return 7;
        const float t = e / blk.scale;
        int best = 0;
        float best_d = abs_f(t - lut[0]);
        for (int i = 1; i < 16; ++i) {
          const float d = abs_f(t - lut[i]);
          if (d < best_d) best = i, best_d = d;
        }
        return best;
      };
      for (int j = 0; j < B / 2; ++j)
        blk.qs[j] = static_cast<uint8_t>((index(v[2 * j]) << 4) | index(v[2 * j + 1]));
      const int64_t byte0 = b * (B / 2), total = (n + 1) / 2;
      const int64_t nbytes = total - byte0 < B / 2 ? total - byte0 : B / 2;
      std::memcpy(packed + byte0, blk.qs, static_cast<size_t>(nbytes));
      scales[b] = blk.scale;
    }
  });
}

void nf4_dequantize_ref(const uint8_t* packed, const float* scales, int64_t n, int block,
                        float* y) {
  if (block <= 0) bad_block("nf4_dequantize_ref", block);
  for (int64_t i = 0; i < n; ++i) {
    const int idx = (packed[i / 2] >> ((i & 1) ? 0 : 4)) & 0xf;
    y[i] = nf4_lut(idx) * scales[i / block];
  }
}

}  // namespace mqk
