// ModelOpt's recipe YAML read directly: PyYAML safe_load scalar types, anchors and merge keys, the
// `# modelopt-schema:` preamble and the imports + list two-document form; every vendored preset
// YAML (configs/modelopt_recipes/configs) resolves to exactly its JSON translation in configs/, and
// every PTQ recipe ModelOpt ships resolves to ModelOpt's own load_recipe dump
// (tests/conformance/golden/presets_modelopt.json "recipes", nvidia-modelopt 0.47.0).
#include <gtest/gtest.h>

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "config_test_util.hpp"
#include "mq/config/loader.hpp"
#include "mq/config/presets.hpp"

namespace fs = std::filesystem;

namespace mq::config {
namespace {

using nlohmann::json;
using testing::config_error;
using testing::has_all;
using testing::ojson;

const fs::path kConfigs = MQ_SOURCE_DIR "/configs";

// Scratch files for the parser tests, with MQ_CONFIGS_DIR on the real configs for the rest.
class YamlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!yaml_supported())
      GTEST_SKIP() << "built without libyaml (cmake/setup.sh installs libyaml-dev)";
    char tmpl[] = "/tmp/mq_config_yaml_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    if (const char* old = std::getenv("MQ_CONFIGS_DIR")) old_env_ = old;
    setenv("MQ_CONFIGS_DIR", kConfigs.c_str(), 1);
  }
  void TearDown() override {
    if (dir_.empty()) return;
    if (old_env_)
      setenv("MQ_CONFIGS_DIR", old_env_->c_str(), 1);
    else
      unsetenv("MQ_CONFIGS_DIR");
    fs::remove_all(dir_);
  }
  fs::path write(const std::string& rel, const std::string& text) {
    fs::path p = dir_ / rel;
    fs::create_directories(p.parent_path());
    std::ofstream(p) << text;
    return p;
  }
  ConfigDocument load(const std::string& rel) { return load_config_document(dir_ / rel); }

  fs::path dir_;
  std::optional<std::string> old_env_;
};

TEST_F(YamlTest, PlainScalarsGetPyYamlSafeLoadTypes) {
  write("s.yaml",
        "t1: yes\nt2: On\nt3: TRUE\nf1: no\nf2: off\n"
        "i1: 16\ni2: -1\ni3: 0x10\ni4: 010\ni5: 1_000\ni6: 0b101\n"
        "x1: 1.0e-5\nx2: .5\nx3: -.inf\nx4: 2.\n"
        "s1: 1e-5\ns2: '1'\ns3: \"yes\"\ns4: e4m3\ns5: '*[kv]_bmm_quantizer'\n"
        "n1: ~\nn2: null\nn3:\n"
        "g1: !!str 16\ng2: !!float 3\n"
        "fold: >-\n  two\n  lines\n");
  const ojson b = load("s.yaml").body;
  EXPECT_EQ(b.at("t1"), true);
  EXPECT_EQ(b.at("t2"), true);
  EXPECT_EQ(b.at("t3"), true);
  EXPECT_EQ(b.at("f1"), false);
  EXPECT_EQ(b.at("f2"), false);
  EXPECT_EQ(b.at("i1"), 16);
  EXPECT_TRUE(b.at("i1").is_number_integer());
  EXPECT_EQ(b.at("i2"), -1);
  EXPECT_EQ(b.at("i3"), 16);
  EXPECT_EQ(b.at("i4"), 8);  // YAML 1.1 octal, as PyYAML
  EXPECT_EQ(b.at("i5"), 1000);
  EXPECT_EQ(b.at("i6"), 5);
  EXPECT_TRUE(b.at("x1").is_number_float());
  EXPECT_EQ(b.at("x1").get<double>(), 1.0e-5);
  EXPECT_EQ(b.at("x2").get<double>(), 0.5);
  EXPECT_TRUE(std::isinf(b.at("x3").get<double>()) && b.at("x3").get<double>() < 0);
  EXPECT_EQ(b.at("x4").get<double>(), 2.0);
  EXPECT_EQ(b.at("s1"), "1e-5");  // PyYAML's float needs a '.'
  EXPECT_EQ(b.at("s2"), "1");
  EXPECT_EQ(b.at("s3"), "yes");
  EXPECT_EQ(b.at("s4"), "e4m3");
  EXPECT_EQ(b.at("s5"), "*[kv]_bmm_quantizer");
  EXPECT_TRUE(b.at("n1").is_null());
  EXPECT_TRUE(b.at("n2").is_null());
  EXPECT_TRUE(b.at("n3").is_null());
  EXPECT_EQ(b.at("g1"), "16");
  EXPECT_TRUE(b.at("g2").is_number_float());
  EXPECT_EQ(b.at("fold"), "two lines");
}

TEST_F(YamlTest, IntKeysBecomeJsonStringKeysAnchorsAndMergeKeysWork) {
  write("k.yaml",
        "base: &b {num_bits: [2, 1], block_sizes: {-1: 16, type: dynamic, scale_bits: [4, 3]}}\n"
        "copy: *b\n"
        "over:\n  <<: *b\n  num_bits: 4\n");
  const ojson b = load("k.yaml").body;
  EXPECT_EQ(b.at("base").at("block_sizes").dump(),
            R"({"-1":16,"type":"dynamic","scale_bits":[4,3]})");
  EXPECT_EQ(b.at("copy"), b.at("base"));
  EXPECT_EQ(b.at("over").at("num_bits"), 4);  // explicit keys win over merged ones
  EXPECT_EQ(b.at("over").at("block_sizes"), b.at("base").at("block_sizes"));
}

TEST_F(YamlTest, SchemaPreambleAndImportsPlusListDocuments) {
  write("numerics/fp8.yaml",
        "# modelopt-schema: modelopt.torch.quantization.config.QuantizerAttributeConfig\n"
        "num_bits: e4m3\naxis:\n");
  write("units/kv.yaml",
        "# A list snippet that imports.\n"
        "# modelopt-schema: modelopt.torch.quantization.config.QuantizerCfgListConfig\n"
        "imports:\n  fp8: ../numerics/fp8\n---\n"
        "  - quantizer_name: '*[kv]_bmm_quantizer'\n    cfg:\n      $import: fp8\n");
  write("p.yaml",
        "# modelopt-schema: modelopt.torch.quantization.config.QuantizeConfig\n"
        "imports:\n  kv: units/kv\n\nalgorithm: max\nquant_cfg:\n  - quantizer_name: '*'\n    "
        "enable: false\n"
        "  - $import: kv\n");
  const ConfigDocument kv = load("units/kv.yaml");
  EXPECT_EQ(kv.schema, "QuantizerCfgListConfig");
  EXPECT_EQ(kv.body.dump(),
            R"([{"quantizer_name":"*[kv]_bmm_quantizer","cfg":{"num_bits":"e4m3","axis":null}}])");
  const ConfigDocument p = load("p.yaml");
  EXPECT_EQ(p.schema, "QuantizeConfig");
  EXPECT_EQ(p.body.at("quant_cfg").size(), 2u);
  const QuantizeConfig q = load_quantize_config((dir_ / "p.yaml").string());
  ASSERT_EQ(q.quant_cfg.size(), 2u);
  EXPECT_EQ(
      to_json(q.quant_cfg[1]),
      json::parse(
          R"({"quantizer_name":"*[kv]_bmm_quantizer","cfg":{"num_bits":[4,3],"axis":null}})"));
}

TEST_F(YamlTest, BadYamlAndBadShapesAreOneLineErrorsNamingTheFile) {
  write("bad.yaml", "a: [1, 2\nb: 3\n");
  EXPECT_TRUE(has_all(config_error([&] { load("bad.yaml"); }), {"bad.yaml", "line", "column"}));
  write("three.yaml", "a: 1\n---\nb: 2\n---\nc: 3\n");
  EXPECT_TRUE(has_all(config_error([&] { load("three.yaml"); }),
                      {"three.yaml", "expected 1 or 2 YAML documents"}));
  write("hdr.yaml", "- 1\n---\n- 2\n");
  EXPECT_TRUE(has_all(config_error([&] { load("hdr.yaml"); }),
                      {"hdr.yaml", "first YAML document must be a mapping"}));
  write("alias.yaml", "a: *nope\n");
  EXPECT_TRUE(has_all(config_error([&] { load("alias.yaml"); }), {"alias.yaml", "line 1"}));
  write("tag.yaml", "a: !!python/tuple [4, 3]\n");
  EXPECT_TRUE(
      has_all(config_error([&] { load("tag.yaml"); }), {"tag.yaml", "unsupported YAML tag"}));
  write("two_schemas.yaml",
        "# modelopt-schema: modelopt.torch.quantization.config.QuantizeConfig\n"
        "# modelopt-schema: modelopt.torch.quantization.config.QuantizeConfig\nalgorithm: max\n");
  EXPECT_TRUE(has_all(config_error([&] { load("two_schemas.yaml"); }),
                      {"two_schemas.yaml", "multiple modelopt-schema"}));
  // The schema is validated like the JSON "$schema".
  write("badattr.yaml",
        "# modelopt-schema: modelopt.torch.quantization.config.QuantizerAttributeConfig\nnum_bits: "
        "[3, 3]\n");
  EXPECT_TRUE(has_all(config_error([&] { load("badattr.yaml"); }), {"badattr.yaml", "num_bits"}));
}

TEST_F(YamlTest, RecipeFilesAndDirectoriesGiveTheirQuantizeSection) {
  write(
      "r.yaml",
      "metadata:\n  recipe_type: ptq\n  description: x\nquantize:\n  algorithm: max\n  quant_cfg:\n"
      "    - quantizer_name: '*weight_quantizer'\n      cfg: {num_bits: 8, axis: 0}\n");
  const QuantizeConfig q = load_quantize_config((dir_ / "r.yaml").string());
  ASSERT_EQ(q.quant_cfg.size(), 1u);
  EXPECT_EQ(to_json(q.quant_cfg[0]),
            json::parse(R"({"quantizer_name":"*weight_quantizer","cfg":{"num_bits":8,"axis":0}})"));
  write("rd/metadata.yml", "recipe_type: ptq\n");
  write("rd/quantize.yml",
        "algorithm: max\nquant_cfg:\n  - quantizer_name: '*input_quantizer'\n    enable: false\n");
  const QuantizeConfig d = load_quantize_config((dir_ / "rd").string());
  ASSERT_EQ(d.quant_cfg.size(), 1u);
  EXPECT_EQ(d.quant_cfg[0].quantizer_name, "*input_quantizer");
  write("aq.yaml", "metadata:\n  recipe_type: auto_quantize\nquantize: {}\n");
  EXPECT_TRUE(has_all(config_error([&] { load_quantize_config((dir_ / "aq.yaml").string()); }),
                      {"aq.yaml", "metadata.recipe_type", "only PTQ recipes"}));
  fs::create_directories(dir_ / "empty_dir");
  EXPECT_TRUE(has_all(config_error([&] { load_quantize_config((dir_ / "empty_dir").string()); }),
                      {"empty_dir", "quantize.yml"}));
}

// Every preset YAML of ModelOpt 0.47.0 (vendored verbatim; numerics/ and ptq/) resolves to exactly
// what its JSON translation under configs/ resolves to, and every JSON preset file has its YAML
// twin.
TEST_F(YamlTest, EveryVendoredPresetYamlEqualsItsJsonTranslation) {
  const fs::path yroot = kConfigs / "modelopt_recipes" / "configs";
  ASSERT_TRUE(fs::is_directory(yroot)) << yroot;
  size_t n = 0;
  for (const auto& e : fs::recursive_directory_iterator(yroot)) {
    if (!e.is_regular_file() || e.path().extension() != ".yaml") continue;
    const fs::path rel = e.path().lexically_relative(yroot);
    const std::string top = rel.begin()->string();
    if (top != "numerics" && top != "ptq") continue;  // configs/ translates these two subtrees
    fs::path json_twin = kConfigs / rel;
    json_twin.replace_extension(".json");
    ASSERT_TRUE(fs::exists(json_twin)) << "no JSON translation of " << rel;
    const ConfigDocument y = load_config_document(e.path());
    const ConfigDocument j = load_config_document(json_twin);
    EXPECT_EQ(y.schema, j.schema) << rel;
    EXPECT_EQ(y.body, j.body) << rel;
    ++n;
  }
  size_t nj = 0;
  for (const auto& e : fs::recursive_directory_iterator(kConfigs)) {
    if (!e.is_regular_file() || e.path().extension() != ".json") continue;
    const fs::path rel = e.path().lexically_relative(kConfigs);
    const std::string top = rel.begin()->string();
    if (top != "numerics" && top != "ptq") continue;
    fs::path yaml_twin = yroot / rel;
    yaml_twin.replace_extension(".yaml");
    EXPECT_TRUE(fs::exists(yaml_twin)) << "no YAML source of " << rel;
    ++nj;
  }
  EXPECT_EQ(n, nj);
  EXPECT_GT(n, 70u);
}

const json& golden() { return testing::modelopt_presets_golden(); }

std::vector<std::string> recipe_names() {
  std::vector<std::string> v;
  if (golden().contains("recipes"))
    for (const auto& [k, r] : golden().at("recipes").items()) v.push_back(k);
  return v;
}

TEST(YamlRecipes, GoldenListsEveryShippedPtqRecipe) {
  EXPECT_EQ(golden().at("modelopt_version"), "0.47.0");
  EXPECT_GE(recipe_names().size(), 50u);
}

class ModelOptPtqRecipe : public ::testing::TestWithParam<std::string> {};

// load_quantize_config on the recipe's path (file or metadata.yml + quantize.yml directory) equals
// ModelOpt's load_recipe(...).quantize, entry by entry (model_dump(exclude_unset) dumps).
TEST_P(ModelOptPtqRecipe, ResolvesLikeModelOptsLoadRecipe) {
  if (!yaml_supported()) GTEST_SKIP() << "built without libyaml";
  setenv("MQ_CONFIGS_DIR", kConfigs.c_str(), 1);
  const std::string& rel = GetParam();
  const json& g = golden().at("recipes").at(rel);
  const QuantizeConfig q = load_quantize_config((kConfigs / "modelopt_recipes" / rel).string());
  testing::expect_matches_modelopt_dump(q, g, rel);
}

INSTANTIATE_TEST_SUITE_P(All, ModelOptPtqRecipe, ::testing::ValuesIn(recipe_names()),
                         [](const auto& info) {
                           std::string s = info.param;
                           for (char& c : s)
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           return s;
                         });

}  // namespace
}  // namespace mq::config
