#include "mq/export/tensor_mode.hpp"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>

#include "export_test_util.hpp"
#include "mq/config/presets.hpp"
#include "mq/core/error.hpp"
#include "mq/quant/sequential_quantizer.hpp"
#include "mq/quant/tensor_quantizer.hpp"

using mq::hf_export::fnmatch;
using mq::hf_export::Role;
using mq::hf_export::testing::error_of;

// Python: fnmatch.fnmatchcase(name, pattern) for each row (checked with CPython 3.11).
TEST(Fnmatch, PythonSemantics) {
  struct Row {
    const char* pattern;
    const char* name;
    bool match;
  };
  const Row rows[] = {
      {"*weight_quantizer", "model.layers.0.mlp.up_proj.weight_quantizer", true},
      {"*weight_quantizer", "model.layers.0.mlp.up_proj.weight_quantizer.0", false},
      {"*input_quantizer", "model.layers.0.mlp.up_proj.weight_quantizer", false},
      {"*", "", true},
      {"*", "a.b", true},
      {"", "", true},
      {"", "a", false},
      {"*[kv]_bmm_quantizer", "x.self_attn.k_bmm_quantizer", true},
      {"*[kv]_bmm_quantizer", "x.self_attn.q_bmm_quantizer", false},
      {"*[!q]_bmm_quantizer", "x.v_bmm_quantizer", true},
      {"*[!q]_bmm_quantizer", "x.q_bmm_quantizer", false},
      {"*mlp*weight_quantizer", "model.layers.0.mlp.up_proj.weight_quantizer", true},
      {"*mlp.gate.*", "model.layers.0.mlp.gate_proj.weight_quantizer", false},
      {"*mlp.gate.*", "model.layers.0.mlp.gate.weight_quantizer", true},
      {"*lm_head*", "lm_head.weight_quantizer", true},
      {"mtp.*", "model.mtp.x", false},
      {"a?c", "abc", true},
      {"a?c", "ac", false},
      {"[a-c]x", "bx", true},
      {"[a-c]x", "dx", false},
      {"[]]", "]", true},
      {"[!]]", "]", false},
      {"[abc", "[abc", true},
      {"[abc", "a", false},
      {"a*b*c", "aXbYbZc", true},
      {"a*b*c", "aXbYbZ", false},
      {"**x", "yx", true},
      {"*.experts.*weight_quantizer", "m.experts.3.down_proj.weight_quantizer", true},
  };
  for (const auto& r : rows)
    EXPECT_EQ(fnmatch(r.pattern, r.name), r.match) << r.pattern << " ~ " << r.name;
}

TEST(ApplyQuantCfg, PresetsResolveLikeModelOpt) {
  // NVFP4_DEFAULT_CFG: both quantizers NVFP4 dynamic, enabled.
  auto s = mq::hf_export::preset_quantizer_spec("NVFP4_DEFAULT_CFG", Role::kWeight);
  ASSERT_EQ(s.quantizer.cfgs.size(), 1u);
  EXPECT_TRUE(s.quantizer.enabled());
  EXPECT_TRUE(s.quantizer.cfgs[0].is_nvfp4());
  EXPECT_TRUE(s.companion_input.enabled());
  EXPECT_TRUE(s.companion_input.cfgs[0].is_nvfp4());
  EXPECT_EQ(s.label, "NVFP4_DEFAULT_CFG:weight");
  // INT4_AWQ_CFG: the input quantizer ends disabled (enable-only entry keeps its INT8 attributes).
  s = mq::hf_export::parse_quantizer_spec("INT4_AWQ_CFG:input");
  EXPECT_EQ(s.role, Role::kInput);
  EXPECT_FALSE(s.quantizer.enabled());
  EXPECT_TRUE(s.quantizer.cfgs[0].num_bits.is_int());
  // W4A8_AWQ_BETA_CFG: a list cfg -> SequentialQuantizer [INT4 block 128, FP8].
  s = mq::hf_export::parse_quantizer_spec("W4A8_AWQ_BETA_CFG:weight");
  ASSERT_TRUE(s.quantizer.is_sequential());
  EXPECT_EQ(s.quantizer.cfgs[0].num_bits.bits, 4);
  EXPECT_TRUE(s.quantizer.cfgs[1].num_bits.is_float(4, 3));
  EXPECT_TRUE(s.quantizer.enabled());
  // INT8_DEFAULT_CFG: weight per-channel axis 0, input per-tensor.
  s = mq::hf_export::parse_quantizer_spec("INT8_DEFAULT_CFG:weight");
  ASSERT_TRUE(s.quantizer.cfgs[0].axis.has_value());
  EXPECT_EQ(s.quantizer.cfgs[0].axis->dims, std::vector<int>{0});
  EXPECT_FALSE(s.companion_input.cfgs[0].axis.has_value());
}

TEST(ApplyQuantCfg, OrderAndPartialEntries) {
  using mq::config::QuantizerCfgEntry;
  mq::config::QuantizerAttributeConfig c8, c4;
  c8.num_bits = mq::config::NumBits::integer(8);
  c4.num_bits = mq::config::NumBits::integer(4);
  c4.axis = mq::config::Axis{{-1}, false};
  QuantizerCfgEntry all_off{"*", std::nullopt, {}, false, {"enable"}};
  QuantizerCfgEntry w8{"*weight_quantizer", std::nullopt, c8, std::nullopt, {"cfg"}};
  QuantizerCfgEntry w4{"*weight_quantizer", std::nullopt, c4, std::nullopt, {"cfg"}};
  QuantizerCfgEntry on{"*up_proj*", std::nullopt, {}, true, {"enable"}};
  QuantizerCfgEntry conv{"*", std::string("nn.Conv2d"), c4, std::nullopt, {"cfg", "parent_class"}};
  const std::string name = "model.layers.0.mlp.up_proj.weight_quantizer";
  auto s = mq::hf_export::apply_quant_cfg({all_off, w8, w4}, name,
                                          mq::hf_export::default_linear_weight_quantizer());
  EXPECT_EQ(s.cfgs[0].num_bits.bits, 4);  // later entry wins
  EXPECT_TRUE(s.enabled());
  s = mq::hf_export::apply_quant_cfg({w4, all_off}, name,
                                     mq::hf_export::default_linear_weight_quantizer());
  EXPECT_FALSE(s.enabled());
  EXPECT_EQ(s.cfgs[0].num_bits.bits, 4);  // enable-only keeps the attributes
  s = mq::hf_export::apply_quant_cfg({w4, all_off, on}, name,
                                     mq::hf_export::default_linear_weight_quantizer());
  EXPECT_TRUE(s.enabled());
  ASSERT_TRUE(s.cfgs[0].axis.has_value());
  EXPECT_EQ(s.cfgs[0].axis->dims, std::vector<int>{-1});
  s = mq::hf_export::apply_quant_cfg({w4, w8}, name,
                                     mq::hf_export::default_linear_weight_quantizer());
  EXPECT_FALSE(s.cfgs[0].axis.has_value());  // full replacement resets axis
  s = mq::hf_export::apply_quant_cfg({conv}, name,
                                     mq::hf_export::default_linear_weight_quantizer());
  EXPECT_EQ(s.cfgs[0].num_bits.bits, 8);  // parent_class nn.Conv2d does not match a Linear
  ASSERT_TRUE(s.cfgs[0].axis.has_value());
  EXPECT_EQ(s.cfgs[0].axis->dims, std::vector<int>{0});
}

TEST(QuantizerSpec, BadSpecsAreOneLineConfigErrors) {
  auto msg = error_of([] { mq::hf_export::parse_quantizer_spec("NVFP4_DEFAULT_CFG"); });
  EXPECT_NE(msg.find("is not <PRESET>:<weight|input>"), std::string::npos) << msg;
  msg = error_of([] { mq::hf_export::parse_quantizer_spec("NVFP4_DEFAULT_CFG:output"); });
  EXPECT_NE(msg.find("must be 'weight' or 'input', got 'output'"), std::string::npos) << msg;
  msg = error_of([] { mq::hf_export::parse_quantizer_spec("NO_SUCH_CFG:weight"); });
  EXPECT_NE(msg.find("NO_SUCH_CFG"), std::string::npos) << msg;
  msg = error_of([] { mq::hf_export::attr_quantizer_spec("{\"num_bits\": 8,"); });
  EXPECT_NE(msg.find("--attr: invalid JSON"), std::string::npos) << msg;
  msg = error_of([] { mq::hf_export::attr_quantizer_spec("[8]"); });
  EXPECT_NE(msg.find("expected a JSON object"), std::string::npos) << msg;
  msg = error_of([] { mq::hf_export::attr_quantizer_spec(R"({"num_bits": 0})"); });
  EXPECT_NE(msg.find("--attr"), std::string::npos) << msg;
  EXPECT_NE(msg.find("num_bits"), std::string::npos) << msg;
  for (const auto& m : {msg}) EXPECT_EQ(m.find('\n'), std::string::npos) << m;
}

TEST(QuantizeTensors, FakeModeMatchesTheQuantizerDirectly) {
  at::manual_seed(3);
  std::map<std::string, at::Tensor> in = {
      {"a.weight", (at::randn({33, 48}) * 0.05).to(at::kBFloat16)},
      {"b.weight", (at::randn({8, 64}) * 0.1).to(at::kHalf)},
  };
  auto spec = mq::hf_export::parse_quantizer_spec("NVFP4_DEFAULT_CFG:weight");
  auto r = mq::hf_export::quantize_tensors(in, spec, {});
  ASSERT_EQ(r.tensors.size(), 4u);
  ASSERT_EQ(r.reports.size(), 2u);
  for (const auto& [name, x] : in) {
    mq::quant::TensorQuantizer q(spec.quantizer.cfgs[0]);
    const at::Tensor y = mq::quant::calibrate_and_fake_quant(q, x);
    const at::Tensor& got = r.tensors.at(name);
    EXPECT_EQ(got.scalar_type(), x.scalar_type());
    EXPECT_TRUE(at::equal(got, y)) << name;
    EXPECT_FALSE(at::equal(got, x)) << name;
    const at::Tensor& amax = r.tensors.at(name + "._amax");
    EXPECT_EQ(amax.dim(), 0);
    EXPECT_EQ(amax.item<float>(), x.abs().max().item<float>());
  }
  const auto& rep = r.reports[0];
  EXPECT_EQ(rep.name, "a.weight");
  EXPECT_EQ(rep.dtype, "bfloat16");
  EXPECT_EQ(rep.amax, in["a.weight"].abs().max().item<double>());
  EXPECT_GT(rep.snr_db, 10.0);  // NVFP4 on Gaussian data: about 20 dB
  EXPECT_LT(rep.snr_db, 30.0);
  EXPECT_GT(rep.mean_abs_error, 0.0);
}

TEST(QuantizeTensors, StaticAndSequentialAmaxNames) {
  at::manual_seed(4);
  std::map<std::string, at::Tensor> in = {{"w", at::randn({4, 256})}};
  auto r = mq::hf_export::quantize_tensors(
      in, mq::hf_export::parse_quantizer_spec("W4A8_AWQ_BETA_CFG:weight"), {});
  ASSERT_TRUE(r.tensors.count("w.0._amax"));
  ASSERT_TRUE(r.tensors.count("w.1._amax"));
  EXPECT_EQ(r.tensors.at("w.0._amax").numel(), 8);  // (4*256/128, 1) block amax
  EXPECT_EQ(r.tensors.at("w.1._amax").item<float>(), in["w"].abs().max().item<float>());
  r = mq::hf_export::quantize_tensors(
      in, mq::hf_export::parse_quantizer_spec("NVFP4_W4A4_WEIGHT_MSE_FP8_SWEEP_CFG:weight"), {});
  ASSERT_TRUE(r.tensors.count("w._global_amax"));
  EXPECT_EQ(r.tensors.at("w._global_amax").item<float>(), in["w"].abs().max().item<float>());
  EXPECT_EQ(r.tensors.at("w._amax").numel(), 4 * 256 / 16);
}

TEST(QuantizeTensors, DisabledPassesThroughAndRealWritesHfNames) {
  at::manual_seed(5);
  std::map<std::string, at::Tensor> in = {
      {"m.up_proj.weight", at::randn({16, 64}).to(at::kBFloat16)}};
  auto r = mq::hf_export::quantize_tensors(
      in, mq::hf_export::parse_quantizer_spec("INT4_AWQ_CFG:input"), {});
  ASSERT_EQ(r.tensors.size(), 1u);
  EXPECT_TRUE(at::equal(r.tensors.at("m.up_proj.weight"), in["m.up_proj.weight"]));
  EXPECT_EQ(r.reports[0].format, "disabled");

  r = mq::hf_export::quantize_tensors(
      in, mq::hf_export::parse_quantizer_spec("NVFP4_DEFAULT_CFG:weight"), {.real = true});
  ASSERT_EQ(r.tensors.size(), 3u);  // the input quantizer is never calibrated: no input_scale
  EXPECT_EQ(r.tensors.at("m.up_proj.weight").scalar_type(), at::kByte);
  EXPECT_EQ(r.tensors.at("m.up_proj.weight").sizes(), at::IntArrayRef({16, 32}));
  EXPECT_EQ(r.tensors.at("m.up_proj.weight_scale").scalar_type(), at::kFloat8_e4m3fn);
  EXPECT_EQ(r.tensors.at("m.up_proj.weight_scale").sizes(), at::IntArrayRef({16, 4}));
  EXPECT_EQ(r.tensors.at("m.up_proj.weight_scale_2").item<float>(),
            in["m.up_proj.weight"].abs().max().item<float>() / 2688.0f);
  EXPECT_EQ(r.reports[0].format, "nvfp4");

  r = mq::hf_export::quantize_tensors(
      in, mq::hf_export::attr_quantizer_spec(R"({"num_bits": 8, "axis": 0})"), {.real = true});
  EXPECT_EQ(r.reports[0].format, "int8_wo");
  EXPECT_EQ(r.tensors.at("m.up_proj.weight").scalar_type(), at::kChar);
  EXPECT_EQ(r.tensors.at("m.up_proj.weight_scale").sizes(), at::IntArrayRef({16}));
}

TEST(QuantizeTensors, ErrorsNameTheTensor) {
  std::map<std::string, at::Tensor> ints = {{"ids", at::arange(4)}};
  auto spec = mq::hf_export::parse_quantizer_spec("FP8_DEFAULT_CFG:input");
  auto msg = error_of([&] { mq::hf_export::quantize_tensors(ints, spec, {}); });
  EXPECT_NE(msg.find("tensor 'ids'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("int64"), std::string::npos) << msg;
  msg = error_of([&] {
    mq::hf_export::quantize_tensors({{"x", at::ones({2, 16})}}, spec, {.real = true});
  });
  EXPECT_NE(msg.find("--real exports weights"), std::string::npos) << msg;
  auto wspec = mq::hf_export::parse_quantizer_spec("NVFP4_DEFAULT_CFG:weight");
  msg = error_of([&] {
    mq::hf_export::quantize_tensors({{"bias", at::ones({16})}}, wspec, {.real = true});
  });
  EXPECT_NE(msg.find("tensor 'bias'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("2-D"), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
}
