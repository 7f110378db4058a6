#pragma once
/// The module tree mqdist models are built from, mirroring torch.nn.Module where ModelOpt relies on
/// it: dotted names from `named_modules()`, parameters, child replacement, and a type key per
/// module class
/// ("nn.Linear", "nn.Embedding", "LlamaAttention", ...) that plays the role of ModelOpt's
/// QuantModuleRegistry string keys (reference §4.4), so `parent_class` works verbatim.
///
/// Quantizers are modules too (QuantizerModule), named like ModelOpt's:
///   model.layers.3.self_attn.q_proj.weight_quantizer       TensorQuantizer or SequentialQuantizer
///   model.layers.3.self_attn.q_proj.weight_quantizer.0     stage 0 of a SequentialQuantizer
///
/// Ownership: a parent owns its children through shared_ptr. Parents look children up by name at
/// forward time (`child_as<Linear>("q_proj")`), so `replace_child` (what replace_quant_module does)
/// never leaves a stale pointer behind.
///
/// Example (a user module, the seeds' QuantLayerNorm):
///   struct LayerNorm : mq::nn::Module {
///     std::string type_name() const override { return "nn.LayerNorm"; }
///     virtual at::Tensor forward(const at::Tensor& x);
///   };
///   struct QuantLayerNorm : LayerNorm {
///     explicit QuantLayerNorm(LayerNorm&& base) : LayerNorm(std::move(base)) {
///       add_quantizer("input_quantizer"); add_quantizer("weight_quantizer"); }
///     at::Tensor forward(const at::Tensor& x) override { ...
///     quantizer("input_quantizer")->forward(x) ... }
///   };
///   mq::nn::register_quant_module("nn.LayerNorm", [](std::shared_ptr<mq::nn::Module> m) {
///     return std::make_shared<QuantLayerNorm>(std::move(dynamic_cast<LayerNorm&>(*m))); });
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "mq/quant/sequential_quantizer.hpp"
#include "mq/quant/tensor_quantizer.hpp"

namespace mq::nn {

class QuantizerModule;

class Module {
 public:
  Module() = default;
  virtual ~Module() = default;
  Module(Module&&) = default;
  Module& operator=(Module&&) = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  /// Registry key of this module's class ("nn.Linear", "nn.Embedding", "nn.ModuleList",
  /// "LlamaAttention").
  virtual std::string type_name() const = 0;
  /// Non-empty once the module was converted by replace_quant_module: the registry key it was
  /// converted under. ModelOpt's `isinstance(parent, QuantModuleRegistry[key])` is `quant_key() ==
  /// key`.
  const std::string& quant_key() const { return quant_key_; }
  void set_quant_key(std::string k) { quant_key_ = std::move(k); }

  // ---- children (insertion order, like torch's OrderedDict) -------------------------------------
  /// Adds a child; the name must be new and contain no '.'.
  Module& register_module(const std::string& name, std::shared_ptr<Module> child);
  /// Replaces an existing child (same name), returns the old one.
  std::shared_ptr<Module> replace_child(const std::string& name, std::shared_ptr<Module> child);
  /// Removes a child if present.
  void remove_child(const std::string& name);
  const std::vector<std::pair<std::string, std::shared_ptr<Module>>>& children() const {
    return children_;
  }
  /// nullptr when absent.
  Module* child(const std::string& name) const;
  std::shared_ptr<Module> child_ptr(const std::string& name) const;
  /// Typed child; throws mq::Error naming the child when absent or of another type.
  template <typename T>
  T& child_as(const std::string& name) const {
    Module* m = child(name);
    T* t = m ? dynamic_cast<T*>(m) : nullptr;
    if (!t) throw_bad_child(name);
    return *t;
  }
  /// Dotted path lookup ("layers.3.mlp"); "" is this module. Throws mq::Error naming the path when
  /// absent.
  Module& get_submodule(const std::string& dotted);
  /// Pre-order walk, this module first under `prefix` (torch named_modules order, duplicates once).
  std::vector<std::pair<std::string, Module*>> named_modules(const std::string& prefix = "");

  // ---- parameters and buffers
  // ---------------------------------------------------------------------
  /// Parameters ("weight", "bias", ...) in insertion order; an undefined tensor means "None".
  void register_parameter(const std::string& name, at::Tensor t);
  bool has_parameter(const std::string& name) const;
  /// Throws when absent.
  at::Tensor& parameter(const std::string& name);
  const at::Tensor& parameter(const std::string& name) const;
  const std::vector<std::pair<std::string, at::Tensor>>& parameters() const { return params_; }
  /// Recursive, dotted names (state_dict order); undefined tensors skipped.
  std::vector<std::pair<std::string, at::Tensor>> named_parameters(const std::string& prefix = "");

  // ---- quantizers
  // ---------------------------------------------------------------------------------
  /// Adds a QuantizerModule child `name` holding a TensorQuantizer built from `cfg` (default: INT8
  /// per-tensor, ModelOpt's QUANT_DESC_8BIT_PER_TENSOR).
  QuantizerModule& add_quantizer(const std::string& name,
                                 const config::QuantizerAttributeConfig& cfg = {});
  /// nullptr when there is no quantizer child of that name.
  QuantizerModule* quantizer(const std::string& name) const;
  /// Direct quantizer children, in order.
  std::vector<std::pair<std::string, QuantizerModule*>> quantizers() const;

  // ---- train / eval
  // -------------------------------------------------------------------------------
  bool is_training() const { return training_; }
  /// Recursive, like torch's train()/eval().
  void train(bool on = true);
  void eval() { train(false); }

  // ---- forward hooks (calibration algorithms capture per-layer inputs/outputs through these)
  // -------
  /// Called by modules that support hooks (decoder layers, linears) with their primary input and
  /// output.
  using ForwardHook =
      std::function<void(Module& self, const at::Tensor& input, const at::Tensor& output)>;
  using PreHook = std::function<void(Module& self, const at::Tensor& input)>;
  /// Returns a handle for remove_hook.
  int64_t register_forward_hook(ForwardHook h);
  int64_t register_forward_pre_hook(PreHook h);
  void remove_hook(int64_t handle);
  bool has_hooks() const { return !hooks_.empty() || !pre_hooks_.empty(); }
  void run_pre_hooks(const at::Tensor& input);
  void run_forward_hooks(const at::Tensor& input, const at::Tensor& output);

 protected:
  [[noreturn]] void throw_bad_child(const std::string& name) const;

 private:
  std::string quant_key_;
  bool training_ = false;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  std::vector<std::pair<std::string, at::Tensor>> params_;
  std::vector<std::pair<int64_t, ForwardHook>> hooks_;
  std::vector<std::pair<int64_t, PreHook>> pre_hooks_;
  int64_t next_hook_ = 1;
};

/// A quantizer in the module tree: a TensorQuantizer, or a SequentialQuantizer whose stage i is
/// named
/// `<name>.i` (ModelOpt's nn.Sequential). set_quantizer_attributes_full switches between the two in
/// place (make_sequential / make_tensor), which is ModelOpt's module replacement on the parent.
class QuantizerModule final : public Module {
 public:
  explicit QuantizerModule(const config::QuantizerAttributeConfig& cfg = {});
  std::string type_name() const override {
    return is_sequential() ? "SequentialQuantizer" : "TensorQuantizer";
  }

  bool is_sequential() const { return std::holds_alternative<quant::SequentialQuantizer>(q_); }
  /// Throws mq::Error when the other kind is held.
  quant::TensorQuantizer& tensor();
  const quant::TensorQuantizer& tensor() const;
  quant::SequentialQuantizer& sequential();
  const quant::SequentialQuantizer& sequential() const;
  /// Every leaf TensorQuantizer (1 or n), in stage order.
  std::vector<quant::TensorQuantizer*> leaves();

  /// Replace the held quantizer by n fresh default TensorQuantizers / one fresh TensorQuantizer.
  void make_sequential(size_t n);
  void make_tensor();

  /// ModelOpt's HardDisabledTensorQuantizer (nn.Embedding input): always disabled, configs
  /// absorbed, enable() throws.
  bool hard_disabled() const { return hard_disabled_; }
  void set_hard_disabled(bool on);

  at::Tensor forward(const at::Tensor& x);
  bool is_enabled() const;

 private:
  std::variant<quant::TensorQuantizer, quant::SequentialQuantizer> q_;
  bool hard_disabled_ = false;
};

/// torch.nn.Linear: y = x W^T + b, W (out, in). Quantized form (QuantLinear, created by
/// replace_quant_module) adds input/weight/output quantizers; see reference §4.4 for the defaults.
///
/// The product itself goes through apply_linear: at::linear(x, w, b) unless a linear function was
/// set (a tensor-parallel row-parallel layer sets one that splits the reduction and gathers the
/// partial sums over the TP group). Forward and QuantLinear::forward both call it with their
/// (quantized) input and weight, and the function moves with the module into its QuantLinear.
class Linear : public Module {
 public:
  /// (x (..., in), w (out, in), b (out) or undefined) -> (..., out).
  using LinearFn =
      std::function<at::Tensor(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b)>;

  Linear() = default;
  Linear(at::Tensor weight, at::Tensor bias);
  std::string type_name() const override { return "nn.Linear"; }
  virtual at::Tensor forward(const at::Tensor& x);
  /// Replaces at::linear in forward; an empty function restores it.
  void set_linear_fn(LinearFn fn) { linear_fn_ = std::move(fn); }
  const LinearFn& linear_fn() const { return linear_fn_; }
  /// linear_fn()(x, w, b), or at::linear(x, w, b) when none is set.
  at::Tensor apply_linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) const;
  at::Tensor& weight() { return parameter("weight"); }
  /// Undefined when the layer has no bias.
  at::Tensor bias() const { return has_parameter("bias") ? parameter("bias") : at::Tensor(); }
  int64_t in_features() const;
  int64_t out_features() const;

 private:
  LinearFn linear_fn_;
};

/// torch.nn.Embedding.
class Embedding : public Module {
 public:
  Embedding() = default;
  explicit Embedding(at::Tensor weight);
  std::string type_name() const override { return "nn.Embedding"; }
  virtual at::Tensor forward(const at::Tensor& ids);
  at::Tensor& weight() { return parameter("weight"); }
};

/// torch.nn.ModuleList: children named "0", "1", ...
class ModuleList final : public Module {
 public:
  std::string type_name() const override { return "nn.ModuleList"; }
  Module& push_back(std::shared_ptr<Module> m);
  size_t size() const { return children().size(); }
  Module& operator[](size_t i) const { return *children().at(i).second; }
};

}  // namespace mq::nn
