#include "mq/dist/parallel_state.hpp"

#include <ATen/Functions.h>

#include <algorithm>
#include <limits>
#include <memory>
#include <sstream>
#include <vector>

namespace mq::dist {

const ProcessGroup& ParallelState::group(GroupKind kind) const {
  switch (kind) {
    case GroupKind::kData:
      return data_parallel_group;
    case GroupKind::kTensor:
      return tensor_parallel_group;
    case GroupKind::kExpert:
      return expert_model_parallel_group;
    default:
      break;
  }
  MQ_THROW(Error, "ParallelState::group: a ParallelState has dp, tp and ep groups, not ",
           group_kind_name(kind));
}

std::string ParallelState::to_string() const {
  return "data_parallel_group: " + data_parallel_group.to_string() +
         ", tensor_parallel_group: " + tensor_parallel_group.to_string() +
         ", expert_model_parallel_group: " + expert_model_parallel_group.to_string();
}

const ProcessGroup& ParallelGroups::group(GroupKind kind) const {
  switch (kind) {
    case GroupKind::kTensor:
      return tp;
    case GroupKind::kData:
      return dp;
    case GroupKind::kPipeline:
      return pp;
    case GroupKind::kExpert:
      return ep;
    case GroupKind::kExpertTensor:
      return expert_tp;
    case GroupKind::kExpertData:
      return expert_dp;
  }
  MQ_ASSERT(false);
  return tp;
}

ParallelGroups make_parallel_groups(const MpiComm& world, ParallelLayout layout,
                                    const GroupOptions& options) {
  MQ_CHECK(world.valid(), "make_parallel_groups: null world communicator");
  if (layout.world_size == 0) layout.world_size = world.size();
  MQ_CHECK_T(ConfigError, layout.world_size == world.size(), "parallel layout: world_size ",
             layout.world_size, " but the job runs ", world.size(), " ranks");
  ParallelGroups g;
  g.layout = resolve_layout(layout);
  g.ranks = rank_groups(g.layout, world.rank());

  int device = options.device;
  std::shared_ptr<NcclComm> world_nccl;
  if (options.nccl) {
    if (device < 0) device = NcclComm::select_device(world);
    world_nccl = std::make_shared<NcclComm>(NcclComm::bootstrap(world, device));
  }
  g.world = ProcessGroup("world", std::make_shared<MpiComm>(world.split(0, world.rank())),
                         world_nccl, device);
  for (GroupKind kind : kAllGroupKinds) {
    const std::vector<int>& members = g.ranks.members(kind);
    const int color = members.front();
    const int key = g.ranks.rank_in(kind);
    auto mpi = std::make_shared<MpiComm>(world.split(color, key));
    std::shared_ptr<NcclComm> nccl;
    if (world_nccl) nccl = std::make_shared<NcclComm>(world_nccl->split(color, key));
    ProcessGroup pg(group_kind_name(kind), std::move(mpi), std::move(nccl), device);
    MQ_ASSERT(pg.world_ranks() == members);
    switch (kind) {
      case GroupKind::kTensor:
        g.tp = std::move(pg);
        break;
      case GroupKind::kData:
        g.dp = std::move(pg);
        break;
      case GroupKind::kPipeline:
        g.pp = std::move(pg);
        break;
      case GroupKind::kExpert:
        g.ep = std::move(pg);
        break;
      case GroupKind::kExpertTensor:
        g.expert_tp = std::move(pg);
        break;
      case GroupKind::kExpertData:
        g.expert_dp = std::move(pg);
        break;
    }
  }
  return g;
}

bool sync_amax_max(at::Tensor& amax, const ProcessGroup& group) {
  if (!group.is_initialized()) return false;
  group.all_reduce(amax, ReduceOp::kMax);
  return true;
}

namespace {
constexpr int kMaxDims = 8;
// [has, dtype, device type, dim, sizes...]
using Header = std::vector<int64_t>;

Header header_of(const std::optional<at::Tensor>& amax) {
  Header h(4 + kMaxDims, 0);
  if (!amax || !amax->defined()) return h;
  h[0] = 1;
  h[1] = static_cast<int64_t>(amax->scalar_type());
  h[2] = static_cast<int64_t>(amax->device().type());
  h[3] = amax->dim();
  for (int64_t d = 0; d < amax->dim() && d < kMaxDims; ++d) h[4 + d] = amax->size(d);
  return h;
}
}  // namespace

OptionalSyncResult sync_optional_amax_max(std::optional<at::Tensor>& amax,
                                          const ProcessGroup& group) {
  const bool has = amax && amax->defined();
  if (!group.is_initialized()) return {has ? 1 : 0, 1};
  const MpiComm& m = group.mpi();
  Header mine = header_of(amax);
  if (has && amax->dim() > kMaxDims) mine[0] = 2;  // flagged below on every rank
  const int n = static_cast<int>(mine.size());
  std::vector<int64_t> all(static_cast<size_t>(n) * m.size());
  MQ_MPI_CHECK(MPI_Allgather(mine.data(), n, MPI_INT64_T, all.data(), n, MPI_INT64_T, m.native()));
  int first = -1, count = 0;
  for (int r = 0; r < m.size(); ++r) {
    const int64_t* h = &all[static_cast<size_t>(r) * n];
    MQ_CHECK(h[0] != 2, "sync_optional_amax_max over ", group.name(), ": rank ", r,
             " has an amax of more than ", kMaxDims, " dims");
    if (h[0] == 0) continue;
    ++count;
    if (first < 0) {
      first = r;
      continue;
    }
    const int64_t* f = &all[static_cast<size_t>(first) * n];
    MQ_CHECK(std::equal(h, h + n, f), "sync_optional_amax_max over ", group.name(), ": rank ",
             first, " has a ", static_cast<at::ScalarType>(f[1]), " amax of ", f[3],
             " dims but rank ", r, " a ", static_cast<at::ScalarType>(h[1]), " amax of ", h[3],
             " dims (or another shape/device)");
  }
  if (count == 0) return {0, m.size()};
  const auto ref_dtype = static_cast<at::ScalarType>(all[static_cast<size_t>(first) * n + 1]);
  MQ_CHECK(at::isFloatingType(ref_dtype), "sync_optional_amax_max over ", group.name(),
           ": amax must be floating point, got ", ref_dtype);
  if (!has) {
    const int64_t* f = &all[static_cast<size_t>(first) * n];
    std::vector<int64_t> shape(f + 4, f + 4 + f[3]);
    const auto st = static_cast<at::ScalarType>(f[1]);
    at::TensorOptions opts = at::TensorOptions().dtype(st);
    if (static_cast<at::DeviceType>(f[2]) != at::kCPU)
      opts = opts.device(at::kCUDA, std::max(group.device(), 0));
    amax = at::full(shape, -std::numeric_limits<double>::infinity(), opts);
  }
  group.all_reduce(*amax, ReduceOp::kMax);
  return {count, m.size()};
}

OptionalSyncResult sync_optional_amax_max(std::optional<at::Tensor>& amax,
                                          const ParallelState& state,
                                          std::initializer_list<GroupKind> kinds) {
  OptionalSyncResult last{amax && amax->defined() ? 1 : 0, 1};
  for (GroupKind k : kinds) {
    const ProcessGroup& g = state.group(k);
    if (g.is_initialized()) last = sync_optional_amax_max(amax, g);
  }
  return last;
}

}  // namespace mq::dist
