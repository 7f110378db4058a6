#pragma once
/// The tensors ModelOpt's unified HF export (`export_hf_checkpoint`, `_export_quantized_weight`)
/// writes for one quantized linear: the packed weight and its scales, with ModelOpt's names, shapes
/// and dtypes (reference modelopt-numerics §6.4). Checkpoint-level steps (fusion of q/k/v amaxes,
/// pre_quant_scale folding, state-dict post-processing, sharding, hf_quant_config.json) live
/// elsewhere; this header is the per-weight math.
///
/// Namespace `mq::hf_export` (`export` is a C++ keyword).
///
/// Example (NVFP4 weight of a linear "model.layers.0.mlp.up_proj"):
///   mq::quant::TensorQuantizer wq(nvfp4_cfg), iq(nvfp4_cfg);
///   mq::quant::calibrate_and_fake_quant(wq, w);          // weight amax
///   mq::quant::calibrate_and_fake_quant(iq, x);          // input amax (optional)
///   auto t = mq::hf_export::export_linear("model.layers.0.mlp.up_proj.weight", w, wq, &iq);
///   // t: ...up_proj.weight (uint8 (out, in/2)), ...weight_scale (e4m3 (out, in/16)),
///   //    ...weight_scale_2 (fp32 0-d), ...input_scale (fp32 0-d)
#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include <ATen/core/Tensor.h>

#include "mq/quant/sequential_quantizer.hpp"
#include "mq/quant/tensor_quantizer.hpp"

namespace mq::hf_export {

/// ModelOpt's per-module quantization formats (`QUANTIZATION_*` in export/model_config.py).
enum class QuantFormat {
  kNone,
  kFp8,           ///< "fp8": per-tensor FP8 weight
  kFp8PcPt,       ///< "fp8_pc_pt": per-channel FP8 weight, dynamic per-token input
  kFp8PbWo,       ///< "fp8_pb_wo": 2-D block (128x128) FP8 weight-only
  kInt8Sq,        ///< "int8_sq": INT8 weight with an enabled input quantizer
  kInt8Wo,        ///< "int8_wo": INT8 weight-only
  kInt4Awq,       ///< "int4_awq": INT4 block weight (W4A16 AWQ)
  kW4A8Awq,       ///< "w4a8_awq": SequentialQuantizer [INT4 block, FP8]
  kNvfp4,         ///< "nvfp4"
  kNvfp4Awq,      ///< "nvfp4_awq": NVFP4 with a pre_quant_scale
  kNvfp4Svdquant, ///< "nvfp4_svdquant"
  kW4A16Nvfp4,    ///< "w4a16_nvfp4": NVFP4 weight, no input quantizer
  kW4A8Nvfp4Fp8,  ///< "w4a8_nvfp4_fp8": NVFP4 weight, FP8 per-tensor input
  kMxfp4,         ///< "mxfp4"
  kW4A8Mxfp4Fp8,  ///< "w4a8_mxfp4_fp8": MXFP4 weight, FP8 per-tensor input
  kMxfp8,         ///< "mxfp8"
};

/// ModelOpt's string ("fp8", "int4_awq", "nvfp4", ...; "" for kNone).
std::string_view quant_format_name(QuantFormat f);

/// ModelOpt's `get_quantization_format` for one linear (reference §6.4 "Format detection").
/// `input_q` is nullptr when the module has no input quantizer. `has_svdquant_lora` and
/// `fused_with_prequant` are the module flags ModelOpt checks for the NVFP4 variants.
/// Throws mq::Error for weight formats ModelOpt cannot export (e.g. MXFP6, MXINT8, INT-N with N not
/// 4 or 8).
QuantFormat detect_quant_format(const quant::TensorQuantizer& weight_q,
                                const quant::TensorQuantizer* input_q,
                                bool has_svdquant_lora = false, bool fused_with_prequant = false);
/// A SequentialQuantizer weight must be [INT4 block, FP8] (W4A8 AWQ); anything else throws.
QuantFormat detect_quant_format(const quant::SequentialQuantizer& weight_q,
                                const quant::TensorQuantizer* input_q);

/// The export names for a weight called `weight_name` ("<module>.<attr>"). For attr "weight":
/// <module>.weight, <module>.weight_scale, <module>.weight_scale_2, <module>.input_scale,
/// <module>.pre_quant_scale. For another attr X (e.g. fused experts' "gate_up_proj"): <module>.X,
/// <module>.X_weight_scale, ... (ModelOpt's quantizer_attr_names).
struct HfTensorNames {
  std::string weight;
  std::string weight_scale;
  std::string weight_scale_2;
  std::string input_scale;
  std::string pre_quant_scale;
};
HfTensorNames hf_tensor_names(const std::string& weight_name);

/// The numbers the export math reads from the calibrated quantizers. Filled from quantizers by
/// linear_export_inputs(), or by hand (tests).
struct LinearExportInputs {
  QuantFormat format = QuantFormat::kNone;
  int64_t block_size = 0;     ///< weight block along `in` (NVFP4 16/32, MX 32, INT4 128, FP8 2-D 128)
  /// INT/FP8 formats: export_amax() of the weight quantizer (W4A8 AWQ: of its INT4 stage), shaped as
  /// export_amax() shapes it (per-tensor (1,), per-channel (out,), INT4 (out, in/block), FP8 2-D
  /// (out/128, 1, in/128, 1)). NVFP4: the `_amax` buffer (the global amax; for a static quantizer the
  /// per-block amax, with `global_amax` set). MX: undefined (computed from the weight).
  at::Tensor weight_amax;
  at::Tensor weight_amax_2;   ///< W4A8 AWQ: export_amax() of the FP8 stage
  at::Tensor global_amax;     ///< static NVFP4 (StaticBlockScaleQuantizer) only
  bool four_over_six = false; ///< static NVFP4 4/6: FP8 normalisation max 256 instead of 448
  /// export_amax() of the input quantizer when it is enabled and has an amax; undefined otherwise
  /// (then no input_scale is written).
  at::Tensor input_amax;
  double input_maxbound = 0;  ///< input_scale = input_amax / input_maxbound (448, 127, or 6*448)
  at::Tensor pre_quant_scale; ///< written as `pre_quant_scale` (in,) when defined
};

/// Reads the inputs of the export math from calibrated quantizers (format from
/// detect_quant_format). Throws mq::Error when a needed amax is missing (uncalibrated quantizer).
LinearExportInputs linear_export_inputs(const quant::TensorQuantizer& weight_q,
                                        const quant::TensorQuantizer* input_q);
LinearExportInputs linear_export_inputs(const quant::SequentialQuantizer& weight_q,
                                        const quant::TensorQuantizer* input_q);

/// The tensors ModelOpt writes for the weight `weight_name` (2-D (out, in), any float dtype; the
/// export dtype is the weight's dtype, as `weight.to(dtype)` in ModelOpt), keyed by hf_tensor_names():
///
/// | format               | weight                     | weight_scale            | weight_scale_2 | input_scale |
/// |----------------------|----------------------------|-------------------------|----------------|-------------|
/// | fp8                  | e4m3 (out, in)             | fp32 0-d amax/448       | -              | fp32 0-d    |
/// | fp8_pc_pt            | e4m3 (out, in)             | fp32 (out,)             | -              | -           |
/// | fp8_pb_wo            | e4m3 (out, in)             | fp32 (out/128,1,in/128,1)| -             | -           |
/// | int8_sq / int8_wo    | int8 (out, in)             | fp32 (out,) amax/127    | -              | sq: 0-d     |
/// | int4_awq             | uint8 (out/2, in)          | fp32 (out, in/bs) /7    | -              | -           |
/// | w4a8_awq             | uint8 (out/2, in)          | fp32 (out, in/bs) /7    | fp32 0-d /448  | fp32 0-d    |
/// | nvfp4 (+awq, svd)    | uint8 (out, in/2)          | e4m3 (out, in/bs)       | fp32 0-d /2688 | fp32 0-d    |
/// | w4a16_nvfp4          | uint8 (out, in/2)          | e4m3 (out, in/bs)       | fp32 0-d /2688 | -           |
/// | w4a8_nvfp4_fp8       | uint8 (out, in/2)          | e4m3 (out, in/bs)       | fp32 0-d /448  | fp32 0-d    |
/// | mxfp4 / w4a8_mxfp4   | uint8 (out, in/2)          | uint8 E8M0 (out, in/32) | -              | w4a8: 0-d   |
/// | mxfp8                | e4m3 (out, in)             | uint8 E8M0 (out, in/32) | -              | -           |
///
/// Shape rules ModelOpt enforces are errors here (mq::Error naming the weight): NVFP4/MX need
/// in % block == 0, INT4 needs an even `out` and in % block == 0.
///
/// Deliberate difference: an all-zero FP8 per-tensor weight exports scale 1.0 (export_amax turns a
/// zero amax into maxbound) where ModelOpt divides by its raw zero amax and writes NaN.
std::map<std::string, at::Tensor> export_linear(const std::string& weight_name,
                                                const at::Tensor& weight,
                                                const LinearExportInputs& in);
/// export_linear(weight_name, weight, linear_export_inputs(weight_q, input_q)).
std::map<std::string, at::Tensor> export_linear(const std::string& weight_name,
                                                const at::Tensor& weight,
                                                const quant::TensorQuantizer& weight_q,
                                                const quant::TensorQuantizer* input_q);
std::map<std::string, at::Tensor> export_linear(const std::string& weight_name,
                                                const at::Tensor& weight,
                                                const quant::SequentialQuantizer& weight_q,
                                                const quant::TensorQuantizer* input_q);

}  // namespace mq::hf_export
