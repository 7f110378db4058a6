// The TP / EP sharded forward of the embedded tiny models under mpirun, for every layout the world
// admits: each rank's logits, and the inputs of every linear (row-parallel ones as column slices,
// experts per source rank), equal bit for bit those of one process holding the whole model with
// the same reduction_chunks, run in the same process on the same batches.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "mq/core/error.hpp"
#include "mq/dist/parallel_state.hpp"
#include "mq/models/causal_lm.hpp"

namespace {

using mq::dist::MpiComm;
using mq::dist::ParallelLayout;
using mq::models::CausalLM;

constexpr int64_t kChunks = 4;  // reduction_chunks of every layout (tp <= 4)

std::string model_dir(const std::string& name) {
  return std::string(MQ_SOURCE_DIR) + "/assets/models/" + name;
}

/// Batch `index` (a DP rank): 2 rows of 9 tokens, the second left-padded by 3.
std::pair<at::Tensor, at::Tensor> batch(int64_t index, int64_t vocab) {
  at::manual_seed(1000 + index);
  at::Tensor ids = at::randint(vocab, {2, 9}, at::TensorOptions().dtype(at::kLong));
  at::Tensor mask = at::ones({2, 9}, at::TensorOptions().dtype(at::kLong));
  mask[1].narrow(0, 0, 3).zero_();
  return {ids, mask};
}

/// Inputs of every linear of `lm` (except the router and lm_head) per dotted name, in call order.
class Capture {
 public:
  explicit Capture(CausalLM& lm) : store_(std::make_shared<Store>()) {
    for (auto& [name, m] : lm.named_modules()) {
      if (dynamic_cast<mq::nn::Linear*>(m) == nullptr || name == "lm_head" ||
          name.ends_with(".gate"))
        continue;
      m->register_forward_pre_hook(
          [s = store_, n = name](mq::nn::Module&, const at::Tensor& x) { (*s)[n].push_back(x); });
    }
  }
  using Store = std::map<std::string, std::vector<at::Tensor>>;
  Store take() {
    Store out = std::move(*store_);
    store_->clear();
    return out;
  }

 private:
  std::shared_ptr<Store> store_;
};

std::vector<ParallelLayout> layouts(int world, const mq::models::HfConfig& cfg) {
  std::vector<ParallelLayout> out;
  for (int tp : {1, 2, 4})
    for (int ep : {1, 2, 4}) {
      ParallelLayout l{.world_size = world, .tp = tp, .ep = ep, .expert_tp = 1};
      try {
        l = mq::dist::resolve_layout(l);
      } catch (const mq::ConfigError&) {
        continue;
      }
      if (cfg.num_attention_heads % tp || cfg.num_key_value_heads % tp ||
          cfg.intermediate_size % tp || (cfg.num_attention_heads * cfg.head_dim) % kChunks ||
          cfg.intermediate_size % kChunks)
        continue;
      if (ep > 1 && (cfg.num_experts == 0 || cfg.num_experts % ep)) continue;
      out.push_back(l);
    }
  return out;
}

class ModelForward : public ::testing::TestWithParam<std::string> {};

TEST_P(ModelForward, EveryLayoutBitIdenticalToOneProcess) {
  const MpiComm world = MpiComm::world();
  const std::string dir = model_dir(GetParam());
  const mq::models::HfConfig cfg = mq::models::load_hf_config(dir);
  mq::models::LoadOptions single_opt;
  single_opt.parallel.reduction_chunks = kChunks;
  auto single = mq::models::load_causal_lm(dir, single_opt);
  Capture single_cap(*single);
  // Reference per batch index, computed lazily: logits and linear inputs of the whole model.
  std::map<int64_t, std::pair<at::Tensor, Capture::Store>> refs;
  auto reference = [&](int64_t index) -> const std::pair<at::Tensor, Capture::Store>& {
    auto it = refs.find(index);
    if (it == refs.end()) {
      auto [ids, mask] = batch(index, cfg.vocab_size);
      at::Tensor logits = single->forward(ids, mask);
      it = refs.emplace(index, std::make_pair(logits, single_cap.take())).first;
    }
    return it->second;
  };

  const auto ls = layouts(world.size(), cfg);
  ASSERT_FALSE(ls.empty());
  for (const ParallelLayout& l : ls) {
    SCOPED_TRACE(mq::dist::to_string(l));
    if (world.rank() == 0)
      std::printf("  %s: %s\n", GetParam().c_str(), mq::dist::to_string(l).c_str());
    const mq::dist::ParallelGroups groups = mq::dist::make_parallel_groups(world, l);
    mq::models::LoadOptions opt;
    opt.parallel = mq::models::parallel_spec_from_groups(groups, kChunks);
    auto lm = mq::models::load_causal_lm(dir, opt);
    Capture cap(*lm);
    const int64_t dp = groups.ranks.dp_rank, tp_rank = groups.ranks.tp_rank;
    auto [ids, mask] = batch(dp, cfg.vocab_size);
    const at::Tensor logits = lm->forward(ids, mask);
    const Capture::Store got = cap.take();

    const auto& own = reference(dp);
    EXPECT_TRUE(at::equal(logits, own.first)) << "logits, rank " << world.rank();
    // Sources of this rank's experts: the batches of its EP group, in EP-rank order.
    std::vector<int64_t> sources;
    for (int w : groups.ep.world_ranks()) sources.push_back(mq::dist::rank_groups(l, w).dp_rank);
    // An EP rank's experts ModuleList holds its experts only, named from 0: the whole model's
    // name of a local expert is "<block>.experts.<expert_begin + local>.<linear>".
    auto global_name = [&](const std::string& name) {
      for (auto& [block, moe] : lm->moe_blocks()) {
        const std::string prefix = block + ".experts.";
        if (!name.starts_with(prefix)) continue;
        const size_t dot = name.find('.', prefix.size());
        const int64_t local = std::stoll(name.substr(prefix.size(), dot - prefix.size()));
        return prefix + std::to_string(moe->expert_begin() + local) + name.substr(dot);
      }
      return name;
    };
    size_t checked = 0;
    for (const auto& [local_name, xs] : got) {
      const std::string name = global_name(local_name);
      std::vector<at::Tensor> want;
      if (name.find(".experts.") != std::string::npos) {
        for (int64_t s : sources) {
          const auto& r = reference(s).second;
          if (auto it = r.find(name); it != r.end())
            want.insert(want.end(), it->second.begin(), it->second.end());
        }
      } else {
        want = own.second.at(name);
      }
      EXPECT_EQ(xs.size(), want.size()) << name;
      if (xs.size() != want.size()) continue;
      for (size_t i = 0; i < xs.size(); ++i) {
        at::Tensor w = want[i];
        const int64_t k = xs[i].size(-1);
        if (k != w.size(-1)) {  // row-parallel: this TP rank's input columns
          EXPECT_EQ(k * l.tp, w.size(-1)) << name;
          if (k * l.tp != w.size(-1)) continue;
          w = w.narrow(-1, tp_rank * k, k);
        }
        EXPECT_TRUE(at::equal(xs[i], w)) << name << " call " << i << ", rank " << world.rank();
        ++checked;
      }
    }
    EXPECT_GT(checked, 0u);
    for (auto& [name, moe] : lm->moe_blocks()) {
      int64_t local = 0;
      for (int64_t c : moe->expert_token_counts()) local += c;
      const int64_t all = groups.ep.all_reduce_int64(local, mq::dist::ReduceOp::kSum);
      // Each source routes each of its tokens to top_k experts.
      EXPECT_EQ(all, static_cast<int64_t>(sources.size()) * ids.numel() * cfg.num_experts_per_tok)
          << name;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Embedded, ModelForward, ::testing::Values("mq-tiny-dense", "mq-tiny-moe"),
                         [](const ::testing::TestParamInfo<std::string>& i) {
                           std::string n = i.param;
                           for (char& c : n)
                             if (c == '-') c = '_';
                           return n;
                         });

// One expert-parallel rank gets no token from another source (all its tokens are padding-free but
// the source holds zero rows): the block still runs every collective with empty tensors.
TEST(ModelForwardEmpty, RankWithNoTokensTakesPartInEveryCollective) {
  const MpiComm world = MpiComm::world();
  if (world.size() < 2) GTEST_SKIP() << "needs 2 ranks";
  const std::string dir = model_dir("mq-tiny-moe");
  const mq::models::HfConfig cfg = mq::models::load_hf_config(dir);
  const ParallelLayout l{.world_size = world.size(), .tp = 1, .ep = 2, .expert_tp = 1};
  const mq::dist::ParallelGroups groups = mq::dist::make_parallel_groups(world, l);
  mq::models::LoadOptions opt;
  opt.parallel = mq::models::parallel_spec_from_groups(groups, 1);
  auto lm = mq::models::load_causal_lm(dir, opt);
  auto single = mq::models::load_causal_lm(dir, {});
  // EP rank 1 sends hidden states of zero tokens through the MoE block of layer 0.
  auto& moe = *lm->layer(0).moe();
  auto& ref = *single->layer(0).moe();
  at::manual_seed(5 + groups.ranks.dp_rank);
  const int64_t tokens = groups.ranks.ep_rank == 1 ? 0 : 7;
  const at::Tensor x = at::randn({1, tokens, cfg.hidden_size}).to(single->dtype());
  const at::Tensor y = moe.forward(x);
  EXPECT_EQ(y.sizes(), x.sizes());
  EXPECT_TRUE(at::equal(y, ref.forward(x)));
}

}  // namespace
