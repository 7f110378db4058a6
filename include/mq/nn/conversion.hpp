#pragma once
/// ModelOpt's conversion / model_quant API over the mqdist module tree (reference numerics §4.3,
/// §5.4-5.6; algorithms §0, §6): applying quant_cfg lists, partial/full attribute updates,
/// summaries, folding, amax post-processing, the is_quantized* predicates, and model-level
/// quantizer state save/restore.
///
/// Quantizer names are ModelOpt's: the dotted name of the QuantizerModule from
/// Module::named_modules()
/// ("layers.0.q_proj.weight_quantizer"); a SequentialQuantizer's stages are "<name>.0", "<name>.1".
/// Both the container and its stages are match candidates, exactly as in ModelOpt's named_modules()
/// walk.
///
/// Example:
///   mq::nn::replace_quant_module(model);
///   mq::nn::set_quantizer_by_cfg(model,
///   mq::config::load_quantize_config("FP8_DEFAULT_CFG").quant_cfg);
///   mq::nn::disable_quantizer(model, "*lm_head*");
///   {
///     auto ctx = mq::nn::set_quantizer_by_cfg_context(model, {entry});  // restored at scope exit
///     ...
///   }
///   std::string summary = mq::nn::print_quant_summary(model);
#include <ATen/core/Tensor.h>

#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "mq/config/quantize_config.hpp"
#include "mq/config/quantizer_attribute.hpp"
#include "mq/nn/module.hpp"

namespace mq::nn {

// ---- name matching
// ---------------------------------------------------------------------------------

/// Python fnmatch.fnmatchcase: `*` (matches anything, dots included), `?`, `[seq]`, `[!seq]`
/// (ranges a-z; an unclosed `[` is a literal). Case-sensitive (POSIX).
bool fnmatch(const std::string& name, const std::string& pattern);
/// ModelOpt's second matching attempt: `(weight_quantizers?|input_quantizers?)\.\d+` followed by
/// the end or a dot collapses to the singular form without the index.
std::string normalize_fused_experts_quantizer_name(const std::string& name);

/// A quantizer selector: an fnmatch wildcard (tried on the name, then on the normalised name) or a
/// predicate over the quantizer name.
class QuantizerMatcher {
 public:
  QuantizerMatcher(std::string wildcard) : m_(std::move(wildcard)) {}  // NOLINT: implicit by design
  QuantizerMatcher(const char* wildcard) : m_(std::string(wildcard)) {}                    // NOLINT
  QuantizerMatcher(std::function<bool(const std::string&)> pred) : m_(std::move(pred)) {}  // NOLINT
  bool matches(const std::string& quantizer_name) const;

 private:
  std::variant<std::string, std::function<bool(const std::string&)>> m_;
};

/// One TensorQuantizer of the tree: `name` is its ModelOpt name, `owner` the QuantizerModule
/// holding it (the stage's container for a SequentialQuantizer stage), `parent` the module owning
/// that QuantizerModule, `stage` -1 for a plain TensorQuantizer, else the stage index.
struct QuantizerLeaf {
  std::string name;
  quant::TensorQuantizer* quantizer;
  QuantizerModule* owner;
  Module* parent;
  int stage;
};
/// Every TensorQuantizer in named_modules() order (stages after their container's position).
std::vector<QuantizerLeaf> named_tensor_quantizers(Module& model);
/// Every QuantizerModule (Tensor or Sequential container) with its dotted name.
std::vector<std::pair<std::string, QuantizerModule*>> named_quantizer_modules(Module& model);

// ---- applying configs
// --------------------------------------------------------------------------------

/// ModelOpt's set_quantizer_by_cfg: entries in list order, last match wins. An entry without cfg is
/// a partial {"enable": e} update (a disable also turns rotation off); an entry with cfg is a full
/// replacement with the entry's enable. `parent_class` must be a registered quant-module key
/// (mq::ConfigError otherwise) and restricts matches to quantizers whose parent has quant_key() ==
/// key.
void set_quantizer_by_cfg(Module& model, const std::vector<config::QuantizerCfgEntry>& quant_cfg);

/// Full replacement of every field (a new calibrator; existing buffers kept). A list turns a
/// matched TensorQuantizer into a SequentialQuantizer (stage i gets item i); a single config turns
/// a matched SequentialQuantizer back into a TensorQuantizer. Hard-disabled quantizers absorb
/// configs and stay off.
void set_quantizer_attributes_full(Module& model, const QuantizerMatcher& match,
                                   const config::QuantizerAttributeConfig& attributes,
                                   const std::optional<std::string>& parent_class = std::nullopt);
void set_quantizer_attributes_full(Module& model, const QuantizerMatcher& match,
                                   const std::vector<config::QuantizerAttributeConfig>& attributes,
                                   const std::optional<std::string>& parent_class = std::nullopt);
/// Partial update: only the fields in `attributes.fields_set` are written (broadcast to every stage
/// of a SequentialQuantizer). The list form requires the matched quantizer to be a
/// SequentialQuantizer.
void set_quantizer_attributes_partial(
    Module& model, const QuantizerMatcher& match,
    const config::QuantizerAttributeConfig& attributes,
    const std::optional<std::string>& parent_class = std::nullopt);
void set_quantizer_attributes_partial(
    Module& model, const QuantizerMatcher& match,
    const std::vector<config::QuantizerAttributeConfig>& attributes,
    const std::optional<std::string>& parent_class = std::nullopt);
/// A partial config that sets only `enable`.
config::QuantizerAttributeConfig enable_only(bool enable);
/// mtq.enable_quantizer / mtq.disable_quantizer: partial {"enable": true/false}.
void enable_quantizer(Module& model, const QuantizerMatcher& match);
void disable_quantizer(Module& model, const QuantizerMatcher& match);

/// Saves every quantizer's properties and type (Tensor / Sequential with n stages); the destructor
/// restores them (buffers and calibrator statistics are not saved: buffers keep their current
/// values, calibrators are rebuilt empty). ModelOpt's preserve_quantizer_attributes_context.
class PreservedQuantizerAttributes {
 public:
  explicit PreservedQuantizerAttributes(Module& model);
  ~PreservedQuantizerAttributes();
  PreservedQuantizerAttributes(const PreservedQuantizerAttributes&) = delete;
  PreservedQuantizerAttributes& operator=(const PreservedQuantizerAttributes&) = delete;
  PreservedQuantizerAttributes(PreservedQuantizerAttributes&&) noexcept;
  PreservedQuantizerAttributes& operator=(PreservedQuantizerAttributes&&) = delete;
  /// Restores now (idempotent; the destructor then does nothing).
  void restore();

 private:
  struct Saved {
    bool sequential;
    std::vector<nlohmann::json> properties;  // one per stage
  };
  Module* model_;
  std::map<std::string, Saved> saved_;
};

/// ModelOpt's set_quantizer_by_cfg_context: applies `quant_cfg` now and restores properties and
/// Tensor/Sequential types when the returned guard is destroyed. List cfgs throw mq::ConfigError.
[[nodiscard]] PreservedQuantizerAttributes set_quantizer_by_cfg_context(
    Module& model, const std::vector<config::QuantizerCfgEntry>& quant_cfg);

// ---- inspection
// -------------------------------------------------------------------------------------

/// One line per TensorQuantizer, `f"{name:80} {Class}({extra_repr})"`, then "<N> TensorQuantizers
/// found in model". Printed to stdout, or written to `<output_dir>/.quant_summary.txt` when
/// output_dir is given. Returns the text (lines joined by '\n', no trailing newline).
std::string print_quant_summary(Module& model,
                                const std::optional<std::string>& output_dir = std::nullopt,
                                bool print = true);
/// ModelOpt's repr of one quantizer leaf ("TensorQuantizer(8 bit fake per-tensor ...)",
/// "HardDisabledTensorQuantizer(disabled)", "StaticBlockScaleQuantizer(...)").
std::string quantizer_repr(const QuantizerLeaf& leaf);

/// True when any quantizer exists below `model`.
bool is_quantized(Module& model);
/// ModelOpt's is_quantized_linear: a converted module (not an Embedding) whose input_quantizer is a
/// TensorQuantizer, which has a weight_quantizer, and whose `weight` is 2-D.
bool is_quantized_linear(const Module& m);
/// `weight` (when it has a weight_quantizer) then every other parameter X with X_weight_quantizer
/// (or a ModuleList X_weight_quantizers), non-recursive.
std::vector<std::string> weight_attr_names(const Module& m);
/// `<X>_weight_quantizer` ("weight_quantizer" for X == "weight"), or the first element of a
/// `<X>_weight_quantizers` ModuleList; nullptr when none.
QuantizerModule* representative_weight_quantizer(const Module& m,
                                                 const std::string& weight_name = "weight");
/// ModelOpt's quantizer_attr_names(weight_name).weight_quantizer / input_quantizer /
/// output_quantizer.
std::string weight_quantizer_name(const std::string& weight_name);
std::string input_quantizer_name(const std::string& weight_name);

// ---- post-processing
// --------------------------------------------------------------------------------

/// fold_weight (reference §5.5): for every converted module and every TensorQuantizer child whose
/// name ends in "weight_quantizer" with fake_quant: W <- q(W.float()).to(W.dtype); q.disable();
/// rotation off; drop `_pre_quant_scale` and `_amax` (keep_attrs: keep them and turn
/// pre_quant_scale off). SequentialQuantizers are skipped, as in ModelOpt.
void fold_weight(Module& model, bool keep_attrs = false);
/// postprocess_amax (reference §5.6): amax = fn(amax) for every TensorQuantizer with an `_amax`
/// whose name fnmatches `key`. The shape must stay the same.
void postprocess_amax(Module& model, const std::string& key,
                      const std::function<at::Tensor(const at::Tensor&)>& fn);

// ---- model-level quantizer state (ModelOpt's quantizer_state / restore_quantizer_state)
// ------------

/// `properties`: {name: TensorQuantizerState.properties} for every TensorQuantizer and
/// {"num_quantizers": n, "is_sequential_quantizer": true} for every SequentialQuantizer container.
/// `buffers`: "<name>.<buffer>" -> tensor (e.g. "fc.weight_quantizer._amax").
struct ModelQuantizerState {
  nlohmann::json properties = nlohmann::json::object();
  std::map<std::string, at::Tensor> buffers;
};
ModelQuantizerState quantizer_state(Module& model);
/// Restores onto a converted model (replace_quant_module done; the quant_cfg need not be
/// re-applied): Tensor/Sequential types follow the saved state, then every leaf gets its properties
/// and buffers, and static-block promotion flags are restored. The saved and current quantizer name
/// sets must be equal (mq::Error listing the unmatched / extra names otherwise).
void restore_quantizer_state(Module& model, const ModelQuantizerState& state);
/// Writes `<dir>/quantizer_state.json` ({"mqdist_format": 1, "quantizer_state": ..., "config":
/// extra}) and `<dir>/quantizer_state.safetensors`, each atomically (temp file + rename).
void save_quantizer_state(Module& model, const std::string& dir,
                          const nlohmann::json& extra = nullptr);
/// Reads both files back; `extra`, when given, receives the "config" value.
ModelQuantizerState load_quantizer_state(const std::string& dir, nlohmann::json* extra = nullptr);

}  // namespace mq::nn
