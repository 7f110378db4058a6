#pragma once
/// Rank-group math: how a world of ranks splits into tensor-, data-, pipeline- and expert-parallel
/// groups. Pure functions (no MPI): the same answer on every rank, testable without a launcher.
///
/// Rank order (Megatron-Core's default order "tp-cp-dp-pp" for dense layers, "tp-ep-dp-pp" for
/// experts; tensor parallel is the fastest-varying index so a TP group sits on neighbouring ranks,
/// i.e. one node):
///
///   dense:   rank = tp_rank + tp * (dp_rank + dp * pp_rank)
///   experts: rank = expert_tp_rank + expert_tp * (ep_rank + ep * expert_dp_rank) + tp * dp *
///   pp_rank
///
/// The expert layout re-partitions the tp*dp ranks of one pipeline stage, so it needs
/// expert_tp * ep | tp * dp, and expert_dp = tp * dp / (expert_tp * ep). Context parallelism is
/// folded into dp (ModelOpt's DP group is DP x CP). Every group's member list is ascending in world
/// rank, and a member's index in that list is its rank inside the group (its coordinate along that
/// dimension).
///
/// Example (4 ranks, tp=2, ep=2, expert_tp=1):
///   auto L = mq::dist::resolve_layout({.world_size = 4, .tp = 2, .ep = 2, .expert_tp = 1});
///   auto g = mq::dist::rank_groups(L, 3);
///   // g.tp_group = {2, 3}, g.dp_group = {1, 3}, g.ep_group = {2, 3}, g.expert_dp_group = {1, 3}
#include <string>
#include <vector>

namespace mq::dist {

/// Parallel sizes. Zero means "derive": dp = world / (tp * pp), expert_tp = tp (Megatron's
/// default); world_size 0 is filled by make_parallel_groups from the communicator (the pure
/// functions need it set).
struct ParallelLayout {
  int world_size = 0;
  int tp = 1;         ///< tensor_model_parallel_size
  int dp = 0;         ///< data parallel size (x context parallel); 0: world_size / (tp * pp)
  int pp = 1;         ///< pipeline_model_parallel_size
  int ep = 1;         ///< expert_model_parallel_size
  int expert_tp = 0;  ///< expert_tensor_parallel_size; 0: tp
  int expert_dp() const { return tp * dp / (expert_tp * ep); }
};

/// The group kinds, in the fixed order in which communicators are created on every rank.
enum class GroupKind { kTensor, kData, kPipeline, kExpert, kExpertTensor, kExpertData };
inline constexpr GroupKind kAllGroupKinds[] = {GroupKind::kTensor,       GroupKind::kData,
                                               GroupKind::kPipeline,     GroupKind::kExpert,
                                               GroupKind::kExpertTensor, GroupKind::kExpertData};
/// "tp", "dp", "pp", "ep", "expert_tp", "expert_dp".
const char* group_kind_name(GroupKind kind);

/// Fills the derived sizes and validates; throws mq::ConfigError("parallel layout: ...") naming the
/// offending sizes (non-positive size, world not divisible by tp*pp, tp*dp*pp != world,
/// expert_tp*ep not dividing tp*dp).
ParallelLayout resolve_layout(ParallelLayout layout);

/// One rank's coordinates and groups (world ranks, ascending).
struct RankGroups {
  int rank = 0;
  int tp_rank = 0, dp_rank = 0, pp_rank = 0;
  int ep_rank = 0, expert_tp_rank = 0, expert_dp_rank = 0;
  std::vector<int> tp_group, dp_group, pp_group;
  std::vector<int> ep_group, expert_tp_group, expert_dp_group;

  const std::vector<int>& members(GroupKind kind) const;
  int rank_in(GroupKind kind) const;  ///< index of `rank` in members(kind)
};

/// Groups of `rank` under `layout` (resolved here; throws like resolve_layout, and for a rank
/// outside [0, world_size)).
RankGroups rank_groups(const ParallelLayout& layout, int rank);

/// Every distinct group of `kind`, ordered by its smallest member: a partition of [0, world_size).
std::vector<std::vector<int>> all_groups(const ParallelLayout& layout, GroupKind kind);

/// "world 8 = tp 2 x dp 4 x pp 1; ep 2 x expert_tp 1 x expert_dp 4" (for logs).
std::string to_string(const ParallelLayout& layout);

}  // namespace mq::dist
