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

namespace mq::dist {
struct ParallelGroups;
}  // namespace mq::dist

namespace mq::models {

/// Which part of the model this process holds, and how the sharded forward talks to its peers.
///
/// Tensor parallel (tp_size > 1): attention heads, KV heads and the dense intermediate dimension
/// are split into tp_size contiguous equal ranges: q/k/v and gate/up are column-parallel (output
/// rows split), o_proj and the dense down_proj row-parallel (input columns split; their bias, if
/// any, is held whole by every TP rank). Embeddings, norms, routers, lm_head and, in MoE blocks,
/// the experts are replicated over TP (expert_tp = 1).
///
/// Expert parallel (ep_size > 1): the experts of every MoE block are split into ep_size contiguous
/// ranges; the router is replicated. Each rank routes its own tokens; the tokens are all-gathered
/// over EP, every rank runs its local experts on the tokens of each source rank, and the results go
/// back to their owner by all-to-all (EP ranks may hold different data: EP may span DP ranks).
///
/// Layout invariance: every activation (the inputs the quantizers see, the logits) is bit-identical
/// to the single-process model with the same reduction_chunks R, for any TP/EP layout. Column
/// splits and per-head/per-token work are exact already; the only sum across ranks, the
/// row-parallel product, is computed as R partial products over R equal contiguous chunks of the
/// input dimension, folded in chunk order (p0 + p1 + ...) and then the bias added, by every layout
/// alike (each TP rank computes its R / tp_size chunks, tp_all_gather collects all R). With
/// tp_size == 1 and R <= 1 the row-parallel linears are plain at::linear. In the same
/// layout-invariant mode (tp_size > 1 or R > 1) attention multiplies QK^T and PV one head at a
/// time (ATen's CPU bmm picks its kernel by batch count, so H and H / tp heads batched may differ
/// in fp32). The MoE output is accumulated on the token's owner over the global experts in order,
/// as one process does. Measured: fp32 and bf16 logits and linear inputs equal bit for bit on CPU
/// (tests/unit/models/parallel_forward_test.cpp, tests/dist/model_forward_test.cpp).
///
/// Names: an EP rank's `experts` list holds its experts only, named from 0 (experts.<e - begin>);
/// SparseMoe::expert_begin() maps them to the checkpoint's global index. Expert token counts
/// count every source rank's tokens; TP peers share their batch, so summed over all ranks they
/// are tp_size times the tokens of the distinct batches.
///
/// Example (one rank of an MPI job, see parallel_spec_from_groups):
///   mq::models::LoadOptions opt;
///   opt.parallel = mq::models::parallel_spec_from_groups(groups, /*reduction_chunks=*/4);
///   auto lm = mq::models::load_causal_lm(dir, opt);  // reads only this rank's slices and experts
struct ParallelSpec {
  int64_t tp_rank = 0;
  int64_t tp_size = 1;
  int64_t ep_rank = 0;
  int64_t ep_size = 1;
  /// R: chunks of the input dimension of o_proj and the dense down_proj. 0 means tp_size. Must be a
  /// multiple of tp_size and divide their (unsharded) in_features. Give every layout that must
  /// agree bit for bit the same R (e.g. the largest tp_size in use).
  int64_t reduction_chunks = 0;
  /// Required when tp_size > 1. All-gather over the TP group: every rank passes a tensor of one
  /// shape; returns (tp_size, *shape), row i from TP rank i.
  std::function<at::Tensor(const at::Tensor&)> tp_all_gather;
  /// Required when ep_size > 1. Variable all-gather over the EP group: returns every EP rank's
  /// tensor in EP-rank order (dtype and trailing dims agree, dim 0 may differ and may be 0).
  std::function<std::vector<at::Tensor>(const at::Tensor&)> ep_all_gather_v;
  /// Required when ep_size > 1. All-to-all over the EP group: send[j] (ep_size tensors, dim 0 may
  /// differ and may be 0) goes to EP rank j; returns recv[i], the tensor EP rank i sent here.
  std::function<std::vector<at::Tensor>(const std::vector<at::Tensor>&)> ep_all_to_all_v;

  /// R resolved (reduction_chunks, or tp_size when 0).
  int64_t chunks() const { return reduction_chunks > 0 ? reduction_chunks : tp_size; }

  /// [begin, end) of `n` items for `rank` of `size`; throws naming `what` when size does not divide
  /// n.
  static std::pair<int64_t, int64_t> range(int64_t n, int64_t rank, int64_t size, const char* what);
};

/// The row-parallel product of ParallelSpec: x (..., in / tp_size) holds this TP rank's input
/// columns, w (out, in / tp_size) the matching weight columns, b (out) the whole bias or undefined.
/// Returns the full (..., out) result, identical on every TP rank and for every tp_size dividing
/// `chunks`. Throws when the local in_features is not divisible by chunks / tp_size.
at::Tensor row_parallel_linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                               const ParallelSpec& parallel);

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
  /// x (B, S, hidden) -> (B, S, hidden), complete on every TP rank (o_proj is row-parallel).
  virtual at::Tensor forward(const at::Tensor& x, const LayerContext& ctx);
  int64_t num_heads() const { return num_heads_; }
  int64_t num_kv_heads() const { return num_kv_heads_; }
  int64_t head_dim() const { return head_dim_; }
  /// Layout-invariant mode (set by the builder when tp_size > 1 or reduction_chunks > 1): the
  /// QK^T and PV products run one head at a time, so their bits do not depend on how many heads
  /// this rank holds. Off: one batched product over (B, H), as HF.
  void set_per_head_products(bool on) { per_head_products_ = on; }
  bool per_head_products() const { return per_head_products_; }

 private:
  std::string type_;
  int64_t num_heads_, num_kv_heads_, head_dim_;
  bool sliding_;
  bool per_head_products_ = false;
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
///
/// Expert parallel (parallel->ep_size > 1): the router runs on this rank's tokens; hidden states
/// and routing are all-gathered over EP; for each source rank in order and each local expert in
/// order the expert runs on exactly the rows one process would give it from that source (never on
/// rows of several sources at once), weighted and cast to the output dtype; the results go back by
/// all-to-all, and the owner adds them over the global experts 0..E-1 in order, as one process
/// does. The token counts of a local expert sum the tokens of every source (a source that shares
/// its data with another one, e.g. two TP ranks in one EP group, is counted once per source).
/// Every collective is issued by every EP rank, also when it exchanges no row.
class SparseMoe : public nn::SparseMoeBlock {
 public:
  /// `expert_begin`: global id of experts.0 (expert parallel); `num_experts`: global expert count;
  /// `parallel`: nullptr or ep_size 1 for a block holding every expert (must outlive the block).
  SparseMoe(std::string type, MoeRouting routing, int64_t num_experts, int64_t top_k,
            bool norm_topk_prob, int64_t expert_begin, int64_t num_local_experts,
            const ParallelSpec* parallel = nullptr);
  std::string type_name() const override { return type_; }
  nn::ModuleList& experts() override;
  /// x (B, S, hidden) -> (B, S, hidden), complete for this rank's tokens.
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
  const ParallelSpec* parallel_;
};

/// One decoder layer: x + attn(input_layernorm(x)), then h + mlp(post_attention_layernorm(h)).
/// Runs the Module pre-hooks with its input hidden states and the forward hooks with (input,
/// output), so calibration can capture per-layer inputs.
class DecoderLayer : public nn::Module {
 public:
  DecoderLayer(std::string type, std::string mlp_name);
  std::string type_name() const override { return type_; }
  virtual at::Tensor forward(const at::Tensor& hidden, const LayerContext& ctx);
  /// "mlp" or "block_sparse_moe".
  const std::string& mlp_name() const { return mlp_name_; }
  /// The MoE block, or nullptr for a dense layer.
  SparseMoe* moe() const;

 private:
  std::string type_, mlp_name_;
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

/// The ParallelSpec of this rank under `groups` (from mq::dist::make_parallel_groups): TP and EP
/// ranks and sizes, and the callbacks on groups.tp (all_gather) and groups.ep (all_gather_v,
/// all_to_all_v), which keep the groups' communicators alive. Throws mq::ConfigError when the
/// layout has pipeline parallelism or expert_tp != 1 (not supported by the model forward).
ParallelSpec parallel_spec_from_groups(const dist::ParallelGroups& groups,
                                       int64_t reduction_chunks = 0);

/// Registers every supported attention class (LlamaAttention, MistralAttention, Qwen2Attention,
/// Qwen3Attention, MixtralAttention, Qwen3MoeAttention) with nn::register_quant_attention, so
/// replace_quant_module adds q/k/v/p_bmm_quantizer to them (ModelOpt registers HF attention classes
/// on the fly). Idempotent.
void register_hf_quant_modules();

}  // namespace mq::models
