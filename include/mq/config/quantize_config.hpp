#pragma once
/// The top-level quantization config (ModelOpt's `QuantizeConfig`, reference §1.5 and §4): an ordered
/// list of `QuantizerCfgEntry` (applied in order, last match wins), the calibration algorithm(s), and
/// the autoquant effective_bits override.
///
/// Example:
///   auto qc = mq::config::parse_quantize_config(nlohmann::ordered_json::parse(R"({
///       "quant_cfg": [{"quantizer_name": "*", "enable": false},
///                     {"quantizer_name": "*weight_quantizer", "cfg": {"num_bits": 8, "axis": 0}}],
///       "algorithm": {"method": "smoothquant", "alpha": 0.5}})"), {"my.json", ""});
///   for (const auto& e : qc.quant_cfg) { ... e.quantizer_name, e.cfg_or_null(), e.is_enabled() ... }
///
/// Legacy forms are normalised exactly like ModelOpt's `normalize_quant_cfg_list` (§4.2): a flat
/// dict {"*": {...}, "*weight_quantizer": {...}}, single-key list elements {"<pattern>": cfg},
/// "nn.<Class>"-scoped dicts, the "default" key (= "*"). Key order matters for the flat forms, so
/// parse from nlohmann::ordered_json (files are read that way).
#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "mq/config/json.hpp"
#include "mq/config/quantizer_attribute.hpp"

namespace mq::config {

/// One `quant_cfg` entry (ModelOpt's QuantizerCfgEntry, §4.1).
struct QuantizerCfgEntry {
  /// No cfg (an enable-only toggle), one attribute config (full replacement), or a list of them
  /// (the quantizer becomes a SequentialQuantizer, item i configures sub-quantizer i).
  using Cfg = std::variant<std::monostate, QuantizerAttributeConfig, std::vector<QuantizerAttributeConfig>>;

  std::string quantizer_name;               ///< fnmatch glob over the quantizer module name
  std::optional<std::string> parent_class;  ///< e.g. "nn.Linear": exact registered parent class
  Cfg cfg;
  std::optional<bool> enable;               ///< unset means True (pydantic default)
  /// Keys given explicitly ("parent_class", "cfg", "enable"; quantizer_name is always set). Legacy
  /// forms always set "cfg" (possibly to null), as ModelOpt's normaliser does.
  std::set<std::string> fields_set;

  bool is_enabled() const { return enable.value_or(true); }
  bool has_cfg() const { return !std::holds_alternative<std::monostate>(cfg); }
  bool is_sequential() const { return std::holds_alternative<std::vector<QuantizerAttributeConfig>>(cfg); }
  /// The single attribute config; nullptr when there is none or it is a list.
  const QuantizerAttributeConfig* single_cfg() const { return std::get_if<QuantizerAttributeConfig>(&cfg); }
  /// The SequentialQuantizer list; nullptr when cfg is not a list.
  const std::vector<QuantizerAttributeConfig>* sequential_cfg() const {
    return std::get_if<std::vector<QuantizerAttributeConfig>>(&cfg);
  }
  /// What set_quantizer_by_cfg applies for a single cfg: the cfg with `enable` replaced by the
  /// entry's enable (§4.1 gotcha: the entry-level enable wins over any enable inside cfg).
  QuantizerAttributeConfig effective_cfg() const;

  bool operator==(const QuantizerCfgEntry&) const = default;
};

/// `layerwise` sub-config shared by all algorithms.
struct LayerwiseConfig {
  bool enable = false;
  bool get_qdq_activations_from_prev_layer = false;  ///< GPTQ defaults it to true unless given
  std::optional<std::string> checkpoint_dir;          ///< needs enable
  int64_t save_every = 1;                             ///< >= 1
  bool calib_mutates_weights = true;                  ///< false only for max / mse / local_hessian (+ headroom)
  std::set<std::string> fields_set;
  bool operator==(const LayerwiseConfig&) const = default;
};

/// One calibration algorithm config (ModelOpt's QuantizeAlgorithmConfig subclasses, §1.5). `method`
/// selects which of the fields below apply; the others keep their defaults and are not dumped.
/// `method` std::nullopt means "no calibration" (ModelOpt's None).
struct AlgorithmConfig {
  /// How it was written, for dumps and need_calibration: null, "name", or a dict.
  enum class Form { kNull, kString, kDict };
  Form form = Form::kString;
  std::optional<std::string> method = "max";

  // Every algorithm.
  std::optional<double> moe_calib_experts_ratio;  ///< (0, 1]
  LayerwiseConfig layerwise;
  // max / mse / local_hessian.
  bool distributed_sync = true;
  std::optional<std::vector<std::string>> shared_states_weight_global_amax;  ///< regex patterns
  bool shared_states_given = false;                     ///< shared_states dict given (maybe without patterns)
  // max.
  bool sync_expert_weight_amax = false;
  bool skip_forward_without_activation_calib = false;
  // mse / local_hessian.
  double step_size = 0.1;         ///< > 0
  double start_multiplier = 0.25; ///< > 0
  double stop_multiplier = 4.0;   ///< > 0
  bool fp8_scale_sweep = false;   ///< local_hessian default: true
  // local_hessian (16, > 0) / gptq (128).
  int64_t block_size = 16;
  bool debug = false;             ///< local_hessian, awq_*
  // smoothquant.
  double alpha = 1.0;             ///< [0, 1]
  // awq_lite / awq_full.
  double alpha_step = 0.1;        ///< (0, 1]
  // awq_clip / awq_full.
  int64_t max_co_batch_size = 1024;
  int64_t max_tokens_per_batch = 64;
  double min_clip_ratio = 0.5;    ///< (0, 1)
  double shrink_step = 0.05;      ///< (0, 1]
  // svdquant.
  int64_t lowrank = 32;
  std::optional<std::vector<std::string>> skip_layers;
  // gptq.
  double perc_damp = 0.01;        ///< (0, 1]
  bool fused = false;
  // nvfp4_act_headroom.
  double anchor_percentile = 1.0;    ///< (0, 100]
  double upper_percentile = 99.99;   ///< (0, 100]
  double rho = 16384.0;              ///< (0, 28672)
  /// nvfp4_act_headroom: weight_scale_algorithm (max | mse | local_hessian; default {"method": "max"}).
  /// lsq: scale_algorithm (null means mse).
  std::shared_ptr<const AlgorithmConfig> scale_algorithm;
  // lsq.
  std::vector<std::string> learnable_amax = {"post"};  ///< subset of {"pre", "post"}
  bool learnable_amax_given_as_string = false;
  bool tied_amax = false;
  bool quantize_pre_scale = true;

  std::set<std::string> fields_set;  ///< dict keys given (for kDict dumps)

  /// Defaults of `method` (e.g. fp8_scale_sweep true for local_hessian, block_size 128 for gptq).
  static AlgorithmConfig defaults_for(std::optional<std::string> method);
  bool is_none() const { return !method.has_value(); }
  bool operator==(const AlgorithmConfig& o) const;
};

/// Known algorithm names: max, mse, local_hessian, smoothquant, awq_lite, awq_clip, awq_full,
/// svdquant, gptq, nvfp4_act_headroom, lsq.
const std::vector<std::string>& algorithm_names();

struct QuantizeConfig {
  /// Default: [{"quantizer_name": "*", "cfg": {"num_bits": 8, "axis": null}}] (INT8 per-tensor for
  /// every quantizer, weights and outputs included: §8.15).
  std::vector<QuantizerCfgEntry> quant_cfg;
  /// One algorithm, or a list run in sequence (`algorithm_is_list`). Default "max".
  std::vector<AlgorithmConfig> algorithm = {AlgorithmConfig{}};
  bool algorithm_is_list = false;
  std::optional<double> effective_bits;  ///< (0, 16]
  std::set<std::string> fields_set;      ///< "quant_cfg", "algorithm", "effective_bits" when given

  QuantizeConfig();
  /// True when the "algorithm" key was given. A dict without it (the KV presets) makes
  /// mtq.quantize run **no** calibration (it passes config.get("algorithm") = None, §8.6).
  bool has_algorithm() const { return fields_set.count("algorithm") > 0; }
  bool operator==(const QuantizeConfig&) const = default;
};

/// ModelOpt's `normalize_quant_cfg_list`: a list of entries in any accepted form, or a legacy flat
/// dict. Throws ConfigError for anything else, with the entry's path.
std::vector<QuantizerCfgEntry> normalize_quant_cfg_list(const nlohmann::ordered_json& j,
                                                        const ErrorContext& ctx = {});

/// Parses one entry in the new form {"quantizer_name", "parent_class", "cfg", "enable"}.
QuantizerCfgEntry parse_quantizer_cfg_entry(const nlohmann::ordered_json& j, const ErrorContext& ctx = {});

/// Parses an `algorithm` value: null, a name, a dict with "method", or a list of those.
/// Validates every field and range of the selected algorithm config now (ModelOpt keeps the raw
/// dict in QuantizeConfig and validates it only when calibrate() builds the config class).
/// Fields typed `X | None` in ModelOpt take a value of type X here (null is rejected), except
/// moe_calib_experts_ratio, checkpoint_dir, skip_layers, shared_states and scale_algorithm.
std::vector<AlgorithmConfig> parse_algorithm(const nlohmann::ordered_json& j, const ErrorContext& ctx,
                                             bool* is_list = nullptr);

/// Parses a whole QuantizeConfig dict ({"quant_cfg", "algorithm", "effective_bits"}).
QuantizeConfig parse_quantize_config(const nlohmann::ordered_json& j, const ErrorContext& ctx = {});
QuantizeConfig parse_quantize_config(const nlohmann::json& j, const ErrorContext& ctx = {});

/// Dumps like ModelOpt's `model_dump(exclude_unset=...)` (the shape of the `mtq.*_CFG` dicts).
nlohmann::json to_json(const QuantizerCfgEntry& e, bool exclude_unset = true);
nlohmann::json to_json(const AlgorithmConfig& a, bool exclude_unset = true);
nlohmann::json to_json(const QuantizeConfig& q, bool exclude_unset = true);

/// ModelOpt's `need_calibration` (§3 notes), including its quirks: any algorithm other than None or
/// the string "max" (a dict {"method": "max"} or a list too) needs calibration; otherwise an enabled,
/// non-dynamic entry whose name does not contain "weight_quantizer" does (list cfgs are checked
/// item by item, with the items' own enable).
bool need_calibration(const QuantizeConfig& cfg);

/// The algorithms mtq.quantize would calibrate with: `algorithm`, or None when the key is absent.
std::vector<AlgorithmConfig> calibration_algorithms(const QuantizeConfig& cfg);

/// ModelOpt's `update_quant_cfg_with_kv_cache_quant`: a copy of `main` with `kv_entries` appended
/// (an empty main list starts from [{"*", enable false}]); a falsy algorithm (absent or null) becomes
/// "max".
QuantizeConfig update_quant_cfg_with_kv_cache_quant(const QuantizeConfig& main,
                                                    const std::vector<QuantizerCfgEntry>& kv_entries);

/// The last entry whose quantizer_name equals `name` exactly (no glob matching); nullptr if none.
const QuantizerCfgEntry* find_quant_cfg_entry_by_path(const std::vector<QuantizerCfgEntry>& entries,
                                                      const std::string& name);

}  // namespace mq::config
