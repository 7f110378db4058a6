#include "mq/export/hf_checkpoint.hpp"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "export_test_util.hpp"
#include "mq/config/presets.hpp"
#include "mq/core/error.hpp"
#include "mq/io/safetensors_torch.hpp"
#include "mq/nn/conversion.hpp"
#include "mq/nn/quant_module.hpp"

// Cross-check against ModelOpt 0.47.0's export_hf_checkpoint of the same tiny Llama
// (tests/export_golden/gen_export.py). The model tree is built here from the source checkpoint with
// the HF module names and classes, converted with the nn API (replace_quant_module,
// set_quantizer_by_cfg on the preset's quant_cfg) and given ModelOpt's calibrated amaxes
// (quantizer_state.safetensors, saved right after mtq.quantize), so every difference is the
// export's. Expected: the files ModelOpt wrote, bit for bit (model.safetensors byte-identical, JSON
// documents equal including key order).

namespace fs = std::filesystem;
using mq::hf_export::ExportOptions;
using mq::hf_export::testing::error_of;

namespace {

const fs::path kGolden = fs::path(MQ_SOURCE_DIR) / "tests/export_golden/llama";

struct Node : mq::nn::Module {
  explicit Node(std::string t) : t_(std::move(t)) {}
  std::string type_name() const override { return t_; }
  std::string t_;
};

std::shared_ptr<Node> node(const std::string& type) { return std::make_shared<Node>(type); }

// LlamaForCausalLM with HF's module names, classes and registration order.
std::shared_ptr<Node> build_llama(const std::map<std::string, at::Tensor>& sd, int layers) {
  auto linear = [&](const std::string& n) {
    auto b = sd.find(n + ".bias");
    return std::make_shared<mq::nn::Linear>(sd.at(n + ".weight").clone(),
                                            b == sd.end() ? at::Tensor() : b->second.clone());
  };
  auto norm = [&](const std::string& n) {
    auto m = node("LlamaRMSNorm");
    m->register_parameter("weight", sd.at(n + ".weight").clone());
    return m;
  };
  auto root = node("LlamaForCausalLM");
  auto model = node("LlamaModel");
  model->register_module("embed_tokens", std::make_shared<mq::nn::Embedding>(
                                             sd.at("model.embed_tokens.weight").clone()));
  auto list = std::make_shared<mq::nn::ModuleList>();
  for (int i = 0; i < layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i);
    auto layer = node("LlamaDecoderLayer");
    auto attn = node("LlamaAttention");
    for (const char* n : {"q_proj", "k_proj", "v_proj", "o_proj"})
      attn->register_module(n, linear(p + ".self_attn." + n));
    auto mlp = node("LlamaMLP");
    for (const char* n : {"gate_proj", "up_proj", "down_proj"})
      mlp->register_module(n, linear(p + ".mlp." + n));
    layer->register_module("self_attn", attn);
    layer->register_module("mlp", mlp);
    layer->register_module("input_layernorm", norm(p + ".input_layernorm"));
    layer->register_module("post_attention_layernorm", norm(p + ".post_attention_layernorm"));
    list->push_back(layer);
  }
  model->register_module("layers", list);
  model->register_module("norm", norm("model.norm"));
  root->register_module("model", model);
  root->register_module("lm_head", linear("lm_head"));
  return root;
}

std::vector<mq::config::QuantizerCfgEntry> preset_entries(const std::vector<std::string>& presets) {
  std::vector<mq::config::QuantizerCfgEntry> out;
  for (const auto& p : presets) {
    auto c = mq::config::load_quantize_config(p);
    out.insert(out.end(), c.quant_cfg.begin(), c.quant_cfg.end());
  }
  return out;
}

// ModelOpt's calibrated buffers: "<quantizer>._amax" / "<quantizer>.<stage>._amax" /
// "<quantizer>._pre_quant_scale".
void load_quantizer_state(mq::nn::Module& root, const fs::path& file) {
  for (const auto& [name, t] : mq::io::load_safetensors(file.string())) {
    const auto dot = name.rfind('.');
    const std::string qname = name.substr(0, dot), buf = name.substr(dot + 1);
    ASSERT_TRUE(buf == "_amax" || buf == "_pre_quant_scale") << name;
    std::string module = qname;
    int stage = -1;
    const auto d2 = qname.rfind('.');
    if (std::isdigit(static_cast<unsigned char>(qname[d2 + 1]))) {
      stage = std::stoi(qname.substr(d2 + 1));
      module = qname.substr(0, d2);
    }
    auto* qm = dynamic_cast<mq::nn::QuantizerModule*>(&root.get_submodule(module));
    ASSERT_NE(qm, nullptr) << name;
    mq::quant::TensorQuantizer& q =
        stage >= 0 ? qm->sequential()[static_cast<size_t>(stage)] : qm->tensor();
    if (buf == "_pre_quant_scale") {
      q.set_pre_quant_scale(t);
      continue;
    }
    if (q.is_mx_format()) continue;  // MX amaxes are not used by the export (dynamic E8M0 scales)
    q.set_amax(t);
  }
}

struct Prepared {
  std::shared_ptr<Node> model;
};

Prepared prepare(const std::vector<std::string>& presets, const std::string& golden) {
  auto sd = mq::io::load_safetensors((kGolden / "source/model.safetensors").string());
  Prepared p{build_llama(sd, 1)};
  mq::nn::register_quant_attention("LlamaAttention");
  // ModelOpt's registry knows these torch classes; the presets disable quantizers under them by
  // parent_class, which must name a registered key. This tree has none of them.
  for (const char* k : {"nn.BatchNorm1d", "nn.BatchNorm2d", "nn.BatchNorm3d", "nn.LeakyReLU"})
    if (!mq::nn::is_registered_quant_module(k))
      mq::nn::register_quant_module(k, [](std::shared_ptr<mq::nn::Module> m) { return m; });
  mq::nn::replace_quant_module(*p.model);
  mq::nn::set_quantizer_by_cfg(*p.model, preset_entries(presets));
  load_quantizer_state(*p.model, kGolden / golden / "quantizer_state.safetensors");
  return p;
}

fs::path scratch(const std::string& tag) {
  fs::path d = fs::temp_directory_path() / ("mq_export_test_" + std::to_string(::getpid())) / tag;
  fs::remove_all(d);
  fs::create_directories(d.parent_path());
  return d;
}

std::string read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

nlohmann::ordered_json read_json(const fs::path& p) {
  return nlohmann::ordered_json::parse(read_file(p));
}

// Same names, dtypes, shapes and bytes, tensor by tensor (a readable failure), then the whole file.
void expect_same_safetensors(const fs::path& got, const fs::path& want) {
  auto g = mq::io::SafetensorsFile::open(got.string());
  auto w = mq::io::SafetensorsFile::open(want.string());
  std::vector<std::string> gn, wn;
  for (const auto& t : g.tensors()) gn.push_back(t.name);
  for (const auto& t : w.tensors()) wn.push_back(t.name);
  std::sort(gn.begin(), gn.end());
  std::sort(wn.begin(), wn.end());
  ASSERT_EQ(gn, wn) << got;
  for (const auto& t : w.tensors()) {
    const auto& o = g.at(t.name);
    EXPECT_EQ(mq::io::dtype_name(o.dtype), mq::io::dtype_name(t.dtype)) << t.name;
    EXPECT_EQ(o.shape, t.shape) << t.name;
    if (o.nbytes() != t.nbytes()) continue;
    auto a = g.data(o), b = w.data(t);
    size_t diff = 0;
    for (size_t i = 0; i < a.size(); ++i) diff += a[i] != b[i];
    EXPECT_EQ(diff, 0u) << t.name << ": " << diff << " of " << a.size() << " bytes differ";
  }
  EXPECT_EQ(g.metadata(), w.metadata());
  EXPECT_TRUE(read_file(got) == read_file(want)) << got << " is not byte-identical to " << want;
}

struct Case {
  std::string golden;
  std::vector<std::string> presets;
  std::string quant_algo, kv;
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.golden; }

class ModelOptExport : public ::testing::TestWithParam<Case> {};

TEST_P(ModelOptExport, MatchesModelOptFiles) {
  const Case& c = GetParam();
  Prepared p = prepare(c.presets, c.golden);
  const fs::path out = scratch(c.golden);
  auto r =
      mq::hf_export::export_hf_checkpoint(*p.model, (kGolden / "source").string(), out.string());
  EXPECT_EQ(r.quant_algo, c.quant_algo);
  EXPECT_EQ(r.kv_cache_quant_algo, c.kv);
  const fs::path want = kGolden / c.golden;
  EXPECT_EQ(r.files, (std::vector<std::string>{"config.json", "generation_config.json",
                                               "hf_quant_config.json", "model.safetensors"}));
  expect_same_safetensors(out / "model.safetensors", want / "model.safetensors");
  // Parsed and compared in order; the documents differ from ModelOpt's only if the content does.
  EXPECT_EQ(read_json(out / "hf_quant_config.json").dump(1),
            read_json(want / "hf_quant_config.json").dump(1));
  EXPECT_EQ(read_json(out / "config.json").dump(1), read_json(want / "config.json").dump(1));
  EXPECT_EQ(read_json(out / "generation_config.json"), read_json(want / "generation_config.json"));
  // json.dump(indent=4) and nlohmann's dump(4) agree byte for byte on these documents.
  EXPECT_EQ(read_file(out / "hf_quant_config.json"), read_file(want / "hf_quant_config.json"));
  EXPECT_EQ(read_file(out / "config.json"), read_file(want / "config.json"));
  fs::remove_all(out);
}

INSTANTIATE_TEST_SUITE_P(
    Presets, ModelOptExport,
    ::testing::Values(
        Case{"fp8", {"FP8_DEFAULT_CFG"}, "FP8", ""},
        Case{"fp8_pc_pt", {"FP8_PER_CHANNEL_PER_TOKEN_CFG"}, "FP8_PER_CHANNEL_PER_TOKEN", ""},
        Case{"int8_sq", {"INT8_DEFAULT_CFG"}, "W8A8_SQ_PER_CHANNEL", ""},
        Case{"int8_wo", {"INT8_WEIGHT_ONLY_CFG"}, "W8A16", ""},
        Case{"int4_awq", {"INT4_AWQ_CFG"}, "W4A16_AWQ", ""},
        // pre_quant_scales: q/k/v resmoothed to their mean (weights re-scaled, amax
        // recalibrated) and folded into input_layernorm, gate/up folded into
        // post_attention_layernorm, o_proj/down_proj written as pre_quant_scale
        Case{"int4_awq_pqs", {"INT4_AWQ_CFG"}, "W4A16_AWQ", ""},
        Case{"w4a8_awq", {"W4A8_AWQ_BETA_CFG"}, "W4A8_AWQ", ""},
        Case{"fp8_kv", {"FP8_DEFAULT_CFG", "FP8_KV_CFG"}, "FP8", "FP8"},
        Case{"nvfp4", {"NVFP4_DEFAULT_CFG"}, "NVFP4", ""},
        Case{"w4a16_nvfp4", {"W4A16_NVFP4_CFG"}, "W4A16_NVFP4", ""},
        Case{"mxfp8", {"MXFP8_DEFAULT_CFG"}, "MXFP8", ""},
        Case{"mxfp4", {"MXFP4_DEFAULT_CFG"}, "mxfp4", ""}),
    [](const auto& info) { return info.param.golden; });

// ---- sharding
// ------------------------------------------------------------------------------------------

TEST(HfCheckpoint, ShardsLikeHuggingFaceAndHoldTheSameTensors) {
  Prepared p = prepare({"FP8_DEFAULT_CFG"}, "fp8");
  const fs::path out = scratch("sharded");
  ExportOptions o;
  o.max_shard_size = 40000;  // bytes: the 16 KiB FP8 weights pack two per shard, bf16 tensors alone
  auto r =
      mq::hf_export::export_hf_checkpoint(*p.model, (kGolden / "source").string(), out.string(), o);
  auto index = read_json(out / "model.safetensors.index.json");
  std::map<std::string, at::Tensor> merged;
  std::set<std::string> files;
  for (const auto& [name, file] : index["weight_map"].items())
    files.insert(file.get<std::string>());
  ASSERT_GT(files.size(), 1u);
  int i = 1;
  for (const auto& f : files) {
    char want[64];
    std::snprintf(want, sizeof want, "model-%05d-of-%05zu.safetensors", i++, files.size());
    EXPECT_EQ(f, want);
    uint64_t bytes = 0;
    for (const auto& [n, t] : mq::io::load_safetensors((out / f).string())) {
      EXPECT_EQ(index["weight_map"][n], f) << n;
      merged[n] = t;
      bytes += t.nbytes();
    }
    EXPECT_LE(bytes, o.max_shard_size) << f;
  }
  EXPECT_FALSE(fs::exists(out / "model.safetensors"));
  auto want = mq::io::load_safetensors((kGolden / "fp8/model.safetensors").string());
  ASSERT_EQ(merged.size(), want.size());
  uint64_t total = 0;
  for (const auto& [n, t] : want) {
    ASSERT_TRUE(merged.count(n)) << n;
    EXPECT_EQ(merged[n].scalar_type(), t.scalar_type()) << n;
    EXPECT_TRUE(at::equal(merged[n].reshape({-1}).view(at::kByte), t.reshape({-1}).view(at::kByte)))
        << n;
    total += t.nbytes();
  }
  EXPECT_EQ(index["metadata"]["total_size"].get<uint64_t>(), total);
  EXPECT_EQ(r.total_bytes, total);
  // config.json / hf_quant_config.json do not depend on sharding.
  EXPECT_EQ(read_json(out / "hf_quant_config.json").dump(),
            read_json(kGolden / "fp8/hf_quant_config.json").dump());
  fs::remove_all(out.parent_path());
}

// ---- tied embeddings
// ------------------------------------------------------------------------------------

TEST(HfCheckpoint, TiedLmHeadIsWrittenOnceUnderTheEmbeddingName) {
  // As HF and ModelOpt: lm_head tied to embed_tokens (one tensor) is written once, under the first
  // state_dict name; lm_head stays in exclude_modules (it has disabled quantizers).
  Prepared p = prepare({"FP8_DEFAULT_CFG"}, "fp8");
  auto& emb = p.model->get_submodule("model.embed_tokens");
  auto& head = p.model->get_submodule("lm_head");
  head.parameter("weight") = emb.parameter("weight");
  const fs::path out = scratch("tied");
  mq::hf_export::export_hf_checkpoint(*p.model, (kGolden / "source").string(), out.string());
  auto got = mq::io::load_safetensors((out / "model.safetensors").string());
  auto want = mq::io::load_safetensors((kGolden / "fp8/model.safetensors").string());
  EXPECT_EQ(got.count("lm_head.weight"), 0u);
  EXPECT_EQ(got.size(), want.size() - 1);
  for (const auto& [n, t] : got) {
    ASSERT_TRUE(want.count(n)) << n;
    EXPECT_TRUE(at::equal(t.reshape({-1}).view(at::kByte), want[n].reshape({-1}).view(at::kByte)))
        << n;
  }
  EXPECT_EQ(read_json(out / "hf_quant_config.json")["quantization"]["exclude_modules"],
            nlohmann::ordered_json({"lm_head", "model.embed_tokens"}));
  fs::remove_all(out.parent_path());
}

// ---- atomicity and errors
// ------------------------------------------------------------------------------

std::vector<std::string> leftovers(const fs::path& dir, const std::string& stem) {
  std::vector<std::string> out;
  if (!fs::exists(dir)) return out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().rfind(stem, 0) == 0)
      out.push_back(e.path().filename().string());
  return out;
}

TEST(HfCheckpoint, UnwritableDestinationLeavesNothing) {
  Prepared p = prepare({"FP8_DEFAULT_CFG"}, "fp8");
  const fs::path base = scratch("unwritable");
  fs::create_directories(base);
  { std::ofstream(base / "file") << "x"; }  // a regular file where a directory would be needed
  const fs::path out = base / "file" / "export";
  const std::string e = error_of([&] {
    mq::hf_export::export_hf_checkpoint(*p.model, (kGolden / "source").string(), out.string());
  });
  EXPECT_NE(e.find("export"), std::string::npos) << e;
  EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  EXPECT_FALSE(fs::exists(out));
  EXPECT_EQ(leftovers(base, "file"), std::vector<std::string>{"file"});
  fs::remove_all(base.parent_path());
}

TEST(HfCheckpoint, ErrorMidwayRemovesTheTemporaryDirectory) {
  // An INT4 weight quantizer that was never calibrated: the error names the module, nothing is
  // left.
  Prepared p = prepare({"INT4_AWQ_CFG"}, "int4_awq");
  p.model->get_submodule("model.layers.0.mlp.down_proj")
      .quantizer("weight_quantizer")
      ->tensor()
      .reset_amax();
  const fs::path out = scratch("midway");
  const std::string e = error_of([&] {
    mq::hf_export::export_hf_checkpoint(*p.model, (kGolden / "source").string(), out.string());
  });
  EXPECT_NE(e.find("model.layers.0.mlp.down_proj"), std::string::npos) << e;
  EXPECT_NE(e.find("amax"), std::string::npos) << e;
  EXPECT_FALSE(fs::exists(out));
  EXPECT_TRUE(leftovers(out.parent_path(), "midway").empty());
  fs::remove_all(out.parent_path());
}

TEST(HfCheckpoint, NeverClobbersANonEmptyDirectoryUnlessAskedTo) {
  const fs::path out = scratch("existing");
  fs::create_directories(out);
  { std::ofstream(out / "keep.txt") << "old"; }
  {
    Prepared p = prepare({"FP8_DEFAULT_CFG"}, "fp8");
    const std::string e = error_of([&] {
      mq::hf_export::export_hf_checkpoint(*p.model, (kGolden / "source").string(), out.string());
    });
    EXPECT_NE(e.find("not empty"), std::string::npos) << e;
    EXPECT_NE(e.find(out.string()), std::string::npos) << e;
    EXPECT_EQ(read_file(out / "keep.txt"), "old");
  }
  {
    Prepared p = prepare({"FP8_DEFAULT_CFG"}, "fp8");
    ExportOptions o;
    o.overwrite = true;
    mq::hf_export::export_hf_checkpoint(*p.model, (kGolden / "source").string(), out.string(), o);
    EXPECT_FALSE(fs::exists(out / "keep.txt"));
    expect_same_safetensors(out / "model.safetensors", kGolden / "fp8/model.safetensors");
    EXPECT_EQ(leftovers(out.parent_path(), "existing"), std::vector<std::string>{"existing"});
  }
  {  // an empty directory is fine without overwrite
    fs::remove_all(out);
    fs::create_directories(out);
    Prepared p = prepare({"FP8_DEFAULT_CFG"}, "fp8");
    mq::hf_export::export_hf_checkpoint(*p.model, (kGolden / "source").string(), out.string());
    EXPECT_TRUE(fs::exists(out / "model.safetensors"));
  }
  fs::remove_all(out.parent_path());
}

TEST(HfCheckpoint, MissingSourceConfigIsAClearError) {
  Prepared p = prepare({"FP8_DEFAULT_CFG"}, "fp8");
  const fs::path out = scratch("nosource");
  const std::string e = error_of([&] {
    mq::hf_export::export_hf_checkpoint(*p.model, (kGolden / "nonexistent").string(), out.string());
  });
  EXPECT_NE(e.find("nonexistent/config.json"), std::string::npos) << e;
  EXPECT_FALSE(fs::exists(out));
  fs::remove_all(out.parent_path());
}

// ---- the pieces
// ----------------------------------------------------------------------------------------

TEST(HfCheckpoint, ExcludeModulesSummaryAsModelOpt) {
  using mq::hf_export::summarize_exclude_modules;
  // reference §6.2 examples
  EXPECT_EQ(summarize_exclude_modules({"linears.0", "linears.2"}, {"linears.1"}),
            (std::vector<std::string>{"linears.0", "linears.2"}));
  EXPECT_EQ(summarize_exclude_modules({"lm_head"}, {"model.layers.0.mlp.up_proj"}),
            (std::vector<std::string>{"lm_head"}));
  EXPECT_EQ(summarize_exclude_modules(
                {"model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj"},
                {"model.layers.0.mlp.experts.0.up_proj", "model.layers.1.mlp.experts.0.up_proj"}),
            (std::vector<std::string>{"model.layers.0.self_attn*"}));
  // A prefix shared with a quantized sibling forces the {x, x.*} pair, written as x.* only.
  EXPECT_EQ(summarize_exclude_modules({"a.b.c", "a.b.d"}, {"a.bb"}),
            (std::vector<std::string>{"a.b.*"}));
  EXPECT_TRUE(summarize_exclude_modules({}, {"x"}).empty());
}

TEST(HfCheckpoint, MixedPrecisionQuantizationConfig) {
  using oj = nlohmann::ordered_json;
  oj q = {
      {"producer", {{"name", "modelopt"}, {"version", "0.47.0"}}},
      {"quantization",
       {{"quant_algo", "MIXED_PRECISION"},
        {"kv_cache_quant_algo", "NVFP4"},
        {"quantized_layers",
         {{"b.q", mq::hf_export::layer_quant_config(mq::hf_export::QuantFormat::kNvfp4, 16)},
          {"a.fp8", mq::hf_export::layer_quant_config(mq::hf_export::QuantFormat::kFp8, 0)},
          {"a.q", mq::hf_export::layer_quant_config(mq::hf_export::QuantFormat::kNvfp4, 16)}}}}}};
  oj c = mq::hf_export::convert_hf_quant_config_format(q);
  // convert_hf_quant_config_format as ModelOpt 0.47.0 writes it (groups in first-seen order).
  oj want = oj::parse(R"({
    "config_groups": {
      "group_0": {"input_activations": {"dynamic": false, "num_bits": 4, "type": "float", "group_size": 16},
                  "weights": {"dynamic": false, "num_bits": 4, "type": "float", "group_size": 16},
                  "targets": ["a.q", "b.q"]},
      "group_1": {"input_activations": {"dynamic": false, "num_bits": 8, "type": "float"},
                  "weights": {"dynamic": false, "num_bits": 8, "type": "float"},
                  "targets": ["a.fp8"]}},
    "quantized_layers": {"b.q": {"quant_algo": "NVFP4", "group_size": 16}, "a.fp8": {"quant_algo": "FP8"},
                         "a.q": {"quant_algo": "NVFP4", "group_size": 16}},
    "ignore": [],
    "quant_algo": "MIXED_PRECISION",
    "kv_cache_scheme": "NVFP4",
    "producer": {"name": "modelopt", "version": "0.47.0"},
    "quant_method": "modelopt"})");
  EXPECT_EQ(c.dump(), want.dump());
}

TEST(HfCheckpoint, LayerQuantConfigNames) {
  using F = mq::hf_export::QuantFormat;
  EXPECT_EQ(
      mq::hf_export::layer_quant_config(F::kInt4Awq, 128).dump(),
      R"({"quant_algo":"W4A16_AWQ","group_size":128,"has_zero_point":false,"pre_quant_scale":true})");
  EXPECT_EQ(mq::hf_export::layer_quant_config(F::kMxfp4, 32).dump(), R"({"quant_algo":"mxfp4"})");
  EXPECT_EQ(mq::hf_export::layer_quant_config(F::kFp8PbWo, 128).dump(),
            R"({"quant_algo":"fp8_pb_wo"})");
  EXPECT_EQ(mq::hf_export::layer_quant_config(F::kW4A8Nvfp4Fp8, 32).dump(),
            R"({"quant_algo":"W4A8_NVFP4_FP8","group_size":32})");
}

}  // namespace
