// QuantizeConfig: entry validation (§4.1), legacy normalisation (§4.2, the cases of §7 "Config
// normalisation"), algorithm configs (§1.5), need_calibration and the KV merge helper (§3 notes).
#include <gtest/gtest.h>

#include "config_test_util.hpp"
#include "mq/config/quantize_config.hpp"

namespace mq::config {
namespace {

using testing::config_error;
using testing::has_all;
using testing::ojson;

std::vector<QuantizerCfgEntry> norm(const std::string& text) {
  return normalize_quant_cfg_list(ojson::parse(text), ErrorContext{"q.json", "quant_cfg"});
}
std::string norm_err(const std::string& text) {
  return config_error([&] { norm(text); });
}
nlohmann::json dump(const std::vector<QuantizerCfgEntry>& es) {
  nlohmann::json a = nlohmann::json::array();
  for (const auto& e : es) a.push_back(to_json(e));
  return a;
}
nlohmann::json J(const char* s) { return nlohmann::json::parse(s); }

// --- §7 normalisation cases ---

TEST(Normalize, LegacySingleKeyWithCfg) {
  auto es = norm(R"([{"*weight_quantizer": {"num_bits": 8, "axis": 0}}])");
  ASSERT_EQ(es.size(), 1u);
  EXPECT_EQ(es[0].quantizer_name, "*weight_quantizer");
  EXPECT_TRUE(es[0].is_enabled());
  EXPECT_FALSE(es[0].enable.has_value());
  ASSERT_NE(es[0].single_cfg(), nullptr);
  EXPECT_EQ(to_json(*es[0].single_cfg()), J(R"({"num_bits": 8, "axis": 0})"));
  EXPECT_EQ(dump(es), J(R"([{"quantizer_name": "*weight_quantizer", "cfg": {"num_bits": 8, "axis": 0}}])"));
}

TEST(Normalize, LegacyEnableOnlyBecomesPureToggle) {
  auto es = norm(R"([{"*input_quantizer": {"enable": false}}])");
  ASSERT_EQ(es.size(), 1u);
  EXPECT_FALSE(es[0].is_enabled());
  EXPECT_FALSE(es[0].has_cfg());
  // ModelOpt's normaliser always sets "cfg" (here to None), so the dump carries it.
  EXPECT_EQ(dump(es), J(R"([{"quantizer_name": "*input_quantizer", "cfg": null, "enable": false}])"));
}

TEST(Normalize, NnScopedDict) {
  auto es = norm(R"([{"nn.Linear": {"*": {"enable": false}}}])");
  ASSERT_EQ(es.size(), 1u);
  EXPECT_EQ(es[0].parent_class, "nn.Linear");
  EXPECT_EQ(es[0].quantizer_name, "*");
  EXPECT_FALSE(es[0].is_enabled());
  EXPECT_FALSE(es[0].has_cfg());
}

TEST(Normalize, FlatDictWithDefaultKeyKeepsInsertionOrder) {
  auto es = norm(R"({"default": {"enable": false}, "*weight_quantizer": {"num_bits": 8}})");
  ASSERT_EQ(es.size(), 2u);
  EXPECT_EQ(es[0].quantizer_name, "*");
  EXPECT_FALSE(es[0].is_enabled());
  EXPECT_EQ(es[1].quantizer_name, "*weight_quantizer");
  EXPECT_EQ(es[1].single_cfg()->num_bits, NumBits::integer(8));
  // Order is the file's, not alphabetical.
  auto rev = norm(R"({"z*": {"num_bits": 4}, "a*": {"enable": false}})");
  EXPECT_EQ(rev[0].quantizer_name, "z*");
  EXPECT_EQ(rev[1].quantizer_name, "a*");
}

TEST(Normalize, Errors) {
  EXPECT_TRUE(has_all(norm_err(R"([{"quantizer_name": "*"}])"),
                      {"q.json: quant_cfg[0]: ", "must specify 'cfg', 'enable', or both"}));
  EXPECT_TRUE(has_all(norm_err(R"([{}])"), {"q.json: quant_cfg[0]: ", "invalid quant_cfg entry"}));
  EXPECT_TRUE(has_all(norm_err(R"([{"*weight_quantizer": {"num_bits": 8}, "*input_quantizer": {"enable": false}}])"),
                      {"quant_cfg[0]: ", "invalid quant_cfg entry"}));
  for (const char* e : {"", R"(, "enable": true)"}) {
    for (const char* cfg : {"{}", "[]", "[{}]", "[{}, {}]"}) {
      std::string t = std::string(R"([{"quantizer_name": "*w", "cfg": )") + cfg + e + "}]";
      EXPECT_TRUE(has_all(norm_err(t), {"q.json: quant_cfg[0].cfg: ", "at least one quantizer attribute"})) << t;
    }
  }
  EXPECT_TRUE(has_all(norm_err(R"([{"quantizer_name": "*", "cfg": 42}])"),
                      {"quant_cfg[0].cfg: ", "42 is not a quantizer attribute dict"}));
  EXPECT_TRUE(has_all(norm_err(R"("*")"), {"q.json: quant_cfg: ", "must be a list of entries"}));
  EXPECT_TRUE(has_all(norm_err(R"(["*"])"), {"quant_cfg[0]: ", "invalid quant_cfg entry"}));
  EXPECT_TRUE(has_all(norm_err(R"([{"quantizer_name": "*", "enable": false, "cfgs": {}}])"),
                      {"quant_cfg[0].cfgs: ", "unknown quant_cfg entry key"}));
  EXPECT_TRUE(has_all(norm_err(R"([{"quantizer_name": 3, "enable": false}])"), {"quant_cfg[0].quantizer_name: "}));
  EXPECT_TRUE(has_all(norm_err(R"([{"quantizer_name": "*", "enable": "no"}])"), {"quant_cfg[0].enable: "}));
  EXPECT_TRUE(has_all(norm_err(R"([{"nn.Linear": 3}])"), {"quant_cfg[0][\"nn.Linear\"]: ", "must map"}));
}

TEST(Normalize, EmptyCfgWithEnableFalseIsPureDisable) {
  for (const char* cfg : {"{}", "[]", "[{}]", "[{}, {}]"}) {
    auto es = norm(std::string(R"([{"quantizer_name": "*", "cfg": )") + cfg + R"(, "enable": false}])");
    ASSERT_EQ(es.size(), 1u);
    EXPECT_FALSE(es[0].has_cfg()) << cfg;
    EXPECT_FALSE(es[0].is_enabled());
    EXPECT_EQ(to_json(es[0]), J(R"({"quantizer_name": "*", "cfg": null, "enable": false})"));
  }
}

TEST(Normalize, ListCfgRoundTrips) {
  const char* text = R"([{"quantizer_name": "*weight_quantizer",
                          "cfg": [{"num_bits": 4, "block_sizes": {"-1": 128, "type": "static"}},
                                  {"num_bits": [4, 3]}]}])";
  auto es = norm(text);
  ASSERT_TRUE(es[0].is_sequential());
  ASSERT_EQ(es[0].sequential_cfg()->size(), 2u);
  EXPECT_EQ((*es[0].sequential_cfg())[1].num_bits, NumBits::floating(4, 3));
  EXPECT_EQ(dump(es), J(text));
  EXPECT_EQ(norm(dump(es).dump()), es);
}

// --- more of ModelOpt's normaliser ---

TEST(Normalize, EntryEnableOverridesEnableInsideCfg) {
  auto es = norm(R"([{"quantizer_name": "*", "cfg": {"num_bits": 4, "enable": false}}])");
  EXPECT_TRUE(es[0].is_enabled());
  EXPECT_FALSE(es[0].single_cfg()->enable);
  EXPECT_TRUE(es[0].effective_cfg().enable);
  auto off = norm(R"([{"quantizer_name": "*", "cfg": {"num_bits": 4}, "enable": false}])");
  EXPECT_FALSE(off[0].effective_cfg().enable);
  EXPECT_EQ(off[0].effective_cfg().num_bits, NumBits::integer(4));
}

TEST(Normalize, LegacyListValueIsSequential) {
  auto es = norm(R"([{"*weight_quantizer": [{"num_bits": 4, "block_sizes": {"-1": 128}}, {"num_bits": [4, 3]}]}])");
  ASSERT_TRUE(es[0].is_sequential());
  EXPECT_EQ(es[0].sequential_cfg()->size(), 2u);
}

TEST(Normalize, LegacyEmptyDictSetsCfgNone) {
  // {"*": {}} -> cfg None (set) and implicit enable: a partial "enable: true" update.
  auto es = norm(R"([{"*lm_head*": {}}])");
  EXPECT_FALSE(es[0].has_cfg());
  EXPECT_TRUE(es[0].is_enabled());
  EXPECT_EQ(to_json(es[0]), J(R"({"quantizer_name": "*lm_head*", "cfg": null})"));
}

TEST(Normalize, NnScopedMultiKey) {
  auto es = norm(R"([{"nn.Linear": {"*input_quantizer": {"num_bits": 8, "axis": null},
                                     "*weight_quantizer": {"enable": false}}},
                     {"nn.Conv2d": {"*weight_quantizer": {"num_bits": 4}}, "*lm_head*": {"enable": false}}])");
  ASSERT_EQ(es.size(), 4u);
  EXPECT_EQ(es[0].parent_class, "nn.Linear");
  EXPECT_EQ(es[0].quantizer_name, "*input_quantizer");
  EXPECT_TRUE(es[0].has_cfg());
  EXPECT_EQ(es[1].quantizer_name, "*weight_quantizer");
  EXPECT_FALSE(es[1].is_enabled());
  EXPECT_EQ(es[2].parent_class, "nn.Conv2d");
  EXPECT_FALSE(es[3].parent_class);
  EXPECT_EQ(es[3].quantizer_name, "*lm_head*");
  EXPECT_EQ(to_json(es[0]), J(R"({"quantizer_name": "*input_quantizer", "parent_class": "nn.Linear",
                                  "cfg": {"num_bits": 8, "axis": null}})"));
}

TEST(Normalize, ErrorsInsideLegacyCfgPointAtTheUsersKeys) {
  EXPECT_TRUE(has_all(norm_err(R"([{"*weight_quantizer": {"num_bits": 0}}])"),
                      {"q.json: quant_cfg[0][\"*weight_quantizer\"].num_bits: ", "positive integer"}));
  EXPECT_TRUE(has_all(norm_err(R"({"*": {"num_bits": [3, 3]}})"),
                      {"q.json: quant_cfg[\"*\"].num_bits: [3,3] is not a supported float format"}));
  EXPECT_TRUE(has_all(norm_err(R"([{"nn.Linear": {"*": {"axis": 0, "block_sizes": {"-1": 8}}}}])"),
                      {"quant_cfg[0][\"nn.Linear\"][\"*\"].block_sizes: ", "axis must be null"}));
  EXPECT_TRUE(has_all(norm_err(R"([{"quantizer_name": "*", "cfg": [{"num_bits": 4}, {"enable": true}]}])"),
                      {"quant_cfg[0].cfg[1]: ", "cannot specify only"}));
}

// --- QuantizeConfig ---

TEST(QuantizeConfig, DefaultIsInt8PerTensorEverywhereWithMax) {
  QuantizeConfig q;
  ASSERT_EQ(q.quant_cfg.size(), 1u);
  EXPECT_EQ(to_json(q.quant_cfg[0]), J(R"({"quantizer_name": "*", "cfg": {"num_bits": 8, "axis": null}})"));
  ASSERT_EQ(q.algorithm.size(), 1u);
  EXPECT_EQ(q.algorithm[0].method, "max");
  EXPECT_FALSE(q.effective_bits);
  EXPECT_TRUE(need_calibration(q));
  EXPECT_EQ(to_json(q, /*exclude_unset=*/false)["algorithm"], "max");
  EXPECT_EQ(to_json(q), J("{}"));
  EXPECT_EQ(parse_quantize_config(J("{}")), q);
}

TEST(QuantizeConfig, TopLevelKeys) {
  auto q = parse_quantize_config(J(R"({"quant_cfg": [{"quantizer_name": "*", "enable": false}],
                                        "algorithm": "smoothquant", "effective_bits": 4.5})"));
  EXPECT_EQ(q.fields_set, (std::set<std::string>{"quant_cfg", "algorithm", "effective_bits"}));
  EXPECT_EQ(q.algorithm[0].method, "smoothquant");
  EXPECT_DOUBLE_EQ(*q.effective_bits, 4.5);
  auto e = [](const char* t) { return config_error([&] { parse_quantize_config(J(t), ErrorContext{"r.json", ""}); }); };
  EXPECT_TRUE(has_all(e(R"({"quant_cfgs": []})"), {"r.json: quant_cfgs: ", "unknown quantize config key"}));
  EXPECT_TRUE(has_all(e(R"({"effective_bits": 17})"), {"r.json: effective_bits: ", "(0, 16]"}));
  EXPECT_TRUE(has_all(e(R"([])"), {"r.json: $: ", "quantize config dict"}));
}

// --- algorithms ---

AlgorithmConfig algo(const char* text) {
  return parse_algorithm(ojson::parse(text), ErrorContext{"a.json", "algorithm"}).at(0);
}
std::string algo_err(const char* text) {
  return config_error([&] { parse_algorithm(ojson::parse(text), ErrorContext{"a.json", "algorithm"}); });
}

TEST(Algorithm, FormsAndDefaults) {
  AlgorithmConfig s = algo(R"("max")");
  EXPECT_EQ(s.form, AlgorithmConfig::Form::kString);
  EXPECT_TRUE(s.distributed_sync);
  EXPECT_EQ(to_json(s), "max");
  AlgorithmConfig n = algo("null");
  EXPECT_TRUE(n.is_none());
  EXPECT_EQ(to_json(n), nullptr);
  AlgorithmConfig d = algo(R"({"method": "awq_lite", "alpha_step": 0.1})");
  EXPECT_EQ(d.form, AlgorithmConfig::Form::kDict);
  EXPECT_DOUBLE_EQ(d.alpha_step, 0.1);
  EXPECT_EQ(to_json(d), J(R"({"method": "awq_lite", "alpha_step": 0.1})"));
  EXPECT_TRUE(algo(R"({"method": null})").is_none());
  bool is_list = false;
  auto list = parse_algorithm(ojson::parse(R"(["max", {"method": "mse", "step_size": 0.5}, null])"), {}, &is_list);
  EXPECT_TRUE(is_list);
  ASSERT_EQ(list.size(), 3u);
  EXPECT_DOUBLE_EQ(list[1].step_size, 0.5);
  EXPECT_TRUE(list[2].is_none());

  AlgorithmConfig lh = algo(R"("local_hessian")");
  EXPECT_TRUE(lh.fp8_scale_sweep);
  EXPECT_EQ(lh.block_size, 16);
  EXPECT_FALSE(algo(R"("mse")").fp8_scale_sweep);
  EXPECT_DOUBLE_EQ(algo(R"("mse")").start_multiplier, 0.25);
  EXPECT_DOUBLE_EQ(algo(R"("mse")").stop_multiplier, 4.0);
  AlgorithmConfig gptq = algo(R"("gptq")");
  EXPECT_EQ(gptq.block_size, 128);
  EXPECT_DOUBLE_EQ(gptq.perc_damp, 0.01);
  EXPECT_TRUE(gptq.layerwise.get_qdq_activations_from_prev_layer);
  EXPECT_FALSE(algo(R"({"method": "gptq", "layerwise": {"get_qdq_activations_from_prev_layer": false}})")
                   .layerwise.get_qdq_activations_from_prev_layer);
  EXPECT_FALSE(algo(R"("max")").layerwise.get_qdq_activations_from_prev_layer);
  AlgorithmConfig clip = algo(R"("awq_clip")");
  EXPECT_EQ(clip.max_co_batch_size, 1024);
  EXPECT_EQ(clip.max_tokens_per_batch, 64);
  EXPECT_DOUBLE_EQ(clip.min_clip_ratio, 0.5);
  EXPECT_DOUBLE_EQ(clip.shrink_step, 0.05);
  EXPECT_EQ(algo(R"("svdquant")").lowrank, 32);
  EXPECT_DOUBLE_EQ(algo(R"("smoothquant")").alpha, 1.0);
  AlgorithmConfig head = algo(R"("nvfp4_act_headroom")");
  EXPECT_DOUBLE_EQ(head.rho, 16384.0);
  EXPECT_DOUBLE_EQ(head.upper_percentile, 99.99);
  ASSERT_TRUE(head.scale_algorithm);
  EXPECT_EQ(head.scale_algorithm->method, "max");
  AlgorithmConfig lsq = algo(R"("lsq")");
  EXPECT_EQ(lsq.learnable_amax, std::vector<std::string>{"post"});
  EXPECT_FALSE(lsq.scale_algorithm);
}

TEST(Algorithm, RangesAndKeys) {
  EXPECT_TRUE(has_all(algo_err(R"("maxx")"), {"a.json: algorithm: ", "is not one of \"max\""}));
  EXPECT_TRUE(has_all(algo_err(R"({"alpha": 0.5})"), {"a.json: algorithm: ", "needs a \"method\""}));
  EXPECT_TRUE(has_all(algo_err(R"({"method": "max", "alpha": 0.5})"),
                      {"algorithm.alpha: ", "unknown algorithm 'max' key"}));
  EXPECT_TRUE(has_all(algo_err(R"({"method": "smoothquant", "alpha": 1.5})"), {"algorithm.alpha: ", "[0, 1]"}));
  EXPECT_DOUBLE_EQ(algo(R"({"method": "smoothquant", "alpha": 0})").alpha, 0.0);
  EXPECT_TRUE(has_all(algo_err(R"({"method": "awq_lite", "alpha_step": 0})"), {"algorithm.alpha_step: ", "(0, 1]"}));
  EXPECT_TRUE(has_all(algo_err(R"({"method": "awq_clip", "min_clip_ratio": 1.0})"), {"(0, 1)"}));
  EXPECT_TRUE(has_all(algo_err(R"({"method": "awq_full", "shrink_step": 1.5})"), {"algorithm.shrink_step: "}));
  EXPECT_DOUBLE_EQ(algo(R"({"method": "awq_full", "alpha_step": 0.2, "shrink_step": 1})").shrink_step, 1.0);
  EXPECT_TRUE(has_all(algo_err(R"({"method": "mse", "step_size": 0})"), {"algorithm.step_size: "}));
  EXPECT_TRUE(has_all(algo_err(R"({"method": "local_hessian", "block_size": 0})"), {"algorithm.block_size: "}));
  EXPECT_TRUE(has_all(algo_err(R"({"method": "gptq", "perc_damp": 1.1})"), {"algorithm.perc_damp: "}));
  EXPECT_TRUE(has_all(algo_err(R"({"method": "gptq", "block_size": 1.5})"), {"not an integer"}));
  EXPECT_TRUE(has_all(algo_err(R"({"method": "max", "moe_calib_experts_ratio": 0})"),
                      {"algorithm.moe_calib_experts_ratio: ", "(0, 1]"}));
  EXPECT_DOUBLE_EQ(*algo(R"({"method": "max", "moe_calib_experts_ratio": 1})").moe_calib_experts_ratio, 1.0);
  EXPECT_TRUE(has_all(algo_err(R"({"method": "nvfp4_act_headroom", "rho": 28672})"), {"algorithm.rho: "}));
  EXPECT_TRUE(has_all(algo_err(R"({"method": "nvfp4_act_headroom", "weight_scale_algorithm": {"method": "gptq"}})"),
                      {"algorithm.weight_scale_algorithm.method: "}));
  AlgorithmConfig h = algo(R"({"method": "nvfp4_act_headroom", "weight_scale_algorithm": {"method": "mse", "fp8_scale_sweep": true}})");
  EXPECT_EQ(h.scale_algorithm->method, "mse");
  EXPECT_TRUE(h.scale_algorithm->fp8_scale_sweep);
  EXPECT_TRUE(has_all(algo_err(R"(["max", ["mse"]])"), {"algorithm[1]: ", "nested lists"}));
  EXPECT_TRUE(has_all(algo_err("3"), {"a.json: algorithm: "}));
}

TEST(Algorithm, LayerwiseRules) {
  EXPECT_TRUE(has_all(algo_err(R"({"method": "max", "layerwise": {"checkpoint_dir": "/tmp/x"}})"),
                      {"algorithm.layerwise.checkpoint_dir: ", "requires layerwise.enable"}));
  EXPECT_EQ(algo(R"({"method": "max", "layerwise": {"enable": true, "checkpoint_dir": "/c"}})").layerwise.checkpoint_dir, "/c");
  for (const char* m : {"max", "mse", "local_hessian"})
    EXPECT_FALSE(algo((std::string(R"({"method": ")") + m + R"(", "layerwise": {"calib_mutates_weights": false}})").c_str())
                     .layerwise.calib_mutates_weights);
  for (const char* m : {"gptq", "awq_lite", "smoothquant"})
    EXPECT_TRUE(has_all(algo_err((std::string(R"({"method": ")") + m + R"(", "layerwise": {"calib_mutates_weights": false}})").c_str()),
                        {"algorithm.layerwise.calib_mutates_weights: ", "mutates layer weights"}))
        << m;
  EXPECT_TRUE(has_all(algo_err(R"({"method": "max", "layerwise": {"save_every": 0}})"), {"layerwise.save_every: "}));
  EXPECT_TRUE(has_all(algo_err(R"({"method": "max", "layerwise": {"every": 1}})"), {"layerwise.every: "}));
  EXPECT_EQ(to_json(algo(R"({"method": "max", "layerwise": {"enable": true}})")),
            J(R"({"method": "max", "layerwise": {"enable": true}})"));
}

TEST(Algorithm, SharedStatesAndLsq) {
  AlgorithmConfig a = algo(R"({"method": "max", "shared_states": {"weight_global_amax": {"patterns": ["model\\.layers\\.\\d+"]}}})");
  ASSERT_TRUE(a.shared_states_weight_global_amax);
  EXPECT_EQ(a.shared_states_weight_global_amax->size(), 1u);
  EXPECT_TRUE(has_all(algo_err(R"({"method": "max", "shared_states": {"input_amax": {}}})"),
                      {"algorithm.shared_states.input_amax: ", "unknown shared_states key"}));
  EXPECT_TRUE(has_all(algo_err(R"({"method": "mse", "shared_states": {"weight_global_amax": {"patterns": ["("]}}})"),
                      {"shared_states.weight_global_amax.patterns[0]: ", "invalid regex"}));
  EXPECT_TRUE(has_all(algo_err(R"({"method": "lsq", "tied_amax": true})"), {"algorithm.tied_amax: "}));
  EXPECT_TRUE(algo(R"({"method": "lsq", "tied_amax": true, "learnable_amax": ["pre", "post"]})").tied_amax);
  EXPECT_TRUE(algo(R"({"method": "lsq", "tied_amax": true, "learnable_amax": []})").tied_amax);
  AlgorithmConfig pre = algo(R"({"method": "lsq", "learnable_amax": "pre", "scale_algorithm": {"method": "local_hessian"}})");
  EXPECT_EQ(pre.learnable_amax, std::vector<std::string>{"pre"});
  EXPECT_EQ(pre.scale_algorithm->method, "local_hessian");
  EXPECT_EQ(to_json(pre), J(R"({"method": "lsq", "learnable_amax": "pre", "scale_algorithm": {"method": "local_hessian"}})"));
  EXPECT_TRUE(has_all(algo_err(R"({"method": "lsq", "learnable_amax": ["mid"]})"), {"learnable_amax[0]: "}));
}

// --- need_calibration (§3 notes) and helpers ---

QuantizeConfig qc(const char* text) { return parse_quantize_config(J(text)); }

TEST(NeedCalibration, ListCfgsAndQuirks) {
  // A static list cfg on an input quantizer needs data; a dynamic one does not.
  EXPECT_TRUE(need_calibration(qc(R"({"quant_cfg": [{"quantizer_name": "*input_quantizer",
      "cfg": [{"num_bits": [4, 3]}]}], "algorithm": "max"})")));
  EXPECT_FALSE(need_calibration(qc(R"({"quant_cfg": [{"quantizer_name": "*input_quantizer",
      "cfg": [{"num_bits": [4, 3], "type": "dynamic"}]}], "algorithm": "max"})")));
  // List items use their own enable, not the entry's (ModelOpt's behaviour).
  EXPECT_TRUE(need_calibration(qc(R"({"quant_cfg": [{"quantizer_name": "*input_quantizer",
      "cfg": [{"num_bits": [4, 3]}], "enable": false}], "algorithm": "max"})")));
  // Weight quantizers never need data; disabled ones neither.
  EXPECT_FALSE(need_calibration(qc(R"({"quant_cfg": [{"quantizer_name": "*", "enable": false},
      {"quantizer_name": "*weight_quantizer", "cfg": {"num_bits": 8}}], "algorithm": "max"})")));
  EXPECT_FALSE(need_calibration(qc(R"({"quant_cfg": [{"quantizer_name": "*", "enable": false}], "algorithm": null})")));
  // An enable-only True entry counts (no cfg, so not dynamic).
  EXPECT_TRUE(need_calibration(qc(R"({"quant_cfg": [{"quantizer_name": "*lm_head*", "enable": true}], "algorithm": "max"})")));
  // Any algorithm other than None / the string "max" needs calibration, even {"method": "max"}.
  const char* off = R"([{"quantizer_name": "*", "enable": false}])";
  EXPECT_TRUE(need_calibration(qc((std::string(R"({"quant_cfg": )") + off + R"(, "algorithm": {"method": "max"}})").c_str())));
  EXPECT_TRUE(need_calibration(qc((std::string(R"({"quant_cfg": )") + off + R"(, "algorithm": ["max"]})").c_str())));
  EXPECT_TRUE(need_calibration(qc((std::string(R"({"quant_cfg": )") + off + R"(, "algorithm": "awq_lite"})").c_str())));
  EXPECT_FALSE(need_calibration(qc((std::string(R"({"quant_cfg": )") + off + "}").c_str())));
}

TEST(KvMerge, AppendsAndDefaultsAlgorithm) {
  QuantizeConfig kv = qc(R"({"quant_cfg": [{"quantizer_name": "*[kv]_bmm_quantizer", "cfg": {"num_bits": [4, 3]}}]})");
  EXPECT_FALSE(kv.has_algorithm());
  EXPECT_TRUE(calibration_algorithms(kv).at(0).is_none());

  QuantizeConfig main = qc(R"({"quant_cfg": [{"quantizer_name": "*", "enable": false}], "algorithm": "awq_lite"})");
  QuantizeConfig merged = update_quant_cfg_with_kv_cache_quant(main, kv.quant_cfg);
  ASSERT_EQ(merged.quant_cfg.size(), 2u);
  EXPECT_EQ(merged.quant_cfg[1].quantizer_name, "*[kv]_bmm_quantizer");
  EXPECT_EQ(merged.algorithm[0].method, "awq_lite");
  EXPECT_EQ(main.quant_cfg.size(), 1u);  // the input is not modified

  QuantizeConfig none_algo = qc(R"({"quant_cfg": [], "algorithm": null})");
  QuantizeConfig m2 = update_quant_cfg_with_kv_cache_quant(none_algo, kv.quant_cfg);
  ASSERT_EQ(m2.quant_cfg.size(), 2u);
  EXPECT_EQ(to_json(m2.quant_cfg[0]), J(R"({"quantizer_name": "*", "enable": false})"));
  EXPECT_EQ(to_json(m2)["algorithm"], "max");

  QuantizeConfig m3 = update_quant_cfg_with_kv_cache_quant(kv, kv.quant_cfg);
  EXPECT_EQ(m3.quant_cfg.size(), 2u);
  EXPECT_EQ(to_json(m3)["algorithm"], "max");
}

TEST(FindEntry, LastExactMatchWins) {
  auto es = norm(R"([{"quantizer_name": "*input_quantizer", "cfg": {"num_bits": 8}},
                     {"quantizer_name": "*weight_quantizer", "enable": false},
                     {"quantizer_name": "*input_quantizer", "cfg": {"num_bits": 4}}])");
  const QuantizerCfgEntry* e = find_quant_cfg_entry_by_path(es, "*input_quantizer");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->single_cfg()->num_bits, NumBits::integer(4));
  EXPECT_EQ(find_quant_cfg_entry_by_path(es, "*input*"), nullptr);
}

}  // namespace
}  // namespace mq::config
