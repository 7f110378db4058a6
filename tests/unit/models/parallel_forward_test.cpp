// Layout invariance of the sharded forward (ParallelSpec): chunked row-parallel reductions, TP and
// EP shards run by threads standing in for ranks, compared bit for bit with one process holding the
// whole model and the same reduction_chunks.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <array>
#include <barrier>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "mq/core/error.hpp"
#include "mq/io/safetensors_torch.hpp"
#include "mq/models/causal_lm.hpp"
#include "mq/nn/quant_module.hpp"
#include "tiny_models_impl.hpp"

namespace {

using mq::models::CausalLM;
using mq::models::LoadOptions;
using mq::models::ParallelSpec;

using mq::test::golden;
using mq::test::rel_err;
using mq::test::tiny;

/// In-memory collectives of `n` threads (rank = thread index), the semantics of ProcessGroup's.
class ThreadGroup {
 public:
  explicit ThreadGroup(int64_t n)
      : n_(n), slots_(static_cast<size_t>(n)), vslots_(static_cast<size_t>(n)), sync_(n) {}

  at::Tensor all_gather(int64_t rank, const at::Tensor& t) {
    slots_[static_cast<size_t>(rank)] = t;
    sync_.arrive_and_wait();
    at::Tensor all = at::stack(slots_);
    sync_.arrive_and_wait();
    return all;
  }
  std::vector<at::Tensor> all_gather_v(int64_t rank, const at::Tensor& t) {
    slots_[static_cast<size_t>(rank)] = t;
    sync_.arrive_and_wait();
    std::vector<at::Tensor> all;
    for (const at::Tensor& s : slots_) all.push_back(s.clone());
    sync_.arrive_and_wait();
    return all;
  }
  std::vector<at::Tensor> all_to_all_v(int64_t rank, const std::vector<at::Tensor>& send) {
    EXPECT_EQ(static_cast<int64_t>(send.size()), n_);
    vslots_[static_cast<size_t>(rank)] = send;
    sync_.arrive_and_wait();
    std::vector<at::Tensor> recv;
    for (const auto& v : vslots_) recv.push_back(v[static_cast<size_t>(rank)].clone());
    sync_.arrive_and_wait();
    return recv;
  }
  /// TP callbacks of `rank` into `p`.
  void attach_tp(ParallelSpec& p, int64_t rank) {
    p.tp_rank = rank;
    p.tp_size = n_;
    p.tp_all_gather = [this, rank](const at::Tensor& t) { return all_gather(rank, t); };
  }
  /// EP callbacks of `rank` into `p`.
  void attach_ep(ParallelSpec& p, int64_t rank) {
    p.ep_rank = rank;
    p.ep_size = n_;
    p.ep_all_gather_v = [this, rank](const at::Tensor& t) { return all_gather_v(rank, t); };
    p.ep_all_to_all_v = [this, rank](const std::vector<at::Tensor>& s) {
      return all_to_all_v(rank, s);
    };
  }

 private:
  int64_t n_;
  std::vector<at::Tensor> slots_;
  std::vector<std::vector<at::Tensor>> vslots_;
  std::barrier<> sync_;
};

/// Runs fn(rank) on n threads; returns the error messages (empty strings when all succeeded).
std::vector<std::string> run_ranks(int64_t n, const std::function<void(int64_t)>& fn) {
  std::vector<std::string> errors(static_cast<size_t>(n));
  auto body = [&](int64_t r) {
    try {
      fn(r);
    } catch (const std::exception& e) {
      errors[static_cast<size_t>(r)] = e.what();
    }
  };
  std::vector<std::thread> ts;
  for (int64_t r = 1; r < n; ++r) ts.emplace_back(body, r);
  body(0);
  for (auto& t : ts) t.join();
  return errors;
}

LoadOptions options(c10::ScalarType dtype, int64_t chunks) {
  LoadOptions o;
  o.dtype = dtype;
  o.parallel.reduction_chunks = chunks;
  return o;
}

const std::vector<std::string> kDense = {"llama", "llama3_bias", "qwen2", "qwen3"};

// One process, R chunks: the same model within fp32 rounding of the plain at::linear path (R = 1),
// which itself still matches transformers (causal_lm_test).
TEST(ReductionChunks, SingleProcessWithinFp32OfPlainLinear) {
  for (const std::string name :
       {"llama", "llama3_bias", "qwen2", "qwen3", "mixtral", "qwen3_moe"}) {
    auto g = golden(name);
    at::Tensor ref = mq::models::load_causal_lm(tiny(name), options(at::kFloat, 0))
                         ->forward(g.at("input_ids"), g.at("attention_mask"));
    EXPECT_LT(rel_err(ref, g.at("logits")), 2e-6) << name;
    for (int64_t r : {2, 4}) {
      auto lm = mq::models::load_causal_lm(tiny(name), options(at::kFloat, r));
      at::Tensor y = lm->forward(g.at("input_ids"), g.at("attention_mask"));
      EXPECT_LT(rel_err(y, ref), 2e-6) << name << " R=" << r;
      // A different summation order does change some bits (the test could not tell otherwise).
      EXPECT_FALSE(at::equal(y, ref)) << name << " R=" << r;
    }
  }
}

// TP over 2 and 4 threads with R chunks gives exactly the logits (and o_proj / down_proj inputs,
// column slices) of one process with R chunks, in fp32 and bf16.
struct TpCase {
  std::string model;
  int64_t tp, chunks;
  c10::ScalarType dtype;
};

class TensorParallel : public ::testing::TestWithParam<TpCase> {};

TEST_P(TensorParallel, BitIdenticalToSingleProcess) {
  const TpCase c = GetParam();
  auto g = golden(c.model);
  const at::Tensor ids = g.at("input_ids"), mask = g.at("attention_mask");
  auto single = mq::models::load_causal_lm(tiny(c.model), options(c.dtype, c.chunks));
  std::map<std::string, at::Tensor> ref_in;
  auto hook = [](std::map<std::string, at::Tensor>* store, CausalLM& lm) {
    for (auto& [name, m] : lm.named_modules())
      if (name.ends_with(".o_proj") || name.ends_with(".down_proj"))
        m->register_forward_pre_hook(
            [store, n = name](mq::nn::Module&, const at::Tensor& x) { (*store)[n] = x; });
  };
  hook(&ref_in, *single);
  const at::Tensor ref = single->forward(ids, mask);

  ThreadGroup tp(c.tp);
  std::vector<at::Tensor> out(static_cast<size_t>(c.tp));
  std::vector<std::map<std::string, at::Tensor>> in(static_cast<size_t>(c.tp));
  auto errors = run_ranks(c.tp, [&](int64_t rank) {
    LoadOptions o = options(c.dtype, c.chunks);
    tp.attach_tp(o.parallel, rank);
    auto lm = mq::models::load_causal_lm(tiny(c.model), o);
    hook(&in[static_cast<size_t>(rank)], *lm);
    out[static_cast<size_t>(rank)] = lm->forward(ids, mask);
  });
  ASSERT_EQ(errors, std::vector<std::string>(static_cast<size_t>(c.tp)))
      << errors[0] << " | " << errors[1];
  for (int64_t r = 0; r < c.tp; ++r) {
    EXPECT_TRUE(at::equal(out[static_cast<size_t>(r)], ref)) << "rank " << r;
    ASSERT_EQ(in[static_cast<size_t>(r)].size(), ref_in.size());
    for (auto& [name, x] : in[static_cast<size_t>(r)]) {
      // Row-parallel linears see this rank's input columns; experts (replicated) see all.
      const int64_t k = x.size(-1);
      const bool row = name.find(".experts.") == std::string::npos;
      EXPECT_EQ(row ? k * c.tp : k, ref_in.at(name).size(-1)) << name;
      EXPECT_TRUE(at::equal(x, row ? ref_in.at(name).narrow(-1, r * k, k) : ref_in.at(name)))
          << name << " rank " << r;
    }
  }
}

std::vector<TpCase> tp_cases() {
  std::vector<TpCase> v;
  for (const std::string& m : kDense)
    for (auto dt : {at::kFloat, at::kBFloat16}) {
      v.push_back({m, 2, 2, dt});
      v.push_back({m, 2, 4, dt});
    }
  v.push_back({"mixtral", 2, 4, at::kBFloat16});
  v.push_back({"qwen3_moe", 2, 2, at::kBFloat16});
  return v;
}

INSTANTIATE_TEST_SUITE_P(Tiny, TensorParallel, ::testing::ValuesIn(tp_cases()),
                         [](const ::testing::TestParamInfo<TpCase>& i) {
                           return i.param.model + "_tp" + std::to_string(i.param.tp) + "_R" +
                                  std::to_string(i.param.chunks) +
                                  (i.param.dtype == at::kFloat ? "_fp32" : "_bf16");
                         });

// EP over 2 threads holding different batches (EP spanning DP ranks): each rank's logits equal the
// single process's on that rank's batch, and the expert counts add up to the single-process ones.
TEST(ExpertParallel, DifferentDataPerRankBitIdentical) {
  for (const std::string name : {"mixtral", "qwen3_moe"})
    for (auto dt : {at::kFloat, at::kBFloat16}) {
      auto g = golden(name);
      const at::Tensor ids = g.at("input_ids"), mask = g.at("attention_mask");
      auto single = mq::models::load_causal_lm(tiny(name), options(dt, 0));
      std::vector<at::Tensor> ref;
      for (int64_t r = 0; r < 2; ++r)
        ref.push_back(single->forward(ids[r].unsqueeze(0), mask[r].unsqueeze(0)));
      const std::vector<int64_t> ref_counts = single->layer(0).moe()->expert_token_counts();

      ThreadGroup ep(2);
      std::vector<at::Tensor> out(2);
      std::vector<std::vector<int64_t>> counts(2);
      auto errors = run_ranks(2, [&](int64_t rank) {
        LoadOptions o = options(dt, 0);
        ep.attach_ep(o.parallel, rank);
        auto lm = mq::models::load_causal_lm(tiny(name), o);
        out[static_cast<size_t>(rank)] =
            lm->forward(ids[rank].unsqueeze(0), mask[rank].unsqueeze(0));
        counts[static_cast<size_t>(rank)] = lm->layer(0).moe()->expert_token_counts();
      });
      ASSERT_EQ(errors, std::vector<std::string>(2)) << errors[0] << " | " << errors[1];
      for (size_t r = 0; r < 2; ++r)
        EXPECT_TRUE(at::equal(out[r], ref[r])) << name << " rank " << r;
      std::vector<int64_t> all = counts[0];
      all.insert(all.end(), counts[1].begin(), counts[1].end());
      EXPECT_EQ(all, ref_counts) << name;
    }
}

/// A hand-made Mixtral-routed block: 4 experts (hidden 8, intermediate 4), top-2, router weights
/// that send every token whose features 0 and 1 dominate to experts 0 and 1.
std::shared_ptr<mq::models::SparseMoe> make_moe(int64_t expert_begin, int64_t n_local,
                                                const ParallelSpec* p) {
  at::manual_seed(7);
  const int64_t h = 8, inter = 4, e_all = 4;
  auto moe = std::make_shared<mq::models::SparseMoe>("MixtralSparseMoeBlock",
                                                     mq::models::MoeRouting::kMixtral, e_all, 2,
                                                     false, expert_begin, n_local, p);
  at::Tensor gate = at::zeros({e_all, h});
  for (int64_t e = 0; e < e_all; ++e) gate[e][e] = 4.0;
  moe->register_module("gate", std::make_shared<mq::nn::Linear>(gate, at::Tensor()));
  auto experts = std::make_shared<mq::nn::ModuleList>();
  std::vector<std::array<at::Tensor, 3>> w;
  for (int64_t e = 0; e < e_all; ++e)
    w.push_back({at::randn({inter, h}), at::randn({h, inter}), at::randn({inter, h})});
  for (int64_t e = expert_begin; e < expert_begin + n_local; ++e) {
    auto m = std::make_shared<mq::models::Mlp>("MixtralBlockSparseTop2MLP", "w1", "w3", "w2");
    const auto& [w1, w2, w3] = w[static_cast<size_t>(e)];
    m->register_module("w1", std::make_shared<mq::nn::Linear>(w1, at::Tensor()));
    m->register_module("w2", std::make_shared<mq::nn::Linear>(w2, at::Tensor()));
    m->register_module("w3", std::make_shared<mq::nn::Linear>(w3, at::Tensor()));
    experts->push_back(m);
  }
  moe->register_module("experts", experts);
  return moe;
}

// Rank 1's tokens all choose experts 0 and 1 (rank 0's), or rank 1 has no token at all: rank 1
// still takes part in every collective with empty tensors, and both ranks match one process.
TEST(ExpertParallel, RankWithoutTokensFromASource) {
  at::manual_seed(3);
  at::Tensor x0 = at::randn({1, 5, 8});
  at::Tensor x1 = at::randn({1, 3, 8}) * 0.1;
  x1.select(-1, 0).fill_(3.0);
  x1.select(-1, 1).fill_(2.0);
  for (const at::Tensor& second : {x1, at::empty({1, 0, 8})}) {
    const std::vector<at::Tensor> xs = {x0, second};
    auto single = make_moe(0, 4, nullptr);
    std::vector<at::Tensor> ref;
    for (const at::Tensor& x : xs) ref.push_back(single->forward(x));
    ThreadGroup ep(2);
    std::vector<ParallelSpec> specs(2);
    std::vector<at::Tensor> out(2);
    std::vector<std::vector<int64_t>> counts(2);
    auto errors = run_ranks(2, [&](int64_t rank) {
      const auto r = static_cast<size_t>(rank);
      ep.attach_ep(specs[r], rank);
      auto moe = make_moe(2 * rank, 2, &specs[r]);
      out[r] = moe->forward(xs[r]);
      counts[r] = moe->expert_token_counts();
    });
    ASSERT_EQ(errors, std::vector<std::string>(2)) << errors[0] << " | " << errors[1];
    for (size_t r = 0; r < 2; ++r) {
      EXPECT_EQ(out[r].sizes(), xs[r].sizes());
      EXPECT_TRUE(at::equal(out[r], ref[r])) << "rank " << r;
    }
    std::vector<int64_t> all = counts[0];
    all.insert(all.end(), counts[1].begin(), counts[1].end());
    EXPECT_EQ(all, single->expert_token_counts());
    // Rank 1's experts saw no token of source 1: every count they have comes from source 0.
    if (second.size(1) > 0) {
      auto alone = make_moe(0, 4, nullptr);
      alone->forward(x0);
      EXPECT_EQ(counts[1][0], alone->expert_token_counts()[2]);
      EXPECT_EQ(counts[1][1], alone->expert_token_counts()[3]);
    }
  }
}

// The row-parallel function moves with the Linear into its QuantLinear: with quantizers disabled
// the quantized model still reduces in R chunks (same bits as before replacement).
TEST(ReductionChunks, LinearFunctionSurvivesReplaceQuantModule) {
  auto g = golden("llama3_bias");
  auto lm = mq::models::load_causal_lm(tiny("llama3_bias"), options(at::kFloat, 4));
  auto linear = [&](const std::string& n) -> mq::nn::Linear& {
    return dynamic_cast<mq::nn::Linear&>(lm->get_submodule(n));
  };
  // Row-parallel linears reduce in chunks; column-parallel ones compute in fixed output slices
  // (same GEMM shapes in every layout); lm_head and routers keep at::linear.
  ASSERT_TRUE(static_cast<bool>(linear("model.layers.0.self_attn.o_proj").linear_fn()));
  EXPECT_TRUE(static_cast<bool>(linear("model.layers.0.self_attn.q_proj").linear_fn()));
  EXPECT_TRUE(static_cast<bool>(linear("model.layers.0.mlp.up_proj").linear_fn()));
  EXPECT_FALSE(static_cast<bool>(linear("lm_head").linear_fn()));
  EXPECT_FALSE(
      static_cast<bool>(dynamic_cast<mq::nn::Linear&>(
                            mq::models::load_causal_lm(tiny("llama3_bias"), options(at::kFloat, 0))
                                ->get_submodule("model.layers.0.self_attn.o_proj"))
                            .linear_fn()));
  const at::Tensor ref = lm->forward(g.at("input_ids"), g.at("attention_mask"));
  mq::nn::replace_quant_module(*lm);
  auto* q = dynamic_cast<mq::nn::QuantLinear*>(&lm->get_submodule("model.layers.1.mlp.down_proj"));
  ASSERT_NE(q, nullptr);
  EXPECT_TRUE(static_cast<bool>(q->linear_fn()));
  for (auto& [n, m] : lm->named_modules())
    if (auto* qm = dynamic_cast<mq::nn::QuantizerModule*>(m);
        qm && !qm->is_sequential() && !qm->hard_disabled())
      qm->tensor().disable();
  EXPECT_TRUE(at::equal(lm->forward(g.at("input_ids"), g.at("attention_mask")), ref));
  // Without the function the product is the plain at::linear again, which differs in some bits.
  q->set_linear_fn({});
  EXPECT_FALSE(at::equal(lm->forward(g.at("input_ids"), g.at("attention_mask")), ref));
}

// A user's linear function replaces at::linear in Linear and QuantLinear alike, and the weight it
// receives is the fake-quantized one.
TEST(ReductionChunks, QuantLinearCallsTheFunctionWithQuantizedOperands) {
  at::manual_seed(1);
  at::Tensor w = at::randn({3, 5}), b = at::randn({3}), x = at::randn({2, 5});
  mq::nn::Linear lin(w.clone(), b.clone());
  std::vector<at::Tensor> seen;
  lin.set_linear_fn([&](const at::Tensor& xi, const at::Tensor& wi, const at::Tensor& bi) {
    seen = {xi, wi, bi};
    return at::linear(xi, wi, bi) * 2;
  });
  EXPECT_TRUE(at::equal(lin.forward(x), at::linear(x, w, b) * 2));
  mq::nn::QuantLinear q(std::move(lin));
  const at::Tensor y = q.forward(x);
  ASSERT_EQ(seen.size(), 3u);
  const at::Tensor xq = q.quantizer("input_quantizer")->forward(x);
  const at::Tensor wq = q.quantized_weight();
  EXPECT_TRUE(at::equal(seen[0], xq));
  EXPECT_TRUE(at::equal(seen[1], wq));
  EXPECT_FALSE(at::equal(seen[1], w));  // INT8 per-channel fake quant moved the weight
  EXPECT_TRUE(at::equal(y, at::linear(xq, wq, b) * 2));
}

TEST(ReductionChunks, InvalidChunksAndMissingCollectivesAreClearErrors) {
  auto expect_error = [](const LoadOptions& o, const std::string& needle) {
    try {
      mq::models::load_causal_lm(tiny("llama"), o);
      ADD_FAILURE() << "no error, expected '" << needle << "'";
    } catch (const mq::Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  LoadOptions o = options(at::kFloat, 3);  // 64 in_features
  expect_error(o, "reduction_chunks 3 does not divide model.layers.0.self_attn.o_proj in_features");
  o.parallel.reduction_chunks = -1;
  expect_error(o, "reduction_chunks -1 is negative");
  o.parallel.reduction_chunks = 3;
  o.parallel.tp_size = 2;
  o.parallel.tp_all_gather = [](const at::Tensor& t) { return t.unsqueeze(0); };
  expect_error(o, "reduction_chunks 3 is not a multiple of tp_size 2");
  o.parallel.reduction_chunks = 0;
  o.parallel.tp_all_gather = nullptr;
  expect_error(o, "tp_size 2 needs tp_all_gather");
  LoadOptions e = options(at::kFloat, 0);
  e.parallel.ep_size = 2;
  e.parallel.ep_all_gather_v = [](const at::Tensor& t) { return std::vector<at::Tensor>{t}; };
  expect_error(e, "ep_size 2 needs ep_all_to_all_v");
  e.parallel.ep_all_gather_v = nullptr;
  expect_error(e, "ep_size 2 needs ep_all_gather_v");
}

}  // namespace
