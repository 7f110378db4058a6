#include "mq/models/hf_config.hpp"

#include <algorithm>
#include <deque>
#include <fstream>
#include <sstream>

#include "models/json_file_impl.hpp"
#include "mq/core/error.hpp"

namespace mq::models {

namespace {

// MoE block of a family: routing, the block's child name in the decoder layer, its class, the
// per-expert MLP class and that MLP's projection names.
struct MoeTraits {
  MoeRouting routing = MoeRouting::kNone;
  std::string_view child = "", block_class = "", expert_class = "";
  std::string_view gate = "", up = "", down = "";
};

// One supported family. HF names its classes <prefix><role> (LlamaForCausalLM, LlamaModel,
// LlamaDecoderLayer, ...). The default eps, rope theta and head_dim are those of the transformers
// 5.14 config classes.
struct FamilyRow {
  std::string_view prefix;
  Family family;
  bool qk_norm = false;
  bool qkv_bias_always = false;
  bool o_bias_from_config = false;
  bool qkv_bias_from_config = false;
  bool mlp_bias_from_config = false;
  MoeTraits moe = {};
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  int64_t head_dim = 0;
};

constexpr FamilyRow kFamilyRows[] = {
    {.prefix = "Llama",
     .family = Family::kLlama,
     .o_bias_from_config = true,
     .qkv_bias_from_config = true,
     .mlp_bias_from_config = true},
    {.prefix = "Mistral", .family = Family::kMistral},
    {.prefix = "Qwen2", .family = Family::kQwen2, .qkv_bias_always = true},
    {.prefix = "Qwen3",
     .family = Family::kQwen3,
     .qk_norm = true,
     .o_bias_from_config = true,
     .qkv_bias_from_config = true,
     .head_dim = 128},
    {.prefix = "Mixtral",
     .family = Family::kMixtral,
     .moe = {MoeRouting::kMixtral, "block_sparse_moe", "MixtralSparseMoeBlock",
             "MixtralBlockSparseTop2MLP", "w1", "w3", "w2"},
     .rms_norm_eps = 1e-5,
     .rope_theta = 1000000.0},
    {.prefix = "Qwen3Moe",
     .family = Family::kQwen3Moe,
     .qk_norm = true,
     .o_bias_from_config = true,
     .qkv_bias_from_config = true,
     .moe = {MoeRouting::kQwen3Moe, "mlp", "Qwen3MoeSparseMoeBlock", "Qwen3MoeMLP", "gate_proj",
             "up_proj", "down_proj"}},
};

// FamilyTraits holds string_views: the class names built from the prefixes live here, in a deque,
// which never moves its elements.
std::string_view class_name(std::string_view prefix, std::string_view role) {
  static std::deque<std::string> names;
  return names.emplace_back(std::string(prefix).append(role));
}

FamilyTraits family_traits_of(const FamilyRow& r) {
  auto name = [&](std::string_view role) { return class_name(r.prefix, role); };
  return {name("ForCausalLM"),
          r.family,
          name("Model"),
          name("DecoderLayer"),
          name("Attention"),
          name("MLP"),
          name("RMSNorm"),
          name("RotaryEmbedding"),
          r.qk_norm,
          r.qkv_bias_always,
          r.o_bias_from_config,
          r.qkv_bias_from_config,
          r.mlp_bias_from_config,
          r.moe.routing,
          r.moe.child,
          r.moe.block_class,
          r.moe.expert_class,
          r.moe.gate,
          r.moe.up,
          r.moe.down,
          r.rms_norm_eps,
          r.rope_theta,
          r.head_dim};
}

const std::vector<FamilyTraits> kFamilies = [] {
  std::vector<FamilyTraits> v;
  for (const FamilyRow& r : kFamilyRows) v.push_back(family_traits_of(r));
  return v;
}();

[[noreturn]] void fail(const std::string& source, const std::string& field,
                       const std::string& rule) {
  MQ_THROW(ConfigError, source, ": ", field, ": ", rule);
}

/// A JSON field reader that names the file and field in every error.
struct Reader {
  const nlohmann::json& j;
  const std::string& source;

  bool has(const char* k) const { return j.contains(k) && !j.at(k).is_null(); }

  int64_t int_req(const char* k, int64_t min = 1) const {
    if (!has(k)) fail(source, k, "missing");
    return int_at(j.at(k), k, min);
  }
  int64_t int_or(const char* k, int64_t dflt, int64_t min = 1) const {
    return has(k) ? int_at(j.at(k), k, min) : dflt;
  }
  int64_t int_at(const nlohmann::json& v, const std::string& k, int64_t min) const {
    if (!v.is_number_integer()) fail(source, k, "must be an integer, got " + v.dump());
    const int64_t x = v.get<int64_t>();
    if (x < min)
      fail(source, k, "must be >= " + std::to_string(min) + ", got " + std::to_string(x));
    return x;
  }
  double num_at(const nlohmann::json& v, const std::string& k) const {
    if (!v.is_number()) fail(source, k, "must be a number, got " + v.dump());
    return v.get<double>();
  }
  double pos_num_or(const char* k, double dflt) const {
    if (!has(k)) return dflt;
    const double x = num_at(j.at(k), k);
    if (!(x > 0)) fail(source, k, "must be > 0, got " + j.at(k).dump());
    return x;
  }
  bool bool_or(const char* k, bool dflt) const {
    if (!has(k)) return dflt;
    if (!j.at(k).is_boolean()) fail(source, k, "must be true or false, got " + j.at(k).dump());
    return j.at(k).get<bool>();
  }
  std::string str_or(const char* k, const std::string& dflt) const {
    if (!has(k)) return dflt;
    if (!j.at(k).is_string()) fail(source, k, "must be a string, got " + j.at(k).dump());
    return j.at(k).get<std::string>();
  }
};

RopeConfig parse_rope(const Reader& r, int64_t max_pos, double default_theta) {
  RopeConfig rope;
  // transformers 5 writes rope_parameters; older files write rope_theta and rope_scaling at top
  // level.
  const char* field = r.has("rope_parameters") ? "rope_parameters" : "rope_scaling";
  const nlohmann::json* p = r.has(field) ? &r.j.at(field) : nullptr;
  if (p && !p->is_object()) fail(r.source, field, "must be an object, got " + p->dump());
  auto sub = [&](const char* k) { return std::string(field) + "." + k; };
  auto has = [&](const char* k) { return p && p->contains(k) && !p->at(k).is_null(); };
  rope.theta = default_theta;
  if (r.has("rope_theta")) rope.theta = r.num_at(r.j.at("rope_theta"), "rope_theta");
  if (has("rope_theta")) rope.theta = r.num_at(p->at("rope_theta"), sub("rope_theta"));
  if (!(rope.theta > 0)) fail(r.source, "rope_theta", "must be > 0");
  if (has("rope_type") || has("type")) {
    const char* k = has("rope_type") ? "rope_type" : "type";
    if (!p->at(k).is_string()) fail(r.source, sub(k), "must be a string, got " + p->at(k).dump());
    rope.type = p->at(k).get<std::string>();
  }
  if (has("partial_rotary_factor") &&
      r.num_at(p->at("partial_rotary_factor"), sub("partial_rotary_factor")) != 1.0)
    fail(r.source, sub("partial_rotary_factor"), "only 1.0 is supported");
  if (r.has("partial_rotary_factor") &&
      r.num_at(r.j.at("partial_rotary_factor"), "partial_rotary_factor") != 1.0)
    fail(r.source, "partial_rotary_factor", "only 1.0 is supported");
  auto num_req = [&](const char* k) {
    if (!has(k)) fail(r.source, sub(k), "missing (required by rope type '" + rope.type + "')");
    const double x = r.num_at(p->at(k), sub(k));
    if (!(x > 0)) fail(r.source, sub(k), "must be > 0, got " + p->at(k).dump());
    return x;
  };
  if (rope.type == "default") {
  } else if (rope.type == "linear") {
    rope.factor = num_req("factor");
  } else if (rope.type == "llama3") {
    rope.factor = num_req("factor");
    rope.low_freq_factor = num_req("low_freq_factor");
    rope.high_freq_factor = num_req("high_freq_factor");
    if (rope.high_freq_factor == rope.low_freq_factor)
      fail(r.source, sub("high_freq_factor"), "must differ from low_freq_factor");
    // HF: a top-level original_max_position_embeddings wins, else the dict's, else
    // max_position_embeddings.
    if (r.has("original_max_position_embeddings"))
      rope.original_max_position_embeddings = r.int_req("original_max_position_embeddings");
    else if (has("original_max_position_embeddings"))
      rope.original_max_position_embeddings = r.int_at(p->at("original_max_position_embeddings"),
                                                       sub("original_max_position_embeddings"), 1);
    else
      rope.original_max_position_embeddings = max_pos;
    if (rope.original_max_position_embeddings <= 0)
      fail(r.source, sub("original_max_position_embeddings"),
           "missing and max_position_embeddings is not set");
  } else {
    fail(r.source, sub(has("rope_type") ? "rope_type" : "type"),
         "'" + rope.type + "' is not supported (supported: default, linear, llama3)");
  }
  return rope;
}

std::vector<int64_t> parse_sliding(const Reader& r, const FamilyTraits& t, int64_t layers) {
  std::vector<int64_t> out(static_cast<size_t>(layers), 0);
  auto window = [&](int64_t dflt) { return r.int_or("sliding_window", dflt); };
  switch (t.family) {
    case Family::kLlama:
      return out;
    case Family::kMistral:
    case Family::kMixtral: {
      // Mistral's class default is 4096, Mixtral's None; an explicit null means none.
      const bool explicit_null =
          r.j.contains("sliding_window") && r.j.at("sliding_window").is_null();
      const int64_t w = explicit_null ? 0 : window(t.family == Family::kMistral ? 4096 : 0);
      std::fill(out.begin(), out.end(), w);
      return out;
    }
    case Family::kQwen3Moe: {
      if (r.bool_or("use_sliding_window", false)) std::fill(out.begin(), out.end(), window(4096));
      return out;
    }
    case Family::kQwen2:
    case Family::kQwen3: {
      const int64_t w = r.bool_or("use_sliding_window", false) ? window(4096) : 0;
      if (r.has("layer_types")) {
        const auto& lt = r.j.at("layer_types");
        if (!lt.is_array() || static_cast<int64_t>(lt.size()) != layers)
          fail(r.source, "layer_types", "must be a list of num_hidden_layers strings");
        for (size_t i = 0; i < lt.size(); ++i) {
          const std::string f = "layer_types[" + std::to_string(i) + "]";
          if (!lt[i].is_string()) fail(r.source, f, "must be a string");
          const std::string s = lt[i].get<std::string>();
          if (s == "sliding_attention") {
            if (w == 0)
              fail(r.source, f,
                   "sliding_attention but sliding_window is not set (use_sliding_window false)");
            out[i] = w;
          } else if (s != "full_attention") {
            fail(r.source, f, "'" + s + "' is not supported (full_attention, sliding_attention)");
          }
        }
      } else if (w > 0) {
        const int64_t mwl = r.int_or("max_window_layers", 28, 0);
        for (int64_t i = mwl; i < layers; ++i) out[static_cast<size_t>(i)] = w;
      }
      return out;
    }
  }
  return out;
}

}  // namespace

const std::vector<FamilyTraits>& family_traits() { return kFamilies; }

const FamilyTraits* find_family(std::string_view architecture) {
  for (const auto& f : kFamilies)
    if (f.architecture == architecture) return &f;
  return nullptr;
}

std::string supported_architectures() {
  std::string s;
  for (const auto& f : kFamilies) s += (s.empty() ? "" : ", ") + std::string(f.architecture);
  return s;
}

const FamilyTraits& HfConfig::traits() const {
  const FamilyTraits* t = find_family(architecture);
  MQ_ASSERT(t != nullptr);
  return *t;
}

bool HfConfig::is_moe_layer(int64_t i) const {
  if (num_experts == 0) return false;
  if (traits().family == Family::kMixtral) return true;
  return std::find(mlp_only_layers.begin(), mlp_only_layers.end(), i) == mlp_only_layers.end() &&
         (i + 1) % decoder_sparse_step == 0;
}

int64_t HfConfig::expert_intermediate_size() const {
  return traits().family == Family::kQwen3Moe ? moe_intermediate_size : intermediate_size;
}

HfConfig parse_hf_config(const nlohmann::json& j, const std::string& source) {
  if (!j.is_object()) MQ_THROW(ConfigError, source, ": $: must be a JSON object");
  Reader r{j, source};
  HfConfig c;
  c.source = source;
  if (!r.has("architectures"))
    fail(source, "architectures", "missing (supported: " + supported_architectures() + ")");
  const auto& arch = j.at("architectures");
  if (!arch.is_array() || arch.size() != 1 || !arch[0].is_string())
    fail(source, "architectures", "must be a list of one class name, got " + arch.dump());
  c.architecture = arch[0].get<std::string>();
  const FamilyTraits* t = find_family(c.architecture);
  if (!t)
    fail(
        source, "architectures",
        "'" + c.architecture + "' is not supported (supported: " + supported_architectures() + ")");
  c.model_type = r.str_or("model_type", "");

  c.hidden_size = r.int_req("hidden_size");
  c.intermediate_size = r.int_req("intermediate_size");
  c.num_hidden_layers = r.int_req("num_hidden_layers");
  c.num_attention_heads = r.int_req("num_attention_heads");
  c.vocab_size = r.int_req("vocab_size");
  c.num_key_value_heads = r.int_or("num_key_value_heads", c.num_attention_heads);
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    fail(source, "num_key_value_heads",
         std::to_string(c.num_key_value_heads) + " does not divide num_attention_heads " +
             std::to_string(c.num_attention_heads));
  const int64_t dflt_head_dim = t->default_head_dim > 0 ? t->default_head_dim : 0;
  if (r.has("head_dim")) {
    c.head_dim = r.int_req("head_dim");
  } else if (dflt_head_dim > 0) {
    c.head_dim = dflt_head_dim;
  } else {
    if (c.hidden_size % c.num_attention_heads != 0)
      fail(source, "head_dim", "missing and hidden_size is not a multiple of num_attention_heads");
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  if (c.head_dim % 2 != 0)
    fail(source, "head_dim", "must be even for RoPE, got " + std::to_string(c.head_dim));
  c.max_position_embeddings = r.int_or("max_position_embeddings", 0, 1);
  c.rms_norm_eps = r.pos_num_or("rms_norm_eps", t->default_rms_norm_eps);
  c.rope = parse_rope(r, c.max_position_embeddings, t->default_rope_theta);
  c.tie_word_embeddings = r.bool_or("tie_word_embeddings", false);
  c.attention_bias = r.bool_or("attention_bias", false);
  c.mlp_bias = r.bool_or("mlp_bias", false);
  c.hidden_act = r.str_or("hidden_act", "silu");
  if (c.hidden_act != "silu")
    fail(source, "hidden_act", "'" + c.hidden_act + "' is not supported (silu)");
  const char* dtype_field = r.has("dtype") ? "dtype" : "torch_dtype";
  c.dtype = r.str_or(dtype_field, "");
  if (!c.dtype.empty() && c.dtype != "float32" && c.dtype != "bfloat16" && c.dtype != "float16")
    fail(source, dtype_field, "'" + c.dtype + "' is not supported (float32, bfloat16, float16)");
  c.sliding_window = parse_sliding(r, *t, c.num_hidden_layers);

  if (t->routing != MoeRouting::kNone) {
    // Mixtral spells it num_local_experts; Qwen3-MoE num_experts, and transformers 5 saves it as
    // num_local_experts through the attribute map.
    const char* ek = r.has("num_local_experts") ? "num_local_experts" : "num_experts";
    c.num_experts = r.int_req(ek);
    c.num_experts_per_tok = r.int_req("num_experts_per_tok");
    if (c.num_experts_per_tok > c.num_experts)
      fail(source, "num_experts_per_tok",
           std::to_string(c.num_experts_per_tok) + " exceeds " + ek + " " +
               std::to_string(c.num_experts));
    if (t->routing == MoeRouting::kQwen3Moe) {
      c.moe_intermediate_size = r.int_req("moe_intermediate_size");
      c.norm_topk_prob = r.bool_or("norm_topk_prob", false);
      c.decoder_sparse_step = r.int_or("decoder_sparse_step", 1);
      if (r.has("mlp_only_layers")) {
        const auto& m = j.at("mlp_only_layers");
        if (!m.is_array()) fail(source, "mlp_only_layers", "must be a list of layer indices");
        for (size_t i = 0; i < m.size(); ++i)
          c.mlp_only_layers.push_back(
              r.int_at(m[i], "mlp_only_layers[" + std::to_string(i) + "]", 0));
      }
    }
  }
  return c;
}

HfConfig load_hf_config(const std::string& dir) {
  const std::string path = dir + "/config.json";
  return parse_hf_config(detail::read_json_file<ConfigError>(path), path);
}

}  // namespace mq::models
