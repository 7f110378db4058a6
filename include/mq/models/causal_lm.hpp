#pragma once
/// HF decoder-only causal LMs (Llama, Mistral, Qwen2, Qwen3, Mixtral, Qwen3-MoE) as mq::nn module
/// trees whose dotted parameter names are exactly the checkpoint's (HF state_dict / on-disk names),
/// so ModelOpt's wildcard patterns ("*self_attn.q_proj*", "*mlp.gate.*", "*router*", "*.experts.*",
/// "*lm_head*", "*block_sparse_moe.gate*") match verbatim:
///
///   (CausalLM, type "LlamaForCausalLM")
///   model                                      DecoderModel  "LlamaModel"
///   model.embed_tokens                         nn.Embedding
///   model.layers                               nn.ModuleList
///   model.layers.N                             DecoderLayer  "LlamaDecoderLayer"
///   model.layers.N.self_attn                   Attention     "LlamaAttention" (quant-registry key)
///   model.layers.N.self_attn.{q,k,v,o}_proj    nn.Linear
///   model.layers.N.self_attn.{q,k}_norm        RMSNorm       (Qwen3, Qwen3-MoE)
///   model.layers.N.mlp                         Mlp           "LlamaMLP": {gate,up,down}_proj
///   model.layers.N.block_sparse_moe            SparseMoe     "MixtralSparseMoeBlock" (Mixtral)
///       .gate                                  nn.Linear     router (num_experts, hidden)
///       .experts.E.{w1,w2,w3}                  nn.Linear     w1 gate, w3 up, w2 down
///   model.layers.N.mlp                         SparseMoe     "Qwen3MoeSparseMoeBlock" (Qwen3-MoE
///   MoE layers)
///       .gate, .experts.E.{gate,up,down}_proj
///   model.layers.N.{input,post_attention}_layernorm   RMSNorm "LlamaRMSNorm" (no quantizers by
///   default) model.norm                                 RMSNorm model.rotary_emb RotaryEmbedding
///   (no parameters; inv_freq as HF computes it) lm_head nn.Linear (weight shared with embed_tokens
///   when tied)
///
/// Experts use the per-expert on-disk names that transformers 5.14 save_pretrained writes (it fuses
/// experts in memory but un-fuses them on save), so export writes them back under the same names.
///
/// Forward follows HF's eager path op for op (RMSNorm in fp32, rotate_half RoPE with inv_freq in
/// fp32, GQA by repeat_kv, additive causal/padding/sliding-window mask with finfo.min, softmax in
/// fp32, SiLU-gated MLP, routers as HF) so fp32 logits match transformers within fp32 rounding.
/// Parents look children up by name at forward time, so a replacement (QuantLinear, a quantized
/// attention with q/k/v_bmm_quantizer) is used without any pointer fix-up.
///
/// Example:
///   mq::models::LoadOptions opt;
///   opt.dtype = at::kFloat;
///   auto lm = mq::models::load_causal_lm("/models/SmolLM2-135M", opt);
///   at::Tensor logits = lm->forward(ids);                   // (B, S, V)
///   for (size_t i = 0; i < lm->num_layers(); ++i) lm->layer(i).register_forward_pre_hook(...);
///   for (auto& [name, moe] : lm->moe_blocks()) moe->expert_token_counts();
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "mq/models/hf_config.hpp"
#include "mq/nn/module.hpp"
#include "mq/nn/moe.hpp"

namespace mq::models {

/// Which part of the model this process holds. Tensor parallel: attention heads, KV heads and the
/// (dense) intermediate dimension are split into tp_size contiguous equal ranges (q/k/v and gate/up
/// column-parallel by output rows, o_proj/down_proj row-parallel by input columns, their bias on
/// tp_rank 0 only). Expert parallel: experts are split into ep_size contiguous ranges; the router
/// is replicated. The partial outputs of o_proj / down_proj / the MoE block are summed by the
/// all-reduce callbacks (required when the matching size is > 1). Default: the whole model.
struct ParallelSpec {
  int64_t tp_rank = 0;
  int64_t tp_size = 1;
  int64_t ep_rank = 0;
  int64_t ep_size = 1;
  /// In-place sum over the TP group (after o_proj and the dense down_proj).
  std::function<void(at::Tensor&)> tp_all_reduce;
  /// In-place sum over the EP group (after a sparse MoE block).
  std::function<void(at::Tensor&)> ep_all_reduce;

  /// [begin, end) of `n` items for `rank` of `size`; throws naming `what` when size does not divide
  /// n.
  static std::pair<int64_t, int64_t> range(int64_t n, int64_t rank, int64_t size, const char* what);
};

struct LoadOptions {
  /// Parameter and compute dtype. nullopt: the config's dtype (`dtype` / `torch_dtype`), fp32 when
  /// absent.
  std::optional<c10::ScalarType> dtype;
  c10::Device device = c10::kCPU;
  ParallelSpec parallel;
};

/// What every decoder layer needs from one forward: RoPE tables and the attention masks.
struct LayerContext {
  at::Tensor cos, sin;      ///< (1 or B, S, head_dim), model dtype
  at::Tensor mask_full;     ///< (B, 1, S, S) additive (0 or finfo.min), model dtype
  at::Tensor mask_sliding;  ///< same for sliding-window layers; undefined when no layer slides
};

/// HF's <Family>RMSNorm: weight * (x.float() * rsqrt(mean(x^2) + eps)).to(x.dtype).
class RMSNorm : public nn::Module {
 public:
  RMSNorm(std::string type, at::Tensor weight, double eps);
  std::string type_name() const override { return type_; }
  virtual at::Tensor forward(const at::Tensor& x);
  double eps() const { return eps_; }

 private:
  std::string type_;
  double eps_;
};

/// HF's <Family>RotaryEmbedding (default / linear / llama3 rope types).
class RotaryEmbedding : public nn::Module {
 public:
  RotaryEmbedding(std::string type, const RopeConfig& rope, int64_t head_dim, c10::Device device);
  std::string type_name() const override { return type_; }
  /// (head_dim / 2) fp32, as HF computes it.
  const at::Tensor& inv_freq() const { return inv_freq_; }
  /// cos, sin of shape (P, S, head_dim) in `dtype` for position_ids (P, S) int64.
  std::pair<at::Tensor, at::Tensor> forward(const at::Tensor& position_ids,
                                            c10::ScalarType dtype) const;

 private:
  std::string type_;
  at::Tensor inv_freq_;
};

/// Self-attention of every family (type = HF class name, the key register_hf_quant_modules uses).
/// Optional quantizer children q_bmm_quantizer / k_bmm_quantizer / v_bmm_quantizer are applied to
/// the (B, H, S, D) query / key / value states after RoPE and before repeat_kv; p_bmm_quantizer to
/// the softmax probabilities before the product with V.
class Attention : public nn::Module {
 public:
  /// Local sizes (after TP sharding). Children (q/k/v/o_proj, q/k_norm) are added by the builder.
  Attention(std::string type, int64_t num_heads, int64_t num_kv_heads, int64_t head_dim,
            bool sliding);
  std::string type_name() const override { return type_; }
  /// x (B, S, hidden) -> (B, S, hidden); partial sum when TP-sharded (the decoder layer reduces).
  virtual at::Tensor forward(const at::Tensor& x, const LayerContext& ctx);
  int64_t num_heads() const { return num_heads_; }
  int64_t num_kv_heads() const { return num_kv_heads_; }
  int64_t head_dim() const { return head_dim_; }

 private:
  std::string type_;
  int64_t num_heads_, num_kv_heads_, head_dim_;
  bool sliding_;
};

/// SiLU-gated MLP: down(silu(gate(x)) * up(x)). Dense MLPs ("LlamaMLP":
/// gate_proj/up_proj/down_proj) and single experts ("MixtralBlockSparseTop2MLP": w1/w3/w2,
/// "Qwen3MoeMLP") alike.
class Mlp : public nn::Module {
 public:
  Mlp(std::string type, std::string gate, std::string up, std::string down);
  std::string type_name() const override { return type_; }
  virtual at::Tensor forward(const at::Tensor& x);
  const std::string& gate_name() const { return gate_; }
  const std::string& up_name() const { return up_; }
  const std::string& down_name() const { return down_; }

 private:
  std::string type_, gate_, up_, down_;
};

/// Mixtral / Qwen3-MoE sparse MoE block: children `gate` (nn.Linear router) and `experts`
/// (nn.ModuleList of Mlp). Routes exactly like HF, counts tokens per expert (pads included, as HF
/// routes them too), and calls an expert's linears only on the tokens routed to it: an expert that
/// received no token is not called at all (calibration gives it a weight amax from its weights
/// alone).
class SparseMoe : public nn::SparseMoeBlock {
 public:
  /// `expert_begin`: global id of experts.0 (expert parallel); `num_experts`: global expert count.
  SparseMoe(std::string type, MoeRouting routing, int64_t num_experts, int64_t top_k,
            bool norm_topk_prob, int64_t expert_begin, int64_t num_local_experts);
  std::string type_name() const override { return type_; }
  nn::ModuleList& experts() override;
  /// x (B, S, hidden) -> (B, S, hidden); partial sum over local experts when EP-sharded.
  virtual at::Tensor forward(const at::Tensor& x);
  int64_t num_experts() const { return num_experts_; }
  int64_t top_k() const { return top_k_; }
  int64_t expert_begin() const { return expert_begin_; }

 private:
  std::string type_;
  MoeRouting routing_;
  int64_t num_experts_, top_k_;
  bool norm_topk_prob_;
  int64_t expert_begin_;
};

/// One decoder layer: x + attn(input_layernorm(x)), then h + mlp(post_attention_layernorm(h)).
/// Runs the Module pre-hooks with its input hidden states and the forward hooks with (input,
/// output), so calibration can capture per-layer inputs.
class DecoderLayer : public nn::Module {
 public:
  DecoderLayer(std::string type, std::string mlp_name, const ParallelSpec* parallel);
  std::string type_name() const override { return type_; }
  virtual at::Tensor forward(const at::Tensor& hidden, const LayerContext& ctx);
  /// "mlp" or "block_sparse_moe".
  const std::string& mlp_name() const { return mlp_name_; }
  /// The MoE block, or nullptr for a dense layer.
  SparseMoe* moe() const;

 private:
  std::string type_, mlp_name_;
  const ParallelSpec* parallel_;
};

/// "<Family>Model": embed_tokens, layers, norm, rotary_emb.
class DecoderModel : public nn::Module {
 public:
  DecoderModel(std::string type, const HfConfig& cfg, c10::ScalarType dtype);
  std::string type_name() const override { return type_; }
  /// RoPE tables and masks for input_ids (B, S) and an optional attention_mask (B, S) of 0/1.
  /// Position ids are 0..S-1 for every row, as HF uses when none are given (left padding does not
  /// shift them).
  LayerContext prepare(const at::Tensor& input_ids, const at::Tensor& attention_mask) const;
  /// Final hidden states (B, S, hidden) after model.norm.
  virtual at::Tensor forward(const at::Tensor& input_ids, const at::Tensor& attention_mask = {});
  nn::ModuleList& layers() const { return child_as<nn::ModuleList>("layers"); }

 private:
  std::string type_;
  std::vector<int64_t> sliding_;
  c10::ScalarType dtype_;
};

/// "<Family>ForCausalLM": model + lm_head.
class CausalLM : public nn::Module {
 public:
  CausalLM(HfConfig cfg, c10::ScalarType dtype, c10::Device device, ParallelSpec parallel);
  std::string type_name() const override { return cfg_.architecture; }
  /// input_ids (B, S) int64, attention_mask (B, S) 0/1 or undefined -> logits (B, S, vocab) in the
  /// model dtype.
  virtual at::Tensor forward(const at::Tensor& input_ids, const at::Tensor& attention_mask = {});

  const HfConfig& config() const { return cfg_; }
  const FamilyTraits& traits() const { return cfg_.traits(); }
  c10::ScalarType dtype() const { return dtype_; }
  c10::Device device() const { return device_; }
  const ParallelSpec& parallel() const { return *parallel_; }

  DecoderModel& model() const { return child_as<DecoderModel>("model"); }
  size_t num_layers() const { return model().layers().size(); }
  /// model.layers.<i>
  DecoderLayer& layer(size_t i) const;
  /// Dotted name of layer i ("model.layers.3").
  static std::string layer_name(size_t i) { return "model.layers." + std::to_string(i); }
  /// Every sparse MoE block with its dotted name ("model.layers.0.block_sparse_moe"), in layer
  /// order.
  std::vector<std::pair<std::string, SparseMoe*>> moe_blocks() const;
  /// Resets the token counters of every MoE block.
  void reset_expert_token_counts();

 private:
  HfConfig cfg_;
  c10::ScalarType dtype_;
  c10::Device device_;
  // Layers keep a pointer to it: stable address across moves of the CausalLM.
  std::unique_ptr<ParallelSpec> parallel_;
};

/// Source of parameter values while building: (checkpoint name, full shape, slice dim, begin, end)
/// -> tensor of the sliced shape, in the model dtype and device. dim < 0 means the whole tensor.
using WeightSource =
    std::function<at::Tensor(const std::string& name, const std::vector<int64_t>& full_shape,
                             int64_t dim, int64_t begin, int64_t end)>;

/// Builds the module tree for `cfg` taking every parameter from `source` (checkpoint names).
std::unique_ptr<CausalLM> build_causal_lm(const HfConfig& cfg, const WeightSource& source,
                                          c10::ScalarType dtype, c10::Device device = c10::kCPU,
                                          const ParallelSpec& parallel = {});

/// Every checkpoint tensor name `cfg` needs (the whole model, in build order); lm_head.weight is
/// absent when tied.
std::vector<std::string> expected_tensor_names(const HfConfig& cfg);

/// Loads `<dir>/config.json` and the safetensors of `dir`. Throws mq::ConfigError for a bad config
/// (unknown architecture lists the supported ones), mq::IoError for a missing tensor, a tensor of
/// the wrong shape, or an unexpected tensor (each names the file and tensor). Tolerated extras:
/// HF's
/// `*.rotary_emb.inv_freq` buffers and `lm_head.weight` when the embeddings are tied (ignored, as
/// HF ties it).
std::unique_ptr<CausalLM> load_causal_lm(const std::string& dir, const LoadOptions& options = {});

/// Registers every supported attention class (LlamaAttention, MistralAttention, Qwen2Attention,
/// Qwen3Attention, MixtralAttention, Qwen3MoeAttention) with nn::register_quant_attention, so
/// replace_quant_module adds q/k/v/p_bmm_quantizer to them (ModelOpt registers HF attention classes
/// on the fly). Idempotent.
void register_hf_quant_modules();

}  // namespace mq::models
