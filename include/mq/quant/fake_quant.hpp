#pragma once
/// Fake-quant dispatch on at::Tensor (reference §2.2–§2.6, §2.10). These functions hold no state and
/// record no autograd graph: TensorQuantizer wraps them in the straight-through estimator.
///
/// Every function computes exactly as ModelOpt does: the input is converted to fp32 contiguous, the
/// mqk reference (CPU) or the mqk CUDA kernel (CUDA tensors, when built with MQ_HAVE_CUDA and
/// MQ_TORCH_CUDA) runs, and the result is cast back to the input dtype. The output has the input's
/// shape and dtype.
///
/// Example (INT8 per-channel on a weight (out, in)):
///   auto amax = w.abs().amax({1}, /*keepdim=*/true);        // (out, 1)
///   auto wq = mq::quant::int_fake_quant(w, amax, 8, /*is_unsigned=*/false, /*narrow_range=*/false);
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "mq/config/quantizer_attribute.hpp"
#include "mqk/ref.hpp"

namespace mq::quant {

/// An amax tensor mapped onto mqk's flat addressing. `amax` is fp32 and contiguous. When the non-1
/// dims of the amax are one contiguous run of x's dims, `layout` addresses it directly; otherwise the
/// amax has been expanded to x's full shape (layout = {numel, 1}).
struct AmaxView {
  at::Tensor amax;
  mqk::AmaxLayout layout;
};

/// Maps `amax` (broadcastable to x, any float dtype) onto x's flat element order. Throws mq::Error when
/// the amax does not broadcast to x.
AmaxView plan_amax_layout(const at::Tensor& x, const at::Tensor& amax);

/// INT-N fake quant (reference §2.2). Raises mq::Error on a negative amax, and on negative inputs with
/// is_unsigned ("Negative values encountered in unsigned quantization."). On CPU, elements whose amax is
/// <= 2^-24 become x * 0 (a zero with x's sign), as ModelOpt's _tensor_quant produces.
at::Tensor int_fake_quant(const at::Tensor& x, const at::Tensor& amax, int num_bits, bool is_unsigned,
                          bool narrow_range);

/// FP8 E4M3 scaled fake quant (reference §2.3); amax <= 2^-24 is treated as 1. The scale 448/amax is
/// rounded as ModelOpt does on each device: CPU (its eager path) fp32(fp32(1/amax) * 448); CUDA a true
/// division for a scalar or 1-D amax (fake_e4m3fy), the reciprocal form for a multi-dim amax.
at::Tensor fp8_fake_quant(const at::Tensor& x, const at::Tensor& amax);

/// NVFP4 dynamic block fake quant along the last dim (reference §2.5). `global_amax` is reduced with
/// max when it has more than one element.
at::Tensor nvfp4_fake_quant(const at::Tensor& x, int64_t block, const at::Tensor& global_amax);

/// NVFP4 static block fake quant: x viewed as (-1, last_dim), one fp32 amax per `block` elements of a
/// row (numel/block values, zero-padded partial blocks per row), plus the fp32 global amax.
at::Tensor nvfp4_static_fake_quant(const at::Tensor& x, int64_t block, const at::Tensor& block_amax,
                                   const at::Tensor& global_amax, bool four_over_six);

/// MX element format of an (E, M) or int `num_bits` (reference §2.6); throws on a format MX lacks.
mqk::ElemFormat mx_elem_format(const config::NumBits& num_bits);

/// MX fake quant (E8M0 shared scale per `block` along the last dim).
at::Tensor mx_fake_quant(const at::Tensor& x, int64_t block, mqk::ElemFormat elem);

/// The reshape/pad plan of a static block quantizer (reference §2.4), recorded on the first forward.
///
/// Example ({-1: 128} on a weight (out, in)):
///   auto plan = StaticBlockPlan::make(w.sizes(), *cfg.block_sizes);
///   auto xb = plan.apply(w);          // (out*in/128, 128); quantize with axis (0,)
///   auto y = plan.restore(yb);        // (out, in)
struct StaticBlockPlan {
  std::vector<int64_t> input_shape;        ///< the first input's shape (before padding)
  std::vector<int64_t> padded_shape;       ///< ModelOpt's `_original_shape`
  std::vector<int64_t> block_reshape;      ///< `_block_reshape_size`
  std::vector<int64_t> padding;            ///< F.pad order (last dim first, (left, right) pairs); empty: none
  std::vector<int> axis;                   ///< the quantization axis to keep (amax dims)
  std::optional<std::vector<int64_t>> amax_shape_for_export;  ///< single last-axis case only

  static StaticBlockPlan make(at::IntArrayRef shape, const config::BlockSizes& block_sizes);
  /// Pads, checks the fixed shape ("... Block-quantization requires a fixed input shape.") and reshapes.
  at::Tensor apply(const at::Tensor& x) const;
  /// Reshapes back to the padded shape and slices the padding off.
  at::Tensor restore(const at::Tensor& y) const;
};

/// Normalized (1/sqrt(block)) Sylvester Hadamard transform along the last dim, per block of
/// `block_size` (nullopt: the full dim if it is a power of 2, else its largest power-of-2 divisor,
/// which must be >= 2). Computed in fp32 and returned in x's dtype; differentiable (reference §2.10).
at::Tensor normalized_hadamard_transform(const at::Tensor& x, std::optional<int> block_size,
                                         bool rotate_fp32);

/// Python-style rendering used by repr and error messages: torch.Size([2, 3]).
std::string format_torch_size(at::IntArrayRef shape);

}  // namespace mq::quant
