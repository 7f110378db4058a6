#include "mq/core/error.hpp"
#include "mq/quant/sequential_quantizer.hpp"

namespace mq::quant {

SequentialQuantizer::SequentialQuantizer(size_t n) {
  quantizers_.reserve(n);
  for (size_t i = 0; i < n; ++i) quantizers_.emplace_back();
}

SequentialQuantizer::SequentialQuantizer(std::vector<TensorQuantizer> quantizers)
    : quantizers_(std::move(quantizers)) {}

TensorQuantizer& SequentialQuantizer::operator[](size_t i) {
  MQ_CHECK(i < quantizers_.size(), "SequentialQuantizer: index ", i, " out of range (size ", quantizers_.size(), ")");
  return quantizers_[i];
}

const TensorQuantizer& SequentialQuantizer::operator[](size_t i) const {
  MQ_CHECK(i < quantizers_.size(), "SequentialQuantizer: index ", i, " out of range (size ", quantizers_.size(), ")");
  return quantizers_[i];
}

void SequentialQuantizer::set_from_attribute_config(const std::vector<config::QuantizerAttributeConfig>& cfgs) {
  MQ_CHECK(cfgs.size() == quantizers_.size(), "SequentialQuantizer: ", cfgs.size(), " configs for ",
           quantizers_.size(), " quantizers");
  for (size_t i = 0; i < cfgs.size(); ++i) quantizers_[i].set_from_attribute_config(cfgs[i]);
}

void SequentialQuantizer::set_from_attribute_config(const config::QuantizerAttributeConfig& cfg) {
  for (auto& q : quantizers_) q.set_from_attribute_config(cfg);
}

at::Tensor SequentialQuantizer::forward(const at::Tensor& x) {
  at::Tensor y = x;
  for (auto& q : quantizers_) y = q.forward(y);
  return y;
}

void SequentialQuantizer::reset_amax() {
  for (auto& q : quantizers_) q.reset_amax();
}
void SequentialQuantizer::disable() {
  for (auto& q : quantizers_) q.disable();
}
void SequentialQuantizer::enable() {
  for (auto& q : quantizers_) q.enable();
}
void SequentialQuantizer::disable_rotate() {
  for (auto& q : quantizers_) q.disable_rotate();
}
void SequentialQuantizer::load_calib_amax(const CalibAmaxArgs& args, bool strict) {
  for (auto& q : quantizers_) q.load_calib_amax(args, strict);
}
void SequentialQuantizer::load_calib_bias() {
  for (auto& q : quantizers_) q.load_calib_bias();
}

nlohmann::json SequentialQuantizer::get_modelopt_state() const {
  return {{"num_quantizers", quantizers_.size()}, {"is_sequential_quantizer", true}};
}

at::Tensor calibrate_and_fake_quant(SequentialQuantizer& sq, const at::Tensor& x) {
  // enable_stats_collection for every stage first, then one forward: with quantization off each stage
  // passes its input through, so every stage calibrates on the raw tensor (reference §2.11).
  std::vector<bool> calibrating(sq.size(), false);
  for (size_t i = 0; i < sq.size(); ++i) {
    TensorQuantizer& q = sq[i];
    if (!q.is_enabled()) continue;
    q.disable_quant();
    if (q.use_constant_amax() || q.constant_amax() || q.is_dynamic() || q.calibrator() == nullptr) continue;
    q.enable_calib();
    calibrating[i] = true;
  }
  sq.forward(x);
  for (size_t i = 0; i < sq.size(); ++i) {
    TensorQuantizer& q = sq[i];
    if (!q.is_enabled()) continue;
    if (calibrating[i] && q.calibrator()->has_data()) {
      q.load_calib_amax();
      if (q.bias() && q.bias()->type.value_or("static") == "static" && q.bias_calibrator()->has_data()) {
        q.load_calib_bias();
      }
    }
    q.enable_quant();
    q.disable_calib();
    if (calibrating[i] && q.is_nvfp4_static() && q.has_amax_buffer()) {
      q.promote_to_static_block_scale(q.amax_buffer().to(at::kFloat).max());
    }
  }
  return sq.forward(x);
}

}  // namespace mq::quant
