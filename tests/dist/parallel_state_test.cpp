// Groups from the rank-group math on the live world, ParallelState dispatch, and rank-dependent
// conditions exchanged as data.
#include "mq/dist/parallel_state.hpp"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <limits>
#include <numeric>
#include <optional>
#include <string>
#include <vector>

namespace mq::dist {
namespace {

// All valid layouts of `w` ranks with tp, ep in divisors and expert_tp in {tp, 1}.
std::vector<ParallelLayout> layouts(int w) {
  std::vector<ParallelLayout> out;
  for (int tp = 1; tp <= w; ++tp)
    for (int ep = 1; ep <= w; ++ep)
      for (int etp : {0, 1}) {
        ParallelLayout L{.world_size = w, .tp = tp, .ep = ep, .expert_tp = etp};
        try {
          resolve_layout(L);
        } catch (const ConfigError&) {
          continue;
        }
        out.push_back(L);
      }
  return out;
}

TEST(ParallelGroups, EveryLayoutMatchesRankGroupsAndReducesOverItsMembers) {
  MpiComm world = MpiComm::world();
  for (const ParallelLayout& L : layouts(world.size())) {
    const ParallelGroups g = make_parallel_groups(world, L);
    const RankGroups want = rank_groups(L, world.rank());
    EXPECT_EQ(g.world.size(), world.size());
    for (GroupKind k : kAllGroupKinds) {
      const ProcessGroup& pg = g.group(k);
      ASSERT_TRUE(pg.is_initialized());
      EXPECT_EQ(pg.world_ranks(), want.members(k)) << to_string(L) << " " << group_kind_name(k);
      EXPECT_EQ(pg.rank(), want.rank_in(k));
      EXPECT_EQ(pg.name(), group_kind_name(k));
      // Sum of world ranks over the group, closed form from the member list.
      at::Tensor t = at::full({2}, static_cast<double>(world.rank()), at::kDouble);
      pg.all_reduce(t, ReduceOp::kSum);
      const auto& m = want.members(k);
      EXPECT_EQ(t[1].item<double>(), std::accumulate(m.begin(), m.end(), 0.0))
          << group_kind_name(k);
    }
  }
}

TEST(ParallelGroups, FourRanksTp2Dp2Ep2) {
  MpiComm world = MpiComm::world();
  if (world.size() != 4) GTEST_SKIP() << "4 ranks";
  const int r = world.rank();
  const ParallelGroups g =
      make_parallel_groups(world, {.world_size = 4, .tp = 2, .ep = 2, .expert_tp = 1});
  EXPECT_EQ(g.tp.world_ranks(), (std::vector<int>{r & ~1, r | 1}));
  EXPECT_EQ(g.dp.world_ranks(), (std::vector<int>{r % 2, r % 2 + 2}));
  EXPECT_EQ(g.ep.world_ranks(), (std::vector<int>{r & ~1, r | 1}));
  EXPECT_EQ(g.expert_dp.world_ranks(), (std::vector<int>{r % 2, r % 2 + 2}));
  const ParallelState dense = g.dense();
  EXPECT_EQ(dense.to_string(), "data_parallel_group: dp: world ranks [" + std::to_string(r % 2) +
                                   ", " + std::to_string(r % 2 + 2) +
                                   "], tensor_parallel_group: tp: world ranks [" +
                                   std::to_string(r & ~1) + ", " + std::to_string(r | 1) +
                                   "], expert_model_parallel_group: not initialised");
  // Column-parallel weight amax: MAX over DP, then over TP, reaches every rank's value.
  at::Tensor amax = at::full({1}, 1.5f * r, at::kFloat);
  EXPECT_TRUE(sync_amax_max(amax, dense.data_parallel_group));
  EXPECT_EQ(amax.item<float>(), 1.5f * (r % 2 + 2));
  EXPECT_TRUE(sync_amax_max(amax, dense.tensor_parallel_group));
  EXPECT_EQ(amax.item<float>(), 4.5f);
  EXPECT_FALSE(sync_amax_max(amax, dense.expert_model_parallel_group));
}

TEST(ParallelGroups, InvalidLayoutThrowsOnEveryRankBeforeAnyCollective) {
  MpiComm world = MpiComm::world();
  EXPECT_THROW(make_parallel_groups(world, {.world_size = world.size() + 1}), ConfigError);
  EXPECT_THROW(make_parallel_groups(world, {.tp = world.size() + 1}), ConfigError);
  EXPECT_THROW(make_parallel_groups(world, {.ep = 3 * world.size()}), ConfigError);
  EXPECT_EQ(world.all_reduce_int64(1, ReduceOp::kSum), world.size());
}

TEST(ProcessGroup, NotInitialised) {
  ProcessGroup g;
  EXPECT_FALSE(g.is_initialized());
  EXPECT_EQ(g.rank(), -1);
  EXPECT_EQ(g.size(), -1);
  EXPECT_EQ(g.to_string(), "not initialised");
  at::Tensor t = at::ones({2});
  EXPECT_THROW(g.all_reduce(t, ReduceOp::kMax), Error);
  EXPECT_FALSE(sync_amax_max(t, g));
  std::optional<at::Tensor> none;
  const auto res = sync_optional_amax_max(none, g);
  EXPECT_EQ(res.ranks_with_value, 0);
  EXPECT_EQ(res.group_size, 1);
  EXPECT_THROW(ParallelState{}.group(GroupKind::kPipeline), Error);
}

TEST(ProcessGroup, HostCollectivesDispatchToMpi) {
  MpiComm world = MpiComm::world();
  const ParallelGroups g = make_parallel_groups(world, {});
  const int r = world.rank(), w = world.size();
  const ProcessGroup& pg = g.world;
  EXPECT_FALSE(pg.has_nccl());
  EXPECT_THROW(pg.nccl(), Error);
  at::Tensor t = at::full({3}, static_cast<float>(r + 1), at::kBFloat16);
  pg.all_reduce(t, ReduceOp::kAvg);
  EXPECT_TRUE(at::equal(t, at::full({3}, (w + 1) / 2.0f, at::kBFloat16)));
  at::Tensor b = at::full({2}, r, at::kLong);
  pg.broadcast(b, w - 1);
  EXPECT_TRUE(at::equal(b, at::full({2}, w - 1, at::kLong)));
  at::Tensor red = at::full({2}, r, at::kLong);
  pg.reduce(red, ReduceOp::kSum, 0);
  if (r == 0) {
    EXPECT_TRUE(at::equal(red, at::full({2}, w * (w - 1) / 2, at::kLong)));
  }
  EXPECT_TRUE(
      at::equal(pg.all_gather(at::full({1}, r, at::kInt)), at::arange(w, at::kInt).view({w, 1})));
  const auto v = pg.all_gather_v(at::full({r % 2}, r, at::kInt));
  for (int i = 0; i < w; ++i) EXPECT_TRUE(at::equal(v[i], at::full({i % 2}, i, at::kInt)));
  const at::Tensor a2a = pg.all_to_all(at::arange(w, at::kLong) + 10 * r);
  EXPECT_TRUE(at::equal(a2a, at::arange(w, at::kLong) * 10 + r));
  std::vector<at::Tensor> send;
  for (int j = 0; j < w; ++j) send.push_back(at::full({j}, r, at::kFloat));
  const auto recv = pg.all_to_all_v(send);
  for (int i = 0; i < w; ++i) EXPECT_TRUE(at::equal(recv[i], at::full({r}, i, at::kFloat)));
  EXPECT_EQ(pg.all_gather_int64(r)[w - 1], w - 1);
  EXPECT_EQ(pg.all_gather_bool(r == 0)[0], true);
  EXPECT_EQ(pg.all_reduce_int64(2, ReduceOp::kSum), 2 * w);
}

// One rank's amax is unset (its expert saw no tokens): the condition travels as data, every rank
// joins the same collectives and ends with the maximum over the ranks that had one.
TEST(SyncOptionalAmax, OneRankWithoutAmaxDoesNotDeadlock) {
  MpiComm world = MpiComm::world();
  const ParallelGroups g = make_parallel_groups(world, {});
  const int r = world.rank(), w = world.size();
  const int empty_rank = w - 1;
  std::optional<at::Tensor> amax;
  if (r != empty_rank) amax = at::arange(1, 4, at::kFloat) * static_cast<float>(r + 1);
  const auto res = sync_optional_amax_max(amax, g.world);
  EXPECT_EQ(res.ranks_with_value, w - 1);
  EXPECT_EQ(res.group_size, w);
  if (w == 1) {
    EXPECT_FALSE(amax.has_value());
  } else {
    ASSERT_TRUE(amax.has_value());
    EXPECT_TRUE(at::equal(*amax, at::arange(1, 4, at::kFloat) * static_cast<float>(w - 1)));
  }
}

TEST(SyncOptionalAmax, NobodyHasOneStaysUnset) {
  MpiComm world = MpiComm::world();
  const ParallelGroups g = make_parallel_groups(world, {});
  std::optional<at::Tensor> amax;
  const auto res = sync_optional_amax_max(amax, g.world);
  EXPECT_EQ(res.ranks_with_value, 0);
  EXPECT_FALSE(amax.has_value());
}

TEST(SyncOptionalAmax, ShapeMismatchThrowsOnEveryRank) {
  MpiComm world = MpiComm::world();
  if (world.size() < 2) GTEST_SKIP() << "2 ranks";
  const ParallelGroups g = make_parallel_groups(world, {});
  std::optional<at::Tensor> amax = at::ones({world.rank() == 0 ? 4 : 3}, at::kFloat);
  EXPECT_THROW(sync_optional_amax_max(amax, g.world), Error);
  std::optional<at::Tensor> ints = at::ones({2}, at::kInt);
  EXPECT_THROW(sync_optional_amax_max(ints, g.world), Error);
  EXPECT_EQ(world.all_reduce_int64(1, ReduceOp::kSum), world.size());
}

// Eight experts per rank; expert e is empty on rank r when (e + r) % 3 == 0. Expert-DP then EP then
// TP MAX of each expert's input amax through the experts' ParallelState, in expert order on every
// rank.
TEST(SyncOptionalAmax, ManyExpertsWithRankDependentEmptiness) {
  MpiComm world = MpiComm::world();
  const int w = world.size(), r = world.rank();
  const ParallelLayout L{
      .world_size = w, .tp = w >= 2 ? 2 : 1, .ep = w >= 4 ? 2 : 1, .expert_tp = 1};
  const ParallelGroups g = make_parallel_groups(world, L);
  const ParallelState experts = g.experts();
  for (int e = 0; e < 8; ++e) {
    std::optional<at::Tensor> amax;
    auto value = [&](int rank) { return static_cast<float>(rank * 8 + e) + 0.25f; };
    const bool has = (e + r) % 3 != 0;
    if (has) amax = at::full({2}, value(r), at::kFloat);
    sync_optional_amax_max(amax, experts,
                           {GroupKind::kData, GroupKind::kExpert, GroupKind::kTensor});
    // Expected: max over the ranks connected to r by expert_dp, ep and expert_tp (here: the whole
    // stage, since expert_dp x ep x expert_tp covers it) that had a value.
    std::optional<float> want;
    for (int q = 0; q < w; ++q)
      if ((e + q) % 3 != 0) want = std::max(want.value_or(-1.0f), value(q));
    if (!want) {
      EXPECT_FALSE(amax.has_value()) << "e=" << e;
      continue;
    }
    ASSERT_TRUE(amax.has_value()) << "e=" << e;
    EXPECT_EQ((*amax)[0].item<float>(), *want) << "e=" << e;
  }
}

}  // namespace
}  // namespace mq::dist
