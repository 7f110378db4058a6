#pragma once
/// Quantization utilities shared by calibrators and quantizers: ModelOpt's
/// `modelopt.torch.quantization.utils.{reduce_amax, reduce_sum, convert_quantization_axis_to_reduce_axis}`
/// (reference modelopt-numerics §2.1).
///
/// Example (per-channel amax of a weight W of shape (out, in), quantization axis 0):
///   auto red = mq::quant::convert_quantization_axis_to_reduce_axis(W, std::vector<int64_t>{0});  // {1}
///   auto amax = mq::quant::reduce_amax(W, red);  // (out, 1), dtype of W
#include <cstdint>
#include <optional>
#include <vector>

#include <ATen/core/Tensor.h>

namespace mq::quant {

/// max(|max(x)|, |min(x)|) over `axis` (the dims to REDUCE; negative indices accepted).
/// - axis == nullopt: reduce everything; the result is a 0-d scalar regardless of `keepdims`.
/// - axis given: reduced dims are kept with length 1 when `keepdims`; when `squeeze_scalar` and the result
///   has one element it is squeezed to a 0-d scalar (ModelOpt does this, e.g. x (1, 4) with axis {1}).
/// - An empty axis list reduces ALL dims (torch.amax semantics for `dim=()`).
/// FP8 inputs are upcast to fp32 first (the result is then fp32); any other dtype is kept. NaN propagates.
at::Tensor reduce_amax(const at::Tensor& x, std::optional<std::vector<int64_t>> axis,
                       bool keepdims = true, bool squeeze_scalar = true);

/// sum(x) over `axis` (nullopt: everything, giving a 0-d scalar), keeping reduced dims when `keepdims`.
at::Tensor reduce_sum(const at::Tensor& x, std::optional<std::vector<int64_t>> axis, bool keepdims = true);

/// The dims of `x` that are NOT in the quantization `axis` (negative indices accepted), ascending;
/// nullopt when axis is nullopt (per-tensor). Shape (2,3,4): axis {0} -> {1,2}; {-2} -> {0,2};
/// shape (2,3,4,5) with {0,-1} -> {1,2}. An axis outside [-x.dim(), x.dim()) throws mq::Error
/// (ModelOpt silently ignores it).
std::optional<std::vector<int64_t>> convert_quantization_axis_to_reduce_axis(
    const at::Tensor& x, std::optional<std::vector<int64_t>> axis);

}  // namespace mq::quant
