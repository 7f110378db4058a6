#include "mq/export/hf_tensors.hpp"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "export_test_util.hpp"
#include "mq/core/error.hpp"
#include "mq/export/tensor_mode.hpp"
#include "mq/io/safetensors_torch.hpp"

using mq::hf_export::LinearExportInputs;
using mq::hf_export::QuantFormat;
using mq::hf_export::testing::error_of;

namespace {

std::vector<uint8_t> bytes_of(const at::Tensor& t) {
  at::Tensor c = t.contiguous();
  std::vector<uint8_t> b(static_cast<size_t>(c.nbytes()));
  if (!b.empty()) std::memcpy(b.data(), c.data_ptr(), b.size());
  return b;
}

at::Tensor f32(std::vector<float> v, std::vector<int64_t> shape) {
  return at::tensor(v, at::TensorOptions().dtype(at::kFloat)).reshape(shape);
}

}  // namespace

TEST(HfTensorNames, ModelOptAttrNames) {
  auto n = mq::hf_export::hf_tensor_names("model.layers.0.mlp.up_proj.weight");
  EXPECT_EQ(n.weight, "model.layers.0.mlp.up_proj.weight");
  EXPECT_EQ(n.weight_scale, "model.layers.0.mlp.up_proj.weight_scale");
  EXPECT_EQ(n.weight_scale_2, "model.layers.0.mlp.up_proj.weight_scale_2");
  EXPECT_EQ(n.input_scale, "model.layers.0.mlp.up_proj.input_scale");
  EXPECT_EQ(n.pre_quant_scale, "model.layers.0.mlp.up_proj.pre_quant_scale");
  n = mq::hf_export::hf_tensor_names("model.layers.0.mlp.experts.gate_up_proj");
  EXPECT_EQ(n.weight_scale, "model.layers.0.mlp.experts.gate_up_proj_weight_scale");
  EXPECT_EQ(n.input_scale, "model.layers.0.mlp.experts.gate_up_proj_input_scale");
  n = mq::hf_export::hf_tensor_names("weight");
  EXPECT_EQ(n.weight_scale, "weight_scale");
  n = mq::hf_export::hf_tensor_names("w1");
  EXPECT_EQ(n.weight_scale_2, "w1_weight_scale_2");
}

// reference §2.12 "NVFP4 export of the same block as a weight (global amax 12)".
TEST(HfExport, Nvfp4WorkedExample) {
  const at::Tensor w = f32({0.0f, 0.3f, -0.6f, 0.9f, 1.2f, -1.6f, 2.0f, 2.4f, -3.1f, 3.3f, 4.0f,
                            -4.6f, 5.2f, 6.1f, -7.0f, 7.5f},
                           {1, 16});
  LinearExportInputs in;
  in.format = QuantFormat::kNvfp4;
  in.block_size = 16;
  in.weight_amax = at::scalar_tensor(12.0f);
  in.input_amax = at::scalar_tensor(2688.0f);
  in.input_maxbound = 2688.0;
  auto t = mq::hf_export::export_linear("p.weight", w, in);
  ASSERT_EQ(t.size(), 4u);
  EXPECT_EQ(t.at("p.weight").scalar_type(), at::kByte);
  EXPECT_EQ(t.at("p.weight").sizes(), at::IntArrayRef({1, 8}));
  EXPECT_EQ(bytes_of(t.at("p.weight")),
            (std::vector<uint8_t>{0x00, 0x19, 0xA2, 0x43, 0x5C, 0xE5, 0x66, 0x7F}));
  EXPECT_EQ(t.at("p.weight_scale").scalar_type(), at::kFloat8_e4m3fn);
  EXPECT_EQ(t.at("p.weight_scale").sizes(), at::IntArrayRef({1, 1}));
  EXPECT_EQ(t.at("p.weight_scale").to(at::kFloat).item<float>(), 288.0f);
  EXPECT_EQ(t.at("p.weight_scale_2").scalar_type(), at::kFloat);
  EXPECT_EQ(t.at("p.weight_scale_2").dim(), 0);
  EXPECT_EQ(t.at("p.weight_scale_2").item<float>(), 0.004464285913854837f);
  EXPECT_EQ(t.at("p.input_scale").dim(), 0);
  EXPECT_EQ(t.at("p.input_scale").item<float>(), 1.0f);
}

// reference §2.12 "INT4 AWQ export packing".
TEST(HfExport, Int4AwqWorkedExample) {
  const at::Tensor w = f32({0.7f, -0.3f, 0.1f, 0.0f, -0.7f, 0.5f, 0.2f, -0.04f}, {2, 4});
  LinearExportInputs in;
  in.format = QuantFormat::kInt4Awq;
  in.block_size = 4;
  in.weight_amax = f32({0.7f, 0.7f}, {2, 1});
  auto t = mq::hf_export::export_linear("p.weight", w, in);
  ASSERT_EQ(t.size(), 2u);
  EXPECT_EQ(t.at("p.weight").sizes(), at::IntArrayRef({1, 4}));
  EXPECT_EQ(bytes_of(t.at("p.weight")), (std::vector<uint8_t>{0x97, 0x5D, 0x21, 0x00}));
  EXPECT_EQ(t.at("p.weight_scale").sizes(), at::IntArrayRef({2, 1}));
  EXPECT_EQ(t.at("p.weight_scale")[0][0].item<float>(), 0.7f / 7.0f);
}

// FP8 per-tensor keeps torch's type promotion: `W / weight_scale` with a bf16 W and a 0-d fp32
// scale is a bf16 quotient, rounded to bf16 before the FP8 cast (values checked with torch 2.11):
// -0.89453125 * 448 = -400.75 -> bf16 -400 -> e4m3 tie -> -384, where an fp32 quotient gives -416.
TEST(HfExport, Fp8PerTensorRoundsQuotientInWeightDtype) {
  LinearExportInputs in;
  in.format = QuantFormat::kFp8;
  in.weight_amax = at::ones({1});
  const at::Tensor w = f32({-0.89453125f, -0.609375f, 0.5f, 0.0f}, {2, 2});
  auto tb = mq::hf_export::export_linear("p.weight", w.to(at::kBFloat16), in);
  EXPECT_TRUE(
      at::equal(tb.at("p.weight").to(at::kFloat), f32({-384.0f, -256.0f, 224.0f, 0.0f}, {2, 2})))
      << tb.at("p.weight").to(at::kFloat);
  auto t32 = mq::hf_export::export_linear("p.weight", w, in);
  EXPECT_TRUE(
      at::equal(t32.at("p.weight").to(at::kFloat), f32({-416.0f, -288.0f, 224.0f, 0.0f}, {2, 2})))
      << t32.at("p.weight").to(at::kFloat);
  EXPECT_EQ(tb.at("p.weight").scalar_type(), at::kFloat8_e4m3fn);
  EXPECT_EQ(tb.at("p.weight_scale").dim(), 0);
  EXPECT_EQ(tb.at("p.weight_scale").item<float>(), 1.0f / 448.0f);
}

TEST(HfExport, ShapeErrorsNameTheWeight) {
  LinearExportInputs in;
  in.format = QuantFormat::kNvfp4;
  in.block_size = 16;
  in.weight_amax = at::scalar_tensor(1.0f);
  auto msg = error_of([&] { mq::hf_export::export_linear("m.weight", at::ones({4, 24}), in); });
  EXPECT_NE(msg.find("m.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("not a multiple of the block size 16"), std::string::npos) << msg;
  msg = error_of([&] { mq::hf_export::export_linear("m.weight", at::ones({16}), in); });
  EXPECT_NE(msg.find("2-D"), std::string::npos) << msg;
  msg = error_of([&] {
    mq::hf_export::export_linear("m.weight", at::ones({2, 16}, at::kInt), in);
  });
  EXPECT_NE(msg.find("float32/bfloat16/float16"), std::string::npos) << msg;
  in.format = QuantFormat::kInt4Awq;
  in.block_size = 4;
  in.weight_amax = at::ones({3, 1});
  msg = error_of([&] { mq::hf_export::export_linear("m.weight", at::ones({3, 4}), in); });
  EXPECT_NE(msg.find("not even"), std::string::npos) << msg;
  in.format = QuantFormat::kNone;
  msg = error_of([&] { mq::hf_export::export_linear("m.weight", at::ones({2, 4}), in); });
  EXPECT_NE(msg.find("disabled"), std::string::npos) << msg;
}

// ---- golden: ModelOpt 0.47.0's own _export_quantized_weight on CPU (make_golden.py) ----

struct GoldenCase {
  std::string name, preset, expect_format;
};

class HfExportGolden : public ::testing::TestWithParam<GoldenCase> {
 protected:
  static void SetUpTestSuite() {
    file_ = new mq::io::SafetensorsFile(mq::io::SafetensorsFile::open(
        std::string(MQ_SOURCE_DIR) + "/tests/unit/export/golden/hf_export_golden.safetensors"));
    cases_ = new nlohmann::json(nlohmann::json::parse(file_->metadata().at("cases")));
  }
  static void TearDownTestSuite() {
    delete file_;
    delete cases_;
    file_ = nullptr;
    cases_ = nullptr;
  }
  static at::Tensor get(const std::string& name) {
    return mq::io::read_tensor(*file_, file_->at(name));
  }
  static inline mq::io::SafetensorsFile* file_ = nullptr;
  static inline nlohmann::json* cases_ = nullptr;
};

TEST_P(HfExportGolden, MatchesModelOptBitForBit) {
  const auto& c = GetParam();
  const nlohmann::json* meta = nullptr;
  for (const auto& m : *cases_)
    if (m["case"] == c.name) meta = &m;
  ASSERT_NE(meta, nullptr) << c.name;
  ASSERT_EQ((*meta)["preset"], c.preset);

  const at::Tensor w = get(c.name + "/w"), x = get(c.name + "/x");
  auto spec = mq::hf_export::preset_quantizer_spec(c.preset, mq::hf_export::Role::kWeight);
  mq::quant::TensorQuantizer iq(spec.companion_input.cfgs.at(0));
  if ((*meta)["calibrated"].get<bool>()) mq::quant::calibrate_and_fake_quant(iq, x);

  std::map<std::string, at::Tensor> out;
  QuantFormat fmt;
  if (spec.quantizer.is_sequential()) {
    mq::quant::SequentialQuantizer wq(spec.quantizer.cfgs.size());
    wq.set_from_attribute_config(spec.quantizer.cfgs);
    mq::quant::calibrate_and_fake_quant(wq, w);
    fmt = mq::hf_export::detect_quant_format(wq, &iq);
    out = mq::hf_export::export_linear("lin.weight", w, wq, &iq);
  } else {
    mq::quant::TensorQuantizer wq(spec.quantizer.cfgs.at(0));
    if ((*meta)["calibrated"].get<bool>()) mq::quant::calibrate_and_fake_quant(wq, w);
    fmt = mq::hf_export::detect_quant_format(wq, &iq);
    out = mq::hf_export::export_linear("lin.weight", w, wq, &iq);
  }
  EXPECT_EQ(mq::hf_export::quant_format_name(fmt), c.expect_format);

  std::vector<std::string> names;
  for (const auto& [k, v] : out) names.push_back(k.substr(std::string("lin.").size()));
  EXPECT_EQ(names, (*meta)["exported"].get<std::vector<std::string>>());
  for (const auto& k : (*meta)["exported"].get<std::vector<std::string>>()) {
    const at::Tensor want = get(c.name + "/" + k);
    ASSERT_TRUE(out.count("lin." + k)) << k;
    const at::Tensor got = out.at("lin." + k);
    EXPECT_EQ(got.scalar_type(), want.scalar_type()) << c.name << " " << k;
    EXPECT_EQ(got.sizes(), want.sizes()) << c.name << " " << k;
    if (got.sizes() == want.sizes() && got.scalar_type() == want.scalar_type()) {
      const auto gb = bytes_of(got), wb = bytes_of(want);
      size_t diff = 0;
      for (size_t i = 0; i < gb.size(); ++i) diff += gb[i] != wb[i];
      EXPECT_EQ(diff, 0u) << c.name << " " << k << ": " << diff << " of " << gb.size()
                          << " bytes differ";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    ModelOpt047, HfExportGolden,
    ::testing::Values(GoldenCase{"fp8_bf16", "FP8_DEFAULT_CFG", "fp8"},
                      GoldenCase{"fp8_fp16", "FP8_DEFAULT_CFG", "fp8"},
                      GoldenCase{"fp8_fp32", "FP8_DEFAULT_CFG", "fp8"},
                      GoldenCase{"fp8_pc_pt", "FP8_PER_CHANNEL_PER_TOKEN_CFG", "fp8_pc_pt"},
                      GoldenCase{"fp8_pb_wo", "FP8_2D_BLOCKWISE_WEIGHT_ONLY_CFG", "fp8_pb_wo"},
                      GoldenCase{"int8_sq", "INT8_DEFAULT_CFG", "int8_sq"},
                      GoldenCase{"int8_wo", "INT8_WEIGHT_ONLY_CFG", "int8_wo"},
                      GoldenCase{"int4_awq", "INT4_AWQ_CFG", "int4_awq"},
                      GoldenCase{"w4a8_awq", "W4A8_AWQ_BETA_CFG", "w4a8_awq"},
                      GoldenCase{"nvfp4_bf16", "NVFP4_DEFAULT_CFG", "nvfp4"},
                      GoldenCase{"nvfp4_fp32", "NVFP4_DEFAULT_CFG", "nvfp4"},
                      GoldenCase{"w4a16_nvfp4", "W4A16_NVFP4_CFG", "w4a16_nvfp4"},
                      GoldenCase{"w4a8_nvfp4_fp8", "W4A8_NVFP4_FP8_CFG", "w4a8_nvfp4_fp8"},
                      GoldenCase{"mxfp4", "MXFP4_DEFAULT_CFG", "mxfp4"},
                      GoldenCase{"w4a8_mxfp4_fp8", "W4A8_MXFP4_FP8_CFG", "w4a8_mxfp4_fp8"},
                      GoldenCase{"mxfp8", "MXFP8_DEFAULT_CFG", "mxfp8"}),
    [](const ::testing::TestParamInfo<GoldenCase>& i) { return i.param.name; });
