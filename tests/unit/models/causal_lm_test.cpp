// Forward parity of mq::models with HF transformers 5.14.1 on the tiny checkpoints of
// tests/models/gen_tiny.py, module tree names, hooks and MoE token accounting.
#include "mq/models/causal_lm.hpp"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <barrier>
#include <filesystem>
#include <set>
#include <thread>

#include "mq/core/error.hpp"
#include "mq/io/safetensors_torch.hpp"
#include "mq/models/checkpoint.hpp"
#include "mq/nn/quant_module.hpp"
#include "tiny_models_impl.hpp"

namespace {

using mq::models::CausalLM;
using mq::models::LoadOptions;

using mq::test::golden;
using mq::test::rel_err;
using mq::test::tiny;
using mq::test::with_dtype;

const std::vector<std::string> kFamilies = {"llama", "llama3_bias", "qwen2",
                                            "qwen3", "mixtral",     "qwen3_moe"};

class Parity : public ::testing::TestWithParam<std::string> {};

// fp32 tolerance: the C++ forward issues the same ATen ops in the same order as HF's eager path, so
// the only differences are GEMM blocking choices (HF 5 multiplies MoE experts through one fused
// gate_up weight, we through two linears) and threading in reductions. Through 2 layers that stays
// within a few hundred fp32 ulps of the logit scale; 2e-6 relative to max|logits| (~17 ulp of 1.0)
// is tight enough to catch any real deviation (a wrong RoPE frequency, mask or routing moves logits
// by >1e-3).
constexpr double kFp32Tol = 2e-6;

TEST_P(Parity, LogitsMatchTransformersFp32) {
  const std::string name = GetParam();
  auto g = golden(name);
  auto lm = mq::models::load_causal_lm(tiny(name), with_dtype(at::kFloat));
  ASSERT_EQ(lm->dtype(), at::kFloat);
  at::Tensor logits = lm->forward(g.at("input_ids"), g.at("attention_mask"));
  ASSERT_EQ(logits.sizes(), g.at("logits").sizes());
  EXPECT_LT(rel_err(logits, g.at("logits")), kFp32Tol) << name;
  at::Tensor nomask = lm->forward(g.at("input_ids").narrow(0, 0, 1));
  EXPECT_LT(rel_err(nomask, g.at("logits_nomask")), kFp32Tol) << name;
  // The rotary frequencies are computed as HF does, so they agree to the bit.
  EXPECT_TRUE(
      at::equal(dynamic_cast<mq::models::RotaryEmbedding&>(lm->model().get_submodule("rotary_emb"))
                    .inv_freq(),
                g.at("inv_freq")))
      << name;
}

// bf16 checkpoints loaded with the default dtype compute in bf16, like HF loading with
// dtype=bfloat16. Same ops in the same order, but bf16 rounding of every intermediate amplifies
// GEMM-order differences: 1e-2 relative (~2.5 bf16 ulp of the largest logit).
TEST_P(Parity, LogitsMatchTransformersNativeDtype) {
  const std::string name = GetParam();
  auto g = golden(name);
  if (!g.count("logits_native")) GTEST_SKIP() << name << " is an fp32 checkpoint (covered above)";
  auto lm = mq::models::load_causal_lm(tiny(name));
  ASSERT_EQ(lm->dtype(), at::kBFloat16);
  at::Tensor logits = lm->forward(g.at("input_ids"), g.at("attention_mask"));
  ASSERT_EQ(logits.scalar_type(), at::kBFloat16);
  EXPECT_LT(rel_err(logits.to(at::kFloat), g.at("logits_native")), 1e-2) << name;
  // And it is a bf16 forward, not an fp32 one: it differs from the fp32 golden.
  EXPECT_GT(rel_err(logits.to(at::kFloat), g.at("logits")), 1e-4) << name;
}

TEST_P(Parity, ParameterNamesAreTheCheckpointNames) {
  const std::string name = GetParam();
  auto lm = mq::models::load_causal_lm(tiny(name), with_dtype(at::kFloat));
  auto ck = mq::models::Checkpoint::open(tiny(name));
  std::set<std::string> params;
  for (auto& [n, p] : lm->named_parameters()) {
    params.insert(n);
    // Every parameter holds exactly the checkpoint's values.
    EXPECT_TRUE(at::equal(p, ck.load(n, at::kFloat))) << n;
  }
  std::vector<std::string> names = ck.names();
  EXPECT_EQ(params, std::set<std::string>(names.begin(), names.end()));
  EXPECT_EQ(lm->named_parameters().size(), names.size());
  if (lm->config().tie_word_embeddings) {
    EXPECT_TRUE(lm->child_as<mq::nn::Linear>("lm_head").weight().is_same(
        lm->model().child_as<mq::nn::Embedding>("embed_tokens").weight()));
  }
}

INSTANTIATE_TEST_SUITE_P(Tiny, Parity, ::testing::ValuesIn(kFamilies));

TEST(CausalLM, ModuleTypesAreHfClassNames) {
  auto lm = mq::models::load_causal_lm(tiny("mixtral"));
  EXPECT_EQ(lm->type_name(), "MixtralForCausalLM");
  EXPECT_EQ(lm->model().type_name(), "MixtralModel");
  EXPECT_EQ(lm->get_submodule("model.layers.1").type_name(), "MixtralDecoderLayer");
  EXPECT_EQ(lm->get_submodule("model.layers.1.self_attn").type_name(), "MixtralAttention");
  EXPECT_EQ(lm->get_submodule("model.layers.1.input_layernorm").type_name(), "MixtralRMSNorm");
  EXPECT_EQ(lm->get_submodule("model.layers.1.block_sparse_moe").type_name(),
            "MixtralSparseMoeBlock");
  EXPECT_EQ(lm->get_submodule("model.layers.1.block_sparse_moe.gate").type_name(), "nn.Linear");
  EXPECT_EQ(lm->get_submodule("model.layers.1.block_sparse_moe.experts").type_name(),
            "nn.ModuleList");
  EXPECT_EQ(lm->get_submodule("model.layers.1.block_sparse_moe.experts.3").type_name(),
            "MixtralBlockSparseTop2MLP");
  EXPECT_EQ(lm->get_submodule("model.layers.1.block_sparse_moe.experts.3.w2").type_name(),
            "nn.Linear");
  EXPECT_EQ(lm->get_submodule("lm_head").type_name(), "nn.Linear");

  auto q = mq::models::load_causal_lm(tiny("qwen3_moe"));
  EXPECT_EQ(q->get_submodule("model.layers.0.mlp").type_name(), "Qwen3MoeSparseMoeBlock");
  EXPECT_EQ(q->get_submodule("model.layers.0.mlp.experts.5.up_proj").type_name(), "nn.Linear");
  EXPECT_EQ(q->get_submodule("model.layers.0.self_attn.q_norm").type_name(), "Qwen3MoeRMSNorm");
  EXPECT_EQ(q->get_submodule("model.layers.1.mlp").type_name(),
            "Qwen3MoeMLP");  // mlp_only_layers: [1]
  ASSERT_EQ(q->moe_blocks().size(), 1u);
  EXPECT_EQ(q->moe_blocks()[0].first, "model.layers.0.mlp");
}

TEST(CausalLM, MoeTokenCountsMatchHfRouting) {
  for (const std::string name : {"mixtral", "qwen3_moe"}) {
    auto g = golden(name);
    auto lm = mq::models::load_causal_lm(tiny(name), with_dtype(at::kFloat));
    lm->forward(g.at("input_ids"), g.at("attention_mask"));
    const at::Tensor& want = g.at("expert_counts");  // (L, E)
    for (size_t i = 0; i < lm->num_layers(); ++i) {
      mq::models::SparseMoe* m = lm->layer(i).moe();
      if (!m) {
        EXPECT_EQ(want[static_cast<int64_t>(i)].sum().item<int64_t>(), 0);
        continue;
      }
      at::Tensor got = at::tensor(m->expert_token_counts(), at::kLong);
      EXPECT_TRUE(at::equal(got, want[static_cast<int64_t>(i)]))
          << name << " layer " << i << ": " << got;
      // Every token is routed to top_k experts.
      EXPECT_EQ(got.sum().item<int64_t>(), g.at("input_ids").numel() * m->top_k());
    }
    // Counts accumulate over forwards until reset.
    lm->forward(g.at("input_ids"), g.at("attention_mask"));
    auto [bname, b] = lm->moe_blocks()[0];
    EXPECT_EQ(at::tensor(b->expert_token_counts(), at::kLong).sum().item<int64_t>(),
              2 * g.at("input_ids").numel() * b->top_k())
        << bname;
    lm->reset_expert_token_counts();
    EXPECT_EQ(at::tensor(b->expert_token_counts(), at::kLong).sum().item<int64_t>(), 0);
  }
}

TEST(CausalLM, ExpertsWithoutTokensAreNotCalled) {
  auto lm = mq::models::load_causal_lm(tiny("qwen3_moe"), with_dtype(at::kFloat));
  mq::models::SparseMoe* moe = lm->layer(0).moe();
  ASSERT_NE(moe, nullptr);
  ASSERT_EQ(moe->experts().size(), 6u);
  std::vector<int64_t> calls(6, 0), rows(6, 0);
  for (size_t e = 0; e < 6; ++e) {
    moe->experts()[e].register_forward_pre_hook([&, e](mq::nn::Module&, const at::Tensor& x) {
      ++calls[e];
      rows[e] += x.size(0);
    });
  }
  // One token, top-2 of 6 experts: exactly 2 experts run, the other 4 are never called.
  lm->forward(at::full({1, 1}, 17, at::kLong));
  int64_t called = 0;
  for (size_t e = 0; e < 6; ++e) {
    EXPECT_EQ(rows[e], moe->expert_token_counts()[e]) << "expert " << e;
    EXPECT_EQ(calls[e], moe->expert_token_counts()[e] > 0 ? 1 : 0) << "expert " << e;
    called += calls[e];
  }
  EXPECT_EQ(called, 2);
}

TEST(CausalLM, DecoderLayerHooksSeeLayerInputs) {
  auto g = golden("llama");
  auto lm = mq::models::load_causal_lm(tiny("llama"));
  std::vector<at::Tensor> inputs, outputs;
  for (size_t i = 0; i < lm->num_layers(); ++i) {
    lm->layer(i).register_forward_pre_hook(
        [&](mq::nn::Module&, const at::Tensor& x) { inputs.push_back(x); });
    lm->layer(i).register_forward_hook(
        [&](mq::nn::Module&, const at::Tensor&, const at::Tensor& y) { outputs.push_back(y); });
  }
  const at::Tensor ids = g.at("input_ids");
  at::Tensor logits = lm->forward(ids, g.at("attention_mask"));
  ASSERT_EQ(inputs.size(), 2u);
  ASSERT_EQ(outputs.size(), 2u);
  EXPECT_TRUE(at::equal(
      inputs[0],
      at::embedding(lm->model().child_as<mq::nn::Embedding>("embed_tokens").weight(), ids)));
  EXPECT_TRUE(at::equal(inputs[1], outputs[0]));
  // Running the layers one by one from a captured input reproduces the model (layer-wise
  // calibration).
  mq::models::LayerContext ctx = lm->model().prepare(ids, g.at("attention_mask"));
  at::Tensor h = inputs[0];
  for (size_t i = 0; i < lm->num_layers(); ++i) h = lm->layer(i).forward(h, ctx);
  h = lm->model().child_as<mq::models::RMSNorm>("norm").forward(h);
  EXPECT_TRUE(at::equal(lm->child_as<mq::nn::Linear>("lm_head").forward(h), logits));
}

TEST(CausalLM, QuantizedAttentionAndLinearsReplaceInPlace) {
  mq::models::register_hf_quant_modules();
  for (const char* cls : {"LlamaAttention", "MistralAttention", "Qwen2Attention", "Qwen3Attention",
                          "MixtralAttention", "Qwen3MoeAttention"})
    EXPECT_TRUE(mq::nn::is_registered_quant_module(cls)) << cls;
  auto g = golden("qwen3");
  auto lm = mq::models::load_causal_lm(tiny("qwen3"), with_dtype(at::kFloat));
  at::Tensor ref = lm->forward(g.at("input_ids"), g.at("attention_mask"));
  mq::nn::replace_quant_module(*lm);
  auto& attn = lm->get_submodule("model.layers.0.self_attn");
  for (const char* q : {"q_bmm_quantizer", "k_bmm_quantizer", "v_bmm_quantizer", "p_bmm_quantizer"})
    ASSERT_NE(attn.quantizer(q), nullptr) << q;
  EXPECT_NE(dynamic_cast<mq::nn::QuantLinear*>(&lm->get_submodule("model.layers.1.mlp.down_proj")),
            nullptr);
  // With every quantizer disabled the forward (now through QuantLinear) is the original one.
  for (auto& [n, m] : lm->named_modules())
    if (auto* qm = dynamic_cast<mq::nn::QuantizerModule*>(m);
        qm && !qm->is_sequential() && !qm->hard_disabled())
      qm->tensor().disable();
  EXPECT_TRUE(at::equal(lm->forward(g.at("input_ids"), g.at("attention_mask")), ref));
  // k_bmm_quantizer alone (INT8 per-tensor, dynamic) changes the logits, so the attention calls it.
  attn.quantizer("k_bmm_quantizer")->tensor().enable();
  at::Tensor kq = lm->forward(g.at("input_ids"), g.at("attention_mask"));
  EXPECT_FALSE(at::equal(kq, ref));
  EXPECT_LT(rel_err(kq, ref), 5e-2);
}

// Tensor parallel (2 ranks: heads, KV heads and intermediate split; row-parallel bias on both
// ranks) and expert parallel (2 ranks: 2 of 4 experts each) reproduce the single-rank logits; two
// threads stand in for two ranks (one group for TP and EP alike: both ranks share the data).
TEST(CausalLM, TensorAndExpertParallelMatchSingleRank) {
  for (const std::string name : {"llama3_bias", "mixtral"}) {
    auto g = golden(name);
    const bool ep = name == "mixtral";
    std::vector<at::Tensor> slots(2);
    std::vector<std::vector<at::Tensor>> vslots(2);
    std::barrier sync(2);
    auto all_gather = [&](int64_t rank, const at::Tensor& t) {
      slots[static_cast<size_t>(rank)] = t;
      sync.arrive_and_wait();
      at::Tensor all = at::stack(slots);
      sync.arrive_and_wait();
      return all;
    };
    auto all_gather_v = [&](int64_t rank, const at::Tensor& t) {
      slots[static_cast<size_t>(rank)] = t;
      sync.arrive_and_wait();
      std::vector<at::Tensor> all = {slots[0].clone(), slots[1].clone()};
      sync.arrive_and_wait();
      return all;
    };
    auto all_to_all_v = [&](int64_t rank, const std::vector<at::Tensor>& send) {
      vslots[static_cast<size_t>(rank)] = send;
      sync.arrive_and_wait();
      std::vector<at::Tensor> recv = {vslots[0][static_cast<size_t>(rank)].clone(),
                                      vslots[1][static_cast<size_t>(rank)].clone()};
      sync.arrive_and_wait();
      return recv;
    };
    std::vector<at::Tensor> out(2);
    std::vector<std::vector<int64_t>> counts(2);
    std::vector<std::string> errors(2);
    auto run = [&](int64_t rank) {
      try {
        LoadOptions o = with_dtype(at::kFloat);
        o.parallel.tp_rank = rank;
        o.parallel.tp_size = 2;
        o.parallel.tp_all_gather = [&, rank](const at::Tensor& t) { return all_gather(rank, t); };
        if (ep) {
          o.parallel.ep_rank = rank;
          o.parallel.ep_size = 2;
          o.parallel.ep_all_gather_v = [&, rank](const at::Tensor& t) {
            return all_gather_v(rank, t);
          };
          o.parallel.ep_all_to_all_v = [&, rank](const std::vector<at::Tensor>& t) {
            return all_to_all_v(rank, t);
          };
        }
        auto lm = mq::models::load_causal_lm(tiny(name), o);
        out[static_cast<size_t>(rank)] = lm->forward(g.at("input_ids"), g.at("attention_mask"));
        if (ep) counts[static_cast<size_t>(rank)] = lm->layer(0).moe()->expert_token_counts();
      } catch (const std::exception& e) {
        errors[static_cast<size_t>(rank)] = e.what();
      }
    };
    std::thread t1(run, 1);
    run(0);
    t1.join();
    ASSERT_EQ(errors, std::vector<std::string>(2)) << errors[0] << " | " << errors[1];
    EXPECT_LT(rel_err(out[0], g.at("logits")), kFp32Tol) << name;
    EXPECT_TRUE(at::equal(out[0], out[1])) << name;
    if (ep) {
      // Each expert counts the tokens of both sources, and both TP ranks hold the same batch: twice
      // the single-rank counts.
      ASSERT_EQ(counts[0].size(), 2u);
      std::vector<int64_t> all = counts[0];
      all.insert(all.end(), counts[1].begin(), counts[1].end());
      EXPECT_TRUE(at::equal(at::tensor(all, at::kLong), g.at("expert_counts")[0] * 2));
    }
  }
}

TEST(CausalLM, ParallelNeedsCollectives) {
  LoadOptions o;
  o.parallel.tp_size = 2;
  EXPECT_THROW(mq::models::load_causal_lm(tiny("llama"), o), mq::Error);
  LoadOptions bad;
  bad.parallel.tp_size = 3;  // 4 heads, 2 KV heads: not divisible
  bad.parallel.tp_all_gather = [](const at::Tensor& t) { return t; };
  try {
    mq::models::load_causal_lm(tiny("llama"), bad);
    FAIL();
  } catch (const mq::Error& e) {
    EXPECT_NE(std::string(e.what()).find("not divisible by 3"), std::string::npos) << e.what();
  }
}

}  // namespace
