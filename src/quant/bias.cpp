#include <algorithm>

#include <ATen/ATen.h>

#include "mq/core/error.hpp"
#include "mq/quant/calibrator.hpp"

namespace mq::quant {

namespace {

void check_method(const std::string& method) {
  MQ_CHECK(method == "mean" || method == "max_min", "bias: unknown method '", method,
           "' (expected \"mean\" or \"max_min\")");
}

// The listed dims (negative accepted) as ascending non-negative indices, like ModelOpt's loop over dims.
std::vector<int64_t> bias_reduce_dims(const at::Tensor& x, const std::vector<int64_t>& axes) {
  const int64_t nd = x.dim();
  for (int64_t a : axes) {
    MQ_CHECK(a >= -nd && a < nd, "bias: axis ", a, " is out of range for an input of rank ", nd, " (shape ",
             x.sizes(), ")");
  }
  std::vector<int64_t> dims;
  for (int64_t i = 0; i < nd; ++i) {
    if (std::find(axes.begin(), axes.end(), i) != axes.end() ||
        std::find(axes.begin(), axes.end(), i - nd) != axes.end())
      dims.push_back(i);
  }
  return dims;
}

std::pair<at::Tensor, at::Tensor> max_min(const at::Tensor& x, const std::optional<std::vector<int64_t>>& axes) {
  if (!axes) return {at::max(x), at::min(x)};
  const auto dims = bias_reduce_dims(x, *axes);
  return {at::amax(x, dims, /*keepdim=*/true), at::amin(x, dims, /*keepdim=*/true)};
}

}  // namespace

at::Tensor compute_bias(const at::Tensor& x, const std::optional<std::vector<int64_t>>& reduce_axes,
                        const std::string& method) {
  check_method(method);
  MQ_CHECK(x.defined() && x.numel() > 0, "bias: empty or undefined input");
  if (method == "mean") {
    if (!reduce_axes) return at::mean(x);
    return at::mean(x, bias_reduce_dims(x, *reduce_axes), /*keepdim=*/true);
  }
  auto [mx, mn] = max_min(x, reduce_axes);
  return (mx + mn) / 2;
}

BiasCalibrator::BiasCalibrator(std::string method, std::optional<std::vector<int64_t>> reduce_axes)
    : method_(std::move(method)), reduce_axes_(std::move(reduce_axes)) {
  check_method(method_);
}

at::Tensor BiasCalibrator::compute_dynamic_bias(const at::Tensor& x) const {
  return quant::compute_bias(x, reduce_axes_, method_);
}

void BiasCalibrator::collect(const at::Tensor& x) {
  MQ_CHECK(x.defined() && x.numel() > 0, "BiasCalibrator.collect: empty or undefined input");
  const at::Tensor in = x.detach();
  if (method_ == "mean") {
    at::Tensor b = quant::compute_bias(in, reduce_axes_, method_);
    if (!calib_bias_) {
      calib_bias_ = b;
    } else {
      // ModelOpt would broadcast silently; a different bias shape means the input layout changed.
      MQ_CHECK(b.sizes() == calib_bias_->sizes(), "bias shape changed! (", calib_bias_->sizes(), " -> ",
               b.sizes(), ")");
      // Equal weight per batch, whatever its size (ModelOpt's running mean of batch means), updated in fp32
      // and stored back in the batch bias dtype (modelopt 0.47).
      calib_bias_ = ((calib_bias_->to(at::kFloat) * count_ + b.to(at::kFloat)) / (count_ + 1)).to(b.scalar_type());
    }
    ++count_;
    return;
  }
  auto [mx, mn] = max_min(in, reduce_axes_);
  if (calib_max_) {
    MQ_CHECK(mx.sizes() == calib_max_->sizes(), "bias shape changed! (", calib_max_->sizes(), " -> ",
             mx.sizes(), ")");
    mx = at::max(*calib_max_, mx);
    mn = at::min(*calib_min_, mn);
  }
  calib_max_ = mx;
  calib_min_ = mn;
  calib_bias_ = (mx + mn) / 2;
}

void BiasCalibrator::reset() {
  calib_bias_.reset();
  calib_max_.reset();
  calib_min_.reset();
  count_ = 0;
}

}  // namespace mq::quant
