#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "mq/calib/calibrate.hpp"
#include "mq/config/presets.hpp"
#include "mq/export/hf_checkpoint.hpp"
#include "mq/io/safetensors_torch.hpp"
#include "mq/models/causal_lm.hpp"
#include "mq/nn/quant_module.hpp"

// End to end against ModelOpt (tests/export_golden/gen_export.py): the tiny Llama loaded with
// mq::models::load_causal_lm (bf16, as ModelOpt loaded it), quantized with mq::calib::quantize (the
// preset, algorithm forced to "max" as the generator does) on the same token ids, exported. Every
// tensor must be bit-identical for every preset, the activation-derived scalars (input_scale,
// k_scale, v_scale) included: they come from our bf16 forward, which reproduces HF's eager bf16 CPU
// forward exactly on this model (if a change to the forward breaks that, the failure names the
// scale and both values).

namespace fs = std::filesystem;

namespace {

const fs::path kGoldenRoot = fs::path(MQ_SOURCE_DIR) / "tests/export_golden";

// Scales derived from the calibration forward (the rest comes from the weights alone).
bool activation_scalar(const std::string& n) {
  for (const char* s : {".input_scale", ".k_scale", ".v_scale"})
    if (n.size() > std::strlen(s) &&
        n.compare(n.size() - std::strlen(s), std::string::npos, s) == 0)
      return true;
  return false;
}

struct Case {
  std::string model;                             ///< tests/export_golden/<model>
  std::optional<c10::ScalarType> compute_dtype;  ///< load dtype (default: the checkpoint's bf16)
  std::string golden;
  std::vector<std::string> presets;
};
void PrintTo(const Case& c, std::ostream* os) { *os << c.model << "/" << c.golden; }

class ModelOptPipeline : public ::testing::TestWithParam<Case> {};

TEST_P(ModelOptPipeline, LoadQuantizeCalibrateExport) {
  const Case& c = GetParam();
  const fs::path kGolden = kGoldenRoot / c.model;
  mq::models::register_hf_quant_modules();
  for (const char* k : {"nn.BatchNorm1d", "nn.BatchNorm2d", "nn.BatchNorm3d", "nn.LeakyReLU"})
    if (!mq::nn::is_registered_quant_module(k))
      mq::nn::register_quant_module(k, [](std::shared_ptr<mq::nn::Module> m) { return m; });
  mq::models::LoadOptions lo;
  lo.dtype = c.compute_dtype;
  auto lm = mq::models::load_causal_lm((kGolden / "source").string(), lo);
  ASSERT_EQ(lm->dtype(), c.compute_dtype.value_or(at::kBFloat16));
  // As gen_export.py: the preset, KV entries appended, algorithm forced to "max".
  mq::config::QuantizeConfig cfg = mq::config::load_quantize_config(c.presets[0]);
  for (size_t i = 1; i < c.presets.size(); ++i) {
    auto kv = mq::config::load_quantize_config(c.presets[i]);
    cfg.quant_cfg.insert(cfg.quant_cfg.end(), kv.quant_cfg.begin(), kv.quant_cfg.end());
  }
  cfg.algorithm = {mq::config::AlgorithmConfig{}};
  cfg.algorithm_is_list = false;
  ASSERT_EQ(cfg.algorithm[0].method, "max");
  const at::Tensor ids =
      mq::io::load_safetensor((kGolden / "calib_ids.safetensors").string(), "input_ids");
  mq::calib::quantize(*lm, cfg, [&](mq::nn::Module&) { lm->forward(ids); });

  const fs::path out = fs::temp_directory_path() /
                       ("mq_export_pipeline_" + std::to_string(::getpid())) /
                       (c.model + "_" + c.golden);
  fs::remove_all(out);
  fs::create_directories(out.parent_path());
  mq::hf_export::export_hf_checkpoint(*lm, (kGolden / "source").string(), out.string());

  auto got = mq::io::load_safetensors((out / "model.safetensors").string());
  auto want = mq::io::load_safetensors((kGolden / c.golden / "model.safetensors").string());
  std::vector<std::string> gn, wn;
  for (const auto& [n, t] : got) gn.push_back(n);
  for (const auto& [n, t] : want) wn.push_back(n);
  ASSERT_EQ(gn, wn);
  for (const auto& [n, w] : want) {
    const at::Tensor& g = got.at(n);
    ASSERT_EQ(g.scalar_type(), w.scalar_type()) << n;
    ASSERT_EQ(g.sizes(), w.sizes()) << n;
    const bool same = at::equal(g.reshape({-1}).view(at::kByte), w.reshape({-1}).view(at::kByte));
    if (activation_scalar(n))
      EXPECT_TRUE(same) << n << ": " << g.item<float>() << " vs ModelOpt " << w.item<float>();
    else
      EXPECT_TRUE(same) << n << " differs";
  }
  auto rj = [](const fs::path& p) {
    std::ifstream f(p);
    return nlohmann::ordered_json::parse(f);
  };
  EXPECT_EQ(rj(out / "hf_quant_config.json").dump(),
            rj(kGolden / c.golden / "hf_quant_config.json").dump());
  EXPECT_EQ(rj(out / "config.json").dump(), rj(kGolden / c.golden / "config.json").dump());
  fs::remove_all(out.parent_path());
}

INSTANTIATE_TEST_SUITE_P(
    Presets, ModelOptPipeline,
    ::testing::Values(Case{"llama", std::nullopt, "fp8", {"FP8_DEFAULT_CFG"}},
                      Case{"llama", std::nullopt, "fp8_pc_pt", {"FP8_PER_CHANNEL_PER_TOKEN_CFG"}},
                      Case{"llama", std::nullopt, "int8_sq", {"INT8_DEFAULT_CFG"}},
                      Case{"llama", std::nullopt, "int8_wo", {"INT8_WEIGHT_ONLY_CFG"}},
                      Case{"llama", std::nullopt, "int4_awq", {"INT4_AWQ_CFG"}},
                      Case{"llama", std::nullopt, "w4a8_awq", {"W4A8_AWQ_BETA_CFG"}},
                      Case{"llama", std::nullopt, "fp8_kv", {"FP8_DEFAULT_CFG", "FP8_KV_CFG"}},
                      Case{"llama", std::nullopt, "nvfp4", {"NVFP4_DEFAULT_CFG"}},
                      Case{"llama", std::nullopt, "w4a16_nvfp4", {"W4A16_NVFP4_CFG"}},
                      Case{"llama", std::nullopt, "mxfp8", {"MXFP8_DEFAULT_CFG"}},
                      Case{"llama", std::nullopt, "mxfp4", {"MXFP4_DEFAULT_CFG"}},
                      Case{"qwen3_moe", std::nullopt, "fp8", {"FP8_DEFAULT_CFG"}},
                      Case{"qwen3_moe", std::nullopt, "nvfp4", {"NVFP4_DEFAULT_CFG"}}),
    [](const auto& info) { return info.param.model + "_" + info.param.golden; });

// Calibrated and held in fp32, exported in the config's bf16: weight-only formats depend on the
// weights alone (bf16 values, exact in fp32, amax = a max), so the export is still ModelOpt's bit
// for bit.
INSTANTIATE_TEST_SUITE_P(
    Fp32Compute, ModelOptPipeline,
    ::testing::Values(Case{"llama", at::kFloat, "int8_wo", {"INT8_WEIGHT_ONLY_CFG"}},
                      Case{"llama", at::kFloat, "int4_awq", {"INT4_AWQ_CFG"}},
                      Case{"llama", at::kFloat, "w4a16_nvfp4", {"W4A16_NVFP4_CFG"}},
                      Case{"llama", at::kFloat, "fp8_pc_pt", {"FP8_PER_CHANNEL_PER_TOKEN_CFG"}},
                      Case{"llama", at::kFloat, "mxfp8", {"MXFP8_DEFAULT_CFG"}}),
    [](const auto& info) { return info.param.model + "_" + info.param.golden; });

}  // namespace
