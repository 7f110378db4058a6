#pragma once
/// ModelOpt's unified Hugging Face checkpoint (`export_hf_checkpoint`, reference modelopt-numerics
/// §6) written from a quantized, calibrated mq::nn module tree whose dotted names are the HF
/// state_dict names ("model.layers.0.self_attn.q_proj", ...).
///
/// What is written into `export_dir`:
///   model.safetensors                 or model-0000k-of-0000n.safetensors +
///   model.safetensors.index.json
///                                     when the tensors exceed max_shard_size (huggingface_hub's
///                                     greedy split, in state_dict order)
///   hf_quant_config.json              {"producer", "quantization": {quant_algo,
///   kv_cache_quant_algo, ...,
///                                     exclude_modules}} (§6.2), when anything is quantized
///   config.json                       source_dir/config.json plus "quantization_config" (§6.3)
///   generation_config.json, tokenizer files      copied from source_dir when present
///
/// Steps, in ModelOpt's order (§6.1):
///   1. MoE experts (children `experts.<e>` of an nn::SparseMoeBlock): transformers 5 keeps experts
///   fused
///      in memory and ModelOpt quantizes that layout (one input quantizer per projection type for
///      all experts, one weight quantizer per expert over the concatenated gate/up rows). The
///      export makes the equivalent choice on separate expert linears: input amax = max over all
///      experts (gate_proj with up_proj / w1 with w3; down_proj / w2 separately), and per expert
///      one gate/up weight amax for formats with a scalar weight amax, FP8 included. An expert that
///      never saw a token thereby gets its siblings' input amax.
///   2. Fusion (§6.6): quantized sibling linears that read the same tensor -- {q_proj, k_proj,
///   v_proj},
///      {gate_proj, up_proj}, {w1, w3}, per expert for MoE -- get one input amax (max) and, for
///      formats with a scalar weight amax (NVFP4, W4A16 NVFP4, the FP8 stage of W4A8 AWQ), one
///      weight amax (max); static NVFP4 shares global_amax. Plain per-tensor FP8 groups are left
///      alone, as in ModelOpt. Members with different pre_quant_scales are resmoothed to their mean
///      (W * old / mean in fp32, weight amax recalibrated). For AWQ formats the group's
///      pre_quant_scale is then folded into the preceding norm (input_layernorm /
///      post_attention_layernorm) and not written. This step CHANGES the model (quantizers, and
///      weights / norms when resmoothing or folding) in place, as ModelOpt's export does.
///   3. Per quantized linear, hf_tensors' export_linear() in the export dtype (packed weight,
///      weight_scale, weight_scale_2, input_scale); every input_quantizer pre_quant_scale (enabled
///      or not) as <module>.pre_quant_scale.
///   4. KV cache: <attn>.k_bmm_quantizer amax -> <attn>.k_proj.k_scale = amax/448 (fp32, not
///   clamped),
///      v likewise; an affine bias -> k_proj.k_bias / v_proj.v_bias.
///   5. Every other parameter (embeddings, norms, biases, excluded linears such as lm_head) is
///   written
///      as-is, cast to the export dtype. Tied parameters (one tensor or one storage under two
///      names, e.g. lm_head tied to embed_tokens) are written once, under the first name.
///   6. hf_quant_config.json / config.json as ModelOpt builds them (exclude_modules wildcard
///   summary,
///      MIXED_PRECISION when layers differ, compressed-tensors style quantization_config).
///
/// Atomicity: everything is written into `<export_dir>.tmp-<pid>` and renamed onto `export_dir` at
/// the end. On any error the temporary directory is removed and `export_dir` is left as it was
/// (absent, or the previous export). An existing non-empty `export_dir` is an error unless
/// `overwrite`.
///
/// Errors are mq::Error with one line naming the module or tensor, e.g.
///   export_hf_checkpoint: model.layers.0.mlp.down_proj: ...weight: cannot export as int4_awq:
///   input dimension 96 is not a multiple of the block size 128 (ModelOpt supports no partial
///   blocks here)
///
/// Not implemented: nvfp4_awq's o_proj -> v_proj / down_proj -> up_proj pre_quant_scale fold, MoE
/// expert resmoothing to a common pre_quant_scale, SVDQuant LoRA tensors, 3-D (fused) expert
/// parameters, llama3 rope_theta sanitising of config.json.
///
/// Example:
///   mq::hf_export::ExportOptions o;          // dtype from config.json, "10GB" shards
///   o.overwrite = true;
///   auto r = mq::hf_export::export_hf_checkpoint(model, "/models/Llama-3.2-1B", "/out/llama-fp8",
///   o);
///   // r.quant_algo == "FP8", r.files == {"config.json", "generation_config.json", ...}
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "mq/export/hf_tensors.hpp"
#include "mq/nn/module.hpp"

namespace mq::hf_export {

struct ExportOptions {
  /// Export dtype of unquantized tensors and of weights before packing. Default: config.json's
  /// "dtype" (or legacy "torch_dtype"), else the dtype of the model's first parameter.
  std::optional<c10::ScalarType> dtype;
  /// Bytes per safetensors shard (ModelOpt's default "10GB" = 10^10). A tensor bigger than this
  /// gets a shard of its own, as in huggingface_hub.
  uint64_t max_shard_size = 10'000'000'000ULL;
  /// Replace an existing non-empty export_dir.
  bool overwrite = false;
  /// hf_quant_config.json / config.json "producer". The defaults are the ModelOpt release whose
  /// format this writer reproduces: deployment loaders (vLLM's legacy path) require the name
  /// "modelopt".
  std::string producer_name = "modelopt";
  std::string producer_version = "0.47.0";
  /// Files copied verbatim from source_dir when they exist.
  std::vector<std::string> copy_files = {"generation_config.json",
                                         "tokenizer.json",
                                         "tokenizer_config.json",
                                         "special_tokens_map.json",
                                         "tokenizer.model",
                                         "vocab.json",
                                         "merges.txt",
                                         "added_tokens.json",
                                         "chat_template.jinja",
                                         "chat_template.json"};
};

struct ExportReport {
  std::string quant_algo;           ///< "" when nothing is quantized
  std::string kv_cache_quant_algo;  ///< "" when no KV cache quantization
  std::vector<std::string> files;   ///< written file names, sorted
  size_t num_tensors = 0;
  uint64_t total_bytes = 0;  ///< tensor payload bytes
};

/// Exports `model` (see the file comment). `source_dir` holds the original HF checkpoint's
/// config.json (required) and tokenizer / generation files.
ExportReport export_hf_checkpoint(nn::Module& model, const std::string& source_dir,
                                  const std::string& export_dir, const ExportOptions& options = {});

// ---- the pieces, exposed for tests
// --------------------------------------------------------------------

/// The state dict export_hf_checkpoint writes, in state_dict order (name, tensor), after steps 1-5.
/// `quant_config` receives the hf_quant_config.json document.
std::vector<std::pair<std::string, at::Tensor>> build_export_state_dict(
    nn::Module& model, c10::ScalarType dtype, const ExportOptions& options,
    nlohmann::ordered_json* quant_config);

/// What build_export_state_dict learns about the modules besides their tensors: the inputs of
/// hf_quant_config.json (step 6). The distributed export merges the summaries of all ranks.
struct ExportSummary {
  /// Quantized modules with their layer_quant_config(), in named_modules() order.
  std::vector<std::pair<std::string, nlohmann::ordered_json>> layer_configs;
  /// Modules with quantizers that quantize nothing, in named_modules() order, then MoE routers
  /// without quantizers.
  std::vector<std::string> unquantized;
  /// kv_cache_format() of the attention modules ("" when none).
  std::string kv_cache_format;
};

/// Steps 1-5 of build_export_state_dict, filling `summary` instead of building the JSON.
std::vector<std::pair<std::string, at::Tensor>> build_export_state_dict(nn::Module& model,
                                                                        c10::ScalarType dtype,
                                                                        ExportSummary& summary);

/// hf_quant_config.json from a summary (step 6): one quant_algo + exclude_modules, or
/// MIXED_PRECISION with quantized_layers in summary order.
nlohmann::ordered_json make_hf_quant_config(const ExportSummary& summary,
                                            const ExportOptions& options);

/// source_dir/config.json as an ordered JSON object (mq::IoError naming the file otherwise).
nlohmann::ordered_json read_source_config(const std::string& source_dir);

/// Throws mq::IoError when export_dir exists and is not a directory, or is a non-empty directory
/// and `overwrite` is false; mq::Error when export_dir is empty.
void check_export_dir(const std::string& export_dir, bool overwrite);

/// The export dtype that options / config.json ("dtype", legacy "torch_dtype") name; nullopt when
/// neither does (then export_hf_checkpoint takes model_export_dtype()).
std::optional<c10::ScalarType> configured_export_dtype(const ExportOptions& options,
                                                       const nlohmann::ordered_json& hf_config,
                                                       const std::string& source_dir);
/// The dtype of the model's first parameter.
c10::ScalarType model_export_dtype(nn::Module& model);

/// Writes a built state dict (and hf_quant_config.json / config.json / copied files) into
/// export_dir atomically, as export_hf_checkpoint does after building (see the file comment).
ExportReport write_hf_checkpoint(const std::string& source_dir, const std::string& export_dir,
                                 const std::vector<std::pair<std::string, at::Tensor>>& state_dict,
                                 const nlohmann::ordered_json& quant_config,
                                 const nlohmann::ordered_json& hf_config,
                                 const ExportOptions& options);

/// ModelOpt's `process_layer_quant_config` output for one layer format ("FP8", "W4A16_AWQ" +
/// group_size,
/// ...); `block_size` is the weight block along the input dim (0 when none).
nlohmann::ordered_json layer_quant_config(QuantFormat format, int64_t block_size);

/// ModelOpt's `_prefix_wildcard_summarize_exclude_modules`, sorted.
std::vector<std::string> summarize_exclude_modules(const std::vector<std::string>& unquantized,
                                                   const std::vector<std::string>& quantized);

/// ModelOpt's `convert_hf_quant_config_format` (config.json "quantization_config").
nlohmann::ordered_json convert_hf_quant_config_format(
    const nlohmann::ordered_json& hf_quant_config);

/// ModelOpt's KV cache format name from the enabled k/v/output quantizers' num_bits ("FP8", "INT8",
/// "NVFP4_AFFINE", "NVFP4"), "" when none of them is enabled or quantizes.
std::string kv_cache_format(const nn::Module& attention);

}  // namespace mq::hf_export
