#include "mq/nn/conversion.hpp"

#include <ATen/ATen.h>
#include <ATen/Functions.h>
#include <ATen/core/grad_mode.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <regex>
#include <set>
#include <sstream>

#include "mq/core/error.hpp"
#include "mq/export/tensor_mode.hpp"
#include "mq/io/safetensors_torch.hpp"
#include "mq/nn/quant_module.hpp"

namespace mq::nn {

// ---- fnmatch
// --------------------------------------------------------------------------------------------

bool fnmatch(const std::string& s, const std::string& p) {
  // One fnmatch for the whole project: tensor mode's (Python fnmatch.fnmatchcase semantics).
  return hf_export::fnmatch(p, s);
}

std::string normalize_fused_experts_quantizer_name(const std::string& name) {
  static const std::regex re(R"((weight_quantizer|input_quantizer)s?\.\d+(?=$|\.))");
  return std::regex_replace(name, re, "$1");
}

bool QuantizerMatcher::matches(const std::string& name) const {
  if (const auto* w = std::get_if<std::string>(&m_)) {
    if (fnmatch(name, *w)) return true;
    std::string norm = normalize_fused_experts_quantizer_name(name);
    return norm != name && fnmatch(norm, *w);
  }
  return std::get<std::function<bool(const std::string&)>>(m_)(name);
}

// ---- walking
// ---------------------------------------------------------------------------------------------

namespace {

std::string join(const std::string& a, const std::string& b) { return a.empty() ? b : a + "." + b; }

// Parent of each module, by identity, from one named_modules() walk.
std::map<const Module*, Module*> parent_map(Module& model) {
  std::map<const Module*, Module*> out;
  for (auto& [n, m] : model.named_modules())
    for (const auto& [cn, c] : m->children()) out.emplace(c.get(), m);
  return out;
}

std::string parent_name(const std::string& name) {
  size_t dot = name.rfind('.');
  return dot == std::string::npos ? "" : name.substr(0, dot);
}

void check_parent_class(const std::optional<std::string>& parent_class) {
  if (parent_class && !parent_class->empty())
    MQ_CHECK_T(
        ConfigError,
        is_registered_quant_module(*parent_class) || is_modelopt_quant_module_key(*parent_class),
        "parent_class '", *parent_class,
        "' not found in QuantModuleRegistry. Make sure the class has a registered quantized "
        "equivalent.");
}

bool parent_ok(Module& model, const std::string& name,
               const std::optional<std::string>& parent_class) {
  if (!parent_class || parent_class->empty()) return true;
  // The parent of a stage "x.weight_quantizer.0" is the SequentialQuantizer container, never a
  // registered quant module; get_submodule cannot see stages, so test that case first.
  const std::string pn = parent_name(name);
  Module* parent = nullptr;
  try {
    parent = &model.get_submodule(pn);
  } catch (const Error&) {
    return false;
  }
  return parent->quant_key() == *parent_class;
}

// ModelOpt's named_modules() walk with in-place type switches: `visit` is called for each
// container, and then for each of its stages only when it was a SequentialQuantizer before and
// after the visit (a TensorQuantizer turned Sequential is not descended into; a Sequential turned
// Tensor leaves only detached stages behind, which ModelOpt edits harmlessly and we skip).
template <typename ContainerFn, typename StageFn>
void walk_quantizers(Module& model, ContainerFn&& on_container, StageFn&& on_stage) {
  for (auto& [name, qm] : named_quantizer_modules(model)) {
    const bool was_seq = qm->is_sequential();
    on_container(name, *qm);
    if (was_seq && qm->is_sequential()) {
      auto leaves = qm->leaves();
      for (size_t i = 0; i < leaves.size(); ++i)
        on_stage(name + "." + std::to_string(i), *qm, *leaves[i]);
    }
  }
}

// walk_quantizers over the containers and stages that `match` and parent_class select (as the
// set_quantizer_attributes_* calls address them): on_container(name, qm), on_stage(name, tq).
template <typename ContainerFn, typename StageFn>
void walk_selected(Module& model, const QuantizerMatcher& match,
                   const std::optional<std::string>& parent_class, ContainerFn&& on_container,
                   StageFn&& on_stage) {
  auto selected = [&](const std::string& name) {
    return match.matches(name) && parent_ok(model, name, parent_class);
  };
  walk_quantizers(
      model,
      [&](const std::string& name, QuantizerModule& qm) {
        if (selected(name)) on_container(name, qm);
      },
      [&](const std::string& name, QuantizerModule&, quant::TensorQuantizer& tq) {
        if (selected(name)) on_stage(name, tq);
      });
}

void apply_full(quant::TensorQuantizer& tq, const config::QuantizerAttributeConfig& cfg,
                bool hard_disabled) {
  tq.set_from_attribute_config(cfg);
  if (hard_disabled) tq.disable();
}

void apply_partial(quant::TensorQuantizer& tq, const config::QuantizerAttributeConfig& cfg,
                   bool hard_disabled) {
  tq.set_from_partial_attribute_config(cfg);
  if (hard_disabled) tq.disable();
}

void warn(const std::string& msg) { std::cerr << "mqdist warning: " << msg << "\n"; }

}  // namespace

std::vector<std::pair<std::string, QuantizerModule*>> named_quantizer_modules(Module& model) {
  std::vector<std::pair<std::string, QuantizerModule*>> out;
  for (auto& [n, m] : model.named_modules())
    if (auto* q = dynamic_cast<QuantizerModule*>(m)) out.emplace_back(n, q);
  return out;
}

std::vector<QuantizerLeaf> named_tensor_quantizers(Module& model) {
  std::vector<QuantizerLeaf> out;
  auto parents = parent_map(model);
  for (auto& [name, qm] : named_quantizer_modules(model)) {
    auto it = parents.find(qm);
    Module* parent = it == parents.end() ? nullptr : it->second;
    if (!qm->is_sequential()) {
      out.push_back({name, &qm->tensor(), qm, parent, -1});
    } else {
      auto leaves = qm->leaves();
      for (size_t i = 0; i < leaves.size(); ++i)
        out.push_back({name + "." + std::to_string(i), leaves[i], qm, parent, static_cast<int>(i)});
    }
  }
  return out;
}

// ---- set_quantizer_attributes_*
// ------------------------------------------------------------------------

void set_quantizer_attributes_full(Module& model, const QuantizerMatcher& match,
                                   const config::QuantizerAttributeConfig& attributes,
                                   const std::optional<std::string>& parent_class) {
  check_parent_class(parent_class);
  walk_selected(
      model, match, parent_class,
      [&](const std::string&, QuantizerModule& qm) {
        if (qm.is_sequential()) qm.make_tensor();
        apply_full(qm.tensor(), attributes, qm.hard_disabled());
      },
      [&](const std::string&, quant::TensorQuantizer& tq) { apply_full(tq, attributes, false); });
}

void set_quantizer_attributes_full(Module& model, const QuantizerMatcher& match,
                                   const std::vector<config::QuantizerAttributeConfig>& attributes,
                                   const std::optional<std::string>& parent_class) {
  check_parent_class(parent_class);
  MQ_CHECK_T(ConfigError, !attributes.empty(),
             "set_quantizer_attributes_full: empty attribute list");
  walk_selected(
      model, match, parent_class,
      [&](const std::string& name, QuantizerModule& qm) {
        if (!qm.is_sequential()) {
          // ModelOpt replaces the module with a plain SequentialQuantizer, hard-disabled or not.
          qm.make_sequential(attributes.size());
        } else if (qm.leaves().size() != attributes.size()) {
          warn("The number of attributes (" + std::to_string(attributes.size()) +
               ") does not match the number of quantizers of " + name + " (" +
               std::to_string(qm.leaves().size()) + ") leading to partial assignment.");
        }
        auto leaves = qm.leaves();
        for (size_t i = 0; i < leaves.size() && i < attributes.size(); ++i)
          apply_full(*leaves[i], attributes[i], false);
      },
      [&](const std::string& name, quant::TensorQuantizer&) {
        // ModelOpt would nest a SequentialQuantizer inside the stage; nothing downstream supports
        // that.
        MQ_THROW(ConfigError, "a list (SequentialQuantizer) cfg matched the stage '", name,
                 "' of a SequentialQuantizer: nested SequentialQuantizers are not supported");
      });
}

void set_quantizer_attributes_partial(Module& model, const QuantizerMatcher& match,
                                      const config::QuantizerAttributeConfig& attributes,
                                      const std::optional<std::string>& parent_class) {
  check_parent_class(parent_class);
  walk_selected(
      model, match, parent_class,
      [&](const std::string&, QuantizerModule& qm) {
        for (auto* tq : qm.leaves()) apply_partial(*tq, attributes, qm.hard_disabled());
      },
      [&](const std::string&, quant::TensorQuantizer& tq) {
        apply_partial(tq, attributes, false);
      });
}

void set_quantizer_attributes_partial(
    Module& model, const QuantizerMatcher& match,
    const std::vector<config::QuantizerAttributeConfig>& attributes,
    const std::optional<std::string>& parent_class) {
  check_parent_class(parent_class);
  auto check_seq = [&](const std::string& name, bool seq) {
    MQ_CHECK_T(ConfigError, seq, "set_quantizer_attributes_partial: attributes is a list but ",
               name, " is not a SequentialQuantizer.");
  };
  walk_selected(
      model, match, parent_class,
      [&](const std::string& name, QuantizerModule& qm) {
        check_seq(name, qm.is_sequential());
        auto leaves = qm.leaves();
        if (leaves.size() != attributes.size())
          warn("The number of attributes (" + std::to_string(attributes.size()) +
               ") does not match the number of quantizers of " + name +
               " leading to partial assignment.");
        for (size_t i = 0; i < leaves.size() && i < attributes.size(); ++i)
          apply_partial(*leaves[i], attributes[i], false);
      },
      [&](const std::string& name, quant::TensorQuantizer&) { check_seq(name, false); });
}

config::QuantizerAttributeConfig enable_only(bool enable) {
  config::QuantizerAttributeConfig c;
  c.enable = enable;
  c.fields_set = {"enable"};
  return c;
}

void enable_quantizer(Module& model, const QuantizerMatcher& match) {
  set_quantizer_attributes_partial(model, match, enable_only(true));
}

void disable_quantizer(Module& model, const QuantizerMatcher& match) {
  set_quantizer_attributes_partial(model, match, enable_only(false));
}

void set_quantizer_by_cfg(Module& model, const std::vector<config::QuantizerCfgEntry>& quant_cfg) {
  for (const auto& e : quant_cfg) {
    std::optional<std::string> parent;
    if (e.parent_class && !e.parent_class->empty()) parent = e.parent_class;
    check_parent_class(parent);
    if (!e.has_cfg()) {
      set_quantizer_attributes_partial(model, e.quantizer_name, enable_only(e.is_enabled()),
                                       parent);
    } else if (const auto* list = e.sequential_cfg()) {
      std::vector<config::QuantizerAttributeConfig> items = *list;
      // The entry-level enable overrides each item's (ModelOpt model_copy(update={"enable":
      // enable})).
      for (auto& c : items) c.enable = e.is_enabled();
      set_quantizer_attributes_full(model, e.quantizer_name, items, parent);
    } else {
      set_quantizer_attributes_full(model, e.quantizer_name, e.effective_cfg(), parent);
    }
  }
}

// ---- preserve / context
// ------------------------------------------------------------------------------

PreservedQuantizerAttributes::PreservedQuantizerAttributes(Module& model) : model_(&model) {
  for (auto& [name, qm] : named_quantizer_modules(model)) {
    Saved s{qm->is_sequential(), {}};
    for (auto* tq : qm->leaves()) s.properties.push_back(tq->get_state().properties);
    saved_.emplace(name, std::move(s));
  }
}

PreservedQuantizerAttributes::PreservedQuantizerAttributes(
    PreservedQuantizerAttributes&& o) noexcept
    : model_(o.model_), saved_(std::move(o.saved_)) {
  o.model_ = nullptr;
}

PreservedQuantizerAttributes::~PreservedQuantizerAttributes() {
  try {
    restore();
  } catch (const std::exception& e) {
    warn(std::string("restoring quantizer attributes failed: ") + e.what());
  }
}

void PreservedQuantizerAttributes::restore() {
  if (!model_) return;
  Module* model = model_;
  model_ = nullptr;
  for (auto& [name, qm] : named_quantizer_modules(*model)) {
    auto it = saved_.find(name);
    if (it == saved_.end()) continue;
    const Saved& s = it->second;
    if (s.sequential && !qm->is_sequential()) qm->make_sequential(s.properties.size());
    if (!s.sequential && qm->is_sequential()) qm->make_tensor();
    auto leaves = qm->leaves();
    for (size_t i = 0; i < leaves.size() && i < s.properties.size(); ++i) {
      // Properties only: the quantizer keeps the buffers it has now.
      quant::TensorQuantizerState cur = leaves[i]->get_state();
      quant::TensorQuantizerState st;
      st.properties = s.properties[i];
      st.properties["_pytorch_state_metadata"] = cur.properties["_pytorch_state_metadata"];
      st.buffers = std::move(cur.buffers);
      leaves[i]->set_state(st);
      if (qm->hard_disabled()) leaves[i]->disable();
    }
  }
}

PreservedQuantizerAttributes set_quantizer_by_cfg_context(
    Module& model, const std::vector<config::QuantizerCfgEntry>& quant_cfg) {
  for (const auto& e : quant_cfg)
    MQ_CHECK_T(ConfigError, !e.is_sequential(),
               "Sequential cfg lists are not allowed in set_quantizer_by_cfg_context (entry '",
               e.quantizer_name, "'). Use only single-dict cfg entries.");
  PreservedQuantizerAttributes guard(model);
  set_quantizer_by_cfg(model, quant_cfg);
  return guard;
}

// ---- inspection
// ----------------------------------------------------------------------------------------

std::string quantizer_repr(const QuantizerLeaf& leaf) {
  if (leaf.stage < 0 && leaf.owner && leaf.owner->hard_disabled())
    return "HardDisabledTensorQuantizer(" + leaf.quantizer->extra_repr() + ")";
  return leaf.quantizer->repr();
}

std::string print_quant_summary(Module& model, const std::optional<std::string>& output_dir,
                                bool print) {
  std::ostringstream os;
  auto leaves = named_tensor_quantizers(model);
  for (const auto& l : leaves) {
    std::string name = l.name;
    if (name.size() < 80) name.append(80 - name.size(), ' ');
    os << name << " " << quantizer_repr(l) << "\n";
  }
  os << leaves.size() << " TensorQuantizers found in model";
  std::string text = os.str();
  if (output_dir) {
    std::filesystem::create_directories(*output_dir);
    const std::string path = (std::filesystem::path(*output_dir) / ".quant_summary.txt").string();
    std::ofstream f(path, std::ios::binary);
    MQ_CHECK_T(IoError, f.good(), path, ": cannot open for writing");
    f << text << "\n";
    MQ_CHECK_T(IoError, f.good(), path, ": write failed");
    if (print) std::cout << "Quant summary saved to " << path << std::endl;
  } else if (print) {
    std::cout << text << std::endl;
  }
  return text;
}

bool is_quantized(Module& model) { return !named_quantizer_modules(model).empty(); }

std::string weight_quantizer_name(const std::string& weight_name) {
  return weight_name == "weight" ? "weight_quantizer" : weight_name + "_weight_quantizer";
}
std::string input_quantizer_name(const std::string& weight_name) {
  return weight_name == "weight" ? "input_quantizer" : weight_name + "_input_quantizer";
}

bool is_quantized_linear(const Module& m) {
  if (m.quant_key().empty() || dynamic_cast<const Embedding*>(&m) != nullptr) return false;
  QuantizerModule* in = m.quantizer("input_quantizer");
  if (in == nullptr || in->is_sequential()) return false;
  if (m.quantizer("weight_quantizer") == nullptr) return false;
  return m.has_parameter("weight") && m.parameter("weight").dim() == 2;
}

QuantizerModule* representative_weight_quantizer(const Module& m, const std::string& weight_name) {
  const std::string singular = weight_quantizer_name(weight_name);
  if (QuantizerModule* q = m.quantizer(singular)) return q;
  if (auto* list = dynamic_cast<ModuleList*>(m.child(singular + "s")); list && list->size() > 0)
    return dynamic_cast<QuantizerModule*>(&(*list)[0]);
  return nullptr;
}

std::vector<std::string> weight_attr_names(const Module& m) {
  std::vector<std::string> out;
  if (m.has_parameter("weight") && representative_weight_quantizer(m, "weight"))
    out.push_back("weight");
  for (const auto& [name, t] : m.parameters()) {
    if (name == "weight" || !t.defined()) continue;
    if (representative_weight_quantizer(m, name)) out.push_back(name);
  }
  return out;
}

// ---- fold / postprocess
// -------------------------------------------------------------------------------

void fold_weight(Module& model, bool keep_attrs) {
  at::NoGradGuard no_grad;
  for (auto& [mname, m] : model.named_modules()) {
    if (m->quant_key().empty()) continue;
    for (auto& [qname, qm] : m->quantizers()) {
      static const std::string kSuffix = "weight_quantizer";
      if (qname.size() < kSuffix.size() ||
          qname.compare(qname.size() - kSuffix.size(), kSuffix.size(), kSuffix) != 0)
        continue;
      if (qm->is_sequential() || qm->hard_disabled()) continue;
      quant::TensorQuantizer& q = qm->tensor();
      if (!q.fake_quant()) continue;
      // ModelOpt derives the weight as name[:-10] ("X_weight_quantizer" -> "X_weight", which does
      // not exist and trips its assert); the intended weight of X_weight_quantizer is X
      // (quantizer_attr_names).
      const std::string wname =
          qname == kSuffix ? "weight" : qname.substr(0, qname.size() - kSuffix.size() - 1);
      MQ_CHECK(m->has_parameter(wname), join(mname, qname), " doesn't have a corresponding ", wname,
               " in ", m->type_name());
      at::Tensor& w = m->parameter(wname);
      at::Tensor folded = q.forward(w.to(at::kFloat).contiguous()).to(w.scalar_type());
      w.copy_(folded);
      q.disable();
      q.disable_rotate();
      if (keep_attrs) {
        if (q.pre_quant_scale()) q.set_enable_pre_quant_scale(false);
      } else {
        q.remove_pre_quant_scale();
        if (q.has_amax_buffer()) q.reset_amax();
      }
    }
  }
}

void postprocess_amax(Module& model, const std::string& key,
                      const std::function<at::Tensor(const at::Tensor&)>& fn) {
  MQ_CHECK(static_cast<bool>(fn), "postprocess_amax: empty function");
  for (const auto& l : named_tensor_quantizers(model)) {
    if (!l.quantizer->has_amax_buffer() || !fnmatch(l.name, key)) continue;
    at::Tensor cur = l.quantizer->amax_buffer();
    at::Tensor next = fn(cur);
    MQ_CHECK(next.sizes() == cur.sizes(), "postprocess_amax: ", l.name,
             ": the function changed the amax shape");
    l.quantizer->set_amax(next);
  }
}

// ---- model-level state
// -----------------------------------------------------------------------------------

ModelQuantizerState quantizer_state(Module& model) {
  ModelQuantizerState st;
  for (auto& [name, qm] : named_quantizer_modules(model)) {
    if (qm->is_sequential())
      st.properties[name] = {{"num_quantizers", qm->leaves().size()},
                             {"is_sequential_quantizer", true}};
  }
  for (const auto& l : named_tensor_quantizers(model)) {
    quant::TensorQuantizerState s = l.quantizer->get_state();
    st.properties[l.name] = s.properties;
    for (auto& [b, t] : s.buffers) st.buffers[l.name + "." + b] = t;
  }
  return st;
}

void restore_quantizer_state(Module& model, const ModelQuantizerState& state) {
  MQ_CHECK(state.properties.is_object(), "quantizer state: properties must be a JSON object");
  // Containers first: the saved type decides Tensor vs Sequential.
  std::set<std::string> saved_containers, current_containers;
  for (auto& [name, p] : state.properties.items()) {
    if (p.is_object() && p.value("is_sequential_quantizer", false)) saved_containers.insert(name);
  }
  for (auto& [name, qm] : named_quantizer_modules(model)) {
    current_containers.insert(name);
    if (saved_containers.count(name)) {
      size_t n = state.properties[name].at("num_quantizers").get<size_t>();
      if (!qm->is_sequential() || qm->leaves().size() != n) qm->make_sequential(n);
    } else if (qm->is_sequential() && state.properties.contains(name)) {
      qm->make_tensor();
    }
  }
  std::set<std::string> saved, current;
  for (auto& [name, p] : state.properties.items())
    if (!saved_containers.count(name)) saved.insert(name);
  auto leaves = named_tensor_quantizers(model);
  for (const auto& l : leaves) current.insert(l.name);
  std::string missing, extra;
  for (const auto& n : saved)
    if (!current.count(n)) missing += " " + n;
  for (const auto& n : current)
    if (!saved.count(n)) extra += " " + n;
  MQ_CHECK(missing.empty(), "quantizer state: unmatched keys (saved, not in the model):", missing);
  MQ_CHECK(extra.empty(), "quantizer state: extra keys (in the model, not saved):", extra);
  for (const auto& l : leaves) {
    quant::TensorQuantizerState s;
    s.properties = state.properties[l.name];
    const std::string prefix = l.name + ".";
    for (auto it = state.buffers.lower_bound(prefix);
         it != state.buffers.end() && it->first.rfind(prefix, 0) == 0; ++it) {
      const std::string b = it->first.substr(prefix.size());
      if (b.find('.') == std::string::npos) s.buffers[b] = it->second;
    }
    try {
      l.quantizer->set_state(s);
    } catch (const Error& e) {
      MQ_THROW(Error, "quantizer state of ", l.name, ": ", e.what());
    }
    if (l.stage < 0 && l.owner->hard_disabled()) l.quantizer->disable();
  }
}

namespace {
void write_atomically(const std::filesystem::path& path, const std::string& bytes) {
  std::filesystem::path tmp = path;
  tmp += ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    MQ_CHECK_T(IoError, f.good(), tmp.string(), ": cannot open for writing");
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    f.flush();
    MQ_CHECK_T(IoError, f.good(), tmp.string(), ": write failed");
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  MQ_CHECK_T(IoError, !ec, path.string(), ": rename from ", tmp.string(),
             " failed: ", ec.message());
}
}  // namespace

void save_quantizer_state(Module& model, const std::string& dir, const nlohmann::json& extra) {
  ModelQuantizerState st = quantizer_state(model);
  std::filesystem::create_directories(dir);
  const std::filesystem::path d(dir);
  // Tensors first: a JSON file present means its tensors are complete.
  io::save_safetensors((d / "quantizer_state.safetensors").string(), st.buffers,
                       {{"format", "pt"}});
  nlohmann::json j = {{"mqdist_format", 1}, {"quantizer_state", st.properties}, {"config", extra}};
  write_atomically(d / "quantizer_state.json", j.dump(1));
}

ModelQuantizerState load_quantizer_state(const std::string& dir, nlohmann::json* extra) {
  const std::filesystem::path d(dir);
  const std::string jpath = (d / "quantizer_state.json").string();
  std::ifstream f(jpath, std::ios::binary);
  MQ_CHECK_T(IoError, f.good(), jpath, ": cannot open");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(f);
  } catch (const nlohmann::json::exception& e) {
    MQ_THROW(IoError, jpath, ": malformed JSON: ", e.what());
  }
  MQ_CHECK_T(IoError,
             j.is_object() && j.value("mqdist_format", 0) == 1 && j.contains("quantizer_state") &&
                 j["quantizer_state"].is_object(),
             jpath,
             ": not an mqdist quantizer state (mqdist_format 1 with a quantizer_state object)");
  ModelQuantizerState st;
  st.properties = j["quantizer_state"];
  st.buffers = io::load_safetensors((d / "quantizer_state.safetensors").string());
  if (extra) *extra = j.value("config", nlohmann::json());
  return st;
}

}  // namespace mq::nn
