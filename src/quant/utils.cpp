#include "mq/quant/utils.hpp"

#include <algorithm>

#include <ATen/ATen.h>

#include "mq/core/error.hpp"

namespace mq::quant {

namespace {

bool is_fp8(at::ScalarType t) {
  return t == at::kFloat8_e4m3fn || t == at::kFloat8_e5m2 || t == at::kFloat8_e4m3fnuz ||
         t == at::kFloat8_e5m2fnuz || t == at::kFloat8_e8m0fnu;
}

void check_dims(const at::Tensor& x, const std::vector<int64_t>& axis, const char* what) {
  const int64_t nd = x.dim();
  for (int64_t a : axis) {
    MQ_CHECK(a >= -nd && a < nd, what, ": axis ", a, " is out of range for a tensor of rank ", nd);
  }
}

}  // namespace

at::Tensor reduce_amax(const at::Tensor& x, std::optional<std::vector<int64_t>> axis, bool keepdims,
                       bool squeeze_scalar) {
  MQ_CHECK(x.defined(), "reduce_amax: undefined tensor");
  MQ_CHECK(x.numel() > 0, "reduce_amax: empty tensor of shape ", x.sizes());
  // min/max reductions are not implemented for FP8 on every backend; fp32 holds every FP8 value exactly.
  const at::Tensor in = is_fp8(x.scalar_type()) ? x.to(at::kFloat) : x;
  if (!axis) {
    return at::maximum(at::abs(at::max(in)), at::abs(at::min(in)));
  }
  check_dims(in, *axis, "reduce_amax");
  at::Tensor out = at::maximum(at::abs(at::amax(in, *axis, keepdims)), at::abs(at::amin(in, *axis, keepdims)));
  if (squeeze_scalar && out.numel() == 1) out = out.squeeze();
  return out;
}

at::Tensor reduce_sum(const at::Tensor& x, std::optional<std::vector<int64_t>> axis, bool keepdims) {
  MQ_CHECK(x.defined(), "reduce_sum: undefined tensor");
  if (!axis) return at::sum(x);
  check_dims(x, *axis, "reduce_sum");
  return at::sum(x, *axis, keepdims);
}

std::optional<std::vector<int64_t>> convert_quantization_axis_to_reduce_axis(
    const at::Tensor& x, std::optional<std::vector<int64_t>> axis) {
  if (!axis) return std::nullopt;
  check_dims(x, *axis, "quantization axis");
  const int64_t nd = x.dim();
  std::vector<int64_t> reduce;
  for (int64_t i = 0; i < nd; ++i) {
    const bool kept = std::find(axis->begin(), axis->end(), i) != axis->end() ||
                      std::find(axis->begin(), axis->end(), i - nd) != axis->end();
    if (!kept) reduce.push_back(i);
  }
  return reduce;
}

}  // namespace mq::quant
