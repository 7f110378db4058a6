#include "mq/nn/module.hpp"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "mq/core/error.hpp"

namespace {

using namespace mq::nn;

struct Block : Module {
  std::string type_name() const override { return "Block"; }
};

std::shared_ptr<Module> make_tree() {
  auto root = std::make_shared<Block>();
  auto layers = std::make_shared<ModuleList>();
  for (int i = 0; i < 2; ++i) {
    auto b = std::make_shared<Block>();
    b->register_module("fc", std::make_shared<Linear>(at::ones({3, 4}) * (i + 1), at::zeros({3})));
    b->register_module("proj", std::make_shared<Linear>(at::ones({2, 3}), at::Tensor()));
    layers->push_back(b);
  }
  root->register_module("embed",
                        std::make_shared<Embedding>(at::arange(12, at::kFloat).reshape({6, 2})));
  root->register_module("layers", layers);
  return root;
}

TEST(Module, NamedModulesPreOrderLikeTorch) {
  auto root = make_tree();
  std::vector<std::string> names;
  for (auto& [n, m] : root->named_modules()) names.push_back(n);
  std::vector<std::string> want = {"",         "embed",       "layers",
                                   "layers.0", "layers.0.fc", "layers.0.proj",
                                   "layers.1", "layers.1.fc", "layers.1.proj"};
  EXPECT_EQ(names, want);
  auto pref = root->named_modules("model");
  EXPECT_EQ(pref[0].first, "model");
  EXPECT_EQ(pref[4].first, "model.layers.0.fc");
}

TEST(Module, SharedChildVisitedOnce) {
  auto root = std::make_shared<Block>();
  auto lin = std::make_shared<Linear>(at::ones({2, 2}), at::Tensor());
  root->register_module("a", lin);
  root->register_module("b", lin);
  EXPECT_EQ(root->named_modules().size(), 2u);
  EXPECT_EQ(root->named_parameters().size(), 1u);
}

TEST(Module, GetSubmoduleAndErrors) {
  auto root = make_tree();
  EXPECT_EQ(&root->get_submodule(""), root.get());
  EXPECT_EQ(root->get_submodule("layers.1.fc").type_name(), "nn.Linear");
  try {
    root->get_submodule("layers.7.fc");
    FAIL();
  } catch (const mq::Error& e) {
    EXPECT_NE(std::string(e.what()).find("layers (nn.ModuleList) has no attribute `7`"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(root->child_as<Linear>("layers"), mq::Error);
  EXPECT_THROW(root->child_as<Linear>("nope"), mq::Error);
  EXPECT_NO_THROW(root->child_as<ModuleList>("layers"));
}

TEST(Module, RegisterRules) {
  Block b;
  b.register_module("x", std::make_shared<Block>());
  EXPECT_THROW(b.register_module("x", std::make_shared<Block>()), mq::Error);
  EXPECT_THROW(b.register_module("a.b", std::make_shared<Block>()), mq::Error);
  EXPECT_THROW(b.register_module("y", nullptr), mq::Error);
  EXPECT_THROW(b.replace_child("zz", std::make_shared<Block>()), mq::Error);
  auto nb = std::make_shared<Block>();
  auto old = b.replace_child("x", nb);
  EXPECT_EQ(b.child("x"), nb.get());
  EXPECT_NE(old.get(), nb.get());
  b.remove_child("x");
  EXPECT_EQ(b.child("x"), nullptr);
  EXPECT_THROW(b.parameter("weight"), mq::Error);
}

TEST(Module, NamedParametersStateDictOrder) {
  auto root = make_tree();
  std::vector<std::string> names;
  for (auto& [n, t] : root->named_parameters()) names.push_back(n);
  std::vector<std::string> want = {"embed.weight",         "layers.0.fc.weight", "layers.0.fc.bias",
                                   "layers.0.proj.weight", "layers.1.fc.weight", "layers.1.fc.bias",
                                   "layers.1.proj.weight"};
  EXPECT_EQ(names, want);
}

TEST(Module, TrainEvalRecursive) {
  auto root = make_tree();
  root->train();
  EXPECT_TRUE(root->get_submodule("layers.1.proj").is_training());
  root->eval();
  for (auto& [n, m] : root->named_modules()) EXPECT_FALSE(m->is_training()) << n;
}

TEST(Module, LinearAndEmbeddingForward) {
  at::manual_seed(0);
  auto w = at::randn({5, 7});
  auto b = at::randn({5});
  Linear lin(w, b);
  auto x = at::randn({3, 7});
  // Same op as torch's F.linear (addmm): bit-identical to at::addmm.
  EXPECT_TRUE(at::equal(lin.forward(x), at::addmm(b, x, w.t())));
  EXPECT_EQ(lin.in_features(), 7);
  EXPECT_EQ(lin.out_features(), 5);
  EXPECT_FALSE(Linear(w, at::Tensor()).bias().defined());
  EXPECT_THROW(Linear(at::ones({3}), at::Tensor()), mq::Error);
  EXPECT_THROW(Linear(at::ones({3, 2}), at::ones({2})), mq::Error);
  Embedding emb(at::arange(12, at::kFloat).reshape({6, 2}));
  auto y = emb.forward(at::tensor({5, 0}, at::kLong));
  EXPECT_TRUE(at::equal(y, at::tensor({10.f, 11.f, 0.f, 1.f}).reshape({2, 2})));
}

TEST(Module, HooksSeeInputOutputAndRemove) {
  Linear lin(at::eye(3), at::Tensor());
  int pre = 0, post = 0;
  at::Tensor seen_out;
  int64_t h1 = lin.register_forward_pre_hook([&](Module&, const at::Tensor&) { ++pre; });
  int64_t h2 =
      lin.register_forward_hook([&](Module& m, const at::Tensor& in, const at::Tensor& out) {
        EXPECT_EQ(m.type_name(), "nn.Linear");
        EXPECT_TRUE(at::equal(in, out));
        seen_out = out;
        ++post;
      });
  auto x = at::ones({2, 3});
  lin.forward(x);
  EXPECT_EQ(pre, 1);
  EXPECT_EQ(post, 1);
  EXPECT_TRUE(at::equal(seen_out, x));
  lin.remove_hook(h1);
  lin.remove_hook(h2);
  EXPECT_FALSE(lin.has_hooks());
  lin.forward(x);
  EXPECT_EQ(post, 1);
}

TEST(QuantizerModule, TensorSequentialSwitchAndLeaves) {
  Block b;
  auto& q = b.add_quantizer("weight_quantizer");
  EXPECT_EQ(b.quantizer("weight_quantizer"), &q);
  EXPECT_EQ(b.quantizer("nope"), nullptr);
  EXPECT_FALSE(q.is_sequential());
  EXPECT_EQ(q.type_name(), "TensorQuantizer");
  EXPECT_EQ(q.leaves().size(), 1u);
  EXPECT_THROW(q.sequential(), mq::Error);
  q.make_sequential(2);
  EXPECT_EQ(q.type_name(), "SequentialQuantizer");
  EXPECT_EQ(q.leaves().size(), 2u);
  EXPECT_THROW(q.tensor(), mq::Error);
  q.make_tensor();
  EXPECT_EQ(q.leaves().size(), 1u);
  EXPECT_EQ(b.quantizers().size(), 1u);
}

TEST(QuantizerModule, ForwardIsInt8PerTensorByDefault) {
  QuantizerModule q;
  auto x = at::tensor({-1.0f, 0.5f, 0.25f, 1.0f});
  // Dynamic amax 1.0: scale 127, round(0.25*127)=32 -> 32/127.
  auto y = q.forward(x);
  EXPECT_FLOAT_EQ(y[2].item<float>(), 32.0f / 127.0f);
  EXPECT_TRUE(q.is_enabled());
}

TEST(QuantizerModule, HardDisabledPassesThrough) {
  QuantizerModule q;
  q.set_hard_disabled(true);
  EXPECT_FALSE(q.is_enabled());
  auto x = at::tensor({0.3f, 0.7f});
  EXPECT_TRUE(at::equal(q.forward(x), x));
  q.make_sequential(2);  // ModelOpt replaces the slot by a plain SequentialQuantizer
  EXPECT_FALSE(q.hard_disabled());
}

}  // namespace
