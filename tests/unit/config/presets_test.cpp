// Every preset in configs/ resolves to exactly ModelOpt's entries: compared with the golden dump of
// ModelOpt's own presets (tests/conformance/golden/presets_modelopt.json, nvidia-modelopt 0.47.0)
// and with a transcription of reference §3. Comparison is JSON equality of
// model_dump(exclude_unset) dumps.
#include "mq/config/presets.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <map>

#include "config_test_util.hpp"
#include "mq/config/loader.hpp"

namespace mq::config {
namespace {

using nlohmann::json;

// The real configs dir, whatever MQ_CONFIGS_DIR says in the environment.
class PresetEnv : public ::testing::Environment {
 public:
  void SetUp() override { setenv("MQ_CONFIGS_DIR", MQ_SOURCE_DIR "/configs", 1); }
};
const auto* const kEnv = ::testing::AddGlobalTestEnvironment(new PresetEnv);

const json& golden() { return testing::modelopt_presets_golden(); }

json dump_entries(const QuantizeConfig& q) {
  json a = json::array();
  for (const auto& e : q.quant_cfg) a.push_back(to_json(e));
  return a;
}

std::vector<std::string> golden_names() {
  std::vector<std::string> names;
  for (const auto& [k, v] : golden().at("presets").items()) names.push_back(k);
  return names;
}

class GoldenPreset : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenPreset, MatchesModelOptDump) {
  const std::string& name = GetParam();
  const json& g = golden().at("presets").at(name);
  QuantizeConfig q = load_quantize_config(name);
  testing::expect_matches_modelopt_dump(q, g, name);
  // Dumping and re-parsing gives the same config.
  EXPECT_EQ(parse_quantize_config(to_json(q)), q);
}

INSTANTIATE_TEST_SUITE_P(All, GoldenPreset, ::testing::ValuesIn(golden_names()),
                         [](const auto& info) { return info.param; });

TEST(Presets, IndexHoldsExactlyModelOptsChoices) {
  std::vector<std::string> in_choices;
  for (const auto& [k, v] : golden().at("presets").items())
    if (v.at("in_choices").get<bool>()) in_choices.push_back(k);
  std::sort(in_choices.begin(), in_choices.end());
  EXPECT_EQ(in_choices.size(), 39u);
  EXPECT_EQ(preset_names(), in_choices);
  EXPECT_EQ(kv_qformats(),
            (std::vector<std::string>{"fp8", "fp8_affine", "fp8_cast", "nvfp4", "nvfp4_affine",
                                      "nvfp4_cast", "nvfp4_rotate"}));
  EXPECT_EQ(model_qformats().size(), 34u);
}

TEST(Presets, QformatNamesResolveToTheSameFiles) {
  EXPECT_EQ(load_quantize_config("model/nvfp4"), load_quantize_config("NVFP4_DEFAULT_CFG"));
  EXPECT_EQ(load_quantize_config("kv/fp8_cast"), load_quantize_config("FP8_KV_CAST_CFG"));
  EXPECT_EQ(load_quantize_config("ptq/presets/model/fp8.json"),
            load_quantize_config("FP8_DEFAULT_CFG"));
  for (const auto& m : model_qformats()) EXPECT_NO_THROW(load_quantize_config("model/" + m)) << m;
  for (const auto& k : kv_qformats()) EXPECT_NO_THROW(load_quantize_config("kv/" + k)) << k;
  for (const char* d : {"fp8", "int8", "nvfp4", "nvfp4_fp8_mha", "nvfp4_fp8_conv"})
    EXPECT_NO_THROW(load_quantize_config(std::string("ptq/presets/diffusers/") + d)) << d;
}

TEST(Presets, NumericsSnippetsLoadAsAttributes) {
  QuantizerAttributeConfig n = load_quantizer_attribute("numerics/nvfp4");
  EXPECT_TRUE(n.is_nvfp4());
  EXPECT_DOUBLE_EQ(*n.effective_bits, 4.5);
  EXPECT_TRUE(load_quantizer_attribute("numerics/mxfp8").is_mx());
  EXPECT_EQ(load_quantizer_attribute("numerics/nvfp4_four_over_six").block_sizes->four_over_six, 1);
}

// --- reference §3, transcribed ---

json FP8() { return json::parse(R"({"num_bits": [4, 3], "axis": null})"); }
json NVFP4() {
  return json::parse(R"({"num_bits": [2, 1], "effective_bits": 4.5,
                         "block_sizes": {"-1": 16, "type": "dynamic", "scale_bits": [4, 3]}})");
}
json NVFP4_BS32() {
  return json::parse(
      R"({"num_bits": [2, 1], "block_sizes": {"-1": 32, "type": "dynamic", "scale_bits": [4, 3]}})");
}
json NVFP4_STATIC() {
  return json::parse(
      R"({"num_bits": [2, 1], "block_sizes": {"-1": 16, "type": "static", "scale_bits": [4, 3]}})");
}
json MX(json nb) {
  json c = json::parse(R"({"block_sizes": {"-1": 32, "type": "dynamic", "scale_bits": [8, 0]}})");
  c["num_bits"] = std::move(nb);
  return c;
}
json INT4_B128() {
  return json::parse(R"({"num_bits": 4, "block_sizes": {"-1": 128, "type": "static"}})");
}
json with(json c, const char* extra) {
  c.update(json::parse(extra));
  return c;
}
json on(const char* name, json cfg) { return {{"quantizer_name", name}, {"cfg", std::move(cfg)}}; }
json off(const char* name) { return {{"quantizer_name", name}, {"enable", false}}; }

json base() { return json::array({off("*")}); }
// §3's _default_disabled_quantizer_cfg. nvidia-modelopt 0.47.0 (the golden) has one more entry than
// the reference snapshot: "*self_attention.conv1d*" (Megatron-Core's GatedDeltaNet conv), right
// after "*linear_attn.conv1d*". configs/ follows 0.47.0.
json disabled() {
  json a = json::array();
  for (const char* n :
       {"*block_sparse_moe.gate*", "*linear_attn.conv1d*", "*self_attention.conv1d*",
        "*linear_attn.in_proj_a*", "*linear_attn.in_proj_b*", "*lm_head*", "*mixer.conv1d*",
        "*mlp.gate.*", "*mlp.shared_expert_gate.*", "*output_layer*", "*proj_out.*", "*router*",
        "mtp.*", "output.*", "*embed_vision*", "*vision_tower*", "*visual*", "*vision_model*",
        "*multi_modal_projector*"})
    a.push_back(off(n));
  for (const char* pc :
       {"nn.BatchNorm1d", "nn.BatchNorm2d", "nn.BatchNorm3d", "nn.LeakyReLU", "nn.Embedding"})
    a.push_back({{"quantizer_name", "*"}, {"parent_class", pc}, {"enable", false}});
  return a;
}
json mamba() {
  json a = json::array();
  for (const char* n :
       {"*fc1_latent_proj*", "*fc2_latent_proj*", "*q_proj*", "*k_proj*", "*v_proj*", "*o_proj*",
        "*self_attention.linear_qkv*", "*self_attention.linear_proj*"})
    a.push_back(off(n));
  return a;
}
// Concatenation: array arguments are spliced, objects appended. (Variadic, because a braced list of
// json would itself be read as one json value.)
template <typename... Parts>
json cat(const Parts&... parts) {
  json a = json::array();
  auto add = [&](const json& p) {
    if (p.is_array())
      a.insert(a.end(), p.begin(), p.end());
    else
      a.push_back(p);
  };
  (add(parts), ...);
  return a;
}

struct Expected {
  json algorithm;  // "(absent)" when the preset has no algorithm key
  json quant_cfg;
};

std::map<std::string, Expected> section3() {
  const json absent = "(absent)";
  auto wi = [](json w, json i) {
    return cat(base(), on("*weight_quantizer", w), on("*input_quantizer", i), disabled());
  };
  auto w_only = [](json w) {
    return cat(base(), on("*weight_quantizer", w), off("*input_quantizer"), disabled());
  };
  auto mlp_parts = [] {
    return json::array({on("*.mixer.up_proj.weight_quantizer", NVFP4()),
                        on("*.mixer.up_proj.input_quantizer", NVFP4()),
                        on("*.mixer.down_proj.weight_quantizer", NVFP4()),
                        on("*.mixer.down_proj.input_quantizer", NVFP4()),
                        on("*block_sparse_moe*weight_quantizer", NVFP4()),
                        on("*block_sparse_moe*input_quantizer", NVFP4())});
  };
  std::map<std::string, Expected> m;
  m["FP8_2D_BLOCKWISE_WEIGHT_ONLY_CFG"] = {
      "max", w_only(with(FP8(), R"({"block_sizes": {"-1": 128, "-2": 128}})"))};
  m["FP8_AFFINE_KV_CFG"] = {
      absent, cat(on("*[kv]_bmm_quantizer", FP8()),
                  on("*[kv]_bmm_quantizer",
                     with(FP8(), R"({"bias": {"-2": null, "-4": null, "type": "static"}})")))};
  m["FP8_DEFAULT_CFG"] = {"max", wi(FP8(), FP8())};
  m["FP8_KV_CFG"] = {absent, cat(on("*[kv]_bmm_quantizer", FP8()))};
  m["FP8_PER_CHANNEL_PER_TOKEN_CFG"] = {
      "max",
      wi(json::parse(R"({"num_bits": [4, 3], "axis": 0})"),
         json::parse(
             R"({"num_bits": [4, 3], "axis": null, "type": "dynamic", "block_sizes": {"-1": null}})"))};
  m["INT4_AWQ_CFG"] = {json::parse(R"({"method": "awq_lite", "alpha_step": 0.1})"),
                       w_only(INT4_B128())};
  m["INT4_BLOCKWISE_WEIGHT_ONLY_CFG"] = {"max", w_only(INT4_B128())};
  m["INT8_DEFAULT_CFG"] = {"max", wi(json::parse(R"({"num_bits": 8, "axis": 0})"),
                                     json::parse(R"({"num_bits": 8, "axis": null})"))};
  m["INT8_SMOOTHQUANT_CFG"] = {"smoothquant", m["INT8_DEFAULT_CFG"].quant_cfg};
  m["INT8_WEIGHT_ONLY_CFG"] = {"max", w_only(json::parse(R"({"num_bits": 8, "axis": 0})"))};
  m["MAMBA_MOE_FP8_AGGRESSIVE_CFG"] = {"max", cat(wi(FP8(), FP8()), mamba())};
  m["MAMBA_MOE_FP8_CONSERVATIVE_CFG"] = {
      "max", cat(wi(FP8(), FP8()), mamba(), off("*mixer.in_proj*"), off("*mixer.out_proj*"))};
  m["MAMBA_MOE_NVFP4_AGGRESSIVE_CFG"] = {"max", cat(wi(NVFP4(), NVFP4()), mamba())};
  m["MAMBA_MOE_NVFP4_CONSERVATIVE_CFG"] = {
      "max", cat(wi(NVFP4(), NVFP4()), mamba(), off("*mixer.in_proj*"), off("*mixer.out_proj*"))};
  m["MXFP4_DEFAULT_CFG"] = {nullptr, wi(MX({2, 1}), MX({2, 1}))};
  m["MXFP4_MLP_WEIGHT_ONLY_CFG"] = {
      nullptr, cat(base(), on("*mlp*weight_quantizer", MX({2, 1})),
                   on("*block_sparse_moe*weight_quantizer", MX({2, 1})), disabled())};
  m["MXFP6_DEFAULT_CFG"] = {nullptr, wi(MX({3, 2}), MX({3, 2}))};
  m["MXFP8_DEFAULT_CFG"] = {nullptr, wi(MX({4, 3}), MX({4, 3}))};
  m["MXINT8_DEFAULT_CFG"] = {nullptr, wi(MX(8), MX(8))};
  m["NVFP4_AFFINE_KV_CFG"] = {
      absent, cat(on("*[kv]_bmm_quantizer", NVFP4()),
                  on("*[kv]_bmm_quantizer",
                     with(NVFP4(), R"({"bias": {"-2": null, "-4": null, "type": "static"}})")))};
  m["NVFP4_AWQ_CLIP_CFG"] = {json::parse(R"({"method": "awq_clip"})"), wi(NVFP4(), NVFP4())};
  m["NVFP4_AWQ_FULL_CFG"] = {json::parse(R"({"method": "awq_full", "alpha_step": 0.1})"),
                             wi(NVFP4(), NVFP4())};
  m["NVFP4_AWQ_LITE_CFG"] = {"awq_lite", wi(NVFP4(), NVFP4())};
  m["NVFP4_DEFAULT_CFG"] = {"max", wi(NVFP4(), NVFP4())};
  m["NVFP4_EXPERTS_ONLY_CFG"] = {"max",
                                 cat(base(), on("*block_sparse_moe*weight_quantizer", NVFP4()),
                                     on("*block_sparse_moe*input_quantizer", NVFP4()),
                                     on("*.experts.*weight_quantizer", NVFP4()),
                                     on("*.experts.*input_quantizer", NVFP4()), disabled())};
  m["NVFP4_FOUR_OVER_SIX_CFG"] = {
      json::parse(
          R"({"method": "mse", "fp8_scale_sweep": false, "start_multiplier": 1.0, "stop_multiplier": 1.5, "step_size": 0.5})"),
      wi(json::parse(
             R"({"num_bits": [2, 1], "block_sizes": {"-1": 16, "type": "static", "scale_bits": [4, 3], "four_over_six": 1}})"),
         NVFP4())};
  m["NVFP4_FP8_MHA_CONFIG"] = {
      "max", cat(base(), on("*weight_quantizer", NVFP4()), on("*input_quantizer", NVFP4()),
                 off("*output_quantizer"), on("*[qkv]_bmm_quantizer", FP8()),
                 on("*softmax_quantizer", FP8()), on("*p_bmm_quantizer", FP8()),
                 on("transformer_blocks*bmm2_output_quantizer", FP8()))};
  m["NVFP4_KV_CFG"] = {absent, cat(on("*[kv]_bmm_quantizer", NVFP4()))};
  json q_rot = on("*q_bmm_quantizer", json::parse(R"({"rotate": true})"));
  q_rot["enable"] = false;
  m["NVFP4_KV_ROTATE_CFG"] = {
      "max", cat(q_rot, on("*k_bmm_quantizer", with(NVFP4(), R"({"rotate": true})")),
                 on("*v_bmm_quantizer", NVFP4()))};
  m["NVFP4_MLP_ONLY_CFG"] = {
      "max", cat(base(), on("*mlp*weight_quantizer", NVFP4()), on("*mlp*input_quantizer", NVFP4()),
                 mlp_parts(), on("*.experts.*weight_quantizer", NVFP4()),
                 on("*.experts.*input_quantizer", NVFP4()), disabled())};
  m["NVFP4_MLP_WEIGHT_ONLY_CFG"] = {
      "max", cat(base(), on("*mlp*weight_quantizer", NVFP4_BS32()),
                 on("*block_sparse_moe*weight_quantizer", NVFP4_BS32()), disabled())};
  m["NVFP4_OMLP_ONLY_CFG"] = {
      "max", cat(base(), on("*o_proj*weight_quantizer", NVFP4()),
                 on("*o_proj*input_quantizer", NVFP4()), on("*mlp*weight_quantizer", NVFP4()),
                 on("*mlp*input_quantizer", NVFP4()), mlp_parts(), disabled())};
  m["NVFP4_SVDQUANT_DEFAULT_CFG"] = {json::parse(R"({"method": "svdquant", "lowrank": 32})"),
                                     wi(NVFP4(), NVFP4())};
  m["NVFP4_W4A4_WEIGHT_LOCAL_HESSIAN_CFG"] = {
      json::parse(R"({"method": "local_hessian", "fp8_scale_sweep": true})"),
      wi(NVFP4_STATIC(), NVFP4())};
  m["NVFP4_W4A4_WEIGHT_MSE_FP8_SWEEP_CFG"] = {
      json::parse(R"({"method": "mse", "fp8_scale_sweep": true})"), wi(NVFP4_STATIC(), NVFP4())};
  m["W4A16_NVFP4_CFG"] = {"max", cat(base(), on("*weight_quantizer", NVFP4()), disabled())};
  m["W4A8_AWQ_BETA_CFG"] = {"awq_lite", wi(json::array({INT4_B128(), FP8()}), FP8())};
  m["W4A8_MXFP4_FP8_CFG"] = {nullptr, wi(MX({2, 1}), FP8())};
  m["W4A8_NVFP4_FP8_CFG"] = {"max", wi(NVFP4_BS32(), FP8())};
  // Recipe-only KV presets (§3 notes).
  m["FP8_KV_CAST_CFG"] = {
      absent, cat(on("*[kv]_bmm_quantizer", with(FP8(), R"({"use_constant_amax": true})")))};
  m["NVFP4_KV_CAST_CFG"] = {
      absent, cat(on("*[kv]_bmm_quantizer", with(NVFP4(), R"({"use_constant_amax": true})")))};
  return m;
}

TEST(Presets, Section3TranscriptionCoversEveryGoldenPreset) {
  auto m = section3();
  EXPECT_EQ(m.size(), 41u);
  for (const auto& n : golden_names()) EXPECT_TRUE(m.count(n)) << n;
}

class Section3Preset : public ::testing::TestWithParam<std::string> {};

TEST_P(Section3Preset, ResolvesToTheReferenceEntries) {
  const std::string& name = GetParam();
  const Expected ex = section3().at(name);
  QuantizeConfig q = load_quantize_config(name);
  json ours = dump_entries(q);
  ASSERT_EQ(ours.size(), ex.quant_cfg.size()) << ours.dump();
  for (size_t i = 0; i < ours.size(); ++i)
    EXPECT_EQ(ours[i], ex.quant_cfg[i]) << name << " entry " << i;
  if (ex.algorithm == "(absent)") {
    EXPECT_FALSE(q.has_algorithm());
  } else {
    EXPECT_EQ(to_json(q).at("algorithm"), ex.algorithm);
  }
}

INSTANTIATE_TEST_SUITE_P(All, Section3Preset, ::testing::ValuesIn(golden_names()),
                         [](const auto& info) { return info.param; });

TEST(Presets, NeedCalibrationExamplesOfSection3) {
  EXPECT_TRUE(need_calibration(load_quantize_config("FP8_DEFAULT_CFG")));
  EXPECT_FALSE(need_calibration(load_quantize_config("FP8_PER_CHANNEL_PER_TOKEN_CFG")));
  EXPECT_FALSE(need_calibration(load_quantize_config("FP8_2D_BLOCKWISE_WEIGHT_ONLY_CFG")));
  EXPECT_TRUE(need_calibration(load_quantize_config("INT4_AWQ_CFG")));
  EXPECT_TRUE(need_calibration(load_quantize_config("W4A8_AWQ_BETA_CFG")));
  EXPECT_TRUE(need_calibration(load_quantize_config("NVFP4_DEFAULT_CFG")));
}

TEST(Presets, KvMergeLikeHfPtq) {
  QuantizeConfig main = load_quantize_config("MXFP4_DEFAULT_CFG");  // algorithm None
  QuantizeConfig kv = load_quantize_config("kv/fp8_cast");
  QuantizeConfig both = update_quant_cfg_with_kv_cache_quant(main, kv.quant_cfg);
  EXPECT_EQ(both.quant_cfg.size(), main.quant_cfg.size() + 1);
  EXPECT_TRUE(both.quant_cfg.back().single_cfg()->use_constant_amax);
  EXPECT_EQ(to_json(both).at("algorithm"), "max");  // a falsy algorithm becomes "max"
}

}  // namespace
}  // namespace mq::config
