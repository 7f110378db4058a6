#include "mq/dist/rank_groups.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "mq/core/error.hpp"

namespace mq::dist {
namespace {

using Groups = std::vector<std::vector<int>>;

TEST(RankGroups, MegatronDocstringExample16Ranks) {
  // Megatron-Core initialize_model_parallel docstring: 16 GPUs, tp=2, pp=4 -> dp=2.
  ParallelLayout L{.world_size = 16, .tp = 2, .pp = 4};
  EXPECT_EQ(resolve_layout(L).dp, 2);
  EXPECT_EQ(all_groups(L, GroupKind::kData),
            (Groups{{0, 2}, {1, 3}, {4, 6}, {5, 7}, {8, 10}, {9, 11}, {12, 14}, {13, 15}}));
  EXPECT_EQ(all_groups(L, GroupKind::kTensor),
            (Groups{{0, 1}, {2, 3}, {4, 5}, {6, 7}, {8, 9}, {10, 11}, {12, 13}, {14, 15}}));
  EXPECT_EQ(all_groups(L, GroupKind::kPipeline),
            (Groups{{0, 4, 8, 12}, {1, 5, 9, 13}, {2, 6, 10, 14}, {3, 7, 11, 15}}));
  const RankGroups g = rank_groups(L, 11);
  EXPECT_EQ(g.tp_rank, 1);
  EXPECT_EQ(g.dp_rank, 1);
  EXPECT_EQ(g.pp_rank, 2);
  EXPECT_EQ(g.tp_group, (std::vector<int>{10, 11}));
  EXPECT_EQ(g.dp_group, (std::vector<int>{9, 11}));
  EXPECT_EQ(g.pp_group, (std::vector<int>{3, 7, 11, 15}));
}

TEST(RankGroups, FourRanksTp2Dp2Ep2ExpertTpDefaultsToTp) {
  ParallelLayout L{.world_size = 4, .tp = 2, .dp = 2, .ep = 2};
  EXPECT_EQ(resolve_layout(L).expert_tp, 2);
  EXPECT_EQ(resolve_layout(L).expert_dp(), 1);
  EXPECT_EQ(all_groups(L, GroupKind::kTensor), (Groups{{0, 1}, {2, 3}}));
  EXPECT_EQ(all_groups(L, GroupKind::kData), (Groups{{0, 2}, {1, 3}}));
  EXPECT_EQ(all_groups(L, GroupKind::kExpert), (Groups{{0, 2}, {1, 3}}));
  EXPECT_EQ(all_groups(L, GroupKind::kExpertTensor), (Groups{{0, 1}, {2, 3}}));
  EXPECT_EQ(all_groups(L, GroupKind::kExpertData), (Groups{{0}, {1}, {2}, {3}}));
}

TEST(RankGroups, FourRanksTp2Ep2ExpertTp1) {
  ParallelLayout L{.world_size = 4, .tp = 2, .ep = 2, .expert_tp = 1};
  EXPECT_EQ(all_groups(L, GroupKind::kExpert), (Groups{{0, 1}, {2, 3}}));
  EXPECT_EQ(all_groups(L, GroupKind::kExpertTensor), (Groups{{0}, {1}, {2}, {3}}));
  EXPECT_EQ(all_groups(L, GroupKind::kExpertData), (Groups{{0, 2}, {1, 3}}));
  const RankGroups g = rank_groups(L, 3);
  EXPECT_EQ(g.tp_group, (std::vector<int>{2, 3}));
  EXPECT_EQ(g.dp_group, (std::vector<int>{1, 3}));
  EXPECT_EQ(g.ep_group, (std::vector<int>{2, 3}));
  EXPECT_EQ(g.expert_dp_group, (std::vector<int>{1, 3}));
  EXPECT_EQ(g.ep_rank, 1);
  EXPECT_EQ(g.expert_dp_rank, 1);
}

TEST(RankGroups, EightRanksEp4ExpertTp1Pp2) {
  // Per pipeline stage of 4 ranks: ep spans the stage, expert_dp = 1.
  ParallelLayout L{.world_size = 8, .tp = 2, .pp = 2, .ep = 4, .expert_tp = 1};
  EXPECT_EQ(all_groups(L, GroupKind::kExpert), (Groups{{0, 1, 2, 3}, {4, 5, 6, 7}}));
  EXPECT_EQ(all_groups(L, GroupKind::kData), (Groups{{0, 2}, {1, 3}, {4, 6}, {5, 7}}));
  EXPECT_EQ(all_groups(L, GroupKind::kPipeline), (Groups{{0, 4}, {1, 5}, {2, 6}, {3, 7}}));
}

TEST(RankGroups, SingleRank) {
  const RankGroups g = rank_groups(ParallelLayout{.world_size = 1}, 0);
  for (GroupKind k : kAllGroupKinds) {
    EXPECT_EQ(g.members(k), std::vector<int>{0}) << group_kind_name(k);
    EXPECT_EQ(g.rank_in(k), 0);
  }
  EXPECT_EQ(to_string(ParallelLayout{.world_size = 1}),
            "world 1 = tp 1 x dp 1 x pp 1; ep 1 x expert_tp 1 x expert_dp 1");
}

// Every valid layout up to 24 ranks: each kind partitions the world into groups of the right size,
// the coordinates follow the documented closed forms, and tp x dp x pp (and expert_tp x ep x
// expert_dp per stage) address every rank exactly once.
TEST(RankGroups, SweepAllValidLayouts) {
  int checked = 0;
  for (int world = 1; world <= 24; ++world)
    for (int tp = 1; tp <= world; ++tp)
      for (int pp = 1; pp <= world; ++pp) {
        if (world % (tp * pp)) continue;
        const int dp = world / (tp * pp);
        for (int etp = 1; etp <= tp * dp; ++etp)
          for (int ep = 1; ep <= tp * dp; ++ep) {
            if ((tp * dp) % (etp * ep)) continue;
            const ParallelLayout L = resolve_layout(
                {.world_size = world, .tp = tp, .pp = pp, .ep = ep, .expert_tp = etp});
            const int edp = L.expert_dp();
            ASSERT_EQ(etp * ep * edp, tp * dp);
            const int sizes[] = {tp, dp, pp, ep, etp, edp};
            for (size_t k = 0; k < std::size(kAllGroupKinds); ++k) {
              const Groups gs = all_groups(L, kAllGroupKinds[k]);
              ASSERT_EQ(gs.size() * sizes[k], static_cast<size_t>(world));
              std::set<int> seen;
              for (const auto& g : gs) {
                ASSERT_EQ(static_cast<int>(g.size()), sizes[k]);
                ASSERT_TRUE(std::is_sorted(g.begin(), g.end()));
                seen.insert(g.begin(), g.end());
              }
              ASSERT_EQ(static_cast<int>(seen.size()), world);
            }
            for (int r = 0; r < world; ++r) {
              const RankGroups g = rank_groups(L, r);
              ASSERT_EQ(r, g.tp_rank + tp * (g.dp_rank + dp * g.pp_rank));
              ASSERT_EQ(r, g.expert_tp_rank + etp * (g.ep_rank + ep * g.expert_dp_rank) +
                               tp * dp * g.pp_rank);
              for (size_t k = 0; k < std::size(kAllGroupKinds); ++k) {
                const auto& m = g.members(kAllGroupKinds[k]);
                ASSERT_EQ(static_cast<int>(m.size()), sizes[k]);
                ASSERT_EQ(m.at(g.rank_in(kAllGroupKinds[k])), r);
                // Every member of my group sees the same group.
                for (int other : m) ASSERT_EQ(rank_groups(L, other).members(kAllGroupKinds[k]), m);
              }
              // tp and dp groups meet only in r; so do ep and expert_dp, ep and expert_tp.
              std::vector<int> both;
              std::set_intersection(g.tp_group.begin(), g.tp_group.end(), g.dp_group.begin(),
                                    g.dp_group.end(), std::back_inserter(both));
              ASSERT_EQ(both, std::vector<int>{r});
              both.clear();
              std::set_intersection(g.ep_group.begin(), g.ep_group.end(), g.expert_dp_group.begin(),
                                    g.expert_dp_group.end(), std::back_inserter(both));
              ASSERT_EQ(both, std::vector<int>{r});
              // Expert groups stay inside the pipeline stage.
              for (int m : g.ep_group) ASSERT_EQ(m / (tp * dp), g.pp_rank);
            }
            ++checked;
          }
      }
  EXPECT_GT(checked, 500);
}

void expect_config_error(const ParallelLayout& L, const std::string& needle, int rank = 0) {
  try {
    rank_groups(L, rank);
    ADD_FAILURE() << "no error for " << needle;
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).rfind("parallel layout: ", 0), 0u) << e.what();
  }
}

TEST(RankGroups, InvalidLayoutsNameTheSizes) {
  expect_config_error({.world_size = 0}, "world_size must be >= 1, got 0");
  expect_config_error({}, "world_size must be >= 1, got 0");
  expect_config_error({.world_size = 4, .tp = 0}, "tp must be >= 1, got 0");
  expect_config_error({.world_size = 4, .pp = -1}, "pp must be >= 1, got -1");
  expect_config_error({.world_size = 4, .ep = 0}, "ep must be >= 1, got 0");
  expect_config_error({.world_size = 4, .dp = -2}, "dp must be >= 1 (or 0 to derive it), got -2");
  expect_config_error({.world_size = 4, .expert_tp = -1}, "expert_tp must be >= 1");
  expect_config_error({.world_size = 6, .tp = 4},
                      "world_size 6 is not divisible by tp * pp = 4 * 1");
  expect_config_error({.world_size = 8, .tp = 2, .dp = 3},
                      "tp * dp * pp = 2 * 3 * 1 != world_size 8");
  expect_config_error({.world_size = 4, .tp = 2, .ep = 3},
                      "expert_tp * ep = 2 * 3 must divide tp * dp = 2 * 2");
  expect_config_error({.world_size = 4, .ep = 8, .expert_tp = 1},
                      "expert_tp * ep = 1 * 8 must divide tp * dp = 1 * 4");
  expect_config_error({.world_size = 6, .tp = 3, .ep = 2, .expert_tp = 2},
                      "expert_tp * ep = 2 * 2 must divide tp * dp = 3 * 2");
  // tp=3, ep=2 on 6 ranks is valid: expert_tp = tp = 3, expert_dp = 1.
  EXPECT_EQ(resolve_layout({.world_size = 6, .tp = 3, .ep = 2}).expert_dp(), 1);
}

TEST(RankGroups, RankOutOfRange) {
  expect_config_error({.world_size = 4}, "rank 4 is outside [0, world_size = 4)", 4);
  expect_config_error({.world_size = 4}, "rank -1 is outside", -1);
}

}  // namespace
}  // namespace mq::dist
