#include "mq/calib/calibrate.hpp"

#include <ATen/ATen.h>
#include <ATen/Functions.h>
#include <ATen/core/grad_mode.h>

#include <cstdlib>
#include <iostream>
#include <mutex>
#include <regex>
#include <set>
#include <sstream>

#include "mq/core/error.hpp"
#include "mq/nn/conversion.hpp"
#include "mq/nn/moe.hpp"
#include "mq/nn/quant_module.hpp"
#include "mq/quant/utils.hpp"

namespace mq::calib {

namespace {

void warn(std::vector<std::string>* sink, const std::string& msg) {
  std::cerr << "mqdist warning: " << msg << "\n";
  if (sink) sink->push_back(msg);
}

bool is_constant(const quant::TensorQuantizer& q) {
  return q.use_constant_amax() || q.constant_amax().has_value();
}

bool has_static_bias(const quant::TensorQuantizer& q) {
  return q.bias().has_value() && q.bias()->type.value_or("static") == "static";
}

// ModelOpt's `amax` property: None for MX formats and when there is no buffer.
std::optional<at::Tensor> amax_of(const quant::TensorQuantizer& q) {
  if (!q.has_amax_buffer() || q.is_mx_format()) return std::nullopt;
  return q.amax_buffer();
}

void start_collect(quant::TensorQuantizer& q) {
  if (!q.is_enabled()) return;
  if (is_constant(q)) {
    q.disable_quant();
  } else if (q.calibrator() != nullptr) {
    q.disable_quant();
    q.enable_calib();
  } else {
    q.disable();
  }
}

void finish_collect(quant::TensorQuantizer& q) {
  if (!q.is_enabled()) return;
  if (is_constant(q)) {
    q.enable_quant();
    return;
  }
  if (q.calibrator() != nullptr && !q.is_dynamic() && q.calibrator()->has_data())
    q.load_calib_amax();
  if (has_static_bias(q) && q.bias_calibrator() != nullptr && q.bias_calibrator()->has_data())
    q.load_calib_bias();
  q.enable_quant();
  q.disable_calib();
}

// ---- registry ----

class MaxAlgorithm final : public Algorithm {
 public:
  void run(nn::Module& model, const config::AlgorithmConfig& cfg, const ForwardLoop& loop,
           const CalibrateOptions& opts) override {
    max_calibrate(model, cfg, loop, opts);
  }
};

struct Registry {
  std::mutex mu;
  std::map<std::string, AlgorithmFactory> factories;
};

Registry& registry() {
  static Registry* r = [] {
    auto* reg = new Registry;
    reg->factories["max"] = [] { return std::make_unique<MaxAlgorithm>(); };
    return reg;
  }();
  return *r;
}

}  // namespace

void register_algorithm(const std::string& name, AlgorithmFactory factory) {
  MQ_CHECK(!name.empty() && factory, "register_algorithm: empty name or factory");
  std::lock_guard<std::mutex> lock(registry().mu);
  registry().factories[name] = std::move(factory);
}

void unregister_algorithm(const std::string& name) {
  std::lock_guard<std::mutex> lock(registry().mu);
  MQ_CHECK(registry().factories.erase(name) == 1, "unregister_algorithm: '", name,
           "' is not registered");
}

bool is_registered_algorithm(const std::string& name) {
  std::lock_guard<std::mutex> lock(registry().mu);
  return registry().factories.count(name) > 0;
}

std::vector<std::string> algorithm_names() {
  std::lock_guard<std::mutex> lock(registry().mu);
  std::vector<std::string> out;
  for (const auto& [k, f] : registry().factories) out.push_back(k);
  return out;
}

// ---- state machine ----

void enable_stats_collection(nn::Module& model) {
  for (const auto& l : nn::named_tensor_quantizers(model)) start_collect(*l.quantizer);
}

void finish_stats_collection(nn::Module& model) {
  for (const auto& l : nn::named_tensor_quantizers(model)) finish_collect(*l.quantizer);
}

std::vector<std::pair<at::Tensor, nn::QuantizerModule*>> iter_weights_for_calibration(
    nn::Module& module) {
  std::vector<std::pair<at::Tensor, nn::QuantizerModule*>> out;
  for (const auto& w : nn::weight_attr_names(module)) {
    // ModelOpt reads the singular `<w>_weight_quantizer` attribute here.
    if (nn::QuantizerModule* q = module.quantizer(nn::weight_quantizer_name(w)))
      out.emplace_back(module.parameter(w), q);
  }
  return out;
}

void weight_only_quantize(nn::Module& model) {
  at::NoGradGuard no_grad;
  for (auto& [name, m] :
       model.named_modules()) {  // named_modules() already visits each object once
    if (m->quant_key().empty()) continue;
    for (auto& [w, q] : iter_weights_for_calibration(*m)) q->forward(w);
  }
}

bool needs_activation_forward(nn::Module& model) {
  for (const auto& l : nn::named_tensor_quantizers(model)) {
    const auto& q = *l.quantizer;
    if (!q.is_enabled()) continue;
    bool weight = false;
    std::istringstream parts(l.name);
    for (std::string p; std::getline(parts, p, '.');)
      if (p.size() >= 16 && p.compare(p.size() - 16, 16, "weight_quantizer") == 0) weight = true;
    if (weight) continue;
    if (!is_constant(q) && has_static_bias(q)) return true;
    if (is_constant(q) || q.is_dynamic() || q.is_mx_format()) continue;
    if (q.calibrator() != nullptr) return true;
  }
  return false;
}

namespace {

// max_calibrate(quantizer, lambda m: m(weight), distributed_sync=False) on a lone quantizer.
void calibrate_quantizer_on(nn::QuantizerModule& qm, const at::Tensor& w) {
  auto leaves = qm.leaves();
  for (auto* q : leaves) start_collect(*q);
  qm.forward(w);
  for (auto* q : leaves) finish_collect(*q);
}

bool ends_with(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}

}  // namespace

void sync_moe_local_experts_amax(nn::ModuleList& experts, bool sync_weight_amax) {
  at::NoGradGuard no_grad;
  std::map<std::string, at::Tensor> amax;
  for (size_t e = 0; e < experts.size(); ++e) {
    for (const auto& l : nn::named_tensor_quantizers(experts[e])) {
      auto a = amax_of(*l.quantizer);
      if (!a) continue;
      if (l.name.find("input_quantizer") != std::string::npos ||
          (sync_weight_amax && l.name.find("weight_quantizer") != std::string::npos)) {
        auto it = amax.find(l.name);
        if (it == amax.end())
          amax.emplace(l.name, a->detach().clone());
        else
          it->second = at::maximum(it->second, *a);
      }
    }
  }
  for (size_t e = 0; e < experts.size(); ++e)
    for (const auto& l : nn::named_tensor_quantizers(experts[e])) {
      auto it = amax.find(l.name);
      if (it != amax.end()) l.quantizer->set_amax(it->second.detach().clone());
    }
  for (size_t e = 0; e < experts.size(); ++e) {
    nn::Module& expert = experts[e];
    for (auto& [name, qm] : nn::named_quantizer_modules(expert)) {
      if (!ends_with(name, "weight_quantizer") || !qm->is_enabled()) continue;
      // SequentialQuantizer delegates `amax` to its first stage.
      if (amax_of(*qm->leaves()[0])) continue;
      size_t dot = name.rfind('.');
      const std::string owner = dot == std::string::npos ? "" : name.substr(0, dot);
      const std::string leaf = dot == std::string::npos ? name : name.substr(dot + 1);
      nn::Module& mod = expert.get_submodule(owner);
      const std::string wname =
          leaf == "weight_quantizer" ? "weight" : leaf.substr(0, leaf.size() - 17);
      if (mod.has_parameter(wname)) calibrate_quantizer_on(*qm, mod.parameter(wname));
    }
  }
}

// ---- shared weight global amax ----

const std::vector<std::string>& default_shared_weight_patterns() {
  static const std::vector<std::string> p = {R"((?:(.*)\.)?(?:q_proj|k_proj|v_proj))",
                                             R"((?:(.*)\.)?(?:gate_proj|up_proj))",
                                             R"((?:(.*)\.)?(?:w1|w3))"};
  return p;
}

std::vector<std::string> resolve_shared_weight_patterns(const config::AlgorithmConfig& cfg) {
  if (cfg.shared_states_weight_global_amax) return *cfg.shared_states_weight_global_amax;
  return default_shared_weight_patterns();
}

std::vector<std::vector<std::string>> find_shared_weight_groups(
    nn::Module& model, const std::vector<std::string>& patterns) {
  std::vector<std::regex> res;
  for (const auto& p : patterns) {
    try {
      res.emplace_back(p);
    } catch (const std::regex_error& e) {
      MQ_THROW(ConfigError, "shared_states weight_global_amax: bad pattern '", p, "': ", e.what());
    }
  }
  std::map<std::pair<size_t, std::vector<std::string>>, size_t> index;
  std::vector<std::vector<std::string>> buckets;
  for (auto& [name, m] : model.named_modules()) {
    nn::QuantizerModule* wq = m->quantizer("weight_quantizer");
    if (wq == nullptr || !wq->is_enabled()) continue;
    for (size_t i = 0; i < res.size(); ++i) {
      std::smatch mt;
      if (!std::regex_match(name, mt, res[i])) continue;
      std::vector<std::string> key;
      // Python tells an unmatched group (None) from an empty one; the prefix marks which.
      for (size_t g = 1; g < mt.size(); ++g) key.push_back(mt[g].matched ? "+" + mt[g].str() : "-");
      auto k = std::make_pair(i, key);
      auto it = index.find(k);
      if (it == index.end()) {
        index.emplace(k, buckets.size());
        buckets.push_back({name});
      } else {
        buckets[it->second].push_back(name);
      }
      break;
    }
  }
  std::vector<std::vector<std::string>> out;
  for (auto& b : buckets)
    if (b.size() >= 2) out.push_back(std::move(b));
  return out;
}

namespace {

// iter_weights_for_calibration with the dotted quantizer names.
std::vector<std::pair<std::string, nn::QuantizerModule*>> named_weight_quantizers(
    const std::string& module_name, nn::Module& module) {
  std::vector<std::pair<std::string, nn::QuantizerModule*>> out;
  for (const auto& w : nn::weight_attr_names(module)) {
    const std::string qname = nn::weight_quantizer_name(w);
    if (nn::QuantizerModule* q = module.quantizer(qname))
      out.emplace_back(module_name.empty() ? qname : module_name + "." + qname, q);
  }
  return out;
}

}  // namespace

int promote_static_block_weight_quantizers(
    nn::Module& model, const std::map<std::string, at::Tensor>& shared_global_amax,
    const std::map<std::string, at::Tensor>& own_global_amax) {
  int converted = 0;
  for (auto& [name, m] : model.named_modules()) {
    if (m->quant_key().empty()) continue;
    for (auto& [qname, qm] : named_weight_quantizers(name, *m)) {
      quant::TensorQuantizer& q = *qm->leaves()[0];
      if (!q.is_enabled() || !q.is_static_block_quant()) continue;
      auto amax = amax_of(q);
      if (!amax) continue;
      if (q.is_nvfp4_static()) {
        const bool already = q.is_static_block_scale_quantizer();
        auto it = shared_global_amax.find(name);
        auto own = own_global_amax.find(qname);
        if (it != shared_global_amax.end()) {
          q.promote_to_static_block_scale(it->second);
        } else if (own != own_global_amax.end()) {
          q.promote_to_static_block_scale(own->second);
        } else {
          q.promote_to_static_block_scale(quant::reduce_amax(amax->detach().clone(), std::nullopt));
        }
        if (!already) ++converted;
      } else if (q.num_bits().is_int()) {
        q.promote_to_static_block_scale();
      }
    }
  }
  return converted;
}

// ---- max ----

void max_calibrate(nn::Module& model, const config::AlgorithmConfig& cfg, const ForwardLoop& loop,
                   const CalibrateOptions& opts) {
  at::NoGradGuard no_grad;
  const auto patterns = resolve_shared_weight_patterns(cfg);
  const auto groups =
      find_shared_weight_groups(model, patterns);  // step 1: structural, before calibration
  enable_stats_collection(model);                  // step 2
  weight_only_quantize(model);                     // step 3
  if (loop) {                                      // step 4
    if (cfg.skip_forward_without_activation_calib && !needs_activation_forward(model)) {
      std::cerr << "max_calibrate: all enabled activation quantizers use constant/dynamic amax; "
                   "skipping the "
                   "calibration forward pass (weight-only calibration).\n";
    } else {
      loop(model);
    }
  }
  finish_stats_collection(model);  // step 5
  // Step 6: the HF sparse-MoE wrapper skips its local sync when moe_calib_experts_ratio is set.
  if (!cfg.moe_calib_experts_ratio) {
    for (auto& [name, m] : model.named_modules())
      if (auto* moe = dynamic_cast<nn::SparseMoeBlock*>(m))
        sync_moe_local_experts_amax(moe->experts(), cfg.sync_expert_weight_amax);
  }
  // Steps 7-11 (distributed): the seam for the multi-rank driver.
  if (cfg.distributed_sync && opts.parallel) opts.parallel->sync_amax(model, cfg);
  // Step 12a: each group's global amax = max over members' `_amax`, fp32.
  std::vector<GlobalAmaxSync> global;
  for (const auto& g : groups) {
    std::vector<at::Tensor> maxes;
    for (const auto& member : g) {
      nn::QuantizerModule* wq = model.get_submodule(member).quantizer("weight_quantizer");
      // ModelOpt reads `_amax` off the member's weight_quantizer attribute: absent on a
      // SequentialQuantizer.
      if (wq == nullptr || wq->is_sequential() || !wq->tensor().has_amax_buffer()) continue;
      maxes.push_back(quant::reduce_amax(wq->tensor().amax_buffer(), std::nullopt));
    }
    if (maxes.empty()) continue;
    global.push_back({g, "", true, at::max(at::stack(maxes)).clone().to(at::kFloat)});
  }
  std::map<std::string, at::Tensor> shared, own;
  if (opts.parallel) {
    // The own global amaxes promotion would compute (same value: MAX is exact and bf16/fp16 widen
    // to fp32 exactly), listed so that the hook can reduce TP-sharded weights.
    std::set<std::string> grouped;
    for (const auto& e : global) grouped.insert(e.modules.begin(), e.modules.end());
    for (auto& [name, m] : model.named_modules()) {
      if (m->quant_key().empty() || grouped.count(name)) continue;
      for (auto& [qname, qm] : named_weight_quantizers(name, *m)) {
        quant::TensorQuantizer& q = *qm->leaves()[0];
        if (!q.is_enabled() || !q.is_nvfp4_static()) continue;
        auto amax = amax_of(q);
        if (!amax) continue;
        global.push_back({{name},
                          qname,
                          false,
                          quant::reduce_amax(amax->detach(), std::nullopt).to(at::kFloat)});
      }
    }
    opts.parallel->sync_global_amax(model, cfg, global);
  }
  for (const auto& e : global) {
    if (e.shared) {
      for (const auto& member : e.modules) shared[member] = e.global_amax;
    } else {
      own[e.quantizer] = e.global_amax;
    }
  }
  promote_static_block_weight_quantizers(model, shared, own);  // step 12b
}

// ---- validation / driver ----

std::vector<std::string> validate_amax(nn::Module& model) {
  std::vector<std::string> out;
  for (const auto& l : nn::named_tensor_quantizers(model)) {
    auto check = [&](const char* attr, const std::optional<at::Tensor>& t) {
      if (!t || !t->defined() || t->numel() == 0) return;
      at::Tensor v = t->to(at::kFloat);
      const bool ok = (v >= 0).all().item<bool>() && !at::isinf(v).any().item<bool>() &&
                      !at::isnan(v).any().item<bool>();
      if (ok) return;
      std::ostringstream os;
      os << l.name << "." << attr << " contains invalid values: " << v.flatten().slice(0, 0, 8);
      warn(&out, os.str());
    };
    if (l.quantizer->has_amax_buffer()) check("_amax", l.quantizer->amax_buffer());
    check("_pre_quant_scale", l.quantizer->pre_quant_scale());
  }
  return out;
}

std::vector<std::string> calibrate(nn::Module& model, const config::AlgorithmConfig& algorithm,
                                   const ForwardLoop& loop, const CalibrateOptions& opts) {
  std::unique_ptr<Algorithm> algo;
  if (!algorithm.is_none()) {
    AlgorithmFactory f;
    {
      std::lock_guard<std::mutex> lock(registry().mu);
      auto it = registry().factories.find(*algorithm.method);
      if (it != registry().factories.end()) f = it->second;
    }
    if (!f) {
      std::string names;
      for (const auto& n : algorithm_names()) names += (names.empty() ? "" : ", ") + n;
      MQ_THROW(ConfigError, "calibration algorithm '", *algorithm.method,
               "' is not registered (available: ", names, ")");
    }
    algo = f();
  }
  const bool training = model.is_training();
  model.eval();
  try {
    if (algo) algo->run(model, algorithm, loop, opts);
  } catch (...) {
    model.train(training);
    throw;
  }
  auto warnings = validate_amax(model);
  model.train(training);
  return warnings;
}

namespace {

void check_weight_quantization_took_effect(nn::Module& model, const config::QuantizeConfig& cfg) {
  const char* skip = std::getenv("MODELOPT_SKIP_WEIGHT_QUANT_CHECK");
  if (skip && std::string(skip) == "1") return;
  // Last entry per pattern, patterns in first-seen order (a Python dict comprehension).
  std::vector<std::string> order;
  std::map<std::string, const config::QuantizerCfgEntry*> last;
  for (const auto& e : cfg.quant_cfg) {
    if (!last.count(e.quantizer_name)) order.push_back(e.quantizer_name);
    last[e.quantizer_name] = &e;
  }
  std::set<std::string> weight_patterns;
  for (const auto& p : order)
    if (last[p]->is_enabled() &&
        (p.find("weight_quantizer") != std::string::npos || nn::fnmatch("weight_quantizer", p)))
      weight_patterns.insert(p);
  if (weight_patterns.empty()) return;
  for (const auto& l : nn::named_tensor_quantizers(model))
    if (l.name.find("weight_quantizer") != std::string::npos && l.quantizer->is_enabled()) return;
  std::string pats;
  for (const auto& p : weight_patterns) pats += "\n  " + p;
  MQ_THROW(
      Error,
      "The quantization config asks for weight quantization but no weight quantizer is enabled, so "
      "nothing would be quantized. These patterns asked for it:",
      pats,
      "\nEither the patterns do not match this architecture's module names, or the modules holding "
      "the "
      "weights were never converted to quantized modules. Set MODELOPT_SKIP_WEIGHT_QUANT_CHECK=1 "
      "to bypass.");
}

}  // namespace

std::vector<std::string> quantize(nn::Module& model, const config::QuantizeConfig& cfg,
                                  const ForwardLoop& loop, const CalibrateOptions& opts) {
  if (!nn::is_quantized(model)) nn::replace_quant_module(model);
  nn::set_quantizer_by_cfg(model, cfg.quant_cfg);
  check_weight_quantization_took_effect(model, cfg);
  std::vector<std::string> warnings;
  for (const auto& a : config::calibration_algorithms(cfg)) {
    auto w = calibrate(model, a, loop, opts);
    warnings.insert(warnings.end(), w.begin(), w.end());
  }
  return warnings;
}

// ---- MoE coverage ----

MoeCoverage moe_coverage(nn::Module& model) {
  MoeCoverage cov;
  for (auto& [name, m] : model.named_modules()) {
    auto* moe = dynamic_cast<nn::SparseMoeBlock*>(m);
    if (!moe) continue;
    std::string warning;
    cov.blocks.push_back(moe_block_coverage(name, moe->expert_token_counts(), &warning));
    if (!warning.empty()) cov.warnings.push_back(std::move(warning));
  }
  return cov;
}

MoeBlockCoverage moe_block_coverage(std::string name, std::vector<int64_t> token_counts,
                                    std::string* warning) {
  MoeBlockCoverage b{std::move(name), std::move(token_counts), {}};
  for (size_t e = 0; e < b.token_counts.size(); ++e)
    if (b.token_counts[e] == 0) b.starved.push_back(static_cast<int64_t>(e));
  warning->clear();
  if (!b.starved.empty()) {
    std::string list;
    for (int64_t e : b.starved) list += (list.empty() ? "" : ", ") + std::to_string(e);
    *warning = b.name + ": " + std::to_string(b.starved.size()) + " of " +
               std::to_string(b.token_counts.size()) +
               " experts received no calibration tokens (experts " + list +
               "); their input amax comes from the other experts";
  }
  return b;
}

void reset_moe_token_counts(nn::Module& model) {
  for (auto& [name, m] : model.named_modules())
    if (auto* moe = dynamic_cast<nn::SparseMoeBlock*>(m)) moe->reset_token_counts();
}

// ---- capture ----

LayerIoCapture::LayerIoCapture(nn::Module& model, const std::vector<std::string>& module_names,
                               bool keep_outputs)
    : keep_outputs_(keep_outputs) {
  for (const auto& n : module_names) {
    nn::Module& m = model.get_submodule(n);
    Entry& e = entries_[n];
    e.module = &m;
    e.handle = m.register_forward_hook(
        [&e, this](nn::Module&, const at::Tensor& in, const at::Tensor& out) {
          e.in.push_back(in.detach());
          if (keep_outputs_) e.out.push_back(out.detach());
        });
  }
}

LayerIoCapture::~LayerIoCapture() {
  for (auto& [n, e] : entries_) e.module->remove_hook(e.handle);
}

const std::vector<at::Tensor>& LayerIoCapture::inputs(const std::string& name) const {
  auto it = entries_.find(name);
  MQ_CHECK(it != entries_.end(), "LayerIoCapture: '", name, "' is not captured");
  return it->second.in;
}

const std::vector<at::Tensor>& LayerIoCapture::outputs(const std::string& name) const {
  auto it = entries_.find(name);
  MQ_CHECK(it != entries_.end(), "LayerIoCapture: '", name, "' is not captured");
  return it->second.out;
}

void LayerIoCapture::clear() {
  for (auto& [n, e] : entries_) {
    e.in.clear();
    e.out.clear();
  }
}

}  // namespace mq::calib
