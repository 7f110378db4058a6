#pragma once
/// ParallelState (ModelOpt's modelopt.torch.utils.distributed.ParallelState) and the groups of a
/// run.
///
/// A ParallelState is an object handed to each quantized module (many modules share one), never a
/// global. It has ModelOpt's three fields; a field may be not initialised (ModelOpt's -1), and the
/// sync helpers below skip such groups, as ModelOpt's sync code does:
///   dense layers:  {data_parallel_group = dp,        tensor_parallel_group = tp,        expert =
///   -} routed experts:{data_parallel_group = expert_dp, tensor_parallel_group = expert_tp, expert
///   = ep} default (ModelOpt's _initialize_parallel_state): {world, -, -}
///
/// Rank-dependent conditions travel as data: sync_optional_amax_max exchanges "has an amax" (and
/// its dtype/shape) before reducing, so a rank whose expert saw no tokens joins the same
/// collectives as the others and receives the group's amax.
///
/// Example (every rank, same order; layout from the job's tp/ep sizes):
///   mq::dist::MpiRuntime mpi(&argc, &argv);
///   auto world = mq::dist::MpiComm::world();
///   auto groups = mq::dist::make_parallel_groups(world, {.world_size = world.size(), .tp = 2, .ep
///   = 2}); mq::dist::ParallelState dense = groups.dense(), experts = groups.experts();
///   std::optional<at::Tensor> amax = ...;                      // unset where no tokens came
///   mq::dist::sync_optional_amax_max(amax, experts.data_parallel_group);
#include <ATen/core/Tensor.h>

#include <optional>
#include <string>

#include "mq/dist/mpi_comm.hpp"
#include "mq/dist/process_group.hpp"
#include "mq/dist/rank_groups.hpp"

namespace mq::dist {

struct ParallelState {
  ProcessGroup data_parallel_group;
  ProcessGroup tensor_parallel_group;
  ProcessGroup expert_model_parallel_group;

  /// kData, kTensor or kExpert (the three fields); other kinds throw.
  const ProcessGroup& group(GroupKind kind) const;
  /// "data_parallel_group: dp: world ranks [0, 2], tensor_parallel_group: tp: ...,
  /// expert_model_parallel_group: not initialised" (ModelOpt's __repr__ with group members).
  std::string to_string() const;
};

/// Options of make_parallel_groups.
struct GroupOptions {
  bool nccl = false;  ///< also bootstrap an NcclComm per group (device tensors)
  int device = -1;    ///< CUDA device for NCCL; -1: NcclComm::select_device(world)
};

/// Every group of this rank under one layout, made collectively from `world`.
struct ParallelGroups {
  ParallelLayout layout;  ///< resolved
  RankGroups ranks;       ///< this rank's coordinates and member lists
  ProcessGroup world, tp, dp, pp, ep, expert_tp, expert_dp;

  ParallelState dense() const { return {dp, tp, {}}; }
  ParallelState experts() const { return {expert_dp, expert_tp, ep}; }
  /// ModelOpt's default for a module without a parallel plan: DP = world.
  ParallelState world_default() const { return {world, {}, {}}; }
  const ProcessGroup& group(GroupKind kind) const;
};

/// Collective over `world`: resolves `layout` (world_size 0 means world.size(); any other value
/// must equal it), then splits one communicator per group kind in the fixed order of kAllGroupKinds
/// (color = the group's smallest world rank, key = the rank's coordinate), so every rank issues the
/// same splits. Throws mq::ConfigError (on every rank alike) for an invalid layout.
ParallelGroups make_parallel_groups(const MpiComm& world, ParallelLayout layout,
                                    const GroupOptions& options = {});

/// MAX all-reduce of an amax every rank has, in place. Returns false (and does nothing) when
/// `group` is not initialised.
bool sync_amax_max(at::Tensor& amax, const ProcessGroup& group);

struct OptionalSyncResult {
  int ranks_with_value = 0;  ///< members that had a value before the sync
  int group_size = 1;        ///< 1 when the group is not initialised
};
/// MAX-syncs an amax that may be unset on some ranks. Every member calls it; first "has a value,
/// dtype, device type, shape" is all-gathered, then, if any member has one, members without one
/// contribute -inf of that shape and every member ends with the group's maximum (ranks_with_value >
/// 0). If no member has one, nothing is reduced and `amax` stays unset on all. Members whose amax
/// differ in dtype, device type or shape throw the same mq::Error. Not initialised group: no-op,
/// {amax ? 1 : 0, 1}.
OptionalSyncResult sync_optional_amax_max(std::optional<at::Tensor>& amax,
                                          const ProcessGroup& group);

/// sync_optional_amax_max over `kinds` of `state` in the given order (ModelOpt's step 10 is {kData,
/// kExpert}, step 11 {kTensor}); groups that are not initialised are skipped. Returns the result of
/// the last group synced (or of none: {amax ? 1 : 0, 1}).
OptionalSyncResult sync_optional_amax_max(std::optional<at::Tensor>& amax,
                                          const ParallelState& state,
                                          std::initializer_list<GroupKind> kinds);

}  // namespace mq::dist
