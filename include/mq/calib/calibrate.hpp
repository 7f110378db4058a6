#pragma once
/// Calibration driver: ModelOpt's `mtq.quantize` / `mtq.calibrate` (reference algorithms §1.1) with
/// algorithms as plug-ins, and the "max" algorithm of §1.2 for one process.
///
/// Example (PTQ of a converted model):
///   mq::calib::ForwardLoop loop = [&](mq::nn::Module& m) { for (auto& b : batches)
///   model.forward(b); }; mq::calib::quantize(model,
///   mq::config::load_quantize_config("FP8_DEFAULT_CFG"), loop);
///   // or, already converted and configured:
///   mq::calib::calibrate(model, cfg.algorithm[0], loop);
///
/// Example (a new algorithm):
///   struct Mine : mq::calib::Algorithm {
///     void run(nn::Module& model, const config::AlgorithmConfig& cfg, const ForwardLoop& loop,
///              const CalibrateOptions& opts) override {
///       mq::calib::max_calibrate(model, cfg, loop, opts);          // most algorithms start from
///       max auto cap = mq::calib::LayerIoCapture(model, {"layers.0.mlp"});  // per-layer
///       inputs/outputs loop(model); ...
///     }
///   };
///   mq::calib::register_algorithm("mine", [] { return std::make_unique<Mine>(); });
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "mq/config/quantize_config.hpp"
#include "mq/nn/module.hpp"

namespace mq::calib {

/// Pushes the whole calibration set through the model; may be empty (weight-only configs).
using ForwardLoop = std::function<void(nn::Module&)>;

/// One global amax of max calibration's step 12a (algorithms §3), handed to the distributed hook
/// before promotion.
struct GlobalAmaxSync {
  /// A shared sibling group (q/k/v, gate/up, w1/w3): its member modules, in named_modules() order.
  /// A quantizer's own global amax: the one module holding it.
  std::vector<std::string> modules;
  /// Empty for a shared group; else the dotted weight quantizer name ("<module>.weight_quantizer").
  std::string quantizer;
  bool shared = false;
  /// 0-d fp32, in/out.
  at::Tensor global_amax;
};

/// The seam for the distributed steps of max calibration (algorithms §1.2 steps 7-12: MoE
/// completeness check, DP/EP/TP amax all-reduce, and the sync of NVFP4-static global amaxes).
/// mqdist's single-process path passes none; mq::dist::AmaxSync implements it over ParallelStates.
class ParallelStateHook {
 public:
  virtual ~ParallelStateHook() = default;
  /// Called once every local `_amax` is final (after the local MoE sync), before shared global
  /// amaxes are computed and static block weights are promoted, when cfg.distributed_sync. Must
  /// issue the same collectives in the same order on every rank.
  virtual void sync_amax(nn::Module& model, const config::AlgorithmConfig& cfg) = 0;
  /// Called once (also without distributed_sync, as ModelOpt's populate syncs shared states then
  /// too) with every NVFP4-static global amax before promotion: each shared group's (max over its
  /// members' `_amax`), then, for every enabled NVFP4-static weight quantizer with an amax outside
  /// the groups, its own (max over its per-block amax), which the single-process path computes at
  /// promotion. Entries are in named_modules() order and the same on every rank of a group; the
  /// hook updates global_amax in place.
  virtual void sync_global_amax(nn::Module& model, const config::AlgorithmConfig& cfg,
                                std::vector<GlobalAmaxSync>& entries) {
    (void)model;
    (void)cfg;
    (void)entries;
  }
};

struct CalibrateOptions {
  ParallelStateHook* parallel = nullptr;  ///< nullptr: single process (distributed_sync is a no-op)
};

/// A calibration algorithm (ModelOpt's `<method>_calibrate` mode).
class Algorithm {
 public:
  virtual ~Algorithm() = default;
  virtual void run(nn::Module& model, const config::AlgorithmConfig& cfg, const ForwardLoop& loop,
                   const CalibrateOptions& opts) = 0;
};
using AlgorithmFactory = std::function<std::unique_ptr<Algorithm>()>;

/// Registers (or replaces) `name`. "max" is built in.
void register_algorithm(const std::string& name, AlgorithmFactory factory);
/// Unknown names throw mq::Error.
void unregister_algorithm(const std::string& name);
bool is_registered_algorithm(const std::string& name);
/// Registered names, sorted.
std::vector<std::string> algorithm_names();

/// ModelOpt's calibrate(): eval mode, run the algorithm (None: nothing), validate every `_amax` and
/// `_pre_quant_scale` (a warning, to stderr and in the returned list, for negative / inf / nan
/// values), restore the train flag. An unregistered method throws mq::ConfigError naming it.
std::vector<std::string> calibrate(nn::Module& model, const config::AlgorithmConfig& algorithm,
                                   const ForwardLoop& loop = {}, const CalibrateOptions& opts = {});

/// ModelOpt's quantize(): converts the model when it has no quantizer yet (replace_quant_module),
/// applies quant_cfg, checks that a config asking for weight quantization enabled at least one
/// weight quantizer (ModelOpt's _check_weight_quantization_took_effect;
/// MODELOPT_SKIP_WEIGHT_QUANT_CHECK=1 skips it), then calibrates with every algorithm of
/// calibration_algorithms(cfg) in order. Returns the warnings.
std::vector<std::string> quantize(nn::Module& model, const config::QuantizeConfig& cfg,
                                  const ForwardLoop& loop = {}, const CalibrateOptions& opts = {});

// ---- building blocks (shared by algorithms)
// -------------------------------------------------------------

/// Every enabled TensorQuantizer: constant-amax ones get disable_quant(); others disable_quant() +
/// enable_calib() (a no-op for dynamic ones).
void enable_stats_collection(nn::Module& model);
/// Every enabled TensorQuantizer: constant-amax ones get enable_quant(); others load `_amax` from a
/// calibrator that holds data (not dynamic), load a static bias, then enable_quant() +
/// disable_calib().
void finish_stats_collection(nn::Module& model);
/// (weight, weight quantizer) pairs of one converted module (ModelOpt
/// iter_weights_for_calibration).
std::vector<std::pair<at::Tensor, nn::QuantizerModule*>> iter_weights_for_calibration(
    nn::Module& module);
/// Feeds every converted module's weights to their weight quantizers, once per module object.
void weight_only_quantize(nn::Module& model);
/// True when an enabled non-weight quantizer needs data from a forward pass (ModelOpt
/// _needs_activation_forward_for_max_calib).
bool needs_activation_forward(nn::Module& model);
/// ModelOpt's sync_moe_expert_amax over one block's experts: input-quantizer amaxes (and weight
/// ones with sync_weight_amax) become the elementwise max over experts; enabled weight quantizers
/// still without an amax are max-calibrated on their weight.
void sync_moe_local_experts_amax(nn::ModuleList& experts, bool sync_weight_amax);

/// Static NVFP4 sibling groups (algorithms §3, numerics §4.8): default patterns
/// `(?:(.*)\.)?(?:q_proj|k_proj|v_proj)`, `(?:(.*)\.)?(?:gate_proj|up_proj)`,
/// `(?:(.*)\.)?(?:w1|w3)`.
const std::vector<std::string>& default_shared_weight_patterns();
/// The patterns max calibration uses for `cfg` (shared_states given: its patterns, an empty list
/// disabling groups; otherwise the defaults).
std::vector<std::string> resolve_shared_weight_patterns(const config::AlgorithmConfig& cfg);
/// Groups of >= 2 converted modules with an enabled weight quantizer whose names fullmatch the same
/// pattern with the same captures (first matching pattern wins), in named_modules() order.
std::vector<std::vector<std::string>> find_shared_weight_groups(
    nn::Module& model, const std::vector<std::string>& patterns);
/// Promotes every enabled static-block weight quantizer with an amax (stage 0 of a
/// SequentialQuantizer): NVFP4 static gets `_global_amax` = the group's shared value when
/// `shared_global_amax` has one for its module name, else the value of `own_global_amax` for its
/// dotted quantizer name ("<module>.weight_quantizer"; the distributed path passes TP-reduced
/// values there), else reduce_amax(_amax); integer static-block weights are promoted without a
/// global amax. Returns the number of NVFP4 quantizers newly promoted.
int promote_static_block_weight_quantizers(
    nn::Module& model, const std::map<std::string, at::Tensor>& shared_global_amax = {},
    const std::map<std::string, at::Tensor>& own_global_amax = {});
/// Algorithms §1.2 for one process (steps 1-6 and 12), with opts.parallel->sync_amax as steps 7-11.
void max_calibrate(nn::Module& model, const config::AlgorithmConfig& cfg, const ForwardLoop& loop,
                   const CalibrateOptions& opts = {});
/// Warnings for every `_amax` / `_pre_quant_scale` with negative, inf or nan values (ModelOpt's
/// validate_attr message: "<name>.<attr> contains invalid values: ...").
std::vector<std::string> validate_amax(nn::Module& model);

// ---- MoE coverage
// ---------------------------------------------------------------------------------------

struct MoeBlockCoverage {
  std::string name;                   ///< dotted name of the SparseMoeBlock
  std::vector<int64_t> token_counts;  ///< per expert, since the last reset_token_counts()
  std::vector<int64_t> starved;       ///< expert indices with 0 tokens
};
struct MoeCoverage {
  std::vector<MoeBlockCoverage> blocks;
  std::vector<std::string> warnings;  ///< one line per block with starved experts
};
MoeCoverage moe_coverage(nn::Module& model);
/// One block's coverage from its per-expert token counts (starved = the experts with 0), and the
/// warning moe_coverage gives for it ("" when no expert is starved).
MoeBlockCoverage moe_block_coverage(std::string name, std::vector<int64_t> token_counts,
                                    std::string* warning);
/// Calls reset_token_counts() on every SparseMoeBlock.
void reset_moe_token_counts(nn::Module& model);

// ---- per-layer capture
// ----------------------------------------------------------------------------------

/// Records the inputs and outputs of named modules through forward hooks while alive (for
/// algorithms that need per-layer activations: smoothquant, awq, gptq). Modules must call
/// run_forward_hooks in their forward (Linear / QuantLinear do).
class LayerIoCapture {
 public:
  LayerIoCapture(nn::Module& model, const std::vector<std::string>& module_names,
                 bool keep_outputs = true);
  ~LayerIoCapture();
  LayerIoCapture(const LayerIoCapture&) = delete;
  LayerIoCapture& operator=(const LayerIoCapture&) = delete;
  /// Inputs / outputs seen by `name`, in call order (detached).
  const std::vector<at::Tensor>& inputs(const std::string& name) const;
  const std::vector<at::Tensor>& outputs(const std::string& name) const;
  void clear();

 private:
  struct Entry {
    nn::Module* module;
    int64_t handle;
    std::vector<at::Tensor> in, out;
  };
  std::map<std::string, Entry> entries_;
  bool keep_outputs_;
};

}  // namespace mq::calib
