#include "mq/nn/conversion.hpp"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "mq/config/json.hpp"
#include "mq/core/error.hpp"
#include "mq/nn/quant_module.hpp"

namespace {

using namespace mq::nn;
using mq::config::QuantizerAttributeConfig;

struct Block : Module {
  std::string type_name() const override { return "Block"; }
};
struct ToyAttention : Module {
  std::string type_name() const override { return "ToyAttention"; }
};

std::vector<mq::config::QuantizerCfgEntry> cfg(const char* json) {
  return mq::config::normalize_quant_cfg_list(nlohmann::ordered_json::parse(json));
}

QuantizerAttributeConfig attr(const char* json) {
  return mq::config::parse_quantizer_attribute(nlohmann::ordered_json::parse(json));
}

// embed, layers.0.{self_attn.{q_proj,k_proj}, mlp}, lm_head; ToyAttention registered as an
// attention.
std::shared_ptr<Module> make_model() {
  at::manual_seed(3);
  auto root = std::make_shared<Block>();
  root->register_module("embed", std::make_shared<Embedding>(at::randn({10, 8})));
  auto layers = std::make_shared<ModuleList>();
  auto layer = std::make_shared<Block>();
  auto attn = std::make_shared<ToyAttention>();
  attn->register_module("q_proj", std::make_shared<Linear>(at::randn({8, 8}), at::Tensor()));
  attn->register_module("k_proj", std::make_shared<Linear>(at::randn({4, 8}), at::randn({4})));
  layer->register_module("self_attn", attn);
  layer->register_module("mlp", std::make_shared<Linear>(at::randn({16, 8}), at::Tensor()));
  layers->push_back(layer);
  root->register_module("layers", layers);
  root->register_module("lm_head", std::make_shared<Linear>(at::randn({10, 8}), at::Tensor()));
  register_quant_attention("ToyAttention");
  replace_quant_module(*root);
  return root;
}

mq::quant::TensorQuantizer& tq(Module& m, const std::string& name) {
  return dynamic_cast<QuantizerModule&>(m.get_submodule(name)).tensor();
}
QuantizerModule& qmod(Module& m, const std::string& name) {
  return dynamic_cast<QuantizerModule&>(m.get_submodule(name));
}

TEST(Fnmatch, PythonSemantics) {
  // Expected values from Python fnmatch.fnmatch.
  EXPECT_TRUE(fnmatch("a.b.weight_quantizer", "*weight_quantizer"));
  EXPECT_TRUE(fnmatch("a.b.weight_quantizer", "*"));
  EXPECT_FALSE(fnmatch("a.b.weight_quantizer.0", "*weight_quantizer"));
  EXPECT_TRUE(fnmatch("a.b.weight_quantizer.0", "*weight_quantizer*"));
  EXPECT_TRUE(fnmatch("layers.1.mlp", "layers.?.mlp"));
  EXPECT_FALSE(fnmatch("layers.12.mlp", "layers.?.mlp"));
  EXPECT_TRUE(fnmatch("layers.3.x", "layers.[0-4].x"));
  EXPECT_FALSE(fnmatch("layers.5.x", "layers.[0-4].x"));
  EXPECT_TRUE(fnmatch("layers.5.x", "layers.[!0-4].x"));
  EXPECT_FALSE(fnmatch("layers.3.x", "layers.[!0-4].x"));
  EXPECT_TRUE(fnmatch("a]b", "a[]]b"));
  EXPECT_TRUE(fnmatch("a[b", "a[b"));  // unclosed bracket: literal
  EXPECT_FALSE(fnmatch("A", "a"));
  EXPECT_TRUE(fnmatch("", "*"));
  EXPECT_FALSE(fnmatch("", "?"));
  EXPECT_TRUE(fnmatch("xyz", "*y*z"));
  EXPECT_FALSE(fnmatch("b", "[z-a]"));  // reversed range matches nothing
  EXPECT_TRUE(fnmatch("model.lm_head.input_quantizer", "*lm_head*"));
}

TEST(Fnmatch, FusedExpertsNormalisation) {
  EXPECT_EQ(normalize_fused_experts_quantizer_name("m.experts.gate_up_proj_weight_quantizers.3"),
            "m.experts.gate_up_proj_weight_quantizer");
  EXPECT_EQ(normalize_fused_experts_quantizer_name("m.experts.down_proj_input_quantizer.12.x"),
            "m.experts.down_proj_input_quantizer.x");
  EXPECT_EQ(normalize_fused_experts_quantizer_name("m.weight_quantizer.0a"),
            "m.weight_quantizer.0a");
  QuantizerMatcher m("*weight_quantizer");
  EXPECT_TRUE(m.matches("m.experts.gate_up_proj_weight_quantizers.3"));
  EXPECT_TRUE(m.matches("m.fc.weight_quantizer.1"));  // the normalised second attempt (as ModelOpt)
  QuantizerMatcher p([](const std::string& n) { return n.find("mlp") != std::string::npos; });
  EXPECT_TRUE(p.matches("layers.0.mlp.weight_quantizer"));
}

TEST(Conversion, DefaultsAndQuantizerNames) {
  auto m = make_model();
  std::vector<std::string> names;
  for (auto& l : named_tensor_quantizers(*m)) names.push_back(l.name);
  std::vector<std::string> want = {"embed.weight_quantizer",
                                   "embed.input_quantizer",
                                   "embed.output_quantizer",
                                   "layers.0.self_attn.q_proj.input_quantizer",
                                   "layers.0.self_attn.q_proj.output_quantizer",
                                   "layers.0.self_attn.q_proj.weight_quantizer",
                                   "layers.0.self_attn.k_proj.input_quantizer",
                                   "layers.0.self_attn.k_proj.output_quantizer",
                                   "layers.0.self_attn.k_proj.weight_quantizer",
                                   "layers.0.self_attn.q_bmm_quantizer",
                                   "layers.0.self_attn.k_bmm_quantizer",
                                   "layers.0.self_attn.v_bmm_quantizer",
                                   "layers.0.self_attn.p_bmm_quantizer",
                                   "layers.0.mlp.input_quantizer",
                                   "layers.0.mlp.output_quantizer",
                                   "layers.0.mlp.weight_quantizer",
                                   "lm_head.input_quantizer",
                                   "lm_head.output_quantizer",
                                   "lm_head.weight_quantizer"};
  EXPECT_EQ(names, want);
  EXPECT_TRUE(is_quantized(*m));
  EXPECT_TRUE(is_quantized_linear(m->get_submodule("lm_head")));
  EXPECT_FALSE(is_quantized_linear(m->get_submodule("embed")));
  EXPECT_FALSE(is_quantized_linear(m->get_submodule("layers.0.self_attn")));
  EXPECT_EQ(weight_attr_names(m->get_submodule("embed")), std::vector<std::string>{"weight"});
  EXPECT_TRUE(weight_attr_names(m->get_submodule("layers.0.self_attn")).empty());
  EXPECT_EQ(representative_weight_quantizer(m->get_submodule("lm_head")),
            &qmod(*m, "lm_head.weight_quantizer"));
}

TEST(Conversion, SetQuantizerByCfgOrderAndParentClass) {
  auto m = make_model();
  set_quantizer_by_cfg(*m, cfg(R"([
      {"quantizer_name": "*", "enable": false},
      {"quantizer_name": "*weight_quantizer", "cfg": {"num_bits": [4, 3], "axis": null}},
      {"quantizer_name": "*input_quantizer", "cfg": {"num_bits": [4, 3], "axis": null}},
      {"quantizer_name": "*lm_head*", "enable": false},
      {"quantizer_name": "*[kv]_bmm_quantizer", "cfg": {"num_bits": [4, 3]}, "parent_class": "ToyAttention"},
      {"quantizer_name": "*k_proj*", "parent_class": "nn.Linear", "enable": false}])"));
  EXPECT_TRUE(tq(*m, "layers.0.mlp.weight_quantizer").is_enabled());
  EXPECT_TRUE(tq(*m, "layers.0.mlp.weight_quantizer").num_bits().is_float(4, 3));
  EXPECT_FALSE(tq(*m, "layers.0.mlp.weight_quantizer").axis().has_value());
  EXPECT_TRUE(tq(*m, "embed.weight_quantizer").is_enabled());
  EXPECT_FALSE(tq(*m, "embed.input_quantizer").is_enabled());  // hard-disabled absorbs the cfg
  EXPECT_TRUE(tq(*m, "embed.input_quantizer").num_bits().is_float(4, 3));
  EXPECT_FALSE(tq(*m, "lm_head.weight_quantizer").is_enabled());
  EXPECT_TRUE(tq(*m, "layers.0.self_attn.k_bmm_quantizer").is_enabled());
  EXPECT_TRUE(tq(*m, "layers.0.self_attn.v_bmm_quantizer").is_enabled());
  EXPECT_FALSE(tq(*m, "layers.0.self_attn.q_bmm_quantizer").is_enabled());
  EXPECT_FALSE(tq(*m, "layers.0.self_attn.k_proj.weight_quantizer").is_enabled());
  EXPECT_FALSE(tq(*m, "layers.0.self_attn.k_proj.input_quantizer").is_enabled());
  EXPECT_TRUE(tq(*m, "layers.0.self_attn.q_proj.input_quantizer").is_enabled());
  // parent_class never matches a container that is not that class.
  set_quantizer_by_cfg(
      *m, cfg(R"([{"quantizer_name": "*", "parent_class": "nn.Embedding", "enable": false}])"));
  EXPECT_FALSE(tq(*m, "embed.weight_quantizer").is_enabled());
  EXPECT_TRUE(tq(*m, "layers.0.mlp.weight_quantizer").is_enabled());
  try {
    set_quantizer_by_cfg(
        *m, cfg(R"([{"quantizer_name": "*", "parent_class": "nn.Conv9d", "enable": false}])"));
    FAIL();
  } catch (const mq::ConfigError& e) {
    EXPECT_NE(
        std::string(e.what()).find("parent_class 'nn.Conv9d' not found in QuantModuleRegistry"),
        std::string::npos);
  }
}

TEST(Conversion, FullVsPartialAndBuffersKept) {
  auto m = make_model();
  auto& w = tq(*m, "layers.0.mlp.weight_quantizer");
  w.set_amax(at::full({16, 1}, 0.5f));
  set_quantizer_attributes_full(
      *m, "*mlp.weight_quantizer",
      attr(R"({"num_bits": 4, "axis": 0, "narrow_range": true, "rotate": true})"));
  EXPECT_EQ(w.num_bits().bits, 4);
  EXPECT_TRUE(w.narrow_range());
  EXPECT_TRUE(w.rotate_is_enabled());
  ASSERT_TRUE(w.amax().has_value());
  EXPECT_TRUE(at::equal(*w.amax(), at::full({16, 1}, 0.5f)));  // buffers survive a full update
  // Partial {"enable": false} also turns rotation off; enable-only true does not bring it back.
  disable_quantizer(*m, "*mlp.weight_quantizer");
  EXPECT_FALSE(w.is_enabled());
  EXPECT_FALSE(w.rotate_is_enabled());
  enable_quantizer(*m, "*mlp.weight_quantizer");
  EXPECT_TRUE(w.is_enabled());
  EXPECT_FALSE(w.rotate_is_enabled());
  EXPECT_TRUE(w.narrow_range());  // partial keeps the rest
  // Partial num_bits only.
  set_quantizer_attributes_partial(*m, "*mlp.weight_quantizer", attr(R"({"num_bits": 6})"));
  EXPECT_EQ(w.num_bits().bits, 6);
  EXPECT_TRUE(w.narrow_range());
  // A full update reverts unspecified fields to the defaults.
  set_quantizer_attributes_full(*m, "*mlp.weight_quantizer", attr(R"({"num_bits": 8})"));
  EXPECT_FALSE(w.narrow_range());
  EXPECT_FALSE(w.axis().has_value());
}

TEST(Conversion, TensorSequentialSwitching) {
  auto m = make_model();
  set_quantizer_by_cfg(*m, cfg(R"([
      {"quantizer_name": "*weight_quantizer", "cfg": [
          {"num_bits": 4, "block_sizes": {"-1": 128, "type": "static"}},
          {"num_bits": [4, 3]}], "enable": true}])"));
  auto& q = qmod(*m, "layers.0.mlp.weight_quantizer");
  ASSERT_TRUE(q.is_sequential());
  EXPECT_EQ(q.leaves()[0]->num_bits().bits, 4);
  EXPECT_TRUE(q.leaves()[1]->num_bits().is_float(4, 3));
  std::vector<std::string> names;
  for (auto& l : named_tensor_quantizers(*m))
    if (l.name.rfind("layers.0.mlp", 0) == 0) names.push_back(l.name);
  EXPECT_EQ(names, (std::vector<std::string>{
                       "layers.0.mlp.input_quantizer", "layers.0.mlp.output_quantizer",
                       "layers.0.mlp.weight_quantizer.0", "layers.0.mlp.weight_quantizer.1"}));
  // Stages are matched by "*" and by their own names, not by "*weight_quantizer" ... except through
  // the normalised name, which ModelOpt also tries.
  set_quantizer_by_cfg(*m,
                       cfg(R"([{"quantizer_name": "*mlp.weight_quantizer.1", "enable": false}])"));
  EXPECT_TRUE(q.leaves()[0]->is_enabled());
  EXPECT_FALSE(q.leaves()[1]->is_enabled());
  // Partial on the container broadcasts.
  disable_quantizer(*m, "layers.0.mlp.weight_quantizer");
  EXPECT_FALSE(q.leaves()[0]->is_enabled());
  // Partial list needs a SequentialQuantizer.
  EXPECT_THROW(
      set_quantizer_attributes_partial(*m, "lm_head.input_quantizer",
                                       std::vector<QuantizerAttributeConfig>{enable_only(true)}),
      mq::ConfigError);
  // A single cfg downgrades.
  set_quantizer_by_cfg(
      *m,
      cfg(R"([{"quantizer_name": "*mlp.weight_quantizer", "cfg": {"num_bits": 8, "axis": 0}}])"));
  EXPECT_FALSE(q.is_sequential());
  EXPECT_EQ(q.tensor().axis()->dims, std::vector<int>{0});
}

TEST(Conversion, ContextRestoresPropertiesAndTypes) {
  auto m = make_model();
  set_quantizer_by_cfg(*m, cfg(R"([
      {"quantizer_name": "*mlp.weight_quantizer", "cfg": [{"num_bits": 4}, {"num_bits": [4, 3]}]},
      {"quantizer_name": "*lm_head.weight_quantizer", "cfg": {"num_bits": 4, "axis": 0}}])"));
  tq(*m, "lm_head.weight_quantizer").set_amax(at::full({10, 1}, 2.0f));
  EXPECT_THROW((void)set_quantizer_by_cfg_context(
                   *m, cfg(R"([{"quantizer_name": "*", "cfg": [{"num_bits": 4}]}])")),
               mq::ConfigError);
  {
    auto ctx = set_quantizer_by_cfg_context(
        *m, cfg(R"([{"quantizer_name": "*", "cfg": {"num_bits": [4, 3]}},
                                                        {"quantizer_name": "*input_quantizer", "enable": false}])"));
    EXPECT_FALSE(qmod(*m, "layers.0.mlp.weight_quantizer").is_sequential());
    EXPECT_TRUE(tq(*m, "lm_head.weight_quantizer").num_bits().is_float(4, 3));
    EXPECT_FALSE(tq(*m, "lm_head.input_quantizer").is_enabled());
    tq(*m, "lm_head.weight_quantizer").set_amax(at::full({10, 1}, 3.0f));
  }
  auto& q = qmod(*m, "layers.0.mlp.weight_quantizer");
  ASSERT_TRUE(q.is_sequential());
  EXPECT_EQ(q.leaves()[0]->num_bits().bits, 4);
  EXPECT_TRUE(q.leaves()[1]->num_bits().is_float(4, 3));
  auto& lw = tq(*m, "lm_head.weight_quantizer");
  EXPECT_EQ(lw.num_bits().bits, 4);
  EXPECT_EQ(lw.axis()->dims, std::vector<int>{0});
  EXPECT_TRUE(
      at::equal(*lw.amax(), at::full({10, 1}, 3.0f)));  // buffers are not part of the restore
  EXPECT_TRUE(tq(*m, "lm_head.input_quantizer").is_enabled());
  EXPECT_FALSE(tq(*m, "embed.input_quantizer").is_enabled());
}

TEST(Conversion, SummaryFormat) {
  auto m = make_model();
  set_quantizer_by_cfg(*m, cfg(R"([{"quantizer_name": "*", "enable": false},
                                   {"quantizer_name": "*mlp.weight_quantizer", "cfg": {"num_bits": 8, "axis": 0}}])"));
  tq(*m, "layers.0.mlp.weight_quantizer").set_amax(at::linspace(0.01, 0.5, 16).reshape({16, 1}));
  std::string s = print_quant_summary(*m, std::nullopt, false);
  std::string line = std::string("layers.0.mlp.weight_quantizer") + std::string(80 - 29, ' ') +
                     " TensorQuantizer(8 bit fake axis=0 amax=[1.00e-02, 5.00e-01](16) "
                     "calibrator=MaxCalibrator quant)";
  EXPECT_NE(s.find(line + "\n"), std::string::npos) << s;
  EXPECT_NE(s.find("embed.input_quantizer" + std::string(80 - 21, ' ') +
                   " HardDisabledTensorQuantizer(disabled)\n"),
            std::string::npos)
      << s;
  EXPECT_EQ(s.substr(s.rfind('\n') + 1), "19 TensorQuantizers found in model");
  auto dir = std::filesystem::temp_directory_path() / "mq_nn_summary_test";
  print_quant_summary(*m, dir.string(), false);
  EXPECT_TRUE(std::filesystem::exists(dir / ".quant_summary.txt"));
  std::filesystem::remove_all(dir);
}

TEST(Conversion, FoldWeightAndPostprocessAmax) {
  auto m = make_model();
  set_quantizer_by_cfg(*m, cfg(R"([{"quantizer_name": "*", "enable": false},
                                   {"quantizer_name": "*mlp.weight_quantizer", "cfg": {"num_bits": 8, "axis": 0}}])"));
  auto& lin = m->get_submodule("layers.0.mlp");
  at::Tensor w0 = lin.parameter("weight").clone();
  auto& q = tq(*m, "layers.0.mlp.weight_quantizer");
  at::Tensor amax = w0.abs().amax({1}, true);
  q.set_amax(amax);
  postprocess_amax(*m, "*mlp.weight_quantizer", [](const at::Tensor& a) { return a * 2; });
  EXPECT_TRUE(at::equal(*q.amax(), amax * 2));
  EXPECT_THROW(postprocess_amax(*m, "*mlp.weight_quantizer",
                                [](const at::Tensor& a) { return a.flatten(); }),
               mq::Error);
  at::Tensor want = q.forward(w0);
  fold_weight(*m);
  EXPECT_TRUE(at::equal(lin.parameter("weight"), want));
  EXPECT_FALSE(q.is_enabled());
  EXPECT_FALSE(q.has_amax_buffer());
  // The folded layer now computes with the folded weight.
  auto x = at::randn({2, 8});
  EXPECT_TRUE(at::equal(dynamic_cast<Linear&>(lin).forward(x), at::linear(x, want)));
}

TEST(Conversion, QuantizerStateRoundTrip) {
  auto m = make_model();
  set_quantizer_by_cfg(*m, cfg(R"([
      {"quantizer_name": "*weight_quantizer", "cfg": [{"num_bits": 4, "block_sizes": {"-1": 8}}, {"num_bits": [4, 3]}]},
      {"quantizer_name": "*input_quantizer", "cfg": {"num_bits": [4, 3]}},
      {"quantizer_name": "*lm_head*", "enable": false}])"));
  auto& s0 = *qmod(*m, "layers.0.mlp.weight_quantizer").leaves()[0];
  s0.set_amax(at::arange(1, 17, at::kFloat).reshape({16, 1}));
  tq(*m, "layers.0.mlp.input_quantizer").set_amax(at::scalar_tensor(3.5f));
  auto dir = std::filesystem::temp_directory_path() / "mq_nn_state_test";
  save_quantizer_state(*m, dir.string(), nlohmann::json{{"note", "x"}});
  nlohmann::json extra;
  auto st = load_quantizer_state(dir.string(), &extra);
  EXPECT_EQ(extra["note"], "x");
  auto fresh = make_model();  // converted, no cfg applied
  restore_quantizer_state(*fresh, st);
  EXPECT_EQ(print_quant_summary(*fresh, std::nullopt, false),
            print_quant_summary(*m, std::nullopt, false));
  auto& r0 = *qmod(*fresh, "layers.0.mlp.weight_quantizer").leaves()[0];
  EXPECT_TRUE(at::equal(*r0.amax(), *s0.amax()));
  EXPECT_FALSE(tq(*fresh, "lm_head.input_quantizer").is_enabled());
  auto x = at::randn({3, 8});
  EXPECT_TRUE(at::equal(dynamic_cast<Linear&>(fresh->get_submodule("layers.0.mlp")).forward(x),
                        dynamic_cast<Linear&>(m->get_submodule("layers.0.mlp")).forward(x)));
  // Name sets must match.
  ModelQuantizerState bad = st;
  bad.properties["nope.weight_quantizer"] = bad.properties["lm_head.input_quantizer"];
  EXPECT_THROW(restore_quantizer_state(*fresh, bad), mq::Error);
  std::filesystem::remove_all(dir);
}

}  // namespace
