#pragma once
/// Quantized modules and the quant-module registry (ModelOpt's `QuantModuleRegistry`,
/// `mtq.register`, `replace_quant_module`; reference numerics §4.4).
///
/// The registry maps a module type key (Module::type_name(): "nn.Linear", "LlamaAttention", ...) to
/// a factory that turns an original module into its quantized form. replace_quant_module() walks
/// the tree parent-first, replaces every module whose type key is registered, and stamps the new
/// module with quant_key() = that key, which is what `parent_class` in a quant_cfg entry matches.
///
/// Built in: "nn.Linear" -> QuantLinear, "nn.Embedding" -> QuantEmbedding.
///
/// Example (the seeds' QuantLayerNorm; see module.hpp for the class):
///   mq::nn::register_quant_module("nn.LayerNorm", [](std::shared_ptr<mq::nn::Module> m) {
///     return std::make_shared<QuantLayerNorm>(std::move(dynamic_cast<LayerNorm&>(*m))); });
///   mq::nn::replace_quant_module(model);
///
/// Example (an HF attention class: adds q/k/v/p_bmm_quantizer to the same object):
///   mq::nn::register_quant_attention("LlamaAttention");
///   // in the attention forward, after RoPE and before repeat_kv:
///   if (auto* q = quantizer("k_bmm_quantizer")) k = q->forward(k);
#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "mq/nn/module.hpp"

namespace mq::nn {

/// Receives the original module (sole owner during conversion), returns the quantized module: a new
/// object built by moving from the old one, or the same object with quantizers added in place.
using QuantModuleFactory = std::function<std::shared_ptr<Module>(std::shared_ptr<Module>)>;

/// Registers (or replaces) the factory for `type_key`.
void register_quant_module(const std::string& type_key, QuantModuleFactory factory);
/// Removes `type_key`; unknown keys throw mq::Error.
void unregister_quant_module(const std::string& type_key);
bool is_registered_quant_module(const std::string& type_key);
/// Registered keys, sorted.
std::vector<std::string> registered_quant_modules();
/// True for the keys ModelOpt 0.47.0's QuantModuleRegistry holds after import ("nn.Linear",
/// "nn.BatchNorm1d", "nn.LayerNorm", "hf.DbrxExperts", ...). Presets name several of them in
/// `parent_class`; set_quantizer_by_cfg accepts a key that is registered here or known to ModelOpt
/// (a known but unregistered key matches no module, as in ModelOpt for a model without that class).
bool is_modelopt_quant_module_key(const std::string& type_key);
/// Registers `type_key` with a factory that adds q_bmm_quantizer, k_bmm_quantizer, v_bmm_quantizer
/// and p_bmm_quantizer (default TensorQuantizers: INT8 per-tensor, enabled) to the module in place
/// (ModelOpt's _QuantAttention registered on the fly for HF attention classes).
void register_quant_attention(const std::string& type_key);

/// Replaces every registered module below `model` (and `model` itself when its factory works in
/// place), parent-first like ModelOpt, recursing into the replacement. Throws when the model is
/// already quantized (has a quantizer anywhere) or when the root is registered with a factory that
/// returns a new object (the caller owns the root: convert it yourself). Returns the number of
/// quantizers in the tree.
size_t replace_quant_module(Module& model);

/// ModelOpt's QuantLinear (QuantLinearConvBase): input_quantizer (INT8 per-tensor),
/// weight_quantizer (INT8 axis 0), output_quantizer (INT8 per-tensor, disabled). forward =
/// output_quantizer(linear(input_quantizer(x), weight_quantizer(W), b)); the bias is never
/// quantized; hooks see the original input and the final output.
class QuantLinear : public Linear {
 public:
  explicit QuantLinear(Linear&& base);
  at::Tensor forward(const at::Tensor& x) override;
  /// weight_quantizer(W), or W itself once folded (fold_weight).
  at::Tensor quantized_weight();
  bool weight_folded() const { return weight_folded_; }
  void set_weight_folded(bool on) { weight_folded_ = on; }

 private:
  bool weight_folded_ = false;
};

/// ModelOpt's _QuantEmbedding: weight_quantizer (INT8 per-tensor), input_quantizer hard-disabled
/// (ids are integers), output_quantizer (disabled). forward =
/// output_quantizer(embedding(weight_quantizer(W), ids)).
class QuantEmbedding : public Embedding {
 public:
  explicit QuantEmbedding(Embedding&& base);
  at::Tensor forward(const at::Tensor& ids) override;
  at::Tensor quantized_weight();
  bool weight_folded() const { return weight_folded_; }
  void set_weight_folded(bool on) { weight_folded_ = on; }

 private:
  bool weight_folded_ = false;
};

/// The INT8 axis-0 weight descriptor of Linear/Conv (ModelOpt
/// QUANT_DESC_8BIT_CONV*_WEIGHT_PER_CHANNEL).
config::QuantizerAttributeConfig int8_per_channel_weight_desc();

}  // namespace mq::nn
