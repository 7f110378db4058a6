#pragma once
/// SequentialQuantizer: several TensorQuantizers applied one after the other to the same tensor
/// (ModelOpt's nn.Sequential container; reference §2.11, W4A8: INT4 block-128 then FP8 per-tensor).
///
/// Example (W4A8_AWQ_BETA weight quantizer):
///   SequentialQuantizer sq(2);
///   sq.set_from_attribute_config({int4_b128_cfg, fp8_cfg});
///   at::Tensor wq = mq::quant::calibrate_and_fake_quant(sq, w);   // both amaxes from the raw w
///
/// Calibration puts every stage in calibration mode with quantization off, so each stage returns its
/// input unchanged and all amaxes come from the raw tensor.
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include "mq/quant/tensor_quantizer.hpp"

namespace mq::quant {

class SequentialQuantizer {
 public:
  /// n default (INT8 per-tensor) quantizers.
  explicit SequentialQuantizer(size_t n = 2);
  explicit SequentialQuantizer(std::vector<TensorQuantizer> quantizers);

  size_t size() const { return quantizers_.size(); }
  TensorQuantizer& operator[](size_t i);
  const TensorQuantizer& operator[](size_t i) const;
  std::vector<TensorQuantizer>& quantizers() { return quantizers_; }

  /// One config per stage (sizes must match), or one config broadcast to every stage.
  void set_from_attribute_config(const std::vector<config::QuantizerAttributeConfig>& cfgs);
  void set_from_attribute_config(const config::QuantizerAttributeConfig& cfg);

  /// Applies the stages in order.
  at::Tensor forward(const at::Tensor& x);
  at::Tensor operator()(const at::Tensor& x) { return forward(x); }

  // Delegated to the first stage (ModelOpt _delegated_properties).
  bool fake_quant() const { return quantizers_.at(0).fake_quant(); }
  bool is_enabled() const { return quantizers_.at(0).is_enabled(); }
  std::optional<at::Tensor> amax() const { return quantizers_.at(0).amax(); }

  // Broadcast to every stage (ModelOpt _delegated_methods).
  void reset_amax();
  void disable();
  void enable();
  void disable_rotate();
  void load_calib_amax(const CalibAmaxArgs& args = {}, bool strict = true);
  void load_calib_bias();

  /// {"num_quantizers": n, "is_sequential_quantizer": true}
  nlohmann::json get_modelopt_state() const;

 private:
  std::vector<TensorQuantizer> quantizers_;
};

/// Max-calibrates every stage that needs it on x (all stages in calibration mode at once, quantization
/// off), then returns the sequential fake quant of x.
at::Tensor calibrate_and_fake_quant(SequentialQuantizer& q, const at::Tensor& x);

}  // namespace mq::quant
