#pragma once
/// HF `config.json` of the supported decoder families, parsed into one struct, plus the per-family
/// traits table that the model builder reads (class names, on-disk module names, which biases and
/// norms exist, how the router normalises).
///
/// Supported `architectures` (exactly one entry): LlamaForCausalLM, MistralForCausalLM,
/// Qwen2ForCausalLM, Qwen3ForCausalLM, MixtralForCausalLM, Qwen3MoeForCausalLM. Anything else is an
/// mq::ConfigError listing these.
///
/// Errors are mq::ConfigError "<path>: <field>: <rule>", e.g.
///   /m/config.json: num_attention_heads: missing
///   /m/config.json: architectures: 'GPT2LMHeadModel' is not supported (supported:
///   LlamaForCausalLM, ...)
/// Fields that HF's config classes default (num_key_value_heads, head_dim, rms_norm_eps,
/// rope_theta, tie_word_embeddings, attention_bias, mlp_bias, hidden_act, sliding-window fields,
/// norm_topk_prob, decoder_sparse_step, mlp_only_layers) take that class's default when absent; the
/// size fields (hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, vocab_size,
/// and for MoE num_experts_per_tok, num_local_experts / num_experts, moe_intermediate_size) are
/// required.
///
/// RoPE is read from transformers 5's `rope_parameters` ({"rope_type", "rope_theta", ...}) or from
/// the legacy top-level `rope_theta` + `rope_scaling` ({"type" or "rope_type", "factor", ...});
/// supported rope types: default, linear, llama3.
///
/// Example:
///   mq::models::HfConfig c = mq::models::load_hf_config("/models/SmolLM2-135M");
///   c.traits().attention_class;   // "LlamaAttention"
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mq::models {

enum class Family { kLlama, kMistral, kQwen2, kQwen3, kMixtral, kQwen3Moe };

/// How a family's sparse MoE block routes (HF's router forward).
enum class MoeRouting {
  kNone,      ///< dense family
  kMixtral,   ///< softmax(fp32) -> top-k -> renormalise (always), weights stay fp32
  kQwen3Moe,  ///< softmax(fp32) -> top-k -> renormalise iff norm_topk_prob -> cast to logits dtype
};

/// What differs between families, as data (one row per architecture).
struct FamilyTraits {
  std::string_view architecture;  ///< "LlamaForCausalLM"
  Family family;
  std::string_view model_class;  ///< "LlamaModel"
  std::string_view decoder_layer_class;
  std::string_view attention_class;  ///< "LlamaAttention": the quant-registry key of the attention
  std::string_view mlp_class;        ///< dense MLP ("LlamaMLP")
  std::string_view norm_class;       ///< "LlamaRMSNorm"
  std::string_view rotary_class;     ///< "LlamaRotaryEmbedding"
  bool qk_norm;                      ///< Qwen3: RMSNorm over head_dim on q and k before RoPE
  bool qkv_bias_always;              ///< Qwen2: q/k/v carry a bias whatever attention_bias says
  bool o_bias_from_config;    ///< o_proj has a bias iff attention_bias (Llama, Qwen3, Qwen3-MoE)
  bool qkv_bias_from_config;  ///< q/k/v have a bias iff attention_bias
  bool mlp_bias_from_config;  ///< gate/up/down have a bias iff mlp_bias (Llama)
  MoeRouting routing;
  std::string_view
      moe_child;  ///< name of the MoE block in the decoder layer ("block_sparse_moe", "mlp")
  std::string_view moe_class;     ///< "MixtralSparseMoeBlock"
  std::string_view expert_class;  ///< per-expert MLP ("MixtralBlockSparseTop2MLP", "Qwen3MoeMLP")
  std::string_view expert_gate;   ///< "w1" / "gate_proj"
  std::string_view expert_up;     ///< "w3" / "up_proj"
  std::string_view expert_down;   ///< "w2" / "down_proj"
  double default_rms_norm_eps;
  double default_rope_theta;
  int64_t default_head_dim;  ///< 0: hidden_size / num_attention_heads
};

/// Every supported family, in the order of the error message.
const std::vector<FamilyTraits>& family_traits();
/// The row for `architecture`; nullptr when unsupported.
const FamilyTraits* find_family(std::string_view architecture);
/// "LlamaForCausalLM, MistralForCausalLM, ..." (for error messages).
std::string supported_architectures();

struct RopeConfig {
  std::string type = "default";  ///< "default", "linear", "llama3"
  double theta = 10000.0;
  double factor = 1.0;                           ///< linear, llama3
  double low_freq_factor = 1.0;                  ///< llama3
  double high_freq_factor = 4.0;                 ///< llama3
  int64_t original_max_position_embeddings = 0;  ///< llama3 (defaults to max_position_embeddings)
};

struct HfConfig {
  std::string source;        ///< the file parsed ("<dir>/config.json"), for messages
  std::string architecture;  ///< architectures[0]
  std::string model_type;    ///< may be empty
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;
  int64_t vocab_size = 0;
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  RopeConfig rope;
  bool tie_word_embeddings = false;
  bool attention_bias = false;
  bool mlp_bias = false;
  std::string hidden_act = "silu";
  /// "float32", "bfloat16", "float16" from `dtype` (transformers 5) or `torch_dtype`; empty when
  /// absent.
  std::string dtype;
  /// Per layer: 0 = full causal attention, w > 0 = sliding window of w (key j visible to query i
  /// iff i - w < j <= i), as HF's per-family rules resolve sliding_window / use_sliding_window /
  /// max_window_layers / layer_types.
  std::vector<int64_t> sliding_window;
  // ---- MoE (num_experts == 0 for dense families) ----
  int64_t num_experts = 0;
  int64_t num_experts_per_tok = 0;
  int64_t moe_intermediate_size =
      0;  ///< Qwen3-MoE expert width; Mixtral experts use intermediate_size
  bool norm_topk_prob = false;
  int64_t decoder_sparse_step = 1;
  std::vector<int64_t> mlp_only_layers;

  const FamilyTraits& traits() const;
  /// True when layer `i` has a sparse MoE block (Mixtral: every layer; Qwen3-MoE: HF's
  /// `i not in mlp_only_layers and num_experts > 0 and (i + 1) % decoder_sparse_step == 0`).
  bool is_moe_layer(int64_t i) const;
  /// Width of one expert's intermediate layer.
  int64_t expert_intermediate_size() const;
};

/// Parses a config.json object; `source` names it in errors. Throws mq::ConfigError.
HfConfig parse_hf_config(const nlohmann::json& j, const std::string& source);
/// Reads and parses `<dir>/config.json`. Throws mq::IoError when unreadable, mq::ConfigError when
/// invalid.
HfConfig load_hf_config(const std::string& dir);

}  // namespace mq::models
