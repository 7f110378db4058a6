#include "mq/nn/quant_module.hpp"

#include <ATen/ATen.h>
#include <ATen/Functions.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <set>

#include "mq/core/error.hpp"

namespace mq::nn {

namespace {

struct Registry {
  std::mutex mu;
  std::map<std::string, QuantModuleFactory> factories;
};

Registry& registry() {
  static Registry* r = [] {
    auto* reg = new Registry;
    reg->factories["nn.Linear"] = [](std::shared_ptr<Module> m) -> std::shared_ptr<Module> {
      return std::make_shared<QuantLinear>(std::move(dynamic_cast<Linear&>(*m)));
    };
    reg->factories["nn.Embedding"] = [](std::shared_ptr<Module> m) -> std::shared_ptr<Module> {
      return std::make_shared<QuantEmbedding>(std::move(dynamic_cast<Embedding&>(*m)));
    };
    return reg;
  }();
  return *r;
}

QuantModuleFactory find_factory(const std::string& key) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  auto it = r.factories.find(key);
  return it == r.factories.end() ? QuantModuleFactory() : it->second;
}

size_t count_quantizers(Module& m) {
  size_t n = 0;
  for (auto& [name, mod] : m.named_modules())
    if (auto* q = dynamic_cast<QuantizerModule*>(mod)) n += q->leaves().size();
  return n;
}

void replace_children(Module& parent) {
  // Children are copied: replace_child edits the vector we would otherwise iterate.
  auto kids = parent.children();
  for (auto& [name, child] : kids) {
    std::shared_ptr<Module> cur = child;
    if (dynamic_cast<QuantizerModule*>(cur.get()) == nullptr && cur->quant_key().empty()) {
      const std::string key = cur->type_name();
      if (QuantModuleFactory f = find_factory(key)) {
        std::shared_ptr<Module> q = f(cur);
        MQ_CHECK(q != nullptr, "replace_quant_module: factory for '", key,
                 "' returned null (child '", name, "')");
        q->set_quant_key(key);
        if (q.get() != cur.get()) parent.replace_child(name, q);
        cur = q;
      }
    }
    replace_children(*cur);
  }
}

}  // namespace

void register_quant_module(const std::string& type_key, QuantModuleFactory factory) {
  MQ_CHECK(!type_key.empty(), "register_quant_module: empty type key");
  MQ_CHECK(static_cast<bool>(factory), "register_quant_module: empty factory for '", type_key, "'");
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  r.factories[type_key] = std::move(factory);
}

void unregister_quant_module(const std::string& type_key) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  MQ_CHECK(r.factories.erase(type_key) == 1, "unregister_quant_module: '", type_key,
           "' is not registered");
}

bool is_registered_quant_module(const std::string& type_key) {
  return static_cast<bool>(find_factory(type_key));
}

std::vector<std::string> registered_quant_modules() {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  std::vector<std::string> out;
  for (const auto& [k, f] : r.factories) out.push_back(k);
  return out;
}

bool is_modelopt_quant_module_key(const std::string& type_key) {
  static const std::set<std::string> keys = {"Conv1D",
                                             "HFColumnParallelLinear",
                                             "HFRowParallelLinear",
                                             "hf.DbrxExpertGLU",
                                             "hf.DbrxExperts",
                                             "hf.DbrxFFN",
                                             "hf.FP8Linear",
                                             "hf.FalconLinear",
                                             "hf.GptOssExperts",
                                             "hf.Llama4TextExperts",
                                             "nn.AdaptiveAvgPool1d",
                                             "nn.AdaptiveAvgPool2d",
                                             "nn.AdaptiveAvgPool3d",
                                             "nn.AvgPool1d",
                                             "nn.AvgPool2d",
                                             "nn.AvgPool3d",
                                             "nn.BatchNorm1d",
                                             "nn.BatchNorm2d",
                                             "nn.BatchNorm3d",
                                             "nn.Conv1d",
                                             "nn.Conv2d",
                                             "nn.Conv3d",
                                             "nn.ConvTranspose1d",
                                             "nn.ConvTranspose2d",
                                             "nn.ConvTranspose3d",
                                             "nn.Embedding",
                                             "nn.GRU",
                                             "nn.InstanceNorm1d",
                                             "nn.InstanceNorm2d",
                                             "nn.InstanceNorm3d",
                                             "nn.LSTM",
                                             "nn.LayerNorm",
                                             "nn.LeakyReLU",
                                             "nn.Linear",
                                             "nn.MaxPool1d",
                                             "nn.MaxPool2d",
                                             "nn.MaxPool3d",
                                             "nn.RNN"};
  return keys.count(type_key) > 0;
}

void register_quant_attention(const std::string& type_key) {
  register_quant_module(type_key, [](std::shared_ptr<Module> m) {
    for (const char* n :
         {"q_bmm_quantizer", "k_bmm_quantizer", "v_bmm_quantizer", "p_bmm_quantizer"})
      if (m->quantizer(n) == nullptr) m->add_quantizer(n);
    return m;
  });
}

size_t replace_quant_module(Module& model) {
  MQ_CHECK(count_quantizers(model) == 0, "replace_quant_module: Model must not be quantized!");
  if (model.quant_key().empty()) {
    const std::string key = model.type_name();
    if (QuantModuleFactory f = find_factory(key)) {
      // The factory takes ownership semantics by shared_ptr; the root is owned by the caller, so
      // only an in-place factory can convert it. The no-op deleter keeps the caller's ownership
      // intact.
      std::shared_ptr<Module> alias(&model, [](Module*) {});
      std::shared_ptr<Module> q = f(alias);
      MQ_CHECK(q.get() == &model, "replace_quant_module: the root module is a registered '", key,
               "' whose factory builds a new object; convert the root yourself");
      model.set_quant_key(key);
    }
  }
  replace_children(model);
  return count_quantizers(model);
}

config::QuantizerAttributeConfig int8_per_channel_weight_desc() {
  config::QuantizerAttributeConfig c;
  c.axis = config::Axis{{0}, false};
  return c;
}

// ---- QuantLinear
// ---------------------------------------------------------------------------------------

QuantLinear::QuantLinear(Linear&& base) : Linear(std::move(base)) {
  add_quantizer("input_quantizer");
  add_quantizer("output_quantizer").tensor().disable();
  add_quantizer("weight_quantizer", int8_per_channel_weight_desc());
}

at::Tensor QuantLinear::quantized_weight() {
  if (weight_folded_) return weight();
  return child_as<QuantizerModule>("weight_quantizer").forward(weight());
}

at::Tensor QuantLinear::forward(const at::Tensor& x) {
  if (has_hooks()) run_pre_hooks(x);
  at::Tensor xq = child_as<QuantizerModule>("input_quantizer").forward(x);
  at::Tensor y = apply_linear(xq, quantized_weight(), bias());
  y = child_as<QuantizerModule>("output_quantizer").forward(y);
  if (has_hooks()) run_forward_hooks(x, y);
  return y;
}

// ---- QuantEmbedding
// ------------------------------------------------------------------------------------

QuantEmbedding::QuantEmbedding(Embedding&& base) : Embedding(std::move(base)) {
  add_quantizer("weight_quantizer");
  add_quantizer("input_quantizer").set_hard_disabled(true);
  add_quantizer("output_quantizer").tensor().disable();
}

at::Tensor QuantEmbedding::quantized_weight() {
  if (weight_folded_) return weight();
  return child_as<QuantizerModule>("weight_quantizer").forward(weight());
}

at::Tensor QuantEmbedding::forward(const at::Tensor& ids) {
  if (has_hooks()) run_pre_hooks(ids);
  at::Tensor y = at::embedding(quantized_weight(), ids);
  y = child_as<QuantizerModule>("output_quantizer").forward(y);
  if (has_hooks()) run_forward_hooks(ids, y);
  return y;
}

}  // namespace mq::nn
