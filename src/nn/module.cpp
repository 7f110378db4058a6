#include "mq/nn/module.hpp"

#include <ATen/ATen.h>
#include <ATen/Functions.h>

#include <algorithm>
#include <unordered_set>

#include "mq/core/error.hpp"

namespace mq::nn {

// ---- children
// ---------------------------------------------------------------------------------------

Module& Module::register_module(const std::string& name, std::shared_ptr<Module> child) {
  MQ_CHECK(!name.empty(), "register_module: empty child name in a ", type_name());
  MQ_CHECK(name.find('.') == std::string::npos, "register_module: child name '", name,
           "' contains '.' (", type_name(), ")");
  MQ_CHECK(child != nullptr, "register_module: child '", name, "' is null (", type_name(), ")");
  MQ_CHECK(this->child(name) == nullptr, "register_module: ", type_name(), " already has a child '",
           name, "'");
  MQ_CHECK(!has_parameter(name), "register_module: ", type_name(), " already has a parameter '",
           name, "'");
  children_.emplace_back(name, std::move(child));
  return *children_.back().second;
}

std::shared_ptr<Module> Module::replace_child(const std::string& name,
                                              std::shared_ptr<Module> child) {
  MQ_CHECK(child != nullptr, "replace_child: new child '", name, "' is null (", type_name(), ")");
  for (auto& [n, c] : children_) {
    if (n == name) {
      std::shared_ptr<Module> old = std::move(c);
      c = std::move(child);
      return old;
    }
  }
  MQ_THROW(Error, "replace_child: ", type_name(), " has no child '", name, "'");
}

void Module::remove_child(const std::string& name) {
  children_.erase(std::remove_if(children_.begin(), children_.end(),
                                 [&](const auto& p) { return p.first == name; }),
                  children_.end());
}

Module* Module::child(const std::string& name) const {
  for (const auto& [n, c] : children_)
    if (n == name) return c.get();
  return nullptr;
}

std::shared_ptr<Module> Module::child_ptr(const std::string& name) const {
  for (const auto& [n, c] : children_)
    if (n == name) return c;
  return nullptr;
}

void Module::throw_bad_child(const std::string& name) const {
  Module* m = child(name);
  if (!m) MQ_THROW(Error, type_name(), " has no child '", name, "'");
  MQ_THROW(Error, type_name(), ": child '", name, "' is a ", m->type_name(),
           ", not of the expected type");
}

Module& Module::get_submodule(const std::string& dotted) {
  if (dotted.empty()) return *this;
  Module* cur = this;
  std::string walked;
  size_t pos = 0;
  while (pos <= dotted.size()) {
    size_t dot = dotted.find('.', pos);
    std::string atom = dotted.substr(pos, dot == std::string::npos ? std::string::npos : dot - pos);
    Module* next = cur->child(atom);
    MQ_CHECK(next != nullptr, "get_submodule('", dotted,
             "'): ", walked.empty() ? "the root" : walked, " (", cur->type_name(),
             ") has no attribute `", atom, "`");
    walked += (walked.empty() ? "" : ".") + atom;
    cur = next;
    if (dot == std::string::npos) break;
    pos = dot + 1;
  }
  return *cur;
}

namespace {
void walk(Module* m, const std::string& prefix, std::unordered_set<const Module*>& seen,
          std::vector<std::pair<std::string, Module*>>& out) {
  if (!seen.insert(m).second) return;
  out.emplace_back(prefix, m);
  for (const auto& [n, c] : m->children())
    walk(c.get(), prefix.empty() ? n : prefix + "." + n, seen, out);
}
}  // namespace

std::vector<std::pair<std::string, Module*>> Module::named_modules(const std::string& prefix) {
  std::vector<std::pair<std::string, Module*>> out;
  std::unordered_set<const Module*> seen;
  walk(this, prefix, seen, out);
  return out;
}

// ---- parameters
// ---------------------------------------------------------------------------------------

void Module::register_parameter(const std::string& name, at::Tensor t) {
  MQ_CHECK(!name.empty() && name.find('.') == std::string::npos, "register_parameter: bad name '",
           name, "' (", type_name(), ")");
  MQ_CHECK(child(name) == nullptr, "register_parameter: ", type_name(), " already has a child '",
           name, "'");
  for (auto& [n, p] : params_) {
    if (n == name) {
      p = std::move(t);
      return;
    }
  }
  params_.emplace_back(name, std::move(t));
}

bool Module::has_parameter(const std::string& name) const {
  for (const auto& [n, p] : params_)
    if (n == name) return p.defined();
  return false;
}

at::Tensor& Module::parameter(const std::string& name) {
  for (auto& [n, p] : params_)
    if (n == name) return p;
  MQ_THROW(Error, type_name(), " has no parameter '", name, "'");
}

const at::Tensor& Module::parameter(const std::string& name) const {
  for (const auto& [n, p] : params_)
    if (n == name) return p;
  MQ_THROW(Error, type_name(), " has no parameter '", name, "'");
}

std::vector<std::pair<std::string, at::Tensor>> Module::named_parameters(
    const std::string& prefix) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  std::unordered_set<const at::TensorImpl*> seen;  // torch de-duplicates shared (tied) parameters
  for (auto& [mname, m] : named_modules(prefix)) {
    for (const auto& [n, p] : m->parameters()) {
      if (!p.defined() || !seen.insert(p.unsafeGetTensorImpl()).second) continue;
      out.emplace_back(mname.empty() ? n : mname + "." + n, p);
    }
  }
  return out;
}

// ---- quantizers
// --------------------------------------------------------------------------------------

QuantizerModule& Module::add_quantizer(const std::string& name,
                                       const config::QuantizerAttributeConfig& cfg) {
  register_module(name, std::make_shared<QuantizerModule>(cfg));
  return *quantizer(name);
}

QuantizerModule* Module::quantizer(const std::string& name) const {
  return dynamic_cast<QuantizerModule*>(child(name));
}

std::vector<std::pair<std::string, QuantizerModule*>> Module::quantizers() const {
  std::vector<std::pair<std::string, QuantizerModule*>> out;
  for (const auto& [n, c] : children_)
    if (auto* q = dynamic_cast<QuantizerModule*>(c.get())) out.emplace_back(n, q);
  return out;
}

// ---- train / hooks
// -----------------------------------------------------------------------------------

void Module::train(bool on) {
  for (auto& [n, m] : named_modules()) m->training_ = on;
}

int64_t Module::register_forward_hook(ForwardHook h) {
  MQ_CHECK(static_cast<bool>(h), "register_forward_hook: empty hook (", type_name(), ")");
  hooks_.emplace_back(next_hook_, std::move(h));
  return next_hook_++;
}

int64_t Module::register_forward_pre_hook(PreHook h) {
  MQ_CHECK(static_cast<bool>(h), "register_forward_pre_hook: empty hook (", type_name(), ")");
  pre_hooks_.emplace_back(next_hook_, std::move(h));
  return next_hook_++;
}

void Module::remove_hook(int64_t handle) {
  auto drop = [handle](auto& v) {
    v.erase(std::remove_if(v.begin(), v.end(), [&](const auto& p) { return p.first == handle; }),
            v.end());
  };
  drop(hooks_);
  drop(pre_hooks_);
}

void Module::run_pre_hooks(const at::Tensor& input) {
  // Copy: a hook may remove itself.
  auto hooks = pre_hooks_;
  for (auto& [id, h] : hooks) h(*this, input);
}

void Module::run_forward_hooks(const at::Tensor& input, const at::Tensor& output) {
  auto hooks = hooks_;
  for (auto& [id, h] : hooks) h(*this, input, output);
}

// ---- QuantizerModule
// ---------------------------------------------------------------------------------

QuantizerModule::QuantizerModule(const config::QuantizerAttributeConfig& cfg)
    : q_(std::in_place_type<quant::TensorQuantizer>, cfg) {}

quant::TensorQuantizer& QuantizerModule::tensor() {
  auto* t = std::get_if<quant::TensorQuantizer>(&q_);
  MQ_CHECK(t != nullptr, "QuantizerModule::tensor(): this quantizer is a SequentialQuantizer");
  return *t;
}
const quant::TensorQuantizer& QuantizerModule::tensor() const {
  auto* t = std::get_if<quant::TensorQuantizer>(&q_);
  MQ_CHECK(t != nullptr, "QuantizerModule::tensor(): this quantizer is a SequentialQuantizer");
  return *t;
}
quant::SequentialQuantizer& QuantizerModule::sequential() {
  auto* s = std::get_if<quant::SequentialQuantizer>(&q_);
  MQ_CHECK(s != nullptr, "QuantizerModule::sequential(): this quantizer is a TensorQuantizer");
  return *s;
}
const quant::SequentialQuantizer& QuantizerModule::sequential() const {
  auto* s = std::get_if<quant::SequentialQuantizer>(&q_);
  MQ_CHECK(s != nullptr, "QuantizerModule::sequential(): this quantizer is a TensorQuantizer");
  return *s;
}

std::vector<quant::TensorQuantizer*> QuantizerModule::leaves() {
  std::vector<quant::TensorQuantizer*> out;
  if (auto* t = std::get_if<quant::TensorQuantizer>(&q_)) {
    out.push_back(t);
  } else {
    for (auto& q : std::get<quant::SequentialQuantizer>(q_).quantizers()) out.push_back(&q);
  }
  return out;
}

// Both switches stand for ModelOpt's replacement of the module by a fresh plain quantizer, so a
// hard-disabled slot stops being hard-disabled (its parent never calls it anyway).
void QuantizerModule::make_sequential(size_t n) {
  MQ_CHECK(n >= 1, "make_sequential: need at least one stage");
  q_.emplace<quant::SequentialQuantizer>(n);
  hard_disabled_ = false;
}

void QuantizerModule::make_tensor() {
  q_.emplace<quant::TensorQuantizer>();
  hard_disabled_ = false;
}

void QuantizerModule::set_hard_disabled(bool on) {
  if (on && is_sequential()) make_tensor();
  hard_disabled_ = on;
  if (on) tensor().disable();
}

at::Tensor QuantizerModule::forward(const at::Tensor& x) {
  if (hard_disabled_) return x;
  if (auto* t = std::get_if<quant::TensorQuantizer>(&q_)) return t->forward(x);
  return std::get<quant::SequentialQuantizer>(q_).forward(x);
}

bool QuantizerModule::is_enabled() const {
  if (hard_disabled_) return false;
  if (auto* t = std::get_if<quant::TensorQuantizer>(&q_)) return t->is_enabled();
  return std::get<quant::SequentialQuantizer>(q_).is_enabled();
}

// ---- Linear / Embedding / ModuleList
// ----------------------------------------------------------------

Linear::Linear(at::Tensor weight, at::Tensor bias) {
  MQ_CHECK(weight.defined() && weight.dim() == 2, "Linear: weight must be 2-D (out, in), got ",
           weight.defined() ? weight.dim() : -1, " dims");
  if (bias.defined())
    MQ_CHECK(bias.dim() == 1 && bias.size(0) == weight.size(0), "Linear: bias must be (",
             weight.size(0), "), got ", bias.sizes());
  register_parameter("weight", std::move(weight));
  register_parameter("bias", std::move(bias));
}

at::Tensor Linear::forward(const at::Tensor& x) {
  if (has_hooks()) run_pre_hooks(x);
  at::Tensor y = apply_linear(x, weight(), bias());
  if (has_hooks()) run_forward_hooks(x, y);
  return y;
}

at::Tensor Linear::apply_linear(const at::Tensor& x, const at::Tensor& w,
                                const at::Tensor& b) const {
  return linear_fn_ ? linear_fn_(x, w, b) : at::linear(x, w, b);
}

int64_t Linear::in_features() const { return parameter("weight").size(1); }
int64_t Linear::out_features() const { return parameter("weight").size(0); }

Embedding::Embedding(at::Tensor weight) {
  MQ_CHECK(weight.defined() && weight.dim() == 2, "Embedding: weight must be 2-D (num, dim)");
  register_parameter("weight", std::move(weight));
}

at::Tensor Embedding::forward(const at::Tensor& ids) {
  if (has_hooks()) run_pre_hooks(ids);
  at::Tensor y = at::embedding(weight(), ids);
  if (has_hooks()) run_forward_hooks(ids, y);
  return y;
}

Module& ModuleList::push_back(std::shared_ptr<Module> m) {
  return register_module(std::to_string(children().size()), std::move(m));
}

}  // namespace mq::nn
