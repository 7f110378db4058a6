#include "mq/quant/calibrator.hpp"

#include <ATen/ATen.h>

#include "mq/core/error.hpp"
#include "mq/quant/utils.hpp"

namespace mq::quant {

MaxCalibrator::MaxCalibrator(int num_bits, std::optional<std::vector<int64_t>> axis, bool is_unsigned)
    : num_bits_(num_bits), axis_(std::move(axis)), unsigned_(is_unsigned) {}

void MaxCalibrator::collect(const at::Tensor& x) {
  MQ_CHECK(x.defined(), "MaxCalibrator.collect: undefined tensor");
  const auto reduce_axis = convert_quantization_axis_to_reduce_axis(x, axis_);
  at::Tensor local = reduce_amax(x, reduce_axis).detach();
  // Meta tensors only carry the shape (module initialisation); they have no values to check.
  if (x.is_meta()) {
    calib_amax_ = local;
    return;
  }
  MQ_CHECK(!at::any(at::isnan(local)).item<bool>(), "MaxCalibrator.collect: NaN in amax (input of shape ",
           x.sizes(), " contains NaN)");
  MQ_CHECK(!at::any(at::isinf(local)).item<bool>(), "MaxCalibrator.collect: Inf in amax (input of shape ",
           x.sizes(), " contains Inf)");
  MQ_CHECK(at::all(local >= 0).item<bool>(), "MaxCalibrator.collect: negative amax after abs");
  if (!calib_amax_) {
    calib_amax_ = local;
    return;
  }
  MQ_CHECK(local.sizes() == calib_amax_->sizes(), "amax shape changed! (", calib_amax_->sizes(), " -> ",
           local.sizes(), ")");
  // at::max promotes like torch.max: a bf16 running amax meeting an fp32 batch becomes fp32.
  calib_amax_ = at::max(*calib_amax_, local);
}

std::optional<at::Tensor> MaxCalibrator::compute_amax(const CalibAmaxArgs& /*args*/) { return calib_amax_; }

void MaxCalibrator::reset() { calib_amax_.reset(); }

std::unique_ptr<Calibrator> make_calibrator(const std::string& kind, int num_bits,
                                            std::optional<std::vector<int64_t>> axis, bool is_unsigned) {
  if (kind == "max") return std::make_unique<MaxCalibrator>(num_bits, std::move(axis), is_unsigned);
  if (kind == "histogram") return std::make_unique<HistogramCalibrator>(num_bits, std::move(axis), is_unsigned);
  MQ_THROW(Error, "calibrator: unknown kind '", kind, "' (expected \"max\" or \"histogram\")");
}

std::unique_ptr<Calibrator> make_calibrator(const std::string& kind, std::pair<int, int> float_num_bits,
                                            std::optional<std::vector<int64_t>> axis, bool is_unsigned) {
  // MaxCalibrator does not use num_bits (ModelOpt stores it only for its repr).
  if (kind == "max") return std::make_unique<MaxCalibrator>(float_num_bits.first, std::move(axis), is_unsigned);
  if (kind == "histogram")
    return std::make_unique<HistogramCalibrator>(float_num_bits, std::move(axis), is_unsigned);
  MQ_THROW(Error, "calibrator: unknown kind '", kind, "' (expected \"max\" or \"histogram\")");
}

}  // namespace mq::quant
