// config.json parsing, checkpoint reading (single file, sharded index, slices) and the loader's
// errors.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <tuple>

#include "mq/core/error.hpp"
#include "mq/io/safetensors_torch.hpp"
#include "mq/models/causal_lm.hpp"
#include "mq/models/checkpoint.hpp"
#include "mq/models/hf_config.hpp"
#include "tiny_models_impl.hpp"

namespace fs = std::filesystem;

namespace {

using mq::models::HfConfig;
using mq::models::parse_hf_config;

using mq::test::tiny;
using mq::test::with_dtype;

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

void write_text(const std::string& path, const std::string& s) {
  std::ofstream out(path);
  out << s;
}

/// A fresh copy of a tiny checkpoint in a temporary directory, removed at scope exit.
struct TmpCopy {
  std::string dir;
  explicit TmpCopy(const std::string& name) {
    dir = (fs::temp_directory_path() / ("mq_models_" + name + "_" + std::to_string(::getpid()) +
                                        "_" + std::to_string(counter()++)))
              .string();
    fs::remove_all(dir);
    fs::create_directories(dir);
    for (const auto& e : fs::directory_iterator(tiny(name)))
      fs::copy_file(e.path(), dir + "/" + e.path().filename().string());
  }
  ~TmpCopy() { fs::remove_all(dir); }
  static int& counter() {
    static int c = 0;
    return c;
  }
  void edit_config(const std::function<void(nlohmann::json&)>& f) const {
    nlohmann::json j = read_json(dir + "/config.json");
    f(j);
    write_text(dir + "/config.json", j.dump(2));
  }
};

template <typename E, typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("wrong exception type: ") + e.what();
  }
  return "no exception";
}

#define EXPECT_CONTAINS(s, sub) EXPECT_NE(std::string(s).find(sub), std::string::npos) << (s)

nlohmann::json llama_json() {
  return nlohmann::json::parse(R"({
    "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3,
    "num_attention_heads": 8, "vocab_size": 100})");
}

// ---- config.json
// -----------------------------------------------------------------------------------

TEST(HfConfig, DefaultsOfTheHfConfigClasses) {
  HfConfig c = parse_hf_config(llama_json(), "c.json");
  EXPECT_EQ(c.num_key_value_heads, 8);  // = num_attention_heads
  EXPECT_EQ(c.head_dim, 8);             // hidden / heads
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_EQ(c.rope.type, "default");
  EXPECT_DOUBLE_EQ(c.rope.theta, 10000.0);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.sliding_window, std::vector<int64_t>(3, 0));
  EXPECT_EQ(c.dtype, "");
  EXPECT_EQ(c.traits().attention_class, "LlamaAttention");

  auto j = llama_json();
  j["architectures"] = {"Qwen3ForCausalLM"};
  EXPECT_EQ(parse_hf_config(j, "c.json").head_dim, 128);  // Qwen3Config.head_dim default
  j["architectures"] = {"MixtralForCausalLM"};
  j["num_local_experts"] = 8;
  j["num_experts_per_tok"] = 2;
  HfConfig m = parse_hf_config(j, "c.json");
  EXPECT_DOUBLE_EQ(m.rope.theta, 1e6);
  EXPECT_DOUBLE_EQ(m.rms_norm_eps, 1e-5);
  EXPECT_EQ(m.sliding_window, std::vector<int64_t>(3, 0));
  EXPECT_TRUE(m.is_moe_layer(0) && m.is_moe_layer(2));
  EXPECT_EQ(m.expert_intermediate_size(), 128);
  j["architectures"] = {"MistralForCausalLM"};
  EXPECT_EQ(parse_hf_config(j, "c.json").sliding_window,
            std::vector<int64_t>(3, 4096));  // class default
  j["sliding_window"] = nullptr;
  EXPECT_EQ(parse_hf_config(j, "c.json").sliding_window, std::vector<int64_t>(3, 0));
}

TEST(HfConfig, RopeForms) {
  auto j = llama_json();
  j["rope_theta"] = 500000.0;
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  HfConfig c = parse_hf_config(j, "c.json");
  EXPECT_EQ(c.rope.type, "linear");
  EXPECT_DOUBLE_EQ(c.rope.theta, 500000.0);
  EXPECT_DOUBLE_EQ(c.rope.factor, 2.0);

  j.erase("rope_scaling");
  j["max_position_embeddings"] = 2048;
  j["rope_parameters"] = {{"rope_type", "llama3"},
                          {"rope_theta", 7.0},
                          {"factor", 8.0},
                          {"low_freq_factor", 1.0},
                          {"high_freq_factor", 4.0}};
  c = parse_hf_config(j, "c.json");
  EXPECT_EQ(c.rope.type, "llama3");
  EXPECT_DOUBLE_EQ(c.rope.theta, 7.0);  // rope_parameters wins over the top-level key
  EXPECT_EQ(c.rope.original_max_position_embeddings,
            2048);  // HF falls back to max_position_embeddings

  j["rope_parameters"].erase("low_freq_factor");
  EXPECT_CONTAINS(
      error_of<mq::ConfigError>([&] { parse_hf_config(j, "c.json"); }),
      "c.json: rope_parameters.low_freq_factor: missing (required by rope type 'llama3')");
  j["rope_parameters"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  EXPECT_CONTAINS(error_of<mq::ConfigError>([&] { parse_hf_config(j, "c.json"); }),
                  "c.json: rope_parameters.rope_type: 'yarn' is not supported (supported: default, "
                  "linear, llama3)");
}

TEST(HfConfig, QwenSlidingWindowAndMoeLayers) {
  auto j = llama_json();
  j["architectures"] = {"Qwen2ForCausalLM"};
  j["use_sliding_window"] = true;
  j["sliding_window"] = 16;
  j["max_window_layers"] = 1;
  EXPECT_EQ(parse_hf_config(j, "c.json").sliding_window, (std::vector<int64_t>{0, 16, 16}));
  j["layer_types"] = {"sliding_attention", "full_attention", "sliding_attention"};
  EXPECT_EQ(parse_hf_config(j, "c.json").sliding_window, (std::vector<int64_t>{16, 0, 16}));
  j["use_sliding_window"] = false;
  EXPECT_CONTAINS(error_of<mq::ConfigError>([&] { parse_hf_config(j, "c.json"); }),
                  "c.json: layer_types[0]:");

  auto q = llama_json();
  q["architectures"] = {"Qwen3MoeForCausalLM"};
  q["num_hidden_layers"] = 6;
  q["num_experts"] = 4;
  q["num_experts_per_tok"] = 2;
  q["moe_intermediate_size"] = 32;
  q["decoder_sparse_step"] = 2;
  q["mlp_only_layers"] = {3};
  HfConfig c = parse_hf_config(q, "c.json");
  std::vector<bool> moe;
  for (int64_t i = 0; i < 6; ++i) moe.push_back(c.is_moe_layer(i));
  EXPECT_EQ(moe, (std::vector<bool>{false, true, false, false, false, true}));
  EXPECT_EQ(c.expert_intermediate_size(), 32);
  q.erase("moe_intermediate_size");
  EXPECT_CONTAINS(error_of<mq::ConfigError>([&] { parse_hf_config(q, "c.json"); }),
                  "c.json: moe_intermediate_size: missing");
}

TEST(HfConfig, BadFieldsNameFileAndField) {
  struct Case {
    std::function<void(nlohmann::json&)> edit;
    std::string want;
  };
  const std::vector<Case> cases = {
      {[](auto& j) { j.erase("num_attention_heads"); }, "c.json: num_attention_heads: missing"},
      {[](auto& j) { j["hidden_size"] = "64"; },
       "c.json: hidden_size: must be an integer, got \"64\""},
      {[](auto& j) { j["num_hidden_layers"] = 0; },
       "c.json: num_hidden_layers: must be >= 1, got 0"},
      {[](auto& j) { j["num_key_value_heads"] = 3; },
       "c.json: num_key_value_heads: 3 does not divide num_attention_heads 8"},
      {[](auto& j) { j["head_dim"] = 7; }, "c.json: head_dim: must be even for RoPE, got 7"},
      {[](auto& j) { j["rms_norm_eps"] = -1.0; }, "c.json: rms_norm_eps: must be > 0"},
      {[](auto& j) { j["tie_word_embeddings"] = 1; },
       "c.json: tie_word_embeddings: must be true or false, got 1"},
      {[](auto& j) { j["hidden_act"] = "gelu"; },
       "c.json: hidden_act: 'gelu' is not supported (silu)"},
      {[](auto& j) { j["torch_dtype"] = "float64"; },
       "c.json: torch_dtype: 'float64' is not supported"},
      {[](auto& j) { j["architectures"] = "LlamaForCausalLM"; },
       "c.json: architectures: must be a list of one class name"},
      {[](auto& j) { j.erase("architectures"); },
       "c.json: architectures: missing (supported: LlamaForCausalLM"},
      {[](auto& j) { j["architectures"] = {"GPT2LMHeadModel"}; },
       "c.json: architectures: 'GPT2LMHeadModel' is not supported (supported: LlamaForCausalLM, "
       "MistralForCausalLM, "
       "Qwen2ForCausalLM, Qwen3ForCausalLM, MixtralForCausalLM, Qwen3MoeForCausalLM)"},
      {[](auto& j) { j["partial_rotary_factor"] = 0.5; },
       "c.json: partial_rotary_factor: only 1.0 is supported"},
  };
  for (const auto& c : cases) {
    auto j = llama_json();
    c.edit(j);
    EXPECT_CONTAINS(error_of<mq::ConfigError>([&] { parse_hf_config(j, "c.json"); }), c.want);
  }
}

TEST(HfConfig, TinyConfigsParse) {
  HfConfig q = mq::models::load_hf_config(tiny("qwen3_moe"));
  EXPECT_EQ(q.num_experts, 6);  // saved as num_local_experts by transformers 5
  EXPECT_TRUE(q.norm_topk_prob);
  EXPECT_EQ(q.mlp_only_layers, std::vector<int64_t>{1});
  EXPECT_EQ(q.dtype, "bfloat16");
  HfConfig m = mq::models::load_hf_config(tiny("mixtral"));
  EXPECT_EQ(m.sliding_window, (std::vector<int64_t>{5, 5}));
  HfConfig l = mq::models::load_hf_config(tiny("llama3_bias"));
  EXPECT_EQ(l.rope.type, "llama3");
  EXPECT_EQ(l.rope.original_max_position_embeddings, 16);
  EXPECT_TRUE(l.attention_bias && l.mlp_bias);
  HfConfig q2 = mq::models::load_hf_config(tiny("qwen2"));  // legacy rope_theta + rope_scaling
  EXPECT_EQ(q2.rope.type, "linear");
  EXPECT_DOUBLE_EQ(q2.rope.factor, 4.0);
  EXPECT_CONTAINS(error_of<mq::IoError>([] { mq::models::load_hf_config("/nonexistent/m"); }),
                  "/nonexistent/m/config.json: cannot open");
}

// ---- checkpoint
// ------------------------------------------------------------------------------------

TEST(Checkpoint, ShardedIndexAndSlices) {
  auto ck = mq::models::Checkpoint::open(tiny("qwen3"));
  auto idx = read_json(tiny("qwen3") + "/model.safetensors.index.json");
  EXPECT_EQ(ck.names().size(), idx["weight_map"].size());
  std::set<std::string> files;
  for (const auto& n : ck.names()) {
    files.insert(fs::path(ck.file_of(n)).filename().string());
    EXPECT_EQ(fs::path(ck.file_of(n)).filename().string(), idx["weight_map"][n].get<std::string>());
  }
  EXPECT_EQ(files.size(), 2u);

  const std::string w = "model.layers.1.self_attn.o_proj.weight";  // (64, 96) bf16
  EXPECT_EQ(ck.dtype_of(w), at::kBFloat16);
  at::Tensor full = ck.load(w);
  ASSERT_EQ(full.sizes(), (std::vector<int64_t>{64, 96}));
  EXPECT_EQ(full.scalar_type(), at::kBFloat16);
  EXPECT_TRUE(at::equal(ck.load(w, at::kFloat), full.to(at::kFloat)));
  for (auto [dim, b, e] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
           {0, 0, 1}, {0, 5, 38}, {1, 0, 96}, {1, 17, 50}, {1, 95, 96}, {0, 64, 64}}) {
    at::Tensor s = ck.load_slice(w, dim, b, e, at::kFloat);
    EXPECT_TRUE(s.is_contiguous());
    EXPECT_TRUE(at::equal(s, full.narrow(dim, b, e - b).to(at::kFloat)))
        << dim << " " << b << " " << e;
  }
  EXPECT_CONTAINS(error_of<mq::IoError>([&] { ck.load_slice(w, 1, 90, 97); }),
                  "tensor 'model.layers.1.self_attn.o_proj.weight' of shape [64, 96]: slice [90, "
                  "97) of dim 1 is out of range");
  EXPECT_CONTAINS(error_of<mq::IoError>([&] { ck.load_slice(w, 2, 0, 1); }), "has no dim 2");
  EXPECT_CONTAINS(error_of<mq::IoError>([&] { ck.load("nope"); }),
                  "/tiny/qwen3: no tensor 'nope' (looked in model-00001-of-00002.safetensors, "
                  "model-00002-of-00002.safetensors)");
  EXPECT_CONTAINS(error_of<mq::IoError>([&] {
                    ck.load_expect(w, {96, 64});
                  }),
                  "has shape [64, 96], expected [96, 64]");
}

TEST(Checkpoint, IndexErrors) {
  {
    TmpCopy t("mixtral");
    auto idx = read_json(t.dir + "/model.safetensors.index.json");
    idx["weight_map"]["lm_head.weight"] = "model-00009-of-00009.safetensors";
    write_text(t.dir + "/model.safetensors.index.json", idx.dump());
    EXPECT_CONTAINS(error_of<mq::IoError>([&] { mq::models::Checkpoint::open(t.dir); }),
                    "model.safetensors.index.json: weight_map: tensor 'lm_head.weight' -> "
                    "'model-00009-of-00009.safetensors': file does not exist");
  }
  {
    TmpCopy t("mixtral");
    auto idx = read_json(t.dir + "/model.safetensors.index.json");
    idx["weight_map"].erase("model.norm.weight");
    write_text(t.dir + "/model.safetensors.index.json", idx.dump());
    EXPECT_CONTAINS(error_of<mq::IoError>([&] { mq::models::Checkpoint::open(t.dir); }),
                    "tensor 'model.norm.weight' is not listed in");
  }
  {
    TmpCopy t("mixtral");
    write_text(t.dir + "/model.safetensors.index.json", "{\"weight_map\": ");
    EXPECT_CONTAINS(error_of<mq::IoError>([&] { mq::models::Checkpoint::open(t.dir); }),
                    "model.safetensors.index.json: invalid JSON");
  }
  EXPECT_CONTAINS(error_of<mq::IoError>([&] { mq::models::Checkpoint::open("/nonexistent/m"); }),
                  "/nonexistent/m: no model.safetensors or model.safetensors.index.json");
}

// ---- loader errors
// ---------------------------------------------------------------------------------

TEST(Load, UnknownArchitectureListsSupported) {
  TmpCopy t("llama");
  t.edit_config([](nlohmann::json& j) { j["architectures"] = {"PhiForCausalLM"}; });
  std::string e = error_of<mq::ConfigError>([&] { mq::models::load_causal_lm(t.dir); });
  EXPECT_CONTAINS(e,
                  t.dir +
                      "/config.json: architectures: 'PhiForCausalLM' is not supported (supported: "
                      "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, "
                      "MixtralForCausalLM, Qwen3MoeForCausalLM)");
}

TEST(Load, BadConfigField) {
  TmpCopy t("qwen3");
  t.edit_config([](nlohmann::json& j) { j.erase("num_attention_heads"); });
  EXPECT_CONTAINS(error_of<mq::ConfigError>([&] { mq::models::load_causal_lm(t.dir); }),
                  t.dir + "/config.json: num_attention_heads: missing");
  TmpCopy u("qwen3");
  write_text(u.dir + "/config.json", "{\"architectures\": [");
  EXPECT_CONTAINS(error_of<mq::ConfigError>([&] { mq::models::load_causal_lm(u.dir); }),
                  "config.json: invalid JSON");
}

TEST(Load, ConfigDisagreesWithTensors) {
  TmpCopy t("llama");
  t.edit_config([](nlohmann::json& j) { j["intermediate_size"] = 96; });
  EXPECT_CONTAINS(error_of<mq::IoError>([&] { mq::models::load_causal_lm(t.dir); }),
                  "model.safetensors: tensor 'model.layers.0.mlp.gate_proj.weight' has shape [64, "
                  "64], expected [96, 64]");
  TmpCopy u("llama");
  u.edit_config([](nlohmann::json& j) { j["tie_word_embeddings"] = false; });
  EXPECT_CONTAINS(error_of<mq::IoError>([&] { mq::models::load_causal_lm(u.dir); }),
                  ": no tensor 'lm_head.weight'");
  TmpCopy v("qwen3");
  v.edit_config([](nlohmann::json& j) {
    j["architectures"] = {"LlamaForCausalLM"};
    j["head_dim"] = 24;
  });
  EXPECT_CONTAINS(error_of<mq::IoError>([&] { mq::models::load_causal_lm(v.dir); }),
                  "unexpected tensor 'model.layers.0.self_attn.k_norm.weight' (not a parameter of "
                  "LlamaForCausalLM)");
}

TEST(Load, MissingAndExtraTensors) {
  auto base = mq::io::load_safetensors(tiny("llama") + "/model.safetensors");
  {
    TmpCopy t("llama");
    auto m = base;
    m.erase("model.layers.1.mlp.up_proj.weight");
    mq::io::save_safetensors(t.dir + "/model.safetensors", m);
    EXPECT_CONTAINS(
        error_of<mq::IoError>([&] { mq::models::load_causal_lm(t.dir); }),
        t.dir + ": no tensor 'model.layers.1.mlp.up_proj.weight' (looked in model.safetensors)");
  }
  {
    TmpCopy t("llama");
    auto m = base;
    m["model.layers.0.self_attn.rotary_emb.inv_freq"] = at::ones({8});   // old HF buffer: tolerated
    m["lm_head.weight"] = base.at("model.embed_tokens.weight").clone();  // tied: HF ignores it
    mq::io::save_safetensors(t.dir + "/model.safetensors", m);
    EXPECT_NO_THROW(mq::models::load_causal_lm(t.dir));
    m["model.layers.0.mlp.extra.weight"] = at::ones({2, 2});
    mq::io::save_safetensors(t.dir + "/model.safetensors", m);
    EXPECT_CONTAINS(error_of<mq::IoError>([&] { mq::models::load_causal_lm(t.dir); }),
                    "model.safetensors: unexpected tensor 'model.layers.0.mlp.extra.weight' (not a "
                    "parameter of "
                    "LlamaForCausalLM)");
  }
}

TEST(Load, TruncatedFile) {
  TmpCopy t("llama");
  const std::string f = t.dir + "/model.safetensors";
  fs::resize_file(f, fs::file_size(f) - 100);
  std::string e = error_of<mq::IoError>([&] { mq::models::load_causal_lm(t.dir); });
  EXPECT_CONTAINS(e, f + ":");
  fs::resize_file(f, 5);
  EXPECT_CONTAINS(error_of<mq::IoError>([&] { mq::models::load_causal_lm(t.dir); }), f + ":");
}

TEST(Load, DtypeOption) {
  auto a = mq::models::load_causal_lm(tiny("llama"));  // fp32 checkpoint
  EXPECT_EQ(a->dtype(), at::kFloat);
  auto b = mq::models::load_causal_lm(tiny("llama"), with_dtype(at::kBFloat16));
  EXPECT_EQ(b->dtype(), at::kBFloat16);
  EXPECT_EQ(b->get_submodule("model.norm").parameter("weight").scalar_type(), at::kBFloat16);
  EXPECT_THROW(mq::models::load_causal_lm(tiny("llama"), with_dtype(at::kDouble)), mq::Error);
}

TEST(Load, ExpectedTensorNames) {
  HfConfig c = mq::models::load_hf_config(tiny("mixtral"));
  std::vector<std::string> names = mq::models::expected_tensor_names(c);
  auto ck = mq::models::Checkpoint::open(tiny("mixtral"));
  std::vector<std::string> sorted = names;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(sorted, ck.names());
  EXPECT_EQ(names.front(), "model.embed_tokens.weight");
  EXPECT_EQ(names.back(), "lm_head.weight");
}

}  // namespace
