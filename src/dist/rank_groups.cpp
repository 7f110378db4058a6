#include "mq/dist/rank_groups.hpp"

#include <algorithm>
#include <cstdint>
#include <sstream>

#include "mq/core/error.hpp"

namespace mq::dist {
namespace {

// Coordinates of a rank along the six dimensions. Both layouts share pp_rank: the expert layout
// only re-partitions the ranks of one pipeline stage.
struct Coords {
  int tp, dp, pp, ep, etp, edp;
};

Coords coords_of(const ParallelLayout& L, int rank) {
  const int stage = L.tp * L.dp;
  const int local = rank % stage;
  Coords c{};
  c.pp = rank / stage;
  c.tp = local % L.tp;
  c.dp = local / L.tp;
  c.etp = local % L.expert_tp;
  c.ep = (local / L.expert_tp) % L.ep;
  c.edp = local / (L.expert_tp * L.ep);
  return c;
}

int dense_rank(const ParallelLayout& L, int tp, int dp, int pp) {
  return tp + L.tp * (dp + L.dp * pp);
}

int expert_rank(const ParallelLayout& L, int etp, int ep, int edp, int pp) {
  return etp + L.expert_tp * (ep + L.ep * edp) + L.tp * L.dp * pp;
}

// Members of `kind` through `c`: vary that coordinate, keep the others.
std::vector<int> members_through(const ParallelLayout& L, const Coords& c, GroupKind kind) {
  std::vector<int> out;
  switch (kind) {
    case GroupKind::kTensor:
      for (int i = 0; i < L.tp; ++i) out.push_back(dense_rank(L, i, c.dp, c.pp));
      break;
    case GroupKind::kData:
      for (int i = 0; i < L.dp; ++i) out.push_back(dense_rank(L, c.tp, i, c.pp));
      break;
    case GroupKind::kPipeline:
      for (int i = 0; i < L.pp; ++i) out.push_back(dense_rank(L, c.tp, c.dp, i));
      break;
    case GroupKind::kExpert:
      for (int i = 0; i < L.ep; ++i) out.push_back(expert_rank(L, c.etp, i, c.edp, c.pp));
      break;
    case GroupKind::kExpertTensor:
      for (int i = 0; i < L.expert_tp; ++i) out.push_back(expert_rank(L, i, c.ep, c.edp, c.pp));
      break;
    case GroupKind::kExpertData:
      for (int i = 0; i < L.expert_dp(); ++i) out.push_back(expert_rank(L, c.etp, c.ep, i, c.pp));
      break;
  }
  MQ_ASSERT(std::is_sorted(out.begin(), out.end()));
  return out;
}

}  // namespace

const char* group_kind_name(GroupKind kind) {
  switch (kind) {
    case GroupKind::kTensor:
      return "tp";
    case GroupKind::kData:
      return "dp";
    case GroupKind::kPipeline:
      return "pp";
    case GroupKind::kExpert:
      return "ep";
    case GroupKind::kExpertTensor:
      return "expert_tp";
    case GroupKind::kExpertData:
      return "expert_dp";
  }
  return "?";
}

ParallelLayout resolve_layout(ParallelLayout L) {
  auto positive = [](int v, const char* name) {
    MQ_CHECK_T(ConfigError, v >= 1, "parallel layout: ", name, " must be >= 1, got ", v);
  };
  positive(L.world_size, "world_size");
  positive(L.tp, "tp");
  positive(L.pp, "pp");
  positive(L.ep, "ep");
  MQ_CHECK_T(ConfigError, L.dp >= 0, "parallel layout: dp must be >= 1 (or 0 to derive it), got ",
             L.dp);
  MQ_CHECK_T(ConfigError, L.expert_tp >= 0,
             "parallel layout: expert_tp must be >= 1 (or 0 for expert_tp = tp), got ",
             L.expert_tp);
  MQ_CHECK_T(ConfigError, L.world_size % (int64_t{L.tp} * L.pp) == 0,
             "parallel layout: world_size ", L.world_size, " is not divisible by tp * pp = ", L.tp,
             " * ", L.pp);
  if (L.dp == 0) L.dp = L.world_size / (L.tp * L.pp);
  MQ_CHECK_T(ConfigError, int64_t{L.tp} * L.dp * L.pp == L.world_size,
             "parallel layout: tp * dp * pp = ", L.tp, " * ", L.dp, " * ", L.pp, " != world_size ",
             L.world_size);
  if (L.expert_tp == 0) L.expert_tp = L.tp;
  MQ_CHECK_T(ConfigError, (int64_t{L.tp} * L.dp) % (int64_t{L.expert_tp} * L.ep) == 0,
             "parallel layout: expert_tp * ep = ", L.expert_tp, " * ", L.ep,
             " must divide tp * dp = ", L.tp, " * ", L.dp, " (the ranks of one pipeline stage)");
  return L;
}

const std::vector<int>& RankGroups::members(GroupKind kind) const {
  switch (kind) {
    case GroupKind::kTensor:
      return tp_group;
    case GroupKind::kData:
      return dp_group;
    case GroupKind::kPipeline:
      return pp_group;
    case GroupKind::kExpert:
      return ep_group;
    case GroupKind::kExpertTensor:
      return expert_tp_group;
    case GroupKind::kExpertData:
      return expert_dp_group;
  }
  MQ_ASSERT(false);
  return tp_group;
}

int RankGroups::rank_in(GroupKind kind) const {
  switch (kind) {
    case GroupKind::kTensor:
      return tp_rank;
    case GroupKind::kData:
      return dp_rank;
    case GroupKind::kPipeline:
      return pp_rank;
    case GroupKind::kExpert:
      return ep_rank;
    case GroupKind::kExpertTensor:
      return expert_tp_rank;
    case GroupKind::kExpertData:
      return expert_dp_rank;
  }
  MQ_ASSERT(false);
  return 0;
}

RankGroups rank_groups(const ParallelLayout& layout, int rank) {
  const ParallelLayout L = resolve_layout(layout);
  MQ_CHECK_T(ConfigError, rank >= 0 && rank < L.world_size, "parallel layout: rank ", rank,
             " is outside [0, world_size = ", L.world_size, ")");
  const Coords c = coords_of(L, rank);
  RankGroups g;
  g.rank = rank;
  g.tp_rank = c.tp;
  g.dp_rank = c.dp;
  g.pp_rank = c.pp;
  g.ep_rank = c.ep;
  g.expert_tp_rank = c.etp;
  g.expert_dp_rank = c.edp;
  g.tp_group = members_through(L, c, GroupKind::kTensor);
  g.dp_group = members_through(L, c, GroupKind::kData);
  g.pp_group = members_through(L, c, GroupKind::kPipeline);
  g.ep_group = members_through(L, c, GroupKind::kExpert);
  g.expert_tp_group = members_through(L, c, GroupKind::kExpertTensor);
  g.expert_dp_group = members_through(L, c, GroupKind::kExpertData);
  for (GroupKind k : kAllGroupKinds) MQ_ASSERT(g.members(k).at(g.rank_in(k)) == rank);
  return g;
}

std::vector<std::vector<int>> all_groups(const ParallelLayout& layout, GroupKind kind) {
  const ParallelLayout L = resolve_layout(layout);
  std::vector<std::vector<int>> out;
  std::vector<bool> seen(L.world_size, false);
  for (int r = 0; r < L.world_size; ++r) {
    if (seen[r]) continue;
    out.push_back(members_through(L, coords_of(L, r), kind));
    for (int m : out.back()) seen[m] = true;
  }
  return out;
}

std::string to_string(const ParallelLayout& layout) {
  const ParallelLayout L = resolve_layout(layout);
  std::ostringstream os;
  os << "world " << L.world_size << " = tp " << L.tp << " x dp " << L.dp << " x pp " << L.pp
     << "; ep " << L.ep << " x expert_tp " << L.expert_tp << " x expert_dp " << L.expert_dp();
  return os.str();
}

}  // namespace mq::dist
