#include "mq/calib/calibrate.hpp"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "mq/config/json.hpp"
#include "mq/core/error.hpp"
#include "mq/nn/conversion.hpp"
#include "mq/nn/moe.hpp"
#include "mq/nn/quant_module.hpp"

namespace {

using namespace mq;

// Two experts, each a Linear `w1`; tokens go to expert 0 only (closed-form routing for the test).
struct ToyMoe : nn::SparseMoeBlock {
  ToyMoe() {
    auto ex = std::make_shared<nn::ModuleList>();
    for (int e = 0; e < 2; ++e) {
      auto expert = std::make_shared<nn::ModuleList>();
      expert->register_module(
          "dummy", std::make_shared<nn::Linear>(at::full({2, 2}, 0.5f * (e + 1)), at::Tensor()));
      ex->push_back(expert);
    }
    register_module("experts", ex);
    token_counts_.assign(2, 0);
  }
  std::string type_name() const override { return "ToyMoe"; }
  nn::ModuleList& experts() override { return child_as<nn::ModuleList>("experts"); }
  at::Tensor forward(const at::Tensor& x) {
    token_counts_[0] += x.size(0);
    return dynamic_cast<nn::Linear&>(experts()[0].get_submodule("dummy")).forward(x);
  }
};

config::AlgorithmConfig max_cfg() { return config::AlgorithmConfig{}; }

TEST(Calibrate, MaxWithMoeSyncAndCoverage) {
  ToyMoe moe;
  nn::replace_quant_module(moe);
  auto x = at::tensor({1.0f, -3.0f, 2.0f, 0.5f}).reshape({2, 2});
  calib::ForwardLoop loop = [&](nn::Module&) { moe.forward(x); };
  auto warnings = calib::calibrate(moe, max_cfg(), loop);
  EXPECT_TRUE(warnings.empty());
  auto& in0 =
      dynamic_cast<nn::QuantizerModule&>(moe.get_submodule("experts.0.dummy.input_quantizer"))
          .tensor();
  auto& in1 =
      dynamic_cast<nn::QuantizerModule&>(moe.get_submodule("experts.1.dummy.input_quantizer"))
          .tensor();
  auto& w1 =
      dynamic_cast<nn::QuantizerModule&>(moe.get_submodule("experts.1.dummy.weight_quantizer"))
          .tensor();
  // Expert 1 saw no tokens: its input amax is the max over experts (3.0), its weight amax its own
  // (1.0).
  EXPECT_FLOAT_EQ(in0.amax()->item<float>(), 3.0f);
  EXPECT_FLOAT_EQ(in1.amax()->item<float>(), 3.0f);
  EXPECT_TRUE(at::equal(*w1.amax(), at::full({2, 1}, 1.0f)));
  EXPECT_TRUE(in1.quant_enabled());
  EXPECT_FALSE(in1.calib_enabled());
  auto cov = calib::moe_coverage(moe);
  ASSERT_EQ(cov.blocks.size(), 1u);
  EXPECT_EQ(cov.blocks[0].token_counts, (std::vector<int64_t>{2, 0}));
  EXPECT_EQ(cov.blocks[0].starved, std::vector<int64_t>{1});
  ASSERT_EQ(cov.warnings.size(), 1u);
  calib::reset_moe_token_counts(moe);
  EXPECT_EQ(moe.expert_token_counts(), (std::vector<int64_t>{0, 0}));
}

TEST(Calibrate, WeightOnlyWithoutLoopNoneAndUnknown) {
  auto root = std::make_shared<nn::ModuleList>();
  root->push_back(std::make_shared<nn::Linear>(
      at::tensor({1.0f, -4.0f, 2.0f, 0.5f}).reshape({2, 2}), at::Tensor()));
  nn::replace_quant_module(*root);
  auto& w = dynamic_cast<nn::QuantizerModule&>(root->get_submodule("0.weight_quantizer")).tensor();
  auto& in = dynamic_cast<nn::QuantizerModule&>(root->get_submodule("0.input_quantizer")).tensor();
  config::AlgorithmConfig none;
  none.method = std::nullopt;
  calib::calibrate(*root, none);
  EXPECT_FALSE(w.has_amax_buffer());
  calib::calibrate(*root, max_cfg());
  EXPECT_TRUE(at::equal(*w.amax(), at::tensor({4.0f, 2.0f}).reshape({2, 1})));
  EXPECT_FALSE(in.has_amax_buffer());  // no data: stays dynamic
  config::AlgorithmConfig bad;
  bad.method = "nope";
  EXPECT_THROW(calib::calibrate(*root, bad), ConfigError);
  EXPECT_TRUE(calib::is_registered_algorithm("max"));
  // Negative amax is reported.
  w.set_amax(at::tensor({-1.0f, 2.0f}).reshape({2, 1}));
  auto warnings = calib::validate_amax(*root);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("0.weight_quantizer._amax contains invalid values"),
            std::string::npos);
}

TEST(Calibrate, SharedGroupsAndCapture) {
  auto root = std::make_shared<nn::ModuleList>();
  auto attn = std::make_shared<nn::ModuleList>();
  for (const char* n : {"q_proj", "k_proj", "v_proj", "o_proj"})
    attn->register_module(n, std::make_shared<nn::Linear>(at::eye(2), at::Tensor()));
  root->register_module("self_attn", attn);
  nn::replace_quant_module(*root);
  auto groups = calib::find_shared_weight_groups(*root, calib::default_shared_weight_patterns());
  ASSERT_EQ(groups.size(), 1u);
  EXPECT_EQ(groups[0],
            (std::vector<std::string>{"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"}));
  calib::LayerIoCapture cap(*root, {"self_attn.o_proj"});
  nn::disable_quantizer(*root, "*");
  auto x = at::ones({1, 2});
  dynamic_cast<nn::Linear&>(root->get_submodule("self_attn.o_proj")).forward(x);
  ASSERT_EQ(cap.inputs("self_attn.o_proj").size(), 1u);
  EXPECT_TRUE(at::equal(cap.outputs("self_attn.o_proj")[0], x));
}

}  // namespace
