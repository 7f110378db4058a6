// Fake quantization (quantize + dequantize) references. The per-element and per-block arithmetic lives
// in mqk/detail/numerics.hpp, shared with the CUDA kernels; this file only walks the layouts.
#include <stdexcept>
#include <string>

#include "mqk/detail/numerics.hpp"
#include "mqk/ref.hpp"

namespace mqk {
namespace {

void check_matrix(const char* fn, int64_t rows, int64_t cols, int block) {
  if (rows < 0 || cols < 0 || block <= 0)
    throw std::invalid_argument(std::string(fn) + ": invalid shape rows=" + std::to_string(rows) +
                                " cols=" + std::to_string(cols) + " block=" + std::to_string(block));
}

// Walks the blocks of a row-major (rows, cols) matrix; the last block of a row may be partial (it is
// zero-padded in ModelOpt, and padding never changes a block max).
template <typename Fn>
void for_each_block(int64_t rows, int64_t cols, int block, Fn&& fn) {
  const int64_t nb = (cols + block - 1) / block;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t b = 0; b < nb; ++b) {
      const int64_t c0 = b * block;
      const int64_t len = cols - c0 < block ? cols - c0 : block;
      fn(r * nb + b, r * cols + c0, len);
    }
}

float block_absmax(const float* x, int64_t len) {
  float m = 0.0f;
  for (int64_t i = 0; i < len; ++i) m = detail::absmax_update(m, x[i]);
  return m;
}

}  // namespace

void int_fake_quant_ref(const float* x, float* y, int64_t n, const float* amax, AmaxLayout layout,
                        int num_bits, bool is_unsigned, bool narrow_range, IntZeroAmaxMode zero) {
  if (num_bits < 2 || num_bits > 16)
    throw std::invalid_argument("int_fake_quant_ref: num_bits must be in [2, 16], got " +
                                std::to_string(num_bits));
  const detail::IntBounds b = detail::int_bounds(num_bits, is_unsigned, narrow_range);
  for (int64_t i = 0; i < n; ++i) {
    if (is_unsigned && x[i] < 0.0f)
      throw std::invalid_argument("int_fake_quant_ref: negative value with unsigned quantization at index " +
                                  std::to_string(i));
    y[i] = detail::int_fake_quant_one(x[i], amax[layout.index(i)], b, zero);
  }
}

void fp8_fake_quant_ref(const float* x, float* y, int64_t n, const float* amax, AmaxLayout layout,
                        Fp8ScaleMode mode) {
  const bool recip = mode == Fp8ScaleMode::kReciprocal;
  for (int64_t i = 0; i < n; ++i)
    y[i] = detail::fp8_fake_quant_one(x[i], detail::fp8_scales(amax[layout.index(i)], recip));
}

void nvfp4_fake_quant_ref(const float* x, float* y, int64_t rows, int64_t cols, int block,
                          float global_amax) {
  check_matrix("nvfp4_fake_quant_ref", rows, cols, block);
  const float gs = detail::nvfp4_global_scale(global_amax);
  for_each_block(rows, cols, block, [&](int64_t, int64_t off, int64_t len) {
    const float bs = detail::nvfp4_block_scale(block_absmax(x + off, len), gs);
    for (int64_t i = 0; i < len; ++i) y[off + i] = detail::nvfp4_quant_one(x[off + i], bs);
  });
}

void nvfp4_static_fake_quant_ref(const float* x, float* y, int64_t rows, int64_t cols, int block,
                                 const float* block_amax, float global_amax, bool four_over_six) {
  check_matrix("nvfp4_static_fake_quant_ref", rows, cols, block);
  const detail::Fp8Scales fp8 = detail::fp8_scales(detail::nvfp4_static_scale_amax(global_amax, four_over_six));
  for_each_block(rows, cols, block, [&](int64_t bi, int64_t off, int64_t len) {
    const float bs = detail::nvfp4_static_block_scale(block_amax[bi], fp8);
    for (int64_t i = 0; i < len; ++i) y[off + i] = detail::nvfp4_quant_one(x[off + i], bs);
  });
}

void mx_fake_quant_ref(const float* x, float* y, int64_t rows, int64_t cols, int block,
                       ElemFormat elem) {
  check_matrix("mx_fake_quant_ref", rows, cols, block);
  const detail::ElemGrid t = detail::grid_of(elem_traits(elem));
  for_each_block(rows, cols, block, [&](int64_t, int64_t off, int64_t len) {
    const detail::MxScales s = detail::mx_scales(block_absmax(x + off, len), t.max);
    for (int64_t i = 0; i < len; ++i) y[off + i] = detail::mx_quant_one(x[off + i], s, t);
  });
}

float amax_ref(const float* x, int64_t n) { return block_absmax(x, n); }

void amax_rows_ref(const float* x, int64_t rows, int64_t cols, float* out) {
  for (int64_t r = 0; r < rows; ++r) out[r] = block_absmax(x + r * cols, cols);
}

}  // namespace mqk
