#pragma once
/// Distributed unified HF export: every rank of a TP / EP / DP job builds the export state dict of
/// the part of the model it holds (build_export_state_dict on its local module tree), and rank 0
/// merges the shards into the one checkpoint the single-process export of the whole model writes:
/// same files, same bytes, same hf_quant_config.json and config.json.
///
/// Preconditions (what calibration leaves behind): every amax that the single-process model would
/// have is already synchronised across ranks -- per-tensor weight and input amaxes over TP, the
/// per-channel amax of a row-parallel weight over TP, MoE expert input amaxes over EP (ModelOpt's
/// local + EP max, algorithms §1.2 steps 6-11). Shards then export to slices of the whole model's
/// tensors, and tensors that every rank computes (norms, per-tensor scales) are equal. The merge
/// CHECKS the latter (content hashes of every replica) and fails with the tensor's name and ranks.
///
/// The merge is described by a shard rule: for each exported tensor of a rank, either
/// kReplicated (every holder has the whole tensor; the lowest rank's copy is written) or
/// kConcat(dim, index, count) (this rank holds piece `index` of `count` along `dim`). Names held by
/// some ranks only (the experts of an EP rank) are written once. The merged order is the
/// single-process state-dict order (merge_name_order).
///
/// hf_decoder_shard_rule() is the rule for mq::models::CausalLM under ParallelSpec (table in
/// hf_decoder_shard_spec). Packed and block-scaled tensors concatenate like their weights as long
/// as every shard boundary falls on a pack / block boundary, which the export's own shape checks
/// guarantee per shard (INT4 packs row pairs: out / tp even; NVFP4 packs along `in`: in / tp even;
/// blocks: in / tp a multiple of the block).
///
/// Example (every rank of the job, after calibration):
///   mq::models::LoadOptions lo;  lo.parallel = spec;          // this rank's TP / EP slice
///   auto lm = mq::models::load_causal_lm(src, lo);
///   mq::calib::quantize(*lm, cfg, loop, {&sync_hook});
///   auto world = mq::dist::MpiComm::world();
///   auto r = mq::hf_export::export_hf_checkpoint_distributed(
///       *lm, src, "/out/model-nvfp4", {}, world,
///       mq::hf_export::hf_decoder_shard_rule(spec.tp_rank, spec.tp_size),
///       mq::hf_export::moe_expert_global_names(blocks));  // {(name, moe->expert_begin())...}
///   // rank 0 wrote /out/model-nvfp4; every rank returns the same report
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mq/dist/mpi_comm.hpp"
#include "mq/export/hf_checkpoint.hpp"
#include "mq/nn/module.hpp"

namespace mq::hf_export {

enum class ShardKind { kReplicated, kConcat };

/// How one rank's copy of an exported tensor relates to the whole tensor.
struct ShardSpec {
  ShardKind kind = ShardKind::kReplicated;
  int64_t dim = 0;    ///< kConcat: the dimension the pieces are concatenated along (>= 0)
  int64_t index = 0;  ///< kConcat: this piece's position, 0 <= index < count
  int64_t count = 1;  ///< kConcat: number of pieces

  static ShardSpec replicated() { return {}; }
  static ShardSpec concat(int64_t dim, int64_t index, int64_t count) {
    return {ShardKind::kConcat, dim, index, count};
  }
  bool operator==(const ShardSpec&) const = default;
};

/// "replicated" or "concat(dim=1, 0/2)".
std::string to_string(const ShardSpec& s);

/// The caller's rule: the shard of the exported tensor `name` held by this rank.
using ShardRule = std::function<ShardSpec(const std::string& name, const at::Tensor& tensor)>;

/// One exported tensor of one rank, with its shard.
struct ShardedTensor {
  std::string name;
  at::Tensor tensor;
  ShardSpec shard;
};

// ---- merging (pure, no MPI)
// ------------------------------------------------------------------------

/// The single-process order of names that each rank lists in its own state-dict order: rank 0's
/// list, then every name missing so far inserted, rank by rank, right before its next successor in
/// its rank's list that is already placed (at the end when none is). Experts 4-7 of EP rank 1 thus
/// land after rank 0's experts 0-3 and before the next layer's tensors.
std::vector<std::string> merge_name_order(const std::vector<std::vector<std::string>>& ranks);

/// What the merge needs to know about one tensor of one rank (the tensor itself stays there).
struct TensorMeta {
  std::string name;
  c10::ScalarType dtype = c10::ScalarType::Undefined;
  std::vector<int64_t> shape;
  ShardSpec shard;
  uint64_t hash = 0;  ///< tensor_content_hash()
};
TensorMeta tensor_meta(const std::string& name, const at::Tensor& t, const ShardSpec& shard);

/// 64-bit content hash of a CPU tensor's dtype, shape and bytes (not cryptographic; equal content
/// gives equal hashes on every rank).
uint64_t tensor_content_hash(const at::Tensor& t);

/// A tensor of one rank: index into that rank's list.
struct TensorRef {
  int rank = 0;
  size_t index = 0;
  bool operator==(const TensorRef&) const = default;
};

/// One tensor of the merged state dict.
struct MergeStep {
  std::string name;
  ShardSpec shard;                    ///< kConcat: dim and count (index unused); else replicated
  std::vector<TensorRef> parts;       ///< kConcat: piece 0..count-1; kReplicated: one source
  std::vector<TensorRef> duplicates;  ///< every other holder, each equal to parts[piece]
  std::vector<size_t> duplicate_of;   ///< piece index of duplicates[i]
  c10::ScalarType dtype = c10::ScalarType::Undefined;
  std::vector<int64_t> shape;  ///< merged shape
};

/// Plans the merge from every rank's metadata (in each rank's state-dict order). Throws mq::Error
/// naming the tensor and the ranks when: replicas differ (dtype, shape or hash), ranks disagree on
/// a tensor's shard kind / dim / count, a concat piece is missing, or pieces have different dtypes
/// or shapes off the concat dimension. Steps are in merge_name_order() order.
std::vector<MergeStep> plan_merge(const std::vector<std::vector<TensorMeta>>& ranks);

/// Merges per-rank (name, tensor, shard) lists into the single-process state dict: pieces
/// concatenated along their dim in index order, replicated tensors taken from the lowest holder
/// and checked byte-equal to every other holder (mq::Error naming the tensor and both ranks).
std::vector<std::pair<std::string, at::Tensor>> merge_sharded_state_dicts(
    const std::vector<std::vector<ShardedTensor>>& ranks);

/// Union of the ranks' export summaries, as the single-process build would have made it: layer
/// configs and unquantized names in merge_name_order() order, the one KV cache format (mq::Error
/// when two ranks report different non-empty ones, as the single-process export does).
ExportSummary merge_export_summaries(const std::vector<ExportSummary>& ranks);

// ---- the rule for HF decoder models
// ----------------------------------------------------------------

/// Role of a linear under tensor parallelism.
enum class LinearRole {
  kColumn,     ///< output rows split (weight rows, bias rows)
  kRow,        ///< input columns split (weight columns)
  kReplicated  ///< whole on every rank (embeddings, norms, routers, lm_head, MoE experts)
};

/// Role of module `module_name` in mq::models::CausalLM under ParallelSpec: q_proj, k_proj, v_proj,
/// gate_proj, up_proj column; o_proj, down_proj row; everything else, and every module inside an
/// `experts` list (experts are not split over TP), replicated.
LinearRole hf_decoder_linear_role(std::string_view module_name);

/// The shard of tensor `<module>.<suffix>` with `ndim` dimensions, on TP rank tp_rank of tp_size,
/// from what build_export_state_dict emits (hf_tensors.hpp table):
///
/// | suffix                      | ndim | column        | row                                  |
/// |-----------------------------|------|---------------|--------------------------------------|
/// | weight (packed or not)      | 2    | concat dim 0  | concat dim 1                         |
/// | weight_scale per-tensor     | 0    | replicated    | replicated                           |
/// | weight_scale per-channel    | 1    | concat dim 0  | replicated (amax synced over TP)     |
/// | weight_scale block          | 2    | concat dim 0  | concat dim 1                         |
/// | weight_scale FP8 2-D block  | 4    | concat dim 0  | concat dim 2  (out/128,1,in/128,1)   |
/// | weight_scale_2, input_scale | 0    | replicated    | replicated                           |
/// | bias                        | 1    | concat dim 0  | replicated                           |
/// | pre_quant_scale (in,)       | 1    | replicated    | concat dim 0                         |
/// | k_scale, v_scale            | 0    | replicated    | replicated                           |
///
/// kReplicated roles, tp_size 1: replicated. A (suffix, ndim) the table does not list for a column
/// or row module throws mq::Error naming it (a new export tensor must get a row here first).
ShardSpec hf_decoder_shard_spec(LinearRole role, std::string_view suffix, int64_t ndim,
                                int64_t tp_rank, int64_t tp_size);

/// ShardRule over hf_decoder_linear_role + hf_decoder_shard_spec for this rank's TP position.
ShardRule hf_decoder_shard_rule(int64_t tp_rank, int64_t tp_size);

// ---- local -> global names
// ------------------------------------------------------------------------

/// Maps a name of the local module tree (a module or an exported tensor) to its name in the whole
/// model. Under expert parallelism a rank's ModuleList numbers its experts from 0, while the
/// checkpoint names them by global index.
using NameMap = std::function<std::string(const std::string& local_name)>;

/// "<block>.experts.<i>[.rest]" -> "<block>.experts.<i + begin>[.rest]" for every (block name,
/// global index of the block's experts.0) pair, e.g. {"model.layers.0.mlp", 4} on EP rank 1 of 2
/// with 8 experts (mq::models::SparseMoe::expert_begin()); other names unchanged.
NameMap moe_expert_global_names(std::vector<std::pair<std::string, int64_t>> block_expert_begin);

// ---- the distributed export
// ------------------------------------------------------------------------

/// Collective over `world` (every rank calls it): exports the model whose parts the ranks hold.
/// `global_name` (may be empty: identity) renames every tensor and module name of the local state
/// dict before the rule and the merge see it (moe_expert_global_names under EP).
///   1. Rank 0 reads source_dir/config.json, checks export_dir and resolves the export dtype
///      (options.dtype, config.json, else rank 0's first parameter dtype); all ranks learn it.
///   2. Every rank builds its export state dict and summary (build_export_state_dict) and applies
///      `rule` to each tensor.
///   3. Status exchange: if any rank failed in 1-2, every rank throws mq::Error
///      "export_hf_checkpoint_distributed: rank R failed: <its message>" (lowest failing rank; the
///      others are counted) and nothing is written.
///   4. Metadata (names, dtypes, shapes, shards, content hashes, summaries) goes to rank 0, which
///      plans the merge (plan_merge: replicas are compared by hash, never transferred) and checks
///      that the MoE expert input scales of each block and projection group agree across ranks
///      (the single-process export writes the max over all experts; unsynced EP amaxes throw).
///   5. Each rank sends rank 0 exactly the tensors the plan takes from it, one message per tensor,
///      in plan order; rank 0 merges them and writes through write_hf_checkpoint (temporary
///      directory + rename). Other ranks write nothing.
///   6. Rank 0's outcome is broadcast: on failure in 4-5 every rank throws the same mq::Error;
///      on success every rank returns rank 0's ExportReport.
/// `local` is changed in place by the export steps, as export_hf_checkpoint changes its model.
ExportReport export_hf_checkpoint_distributed(nn::Module& local, const std::string& source_dir,
                                              const std::string& export_dir,
                                              const ExportOptions& options,
                                              const dist::MpiComm& world, const ShardRule& rule,
                                              const NameMap& global_name = {});

}  // namespace mq::hf_export
