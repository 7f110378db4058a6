#pragma once
// Straight-through estimator around a non-differentiable fake-quant functional.
#include <functional>

#include <ATen/core/Tensor.h>

namespace mq::quant::detail {

/// y = quant(x) in the forward pass. Backward: the incoming gradient unchanged when `clip_amax` is
/// undefined (pass_through_bwd), else zeroed where |x| > clip_amax (clip_amax broadcasts to x).
/// Without grad mode, or when x does not require grad, quant(x) is returned directly.
at::Tensor apply_ste(const at::Tensor& x, const at::Tensor& clip_amax,
                     const std::function<at::Tensor(const at::Tensor&)>& quant);

}  // namespace mq::quant::detail
