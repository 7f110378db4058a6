// $import composition (reference §1.4 in JSON): shallow dict merges, list splicing/appending,
// nested and multi-name imports, path resolution, and every error naming file + path.
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "config_test_util.hpp"
#include "mq/config/loader.hpp"
#include "mq/config/presets.hpp"

namespace fs = std::filesystem;

namespace mq::config {
namespace {

using testing::config_error;
using testing::has_all;
using testing::ojson;

// A scratch configs tree; MQ_CONFIGS_DIR points at it for the test's duration.
class LoaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/mq_config_loader_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    root_ = fs::path(tmpl) / "configs";
    fs::create_directories(root_);
    if (const char* old = std::getenv("MQ_CONFIGS_DIR")) old_env_ = old;
    setenv("MQ_CONFIGS_DIR", root_.c_str(), 1);
  }
  void TearDown() override {
    if (old_env_) setenv("MQ_CONFIGS_DIR", old_env_->c_str(), 1);
    else unsetenv("MQ_CONFIGS_DIR");
    fs::remove_all(root_.parent_path());
  }
  fs::path write(const std::string& rel, const std::string& text) {
    fs::path p = root_ / rel;
    fs::create_directories(p.parent_path());
    std::ofstream(p) << text;
    return p;
  }
  ojson load(const std::string& rel) { return load_config_document(root_ / rel).body; }
  std::string load_err(const std::string& rel) {
    return config_error([&] { load_config_document(root_ / rel); });
  }

  fs::path root_;
  std::optional<std::string> old_env_;
};

TEST_F(LoaderTest, DictImportShallowMergesInlineKeysOnTop) {
  write("numerics/fp8.json", R"({"$schema": "QuantizerAttributeConfig", "num_bits": "e4m3", "axis": null})");
  write("a.json", R"({"imports": {"fp8": "numerics/fp8.json"},
                      "cfg": {"$import": "fp8", "axis": 0, "block_sizes": {"-1": 8}}})");
  ojson body = load("a.json");
  EXPECT_EQ(body.dump(), R"({"cfg":{"num_bits":"e4m3","axis":0,"block_sizes":{"-1":8}}})");
}

TEST_F(LoaderTest, ShallowMergeReplacesNestedDicts) {
  write("s.json", R"({"block_sizes": {"-1": 16, "type": "dynamic"}, "num_bits": 4})");
  write("a.json", R"({"imports": {"s": "s.json"}, "x": {"$import": "s", "block_sizes": {"-1": 32}}})");
  EXPECT_EQ(load("a.json")["x"].dump(), R"({"block_sizes":{"-1":32},"num_bits":4})");
}

TEST_F(LoaderTest, ImportListOfAliasesMergesInOrder) {
  write("a.json", R"({"num_bits": 4, "axis": 0})");
  write("b.json", R"({"axis": 1, "type": "dynamic"})");
  write("top.json", R"({"imports": {"a": "a.json", "b": "b.json"}, "v": {"$import": ["a", "b"], "type": "static"}})");
  EXPECT_EQ(load("top.json")["v"].dump(), R"({"num_bits":4,"axis":1,"type":"static"})");
}

TEST_F(LoaderTest, ListElementImportSplicesListsAndAppendsDicts) {
  write("units/one.json", R"({"$schema": "QuantizerCfgEntry", "quantizer_name": "*", "enable": false})");
  write("units/two.json", R"({"$schema": "QuantizerCfgListConfig", "$list": [
      {"quantizer_name": "a", "enable": false}, {"quantizer_name": "b", "enable": true}]})");
  write("units/bare.json", R"([{"quantizer_name": "c", "enable": false}])");
  write("p.json", R"({"imports": {"one": "units/one.json", "two": "units/two.json", "bare": "units/bare"},
                      "quant_cfg": [{"$import": "one"}, {"$import": "two"}, {"quantizer_name": "mid", "enable": false},
                                    {"$import": "bare"}]})");
  ojson q = load("p.json")["quant_cfg"];
  ASSERT_EQ(q.size(), 5u);
  std::vector<std::string> names;
  for (const auto& e : q) names.push_back(e["quantizer_name"]);
  EXPECT_EQ(names, (std::vector<std::string>{"*", "a", "b", "mid", "c"}));
  // A dict element with "$import" and more keys is a merge, not a splice.
  write("m.json", R"({"imports": {"one": "units/one.json"}, "l": [{"$import": "one", "enable": true}]})");
  EXPECT_EQ(load("m.json")["l"].dump(), R"([{"quantizer_name":"*","enable":true}])");
}

TEST_F(LoaderTest, SequentialCfgListAppendsDictSnippets) {
  write("numerics/int4.json", R"({"num_bits": 4, "block_sizes": {"-1": 128, "type": "static"}})");
  write("numerics/fp8.json", R"({"num_bits": "e4m3", "axis": null})");
  write("w.json", R"({"imports": {"i": "numerics/int4.json", "f": "numerics/fp8.json"},
                      "quant_cfg": [{"quantizer_name": "*weight_quantizer", "cfg": [{"$import": "i"}, {"$import": "f"}]}]})");
  QuantizeConfig qc = load_quantize_config((root_ / "w.json").string());
  ASSERT_TRUE(qc.quant_cfg.at(0).is_sequential());
  EXPECT_EQ(qc.quant_cfg[0].sequential_cfg()->at(0).num_bits, NumBits::integer(4));
  EXPECT_EQ(qc.quant_cfg[0].sequential_cfg()->at(1).num_bits, NumBits::floating(4, 3));
}

TEST_F(LoaderTest, NestedImportsAndInlineValuesResolve) {
  write("c.json", R"({"num_bits": 8})");
  write("b.json", R"({"imports": {"c": "c.json"}, "inner": {"$import": "c", "axis": 0}})");
  write("a.json", R"({"imports": {"b": "b.json", "c": "c.json"},
                      "x": {"$import": "b", "extra": {"$import": "c"}}})");
  EXPECT_EQ(load("a.json")["x"].dump(), R"({"inner":{"num_bits":8,"axis":0},"extra":{"num_bits":8}})");
}

TEST_F(LoaderTest, PathResolution) {
  write("numerics/n.json", R"({"num_bits": 4})");
  // Relative to the importing file.
  write("ptq/presets/a.json", R"({"imports": {"n": "../../numerics/n.json"}, "v": {"$import": "n"}})");
  EXPECT_EQ(load("ptq/presets/a.json")["v"]["num_bits"], 4);
  // Relative to the configs dir, without ".json", and in ModelOpt's "configs/..." spelling.
  write("ptq/presets/b.json", R"({"imports": {"n": "numerics/n", "m": "configs/numerics/n"},
                                   "v": {"$import": "n"}, "w": {"$import": "m"}})");
  ojson b = load("ptq/presets/b.json");
  EXPECT_EQ(b["v"]["num_bits"], 4);
  EXPECT_EQ(b["w"]["num_bits"], 4);
  // A sibling file wins over the configs dir.
  write("ptq/presets/numerics/n.json", R"({"num_bits": 2})");
  EXPECT_EQ(load("ptq/presets/b.json")["v"]["num_bits"], 2);
  auto found = find_config_file("numerics/n", root_ / "ptq");
  ASSERT_TRUE(found);
  EXPECT_EQ(*found, (root_ / "numerics/n.json").lexically_normal());
  EXPECT_FALSE(find_config_file("numerics/none", root_));
}

TEST_F(LoaderTest, Errors) {
  write("n.json", R"({"num_bits": 4})");
  write("l.json", R"({"$list": [{"quantizer_name": "*", "enable": false}]})");
  write("e1.json", R"({"imports": {"n": "n.json"}, "v": {"$import": "m"}})");
  EXPECT_TRUE(has_all(load_err("e1.json"), {"configs/e1.json: v[\"$import\"]: ", "unknown $import alias \"m\"", "imports: n"}));
  write("e2.json", R"({"v": [{"$import": "n"}]})");
  EXPECT_TRUE(has_all(load_err("e2.json"), {"configs/e2.json: v[0][\"$import\"]: ", "no imports are declared"}));
  write("e3.json", R"({"imports": {"x": "missing.json"}, "v": 1})");
  EXPECT_TRUE(has_all(load_err("e3.json"), {"configs/e3.json: imports.x: ", "cannot find config file \"missing.json\""}));
  write("e4.json", R"({"imports": {"l": "l.json"}, "v": {"$import": "l"}})");
  EXPECT_TRUE(has_all(load_err("e4.json"), {"configs/e4.json: v[\"$import\"]: ", "must resolve to a dict"}));
  write("cyc_a.json", R"({"imports": {"b": "cyc_b.json"}, "v": {"$import": "b"}})");
  write("cyc_b.json", R"({"imports": {"a": "cyc_a.json"}, "v": {"$import": "a"}})");
  EXPECT_TRUE(has_all(load_err("cyc_a.json"), {"circular import"}));
  write("self.json", R"({"imports": {"me": "self.json"}, "v": 1})");
  EXPECT_TRUE(has_all(load_err("self.json"), {"configs/self.json: imports.me: ", "circular import"}));
  write("bad.json", R"({"num_bits": 4,})");
  EXPECT_TRUE(has_all(load_err("bad.json"), {"configs/bad.json: $: invalid JSON"}));
  write("e5.json", R"({"$list": [], "algorithm": "max"})");
  EXPECT_TRUE(has_all(load_err("e5.json"), {"configs/e5.json: algorithm: ", "\"$list\""}));
  write("e6.json", R"("just a string")");
  EXPECT_TRUE(has_all(load_err("e6.json"), {"configs/e6.json: $: ", "JSON object or list"}));
  write("e7.json", R"({"imports": ["n.json"]})");
  EXPECT_TRUE(has_all(load_err("e7.json"), {"configs/e7.json: imports: "}));
  EXPECT_THROW(load_config_document(root_ / "nope.json"), mq::IoError);
}

TEST_F(LoaderTest, SchemaValidatesSnippetsWhereTheyAreDefined) {
  write("numerics/bad.json", R"({"$schema": "QuantizerAttributeConfig", "num_bits": [3, 3]})");
  write("p.json", R"({"imports": {"b": "numerics/bad.json"}, "quant_cfg": [{"quantizer_name": "*", "cfg": {"$import": "b"}}]})");
  EXPECT_TRUE(has_all(load_err("p.json"), {"configs/numerics/bad.json: num_bits: [3,3] is not a supported float format"}));
  write("units/list.json", R"({"$schema": "QuantizerCfgListConfig", "quantizer_name": "*", "enable": false})");
  EXPECT_TRUE(has_all(load_err("units/list.json"), {"configs/units/list.json: $: ", "needs a list body"}));
  write("units/entry.json", R"({"$schema": "QuantizerCfgEntry", "quantizer_name": "*"})");
  EXPECT_TRUE(has_all(load_err("units/entry.json"), {"configs/units/entry.json: $: ", "must specify 'cfg', 'enable'"}));
  write("weird.json", R"({"$schema": "Recipe", "v": 1})");
  EXPECT_TRUE(has_all(load_err("weird.json"), {"configs/weird.json: $schema: ", "unknown schema \"Recipe\""}));
  write("q.json", R"({"$schema": "QuantizeConfig", "$comment": "c", "quant_cfg": [{"quantizer_name": "*", "cfg": {}}]})");
  EXPECT_TRUE(has_all(load_err("q.json"), {"configs/q.json: quant_cfg[0].cfg: ", "at least one quantizer attribute"}));
}

TEST_F(LoaderTest, LoadQuantizeConfigErrorsNameTheFile) {
  write("r.json", R"({"quant_cfg": [{"quantizer_name": "*", "enable": false},
                                     {"quantizer_name": "*w", "cfg": {"num_bits": "e3m3"}}]})");
  std::string m = config_error([&] { load_quantize_config((root_ / "r.json").string()); });
  EXPECT_TRUE(has_all(m, {"configs/r.json: quant_cfg[1].cfg.num_bits: [3,3] is not a supported float format"}));
  EXPECT_TRUE(has_all(config_error([] { load_quantize_config("NO_SUCH_CFG"); }),
                      {"NO_SUCH_CFG: neither a preset name"}));
  // Relative to the configs dir, ".json" optional.
  write("ok.json", R"({"quant_cfg": [{"quantizer_name": "*", "enable": false}], "algorithm": null})");
  EXPECT_EQ(load_quantize_config("ok").quant_cfg.size(), 1u);
}

}  // namespace
}  // namespace mq::config
