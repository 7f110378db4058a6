#pragma once
/// Real quantization (ModelOpt's compress path, `fake_quant=False`; reference §2.9). Not the HF export
/// format (see export/). Each quantize function mirrors the ModelOpt QTensor class of the same name:
/// its packed layout, its scale convention and the dtype its arithmetic runs in.
///
/// Example (INT4 compress of a weight (out, in), block 128):
///   QTensor q = mq::quant::int4_quantize(w, 128);   // data (out, in/2) uint8, scale = 7/amax
///   at::Tensor w_hat = q.dequantize();               // (out, in), w's dtype
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "mq/config/quantizer_attribute.hpp"

namespace mq::quant {

enum class QFormat { kFp8, kInt8, kInt4, kNvfp4, kMxfp4, kMxfp8, kNf4 };

/// Name of a format ("FP8QTensor", "INT8QTensor", ... as ModelOpt's classes).
std::string qformat_name(QFormat f);

/// A really quantized tensor. Field use per format:
///  - kFp8:   data float8_e4m3fn (input shape); scale = amax/448 (per-tensor 0-d, per-axis keepdim, or
///            per-block of `block_sizes`).
///  - kInt8:  data int8; scale = amax/127 (same shapes as FP8).
///  - kInt4:  data uint8 (*shape[:-1], -1): u = 8 + round(clamp(x*s, -8, 7)), element 2i in the HIGH
///            nibble, over the flattened (block-padded) tensor; scale = 7/amax (n_blocks, 1).
///  - kNvfp4: data uint8 (*shape[:-1], last/2), low nibble = even element; scale = FP8 per-block
///            (*shape[:-1], last/block) float8_e4m3fn; double_scale = weight_scale_2 (0-d fp32).
///  - kMxfp4: data uint8 (*shape[:-1], last/2); scale = E8M0 uint8 (numel/block, 1).
///  - kMxfp8: data float8_e4m3fn (shape); scale = E8M0 uint8 (*shape[:-1], last/block).
///  - kNf4:   data uint8 (numel/2), element 2i in the HIGH nibble; scale = int8 double-quantized block
///            scales (n_scale_blocks, scale_block); double_scale = 127/amax per scale block;
///            scale_zeros = mean of the block scales (0-d).
struct QTensor {
  QFormat format = QFormat::kFp8;
  at::Tensor data;
  at::Tensor scale;
  at::Tensor double_scale;
  at::Tensor scale_zeros;
  std::vector<int64_t> shape;             ///< original shape
  at::ScalarType dtype = at::kFloat;      ///< original dtype
  int64_t block_size = 0;                 ///< INT4 / NVFP4 / MX / NF4 block along the last dim
  std::optional<config::BlockSizes> block_sizes;  ///< FP8 / INT8 block quantization

  /// Back to `dtype` (default: the original dtype), with ModelOpt's dequantize arithmetic.
  at::Tensor dequantize(std::optional<at::ScalarType> out_dtype = std::nullopt) const;
};

/// FP8 E4M3: scales given (amax/448) or computed from x (per axis or per block); (x/scale) cast to
/// float8_e4m3fn with no clamp. Blocked dims are zero-padded to a multiple of the block.
QTensor fp8_quantize(const at::Tensor& x, const std::optional<at::Tensor>& scales,
                     const std::optional<config::Axis>& axis,
                     const std::optional<config::BlockSizes>& block_sizes);
/// INT8: scale = amax/127 of x (per axis or block); round(x/scale).clamp(-128, 127). The arithmetic runs in
/// x's dtype, as ModelOpt's. Blocked dims must divide.
QTensor int8_quantize(const at::Tensor& x, const std::optional<config::Axis>& axis,
                      const std::optional<config::BlockSizes>& block_sizes);
/// INT4QTensor (last dim must be even).
QTensor int4_quantize(const at::Tensor& x, int64_t block_size);
/// NVFP4 with weight_scale_2 = global_amax/2688 (global amax = max|x| when not given).
QTensor nvfp4_quantize(const at::Tensor& x, int64_t block_size, const std::optional<at::Tensor>& global_amax);
QTensor mxfp4_quantize(const at::Tensor& x, int64_t block_size);
QTensor mxfp8_quantize(const at::Tensor& x, int64_t block_size = 32);
/// NF4 with double quantization of the block scales (scale_bits 8, groups of scale_block_size).
QTensor nf4_quantize(const at::Tensor& x, int64_t block_size, int64_t scale_block_size, int scale_bits = 8);

}  // namespace mq::quant
