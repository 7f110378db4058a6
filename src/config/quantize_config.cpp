#include "mq/config/quantize_config.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <regex>
#include <sstream>
#include <tuple>

#include "config/json_impl.hpp"
#include "mq/core/error.hpp"

namespace mq::config {

using namespace detail;

// ---------------------------------------------------------------------------------------------
// Entries

QuantizerAttributeConfig QuantizerCfgEntry::effective_cfg() const {
  const QuantizerAttributeConfig* c = single_cfg();
  MQ_ASSERT(c != nullptr);
  QuantizerAttributeConfig out = *c;
  out.enable = is_enabled();
  out.fields_set.insert("enable");
  return out;
}

namespace {

bool is_empty_cfg(const ojson& cfg) {
  if (cfg.is_object()) return cfg.empty();
  if (cfg.is_array()) {
    return std::all_of(cfg.begin(), cfg.end(),
                       [](const ojson& item) { return item.is_object() && item.empty(); });
  }
  return false;
}

// Entry parsing with a separate context for the cfg value: legacy forms put the cfg keys at the
// entry's own level, so their errors should point there.
QuantizerCfgEntry parse_entry(const ojson& j, const ErrorContext& ctx,
                              const ErrorContext& cfg_ctx) {
  get_object(j, ctx, "a quant_cfg entry");
  reject_unknown_keys(j, ctx, {"quantizer_name", "parent_class", "cfg", "enable"},
                      "quant_cfg entry");
  QuantizerCfgEntry e;
  auto name = j.find("quantizer_name");
  if (name == j.end()) ctx.fail("quant_cfg entry needs a \"quantizer_name\"");
  e.quantizer_name = get_string(*name, ctx.key("quantizer_name"));

  if (auto pc = j.find("parent_class"); pc != j.end()) {
    e.fields_set.insert("parent_class");
    if (!pc->is_null()) e.parent_class = get_string(*pc, ctx.key("parent_class"));
  }
  if (auto en = j.find("enable"); en != j.end()) {
    e.fields_set.insert("enable");
    e.enable = get_bool(*en, ctx.key("enable"));
  }
  if (auto c = j.find("cfg"); c != j.end()) {
    e.fields_set.insert("cfg");
    const ojson& cfg = *c;
    if (is_empty_cfg(cfg)) {
      // enable=false with an empty cfg is a pure disable; anything else is a likely typo that
      // pydantic would silently turn into "quantize with schema defaults".
      if (e.enable == std::optional<bool>(false)) return e;
      cfg_ctx.fail("cfg must specify at least one quantizer attribute for quantizer \"" +
                   e.quantizer_name +
                   "\" (drop cfg to keep the existing attributes, or set enable false to disable)");
    }
    if (cfg.is_null()) {
      e.cfg = std::monostate{};
    } else if (cfg.is_object()) {
      e.cfg = parse_quantizer_attribute(cfg, cfg_ctx);
    } else if (cfg.is_array()) {
      std::vector<QuantizerAttributeConfig> list;
      for (size_t i = 0; i < cfg.size(); ++i)
        list.push_back(parse_quantizer_attribute(cfg[i], cfg_ctx.index(i)));
      e.cfg = std::move(list);
    } else {
      cfg_ctx.fail(show(cfg) + " is not a quantizer attribute dict, a list of them or null");
    }
  }
  if (!e.fields_set.count("cfg") && !e.fields_set.count("enable"))
    ctx.fail(
        "quant_cfg entry must specify 'cfg', 'enable', or both; an entry with only quantizer_name "
        "\"" +
        e.quantizer_name + "\" has no effect");
  return e;
}

// A legacy attribute dict into a new-form entry: its "enable" key becomes the entry's enable, the
// rest its cfg (null when nothing is left).
void set_cfg_and_enable(ojson& entry, const ojson& attrs) {
  ojson cfg = attrs;
  ojson enable;
  if (cfg.contains("enable")) {
    enable = cfg["enable"];
    cfg.erase("enable");
  }
  entry["cfg"] = cfg.empty() ? ojson() : cfg;
  if (!enable.is_null()) entry["enable"] = enable;
}

// One legacy {key: value} pair -> raw new-form entries (ModelOpt's _dict_to_entry), each with the
// context its cfg keys live at.
void legacy_pair_to_entries(std::string key, const ojson& value, const ErrorContext& pair_ctx,
                            std::vector<QuantizerCfgEntry>& out) {
  if (key == "default") key = "*";  // the old catch-all
  if (key.rfind("nn.", 0) == 0) {
    if (!value.is_object())
      pair_ctx.fail("an \"nn.*\"-scoped entry must map quantizer names to attribute dicts, got " +
                    show(value));
    for (const auto& [q_path, sub_cfg] : value.items()) {
      ErrorContext sub_ctx = pair_ctx.key(q_path);
      if (!sub_cfg.is_object()) sub_ctx.fail(show(sub_cfg) + " is not a quantizer attribute dict");
      ojson entry = ojson::object();
      entry["parent_class"] = key;
      entry["quantizer_name"] = q_path;
      set_cfg_and_enable(entry, sub_cfg);
      out.push_back(parse_entry(entry, sub_ctx, sub_ctx));
    }
    return;
  }
  ojson entry = ojson::object();
  entry["quantizer_name"] = key;
  if (value.is_object()) {
    set_cfg_and_enable(entry, value);
  } else {
    entry["cfg"] = value;
  }
  out.push_back(parse_entry(entry, pair_ctx, pair_ctx));
}

bool has_nn_key(const ojson& raw) {
  for (auto it = raw.begin(); it != raw.end(); ++it)
    if (it.key().rfind("nn.", 0) == 0) return true;
  return false;
}

}  // namespace

QuantizerCfgEntry parse_quantizer_cfg_entry(const ojson& j, const ErrorContext& ctx) {
  return parse_entry(j, ctx, ctx.key("cfg"));
}

std::vector<QuantizerCfgEntry> normalize_quant_cfg_list(const ojson& j, const ErrorContext& ctx) {
  std::vector<QuantizerCfgEntry> out;
  if (j.is_object()) {
    // Legacy flat dict: each pair becomes a single-key list element, in insertion order.
    for (const auto& [k, v] : j.items()) legacy_pair_to_entries(k, v, ctx.key(k), out);
    return out;
  }
  if (!j.is_array())
    ctx.fail("quant_cfg must be a list of entries (or a legacy flat dict), got " + show(j));
  for (size_t i = 0; i < j.size(); ++i) {
    const ojson& raw = j[i];
    ErrorContext ic = ctx.index(i);
    if (raw.is_object() && raw.contains("quantizer_name")) {
      out.push_back(parse_entry(raw, ic, ic.key("cfg")));
    } else if (raw.is_object() && raw.size() == 1) {
      auto it = raw.begin();
      legacy_pair_to_entries(it.key(), it.value(), ic.key(it.key()), out);
    } else if (raw.is_object() && raw.size() > 1 && has_nn_key(raw)) {
      for (const auto& [k, v] : raw.items()) legacy_pair_to_entries(k, v, ic.key(k), out);
    } else {
      ic.fail(
          "invalid quant_cfg entry " + show(raw) +
          ": expected {\"quantizer_name\": ..., \"cfg\"/\"enable\": ...}, a single-key legacy dict "
          "{\"<pattern>\": cfg} or an \"nn.<Class>\"-scoped dict");
    }
  }
  return out;
}

nlohmann::json to_json(const QuantizerCfgEntry& e, bool exclude_unset) {
  nlohmann::json o = nlohmann::json::object();
  o["quantizer_name"] = e.quantizer_name;
  auto want = [&](const char* k) { return !exclude_unset || e.fields_set.count(k); };
  if (want("parent_class"))
    o["parent_class"] = e.parent_class ? nlohmann::json(*e.parent_class) : nlohmann::json();
  if (want("cfg")) {
    if (const auto* c = e.single_cfg()) {
      o["cfg"] = to_json(*c, exclude_unset);
    } else if (const auto* list = e.sequential_cfg()) {
      nlohmann::json arr = nlohmann::json::array();
      for (const auto& c : *list) arr.push_back(to_json(c, exclude_unset));
      o["cfg"] = arr;
    } else {
      o["cfg"] = nullptr;
    }
  }
  if (want("enable")) o["enable"] = e.is_enabled();
  return o;
}

const QuantizerCfgEntry* find_quant_cfg_entry_by_path(const std::vector<QuantizerCfgEntry>& entries,
                                                      const std::string& name) {
  const QuantizerCfgEntry* found = nullptr;
  for (const auto& e : entries)
    if (e.quantizer_name == name) found = &e;
  return found;
}

// ---------------------------------------------------------------------------------------------
// Algorithms

const std::vector<std::string>& algorithm_names() {
  static const std::vector<std::string> names = {
      "max",      "mse",      "local_hessian", "smoothquant",        "awq_lite", "awq_clip",
      "awq_full", "svdquant", "gptq",          "nvfp4_act_headroom", "lsq"};
  return names;
}

AlgorithmConfig AlgorithmConfig::defaults_for(std::optional<std::string> method) {
  AlgorithmConfig a;
  a.method = std::move(method);
  if (a.method == "local_hessian") {
    a.fp8_scale_sweep = true;
    a.block_size = 16;
  } else if (a.method == "gptq") {
    a.block_size = 128;
    a.layerwise.get_qdq_activations_from_prev_layer = true;
  } else if (a.method == "nvfp4_act_headroom") {
    AlgorithmConfig w = defaults_for("max");
    w.form = Form::kDict;
    w.fields_set = {"method"};
    a.scale_algorithm = std::make_shared<AlgorithmConfig>(std::move(w));
  }
  return a;
}

bool AlgorithmConfig::operator==(const AlgorithmConfig& o) const {
  auto tie = [](const AlgorithmConfig& a) {
    return std::tie(
        a.form, a.method, a.moe_calib_experts_ratio, a.layerwise, a.distributed_sync,
        a.shared_states_weight_global_amax, a.shared_states_given, a.sync_expert_weight_amax,
        a.skip_forward_without_activation_calib, a.step_size, a.start_multiplier, a.stop_multiplier,
        a.fp8_scale_sweep, a.block_size, a.debug, a.alpha, a.alpha_step, a.max_co_batch_size,
        a.max_tokens_per_batch, a.min_clip_ratio, a.shrink_step, a.lowrank, a.skip_layers,
        a.perc_damp, a.fused, a.anchor_percentile, a.upper_percentile, a.rho, a.learnable_amax,
        a.learnable_amax_given_as_string, a.tied_amax, a.quantize_pre_scale, a.fields_set);
  };
  if (tie(*this) != tie(o)) return false;
  if (bool(scale_algorithm) != bool(o.scale_algorithm)) return false;
  return !scale_algorithm || *scale_algorithm == *o.scale_algorithm;
}

namespace {

std::vector<std::string> keys_for(const std::optional<std::string>& m) {
  std::vector<std::string> k = {"method", "moe_calib_experts_ratio", "layerwise"};
  auto add = [&](std::initializer_list<const char*> more) {
    k.insert(k.end(), more.begin(), more.end());
  };
  if (!m) return k;
  if (*m == "max")
    add({"distributed_sync", "sync_expert_weight_amax", "skip_forward_without_activation_calib",
         "shared_states"});
  if (*m == "mse")
    add({"step_size", "start_multiplier", "stop_multiplier", "fp8_scale_sweep", "distributed_sync",
         "shared_states"});
  if (*m == "local_hessian")
    add({"step_size", "start_multiplier", "stop_multiplier", "fp8_scale_sweep", "block_size",
         "distributed_sync", "debug", "shared_states"});
  if (*m == "smoothquant") add({"alpha"});
  if (*m == "awq_lite") add({"alpha_step", "debug"});
  if (*m == "awq_clip")
    add({"max_co_batch_size", "max_tokens_per_batch", "min_clip_ratio", "shrink_step", "debug"});
  if (*m == "awq_full")
    add({"alpha_step", "max_co_batch_size", "max_tokens_per_batch", "min_clip_ratio", "shrink_step",
         "debug"});
  if (*m == "svdquant") add({"lowrank", "skip_layers"});
  if (*m == "gptq") add({"perc_damp", "block_size", "fused"});
  if (*m == "nvfp4_act_headroom")
    add({"anchor_percentile", "upper_percentile", "rho", "weight_scale_algorithm"});
  if (*m == "lsq") add({"learnable_amax", "tied_amax", "quantize_pre_scale", "scale_algorithm"});
  return k;
}

// Amax-only algorithms: the only ones that may set layerwise.calib_mutates_weights=false.
bool mutates_weights(const std::optional<std::string>& m) {
  return !(m == "max" || m == "mse" || m == "local_hessian" || m == "nvfp4_act_headroom");
}

// Range-checked number: lo/hi bounds with open/closed ends.
double number_in(const ojson& v, const ErrorContext& c, double lo, bool lo_open, double hi,
                 bool hi_open) {
  double x = get_number(v, c);
  bool ok = (lo_open ? x > lo : x >= lo) && (hi_open ? x < hi : x <= hi);
  if (!ok) {
    auto num = [](double d) {
      std::ostringstream os;
      os << d;
      return os.str();
    };
    std::string range = std::string(lo_open ? "(" : "[") + num(lo) + ", " +
                        (std::isinf(hi) ? std::string("inf") : num(hi)) + (hi_open ? ")" : "]");
    c.fail(show(v) + " is out of range " + range);
  }
  return x;
}
constexpr double kInf = std::numeric_limits<double>::infinity();

LayerwiseConfig parse_layerwise(const ojson& j, const ErrorContext& ctx,
                                const std::optional<std::string>& method) {
  LayerwiseConfig l;
  if (method == "gptq") l.get_qdq_activations_from_prev_layer = true;
  if (j.is_null()) return l;
  get_object(j, ctx, "a layerwise dict");
  reject_unknown_keys(j, ctx,
                      {"enable", "get_qdq_activations_from_prev_layer", "checkpoint_dir",
                       "save_every", "calib_mutates_weights"},
                      "layerwise");
  for (const auto& [k, v] : j.items()) {
    ErrorContext c = ctx.key(k);
    l.fields_set.insert(k);
    if (k == "enable")
      l.enable = get_bool(v, c);
    else if (k == "get_qdq_activations_from_prev_layer")
      l.get_qdq_activations_from_prev_layer = get_bool(v, c);
    else if (k == "checkpoint_dir")
      l.checkpoint_dir = v.is_null() ? std::nullopt : std::optional(get_string(v, c));
    else if (k == "save_every") {
      l.save_every = get_int(v, c);
      if (l.save_every < 1) c.fail("save_every must be >= 1, got " + show(v));
    } else if (k == "calib_mutates_weights")
      l.calib_mutates_weights = get_bool(v, c);
  }
  return l;
}

std::vector<std::string> string_list(const ojson& j, const ErrorContext& ctx) {
  if (!j.is_array()) ctx.fail(show(j) + " is not a list of strings");
  std::vector<std::string> out;
  for (size_t i = 0; i < j.size(); ++i) out.push_back(get_string(j[i], ctx.index(i)));
  return out;
}

AlgorithmConfig parse_one_algorithm(const ojson& j, const ErrorContext& ctx, bool scale_only);

std::shared_ptr<const AlgorithmConfig> parse_scale_algorithm(const ojson& j,
                                                             const ErrorContext& ctx) {
  if (!j.is_object())
    ctx.fail(show(j) +
             " is not a scale calibration dict ({\"method\": \"max\" | \"mse\" | "
             "\"local_hessian\", ...})");
  return std::make_shared<AlgorithmConfig>(parse_one_algorithm(j, ctx, /*scale_only=*/true));
}

AlgorithmConfig parse_one_algorithm(const ojson& j, const ErrorContext& ctx, bool scale_only) {
  const std::vector<std::string> scale_methods = {"max", "mse", "local_hessian"};
  const std::vector<std::string>& allowed_methods = scale_only ? scale_methods : algorithm_names();
  auto check_method = [&](const ojson& v, const ErrorContext& c) -> std::optional<std::string> {
    if (v.is_null() && !scale_only) return std::nullopt;
    return get_enum(v, c, allowed_methods);
  };
  if (j.is_null() && !scale_only) {
    AlgorithmConfig a = AlgorithmConfig::defaults_for(std::nullopt);
    a.form = AlgorithmConfig::Form::kNull;
    return a;
  }
  if (j.is_string() && !scale_only) {
    AlgorithmConfig a = AlgorithmConfig::defaults_for(check_method(j, ctx));
    a.form = AlgorithmConfig::Form::kString;
    return a;
  }
  if (!j.is_object())
    ctx.fail(show(j) + " is not an algorithm name, a dict with \"method\", or null");

  std::optional<std::string> method;
  if (auto m = j.find("method"); m != j.end())
    method = check_method(*m, ctx.key("method"));
  else if (scale_only)
    method = "max";  // pydantic picks MaxCalibConfig (its method default)
  else
    ctx.fail("an algorithm dict needs a \"method\" key");

  AlgorithmConfig a = AlgorithmConfig::defaults_for(method);
  a.form = AlgorithmConfig::Form::kDict;
  reject_unknown_keys(j, ctx, keys_for(method),
                      "algorithm '" + (method ? *method : std::string("None")) + "'");
  for (const auto& [k, v] : j.items()) {
    ErrorContext c = ctx.key(k);
    a.fields_set.insert(k);
    if (k == "method") continue;
    if (k == "moe_calib_experts_ratio") {
      a.moe_calib_experts_ratio =
          v.is_null() ? std::nullopt : std::optional(number_in(v, c, 0, true, 1, false));
    } else if (k == "layerwise")
      a.layerwise = parse_layerwise(v, c, method);
    else if (k == "distributed_sync")
      a.distributed_sync = get_bool(v, c);
    else if (k == "sync_expert_weight_amax")
      a.sync_expert_weight_amax = get_bool(v, c);
    else if (k == "skip_forward_without_activation_calib")
      a.skip_forward_without_activation_calib = get_bool(v, c);
    else if (k == "shared_states") {
      if (v.is_null()) continue;
      get_object(v, c, "a shared_states dict");
      reject_unknown_keys(v, c, {"weight_global_amax"}, "shared_states");
      a.shared_states_given = true;
      if (auto w = v.find("weight_global_amax"); w != v.end()) {
        ErrorContext wc = c.key("weight_global_amax");
        get_object(*w, wc, "a {\"patterns\": [...]} dict");
        reject_unknown_keys(*w, wc, {"patterns"}, "shared_states[\"weight_global_amax\"]");
        if (auto p = w->find("patterns"); p != w->end()) {
          auto pats = string_list(*p, wc.key("patterns"));
          for (size_t i = 0; i < pats.size(); ++i) {
            try {
              std::regex re(pats[i]);
            } catch (const std::regex_error& e) {
              wc.key("patterns").index(i).fail("invalid regex \"" + pats[i] + "\": " + e.what());
            }
          }
          a.shared_states_weight_global_amax = std::move(pats);
        }
      }
    } else if (k == "step_size")
      a.step_size = number_in(v, c, 0, true, kInf, false);
    else if (k == "start_multiplier")
      a.start_multiplier = number_in(v, c, 0, true, kInf, false);
    else if (k == "stop_multiplier")
      a.stop_multiplier = number_in(v, c, 0, true, kInf, false);
    else if (k == "fp8_scale_sweep")
      a.fp8_scale_sweep = get_bool(v, c);
    else if (k == "block_size") {
      a.block_size = get_int(v, c);
      if (method == "local_hessian" && a.block_size <= 0)
        c.fail("block_size must be > 0, got " + show(v));
    } else if (k == "debug")
      a.debug = get_bool(v, c);
    else if (k == "alpha")
      a.alpha = number_in(v, c, 0, false, 1, false);
    else if (k == "alpha_step")
      a.alpha_step = number_in(v, c, 0, true, 1, false);
    else if (k == "max_co_batch_size")
      a.max_co_batch_size = get_int(v, c);
    else if (k == "max_tokens_per_batch")
      a.max_tokens_per_batch = get_int(v, c);
    else if (k == "min_clip_ratio")
      a.min_clip_ratio = number_in(v, c, 0, true, 1, true);
    else if (k == "shrink_step")
      a.shrink_step = number_in(v, c, 0, true, 1, false);
    else if (k == "lowrank")
      a.lowrank = get_int(v, c);
    else if (k == "skip_layers")
      a.skip_layers = v.is_null() ? std::nullopt : std::optional(string_list(v, c));
    else if (k == "perc_damp")
      a.perc_damp = number_in(v, c, 0, true, 1, false);
    else if (k == "fused")
      a.fused = get_bool(v, c);
    else if (k == "anchor_percentile")
      a.anchor_percentile = number_in(v, c, 0, true, 100, false);
    else if (k == "upper_percentile")
      a.upper_percentile = number_in(v, c, 0, true, 100, false);
    else if (k == "rho")
      a.rho = number_in(v, c, 0, true, 28672, true);
    else if (k == "weight_scale_algorithm")
      a.scale_algorithm = parse_scale_algorithm(v, c);
    else if (k == "scale_algorithm")
      a.scale_algorithm = v.is_null() ? nullptr : parse_scale_algorithm(v, c);
    else if (k == "learnable_amax") {
      if (v.is_string()) {
        a.learnable_amax = {get_enum(v, c, {"pre", "post"})};
        a.learnable_amax_given_as_string = true;
      } else {
        if (!v.is_array()) c.fail(show(v) + " is not \"pre\", \"post\" or a list of them");
        a.learnable_amax.clear();
        for (size_t i = 0; i < v.size(); ++i)
          a.learnable_amax.push_back(get_enum(v[i], c.index(i), {"pre", "post"}));
      }
    } else if (k == "tied_amax")
      a.tied_amax = get_bool(v, c);
    else if (k == "quantize_pre_scale")
      a.quantize_pre_scale = get_bool(v, c);
  }
  if (a.layerwise.checkpoint_dir && !a.layerwise.enable)
    ctx.key("layerwise")
        .key("checkpoint_dir")
        .fail("layerwise.checkpoint_dir requires layerwise.enable=true");
  if (!a.layerwise.calib_mutates_weights && mutates_weights(method))
    ctx.key("layerwise")
        .key("calib_mutates_weights")
        .fail("algorithm '" + (method ? *method : std::string("None")) +
              "' mutates layer weights; calib_mutates_weights=false is only allowed for "
              "max/mse/local_hessian");
  if (a.tied_amax) {
    std::set<std::string> s(a.learnable_amax.begin(), a.learnable_amax.end());
    if (!(s.empty() || s == std::set<std::string>{"pre", "post"}))
      ctx.key("tied_amax")
          .fail("tied_amax=true requires learnable_amax to be [] or [\"pre\", \"post\"]");
  }
  return a;
}

}  // namespace

std::vector<AlgorithmConfig> parse_algorithm(const ojson& j, const ErrorContext& ctx,
                                             bool* is_list) {
  if (is_list) *is_list = j.is_array();
  if (!j.is_array()) return {parse_one_algorithm(j, ctx, false)};
  std::vector<AlgorithmConfig> out;
  for (size_t i = 0; i < j.size(); ++i) {
    if (j[i].is_array()) ctx.index(i).fail("nested lists of algorithms are not allowed");
    out.push_back(parse_one_algorithm(j[i], ctx.index(i), false));
  }
  return out;
}

nlohmann::json to_json(const AlgorithmConfig& a, bool exclude_unset) {
  if (exclude_unset && a.form == AlgorithmConfig::Form::kNull) return nullptr;
  if (exclude_unset && a.form == AlgorithmConfig::Form::kString) return *a.method;
  nlohmann::json o = nlohmann::json::object();
  for (const std::string& k : keys_for(a.method)) {
    if (exclude_unset && !a.fields_set.count(k)) continue;
    if (k == "method")
      o[k] = a.method ? nlohmann::json(*a.method) : nlohmann::json();
    else if (k == "moe_calib_experts_ratio")
      o[k] =
          a.moe_calib_experts_ratio ? nlohmann::json(*a.moe_calib_experts_ratio) : nlohmann::json();
    else if (k == "layerwise") {
      nlohmann::json l = nlohmann::json::object();
      auto want = [&](const char* f) { return !exclude_unset || a.layerwise.fields_set.count(f); };
      if (want("enable")) l["enable"] = a.layerwise.enable;
      if (want("get_qdq_activations_from_prev_layer"))
        l["get_qdq_activations_from_prev_layer"] = a.layerwise.get_qdq_activations_from_prev_layer;
      if (want("checkpoint_dir"))
        l["checkpoint_dir"] = a.layerwise.checkpoint_dir
                                  ? nlohmann::json(*a.layerwise.checkpoint_dir)
                                  : nlohmann::json();
      if (want("save_every")) l["save_every"] = a.layerwise.save_every;
      if (want("calib_mutates_weights"))
        l["calib_mutates_weights"] = a.layerwise.calib_mutates_weights;
      o[k] = l;
    } else if (k == "distributed_sync")
      o[k] = a.distributed_sync;
    else if (k == "sync_expert_weight_amax")
      o[k] = a.sync_expert_weight_amax;
    else if (k == "skip_forward_without_activation_calib")
      o[k] = a.skip_forward_without_activation_calib;
    else if (k == "shared_states") {
      if (!a.shared_states_given)
        o[k] = nullptr;
      else {
        nlohmann::json s = nlohmann::json::object();
        if (a.shared_states_weight_global_amax)
          s["weight_global_amax"] = {{"patterns", *a.shared_states_weight_global_amax}};
        o[k] = s;
      }
    } else if (k == "step_size")
      o[k] = a.step_size;
    else if (k == "start_multiplier")
      o[k] = a.start_multiplier;
    else if (k == "stop_multiplier")
      o[k] = a.stop_multiplier;
    else if (k == "fp8_scale_sweep")
      o[k] = a.fp8_scale_sweep;
    else if (k == "block_size")
      o[k] = a.block_size;
    else if (k == "debug")
      o[k] = a.debug;
    else if (k == "alpha")
      o[k] = a.alpha;
    else if (k == "alpha_step")
      o[k] = a.alpha_step;
    else if (k == "max_co_batch_size")
      o[k] = a.max_co_batch_size;
    else if (k == "max_tokens_per_batch")
      o[k] = a.max_tokens_per_batch;
    else if (k == "min_clip_ratio")
      o[k] = a.min_clip_ratio;
    else if (k == "shrink_step")
      o[k] = a.shrink_step;
    else if (k == "lowrank")
      o[k] = a.lowrank;
    else if (k == "skip_layers")
      o[k] = a.skip_layers ? nlohmann::json(*a.skip_layers) : nlohmann::json();
    else if (k == "perc_damp")
      o[k] = a.perc_damp;
    else if (k == "fused")
      o[k] = a.fused;
    else if (k == "anchor_percentile")
      o[k] = a.anchor_percentile;
    else if (k == "upper_percentile")
      o[k] = a.upper_percentile;
    else if (k == "rho")
      o[k] = a.rho;
    else if (k == "weight_scale_algorithm" || k == "scale_algorithm") {
      // ModelOpt's field serializer writes these sparsely, {"method": ..., **set fields}; with
      // exclude_unset the dict is kept as the user wrote it.
      if (!a.scale_algorithm) {
        o[k] = nullptr;
      } else {
        o[k] = to_json(*a.scale_algorithm, true);
        if (!exclude_unset) o[k]["method"] = *a.scale_algorithm->method;
      }
    } else if (k == "learnable_amax") {
      if (a.learnable_amax_given_as_string)
        o[k] = a.learnable_amax.at(0);
      else
        o[k] = a.learnable_amax;
    } else if (k == "tied_amax")
      o[k] = a.tied_amax;
    else if (k == "quantize_pre_scale")
      o[k] = a.quantize_pre_scale;
  }
  return o;
}

// ---------------------------------------------------------------------------------------------
// QuantizeConfig

QuantizeConfig::QuantizeConfig() {
  QuantizerCfgEntry e;
  e.quantizer_name = "*";
  QuantizerAttributeConfig c;
  c.num_bits = NumBits::integer(8);
  c.fields_set = {"num_bits", "axis"};
  e.cfg = c;
  e.fields_set = {"cfg"};
  quant_cfg.push_back(std::move(e));
}

QuantizeConfig parse_quantize_config(const ojson& j, const ErrorContext& ctx) {
  get_object(j, ctx, "a quantize config dict");
  reject_unknown_keys(j, ctx, {"quant_cfg", "algorithm", "effective_bits"}, "quantize config");
  QuantizeConfig q;
  if (auto qc = j.find("quant_cfg"); qc != j.end()) {
    q.fields_set.insert("quant_cfg");
    q.quant_cfg = normalize_quant_cfg_list(*qc, ctx.key("quant_cfg"));
  }
  if (auto al = j.find("algorithm"); al != j.end()) {
    q.fields_set.insert("algorithm");
    q.algorithm = parse_algorithm(*al, ctx.key("algorithm"), &q.algorithm_is_list);
  }
  if (auto eb = j.find("effective_bits"); eb != j.end()) {
    q.fields_set.insert("effective_bits");
    if (!eb->is_null()) {
      double v = get_number(*eb, ctx.key("effective_bits"));
      if (!(v > 0 && v <= 16))
        ctx.key("effective_bits").fail("effective_bits must be in (0, 16], got " + show(*eb));
      q.effective_bits = v;
    }
  }
  return q;
}

QuantizeConfig parse_quantize_config(const nlohmann::json& j, const ErrorContext& ctx) {
  return parse_quantize_config(to_ordered(j), ctx);
}

nlohmann::json to_json(const QuantizeConfig& q, bool exclude_unset) {
  nlohmann::json o = nlohmann::json::object();
  auto want = [&](const char* k) { return !exclude_unset || q.fields_set.count(k); };
  if (want("quant_cfg")) {
    nlohmann::json arr = nlohmann::json::array();
    for (const auto& e : q.quant_cfg) arr.push_back(to_json(e, exclude_unset));
    o["quant_cfg"] = arr;
  }
  if (want("algorithm")) {
    // QuantizeConfig keeps the algorithm as written (str | dict | None | list), so even a full dump
    // shows it that way.
    if (q.algorithm_is_list) {
      nlohmann::json arr = nlohmann::json::array();
      for (const auto& a : q.algorithm) arr.push_back(to_json(a, true));
      o["algorithm"] = arr;
    } else {
      o["algorithm"] = to_json(q.algorithm.at(0), true);
    }
  }
  if (want("effective_bits"))
    o["effective_bits"] = q.effective_bits ? nlohmann::json(*q.effective_bits) : nlohmann::json();
  return o;
}

bool need_calibration(const QuantizeConfig& q) {
  // ModelOpt compares the raw algorithm value with None and "max": a dict (even {"method": "max"})
  // or a list always counts as "needs calibration".
  if (q.algorithm_is_list) return true;
  const AlgorithmConfig& a = q.algorithm.at(0);
  bool none_or_max = !q.has_algorithm() || a.form == AlgorithmConfig::Form::kNull ||
                     (a.form == AlgorithmConfig::Form::kString && a.method == "max");
  if (!none_or_max) return true;
  for (const auto& e : q.quant_cfg) {
    if (e.quantizer_name.find("weight_quantizer") != std::string::npos)
      continue;  // weights: no data needed
    if (const auto* list = e.sequential_cfg()) {
      // The items' own enable is used here, not the entry's (ModelOpt's behaviour).
      for (const auto& c : *list)
        if (c.enable && c.type != "dynamic") return true;
      continue;
    }
    const auto* c = e.single_cfg();
    bool dynamic = c != nullptr && c->type == "dynamic";
    if (e.is_enabled() && !dynamic) return true;
  }
  return false;
}

std::vector<AlgorithmConfig> calibration_algorithms(const QuantizeConfig& q) {
  if (!q.has_algorithm()) {
    AlgorithmConfig none = AlgorithmConfig::defaults_for(std::nullopt);
    none.form = AlgorithmConfig::Form::kNull;
    return {none};
  }
  return q.algorithm;
}

QuantizeConfig update_quant_cfg_with_kv_cache_quant(
    const QuantizeConfig& main, const std::vector<QuantizerCfgEntry>& kv_entries) {
  QuantizeConfig out = main;
  if (out.quant_cfg.empty()) {
    QuantizerCfgEntry off;
    off.quantizer_name = "*";
    off.enable = false;
    off.fields_set = {"enable"};
    out.quant_cfg.push_back(off);
  }
  out.quant_cfg.insert(out.quant_cfg.end(), kv_entries.begin(), kv_entries.end());
  out.fields_set.insert("quant_cfg");
  // Python's `not algorithm`: absent, None, or an empty list.
  bool falsy = !out.has_algorithm() || (out.algorithm_is_list && out.algorithm.empty()) ||
               (!out.algorithm_is_list && out.algorithm.at(0).form == AlgorithmConfig::Form::kNull);
  if (falsy) {
    out.algorithm = {AlgorithmConfig{}};
    out.algorithm_is_list = false;
    out.fields_set.insert("algorithm");
  }
  return out;
}

}  // namespace mq::config
