// The only translation unit that includes LibTorch's custom autograd Function machinery (its headers
// are expensive to compile).
#include "autograd_impl.hpp"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

namespace mq::quant::detail {
namespace {

using QuantFn = std::function<at::Tensor(const at::Tensor&)>;

struct FakeQuantSte : public torch::autograd::Function<FakeQuantSte> {
  // The clip amax travels as a pointer: an undefined tensor cannot be a Function input.
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor* clip_amax, const QuantFn* quant) {
    if (clip_amax->defined()) ctx->save_for_backward({x, *clip_amax});
    return (*quant)(x);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const at::Tensor& g = grads[0];
    auto saved = ctx->get_saved_variables();
    if (saved.empty()) return {g, at::Tensor(), at::Tensor()};
    const at::Tensor& x = saved[0];
    const at::Tensor& amax = saved[1];
    at::Tensor keep = at::abs(x) <= amax.to(x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat);
    return {at::where(keep, g, at::zeros({}, g.options())), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor apply_ste(const at::Tensor& x, const at::Tensor& clip_amax, const QuantFn& quant) {
  if (!at::GradMode::is_enabled() || !x.requires_grad()) return quant(x);
  at::Tensor amax = clip_amax.defined() ? clip_amax.detach() : at::Tensor();
  return FakeQuantSte::apply(x, &amax, &quant);
}

}  // namespace mq::quant::detail
