#pragma once
/// AmaxSync: ModelOpt's distributed amax synchronization of max calibration (algorithms §1.2 steps
/// 9-12, §3.3-3.4, §4.2-4.4) as the calib::ParallelStateHook of calib::max_calibrate, made
/// deterministic, deadlock-free and bucketed (§4.6).
///
/// What is reduced (every op is an all-reduce MAX, so the result is exact and independent of the
/// bucketing):
///   phase "dp"  every quantizer leaf of every converted module (TensorQuantizer children,
///               SequentialQuantizer stages, attention q/k/v/p_bmm quantizers; disabled ones
///               included) over the module's data_parallel_group;
///   phase "ep"  the same over expert_model_parallel_group, except weight quantizers of routed
///               experts (module name contains "experts" but not "shared_experts") unless
///               cfg.sync_expert_weight_amax;
///   phase "tp"  over tensor_parallel_group, by ModelOpt's axis rules: column-parallel input and
///               weight with axis None or -1; row-parallel input with axis None, weight with axis
///               None or 0; static-block quantizers never (their per-block amax is sharded);
///               dynamic-block NVFP4 (axis None, per-tensor amax) is synced, as ModelOpt's code
///               does in practice (the "[quirk]" of step 11: its dynamic-block skip never fires);
///               k_bmm/v_bmm of a module holding both, whatever its role;
///   phase "global_ep", "global_tp"   the NVFP4-static global amaxes of step 12 (see
///               sync_global_amax).
/// An amax may be unset on some ranks (an expert that saw no tokens): it is data, not control
/// flow. Per (phase, group) one all-gather exchanges "has a value, dtype, device, shape" of every
/// listed quantizer, then one flattened MAX all-reduce per (dtype, device type) carries every
/// value that at least one member has; members without one contribute -inf and receive the
/// group's maximum. Groups are visited in one global order (group name, then member list), so
/// ranks never wait on each other in a cycle. Host tensors go over MPI, CUDA tensors over the
/// group's NCCL communicator (ProcessGroup dispatch).
///
/// Deviations from ModelOpt (each keeps a TP/EP run bit-identical to one process over all data):
///   * ModelOpt raises "MoE calibration incomplete" (step 9) when some ranks of a group have an
///     amax and others not; here every rank gets the group's maximum and the quantizer is reported
///     (report().incomplete, a warning line). An enabled quantizer that expects a calibrated amax
///     but has none on any rank stays unset and is reported (report().unset).
///   * q_bmm / p_bmm of an attention module with k/v_bmm quantizers are TP-synced too when their
///     axis is None (ModelOpt syncs k/v only; heads are TP-sharded, so a per-tensor q/p amax is a
///     per-shard maximum otherwise).
///   * NVFP4 static weights with TP > 1 are supported (ModelOpt's Megatron path refuses them,
///     step 7): see sync_global_amax.
///   * A shared global amax of a routed-expert group is reduced over EP only with
///     cfg.sync_expert_weight_amax (ModelOpt always reduces, merging different experts that happen
///     to have the same local index on their EP ranks).
///
/// Quantizers of type "dynamic" never hold an amax and are not listed. The TP rule reads the
/// config for static-block quantizers (never synced) and the axis otherwise, so the lists agree on
/// ranks where a quantizer saw no data.
///
/// Preconditions: every rank of a group has the same module structure (local expert i of each EP
/// rank stands in the same position) and the ParallelInfoFn gives modules at the same position
/// the same kind of group. A mismatch in the number or shapes of exchanged quantizers throws the
/// same mq::Error on every member of the group instead of hanging.
///
/// Example (every rank):
///   auto g = mq::dist::make_parallel_groups(world, {.tp = 2, .ep = 2, .expert_tp = 1});
///   mq::dist::AmaxSync sync(
///       [&](const std::string& name, mq::nn::Module&) ->
///       std::optional<mq::dist::ModuleParallelInfo> {
///         if (name.find(".experts.") != std::string::npos) return {{g.experts(),
///         TpRole::kReplicated}}; if (name.ends_with("o_proj") || name.ends_with("down_proj"))
///         return {{g.dense(), TpRole::kRow}}; return {{g.dense(), TpRole::kColumn}};
///       },
///       g.world);
///   mq::calib::max_calibrate(model, cfg.algorithm[0], loop, {.parallel = &sync});
///   for (const auto& w : sync.report().warnings) log(w);
#include <ATen/core/Tensor.h>

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "mq/calib/calibrate.hpp"
#include "mq/dist/parallel_state.hpp"
#include "mq/dist/process_group.hpp"
#include "mq/nn/module.hpp"

namespace mq::dist {

/// How a module's weight is split over its TP group: kColumn by output rows (q/k/v, gate/up),
/// kRow by input columns (o_proj, down_proj), kReplicated not split (no TP sync of its input and
/// weight quantizers, as for ModelOpt modules that are neither column- nor row-parallel).
enum class TpRole { kReplicated, kColumn, kRow };

struct ModuleParallelInfo {
  ParallelState state;
  TpRole role = TpRole::kReplicated;
};

/// Called once per converted module (one whose quant_key() is set: linears, attention, ...) with
/// its dotted name, in named_modules() order; nullopt means ModelOpt's default {DP = world, -, -}
/// (replicated).
using ParallelInfoFn =
    std::function<std::optional<ModuleParallelInfo>(const std::string&, nn::Module&)>;

/// The plan of mq::models' HF decoders (models/causal_lm.hpp ParallelSpec) over `groups` (copied):
///   routed experts (".experts." in the name, not "shared_experts")   groups.experts(); role by
///       the rules below when experts_tp_sharded, else kReplicated (experts are whole on each rank)
///   *.q_proj, k_proj, v_proj, gate_proj, up_proj, w1, w3           groups.dense(), kColumn
///   *.o_proj, down_proj, w2                                        groups.dense(), kRow
///   anything else (attention with its bmm quantizers, router, lm_head, embeddings)
///                                                                  groups.dense(), kReplicated
ParallelInfoFn hf_decoder_parallel_info(const ParallelGroups& groups,
                                        bool experts_tp_sharded = false);

/// What one sync did, for logs and tests.
struct AmaxSyncReport {
  struct Phase {
    std::string name;    ///< "dp", "ep", "tp", "global_ep", "global_tp"
    int entries = 0;     ///< (quantizer, group) pairs listed by this rank
    int buckets = 0;     ///< groups visited (one flag/shape exchange each)
    int exchanges = 0;   ///< all-gathers issued by this rank
    int reductions = 0;  ///< all-reduces issued by this rank (one per bucket and dtype/device)
  };
  struct Incomplete {
    std::string quantizer;     ///< dotted quantizer name
    std::string group;         ///< phase and group, "dp: world ranks [0, 2]"
    int ranks_with_value = 0;  ///< members that had an amax before the sync
    int group_size = 0;
  };
  std::vector<Phase> phases;           ///< in the order issued
  std::vector<Incomplete> incomplete;  ///< some members had an amax, others not (now synced)
  std::vector<std::string> unset;      ///< enabled, calibrated quantizers with no amax anywhere
  std::vector<std::string> warnings;   ///< one line per incomplete group and per unset list
  /// Phase by name; throws when it was not run.
  const Phase& phase(const std::string& name) const;
};

class AmaxSync final : public calib::ParallelStateHook {
 public:
  /// `world` is the default DP group of modules for which `info` returns nullopt.
  AmaxSync(ParallelInfoFn info, ProcessGroup world);

  /// Phases "dp", "ep", "tp" (steps 9-11). Resets the report.
  void sync_amax(nn::Module& model, const config::AlgorithmConfig& cfg) override;
  /// Step 12a's global amaxes: shared groups MAX over EP (see the deviation above) then TP of the
  /// first member's ParallelState (ModelOpt's populate); a quantizer's own global amax (max over
  /// its per-block amax) MAX over TP. ModelOpt never reduces the latter because its Megatron path
  /// refuses NVFP4-static weights with TP > 1: its sharded checkpoint treats the per-block `_amax`
  /// as replicated. Here each rank keeps the per-block amax of its own shard (never TP-synced) and
  /// only the per-tensor global amax, the max over all blocks of the full weight, is reduced, so
  /// every rank quantizes its shard exactly as one process quantizes those rows/columns of the full
  /// weight (shards must cover whole 16-element blocks).
  void sync_global_amax(nn::Module& model, const config::AlgorithmConfig& cfg,
                        std::vector<calib::GlobalAmaxSync>& entries) override;

  /// Of the last sync_amax (and sync_global_amax after it).
  const AmaxSyncReport& report() const { return report_; }
  /// The info resolved for a converted module in the last sync (the default when `info` returned
  /// nullopt); throws for an unknown name.
  const ModuleParallelInfo& module_info(const std::string& module) const;

 private:
  void resolve(nn::Module& model);

  ParallelInfoFn info_;
  ProcessGroup world_;
  std::map<std::string, ModuleParallelInfo> infos_;
  AmaxSyncReport report_;
  bool amax_synced_ = false;  // sync_amax ran in this calibration (sync_global_amax follows it)
};

}  // namespace mq::dist
