#include "mq/nn/quant_module.hpp"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "mq/core/error.hpp"
#include "mq/quant/utils.hpp"

namespace {

using namespace mq::nn;

struct Root : Module {
  std::string type_name() const override { return "Root"; }
};

// The seeds' QuantLayerNorm, written against our API.
struct LayerNorm : Module {
  explicit LayerNorm(int64_t n) {
    register_parameter("weight", at::ones({n}));
    register_parameter("bias", at::zeros({n}));
  }
  std::string type_name() const override { return "nn.LayerNorm"; }
  virtual at::Tensor forward(const at::Tensor& x) {
    return at::layer_norm(x, {parameter("weight").size(0)}, parameter("weight"), parameter("bias"),
                          1e-5);
  }
};

struct QuantLayerNorm : LayerNorm {
  explicit QuantLayerNorm(LayerNorm&& base) : LayerNorm(std::move(base)) {
    add_quantizer("input_quantizer");
    add_quantizer("weight_quantizer");
  }
  at::Tensor forward(const at::Tensor& x) override {
    at::Tensor xi = quantizer("input_quantizer")->forward(x);
    at::Tensor w = quantizer("weight_quantizer")->forward(parameter("weight"));
    return at::layer_norm(xi, {w.size(0)}, w, parameter("bias"), 1e-5);
  }
};

// An HF-like attention whose forward applies k_bmm_quantizer when present.
struct FakeAttention : Module {
  FakeAttention() { register_module("k_proj", std::make_shared<Linear>(at::eye(4), at::Tensor())); }
  std::string type_name() const override { return "FakeAttention"; }
  at::Tensor forward(const at::Tensor& x) {
    at::Tensor k = child_as<Linear>("k_proj").forward(x);
    if (auto* q = quantizer("k_bmm_quantizer")) k = q->forward(k);
    return k;
  }
};

// Closed-form INT8 fake quant with amax a (ModelOpt fake_tensor_quant: round(x * 127 / a) * a /
// 127).
at::Tensor int8_fq(const at::Tensor& x, const at::Tensor& amax) {
  at::Tensor scale = 127.0f / amax;
  return at::clamp(at::round(x * scale), -127, 127) / scale;
}

TEST(QuantModule, BuiltinsRegistered) {
  EXPECT_TRUE(is_registered_quant_module("nn.Linear"));
  EXPECT_TRUE(is_registered_quant_module("nn.Embedding"));
  EXPECT_FALSE(is_registered_quant_module("nn.LayerNorm"));
  EXPECT_THROW(unregister_quant_module("nn.Nothing"), mq::Error);
}

TEST(QuantModule, QuantLinearDefaultsAndForward) {
  at::manual_seed(1);
  auto root = std::make_shared<Root>();
  auto w = at::randn({6, 5});
  auto b = at::randn({6});
  root->register_module("fc", std::make_shared<Linear>(w, b));
  EXPECT_EQ(replace_quant_module(*root), 3u);
  auto& fc = root->child_as<QuantLinear>("fc");
  EXPECT_EQ(fc.quant_key(), "nn.Linear");
  EXPECT_EQ(fc.type_name(), "nn.Linear");
  std::vector<std::string> qn;
  for (auto& [n, q] : fc.quantizers()) qn.push_back(n);
  EXPECT_EQ(qn,
            (std::vector<std::string>{"input_quantizer", "output_quantizer", "weight_quantizer"}));
  EXPECT_TRUE(fc.quantizer("input_quantizer")->is_enabled());
  EXPECT_FALSE(fc.quantizer("output_quantizer")->is_enabled());
  EXPECT_EQ(fc.quantizer("weight_quantizer")->tensor().axis()->dims, std::vector<int>{0});

  auto x = at::randn({3, 5});
  // Dynamic amax (no calibration): per-tensor for x, per-row for W; bias untouched.
  at::Tensor xq = int8_fq(x, x.abs().max());
  at::Tensor wq = int8_fq(w, mq::quant::reduce_amax(w, std::vector<int64_t>{1}));
  at::Tensor want = at::linear(xq, wq, b);
  EXPECT_TRUE(at::equal(fc.forward(x), want));
  // Folded: the weight is used as is.
  fc.quantizer("input_quantizer")->tensor().disable();
  fc.set_weight_folded(true);
  EXPECT_TRUE(at::equal(fc.forward(x), at::linear(x, w, b)));
  EXPECT_THROW(replace_quant_module(*root), mq::Error);
}

TEST(QuantModule, QuantEmbeddingHardDisabledInput) {
  auto root = std::make_shared<Root>();
  auto w = at::arange(-6, 6, at::kFloat).reshape({4, 3}) / 7.0;
  root->register_module("emb", std::make_shared<Embedding>(w));
  replace_quant_module(*root);
  auto& e = root->child_as<QuantEmbedding>("emb");
  std::vector<std::string> qn;
  for (auto& [n, q] : e.quantizers()) qn.push_back(n);
  EXPECT_EQ(qn,
            (std::vector<std::string>{"weight_quantizer", "input_quantizer", "output_quantizer"}));
  EXPECT_TRUE(e.quantizer("input_quantizer")->hard_disabled());
  EXPECT_FALSE(e.quantizer("input_quantizer")->is_enabled());
  EXPECT_FALSE(e.quantizer("weight_quantizer")->tensor().axis().has_value());
  auto ids = at::tensor({3, 0, 3}, at::kLong);
  at::Tensor wq = int8_fq(w, w.abs().max());
  EXPECT_TRUE(at::equal(e.forward(ids), at::embedding(wq, ids)));
}

TEST(QuantModule, ConversionKeepsHooksAndIsParentFirst) {
  auto root = std::make_shared<Root>();
  auto inner = std::make_shared<Root>();
  inner->register_module("fc", std::make_shared<Linear>(at::eye(2), at::Tensor()));
  root->register_module("inner", inner);
  int calls = 0;
  root->get_submodule("inner.fc")
      .register_forward_hook([&](Module&, const at::Tensor&, const at::Tensor&) { ++calls; });
  replace_quant_module(*root);
  root->get_submodule("inner.fc").quantizer("input_quantizer")->tensor().disable();
  root->get_submodule("inner").child_as<Linear>("fc").forward(at::ones({1, 2}));
  EXPECT_EQ(calls, 1);
}

TEST(QuantModule, SeedsQuantLayerNormRegistration) {
  register_quant_module("nn.LayerNorm", [](std::shared_ptr<Module> m) {
    return std::make_shared<QuantLayerNorm>(std::move(dynamic_cast<LayerNorm&>(*m)));
  });
  auto root = std::make_shared<Root>();
  root->register_module("ln", std::make_shared<LayerNorm>(4));
  replace_quant_module(*root);
  auto& ln = root->child_as<QuantLayerNorm>("ln");
  EXPECT_EQ(ln.quant_key(), "nn.LayerNorm");
  auto x = at::tensor({0.1f, -0.4f, 0.9f, 0.3f}).reshape({1, 4});
  at::Tensor want =
      at::layer_norm(int8_fq(x, x.abs().max()), {4}, at::ones({4}), at::zeros({4}), 1e-5);
  EXPECT_TRUE(at::equal(ln.forward(x), want));
  unregister_quant_module("nn.LayerNorm");
  EXPECT_FALSE(is_registered_quant_module("nn.LayerNorm"));
}

TEST(QuantModule, AttentionGetsBmmQuantizersInPlace) {
  register_quant_attention("FakeAttention");
  auto root = std::make_shared<Root>();
  auto attn = std::make_shared<FakeAttention>();
  root->register_module("self_attn", attn);
  replace_quant_module(*root);
  EXPECT_EQ(root->child("self_attn"), attn.get());  // same object
  EXPECT_EQ(attn->quant_key(), "FakeAttention");
  std::vector<std::string> names;
  for (auto& [n, m] : root->named_modules()) names.push_back(n);
  std::vector<std::string> want = {"",
                                   "self_attn",
                                   "self_attn.k_proj",
                                   "self_attn.k_proj.input_quantizer",
                                   "self_attn.k_proj.output_quantizer",
                                   "self_attn.k_proj.weight_quantizer",
                                   "self_attn.q_bmm_quantizer",
                                   "self_attn.k_bmm_quantizer",
                                   "self_attn.v_bmm_quantizer",
                                   "self_attn.p_bmm_quantizer"};
  EXPECT_EQ(names, want);
  for (const char* n : {"k_proj.input_quantizer", "k_proj.weight_quantizer"})
    dynamic_cast<QuantizerModule&>(attn->get_submodule(n)).tensor().disable();
  auto x = at::tensor({0.5f, -0.25f, 0.126f, 1.0f}).reshape({1, 4});
  EXPECT_TRUE(at::equal(attn->forward(x), int8_fq(x, x.abs().max())));
  unregister_quant_module("FakeAttention");
}

}  // namespace
