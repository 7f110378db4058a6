#pragma once
/// `mqdist tensor`: quantize every tensor of a safetensors file with one quantizer, as ModelOpt would
/// quantize a linear's weight (or input) with it, and write the fake-quantized tensors (plus their
/// amax) or, with `real`, the tensors of ModelOpt's unified HF export (hf_tensors.hpp).
///
/// The quantizer comes from a preset ("NVFP4_DEFAULT_CFG:weight") or from one attribute dict. For a
/// preset, the quant_cfg entries are applied in order to the quantizer names
///   model.layers.0.mlp.up_proj.weight_quantizer   and   model.layers.0.mlp.up_proj.input_quantizer
/// with fnmatch wildcards (ModelOpt's set_quantizer_by_cfg precedence: last match wins, a cfg entry is
/// a full replacement, an enable-only entry toggles enable). This is a minimal local matcher for a
/// single nn.Linear; the model-wide set_quantizer_by_cfg lives with the module tree.
///
/// Example:
///   auto spec = mq::hf_export::preset_quantizer_spec("NVFP4_DEFAULT_CFG", Role::kWeight);
///   auto in = mq::io::load_safetensors("w.safetensors");
///   auto result = mq::hf_export::quantize_tensors(in, spec, {.real = false});
///   mq::io::save_safetensors("wq.safetensors", result.tensors);
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <ATen/core/Tensor.h>

#include "mq/config/quantize_config.hpp"
#include "mq/config/quantizer_attribute.hpp"

namespace mq::hf_export {

/// Python's fnmatch.fnmatchcase: `*` (any run, dots included), `?`, `[seq]`, `[!seq]` with ranges;
/// a `[` without a closing `]` is a literal.
bool fnmatch(std::string_view pattern, std::string_view name);

/// The configs a quantizer ends up with: one entry = TensorQuantizer, several = SequentialQuantizer.
/// `cfgs[i].enable` carries the enable flag.
struct QuantizerSetting {
  std::vector<config::QuantizerAttributeConfig> cfgs;
  bool enabled() const { return !cfgs.empty() && cfgs.front().enable; }
  bool is_sequential() const { return cfgs.size() > 1; }
};

/// Applies `entries` in order to a quantizer called `quantizer_name` whose parent module is an
/// nn.Linear, starting from `initial` (reference §4.3). parent_class entries match only "nn.Linear".
QuantizerSetting apply_quant_cfg(const std::vector<config::QuantizerCfgEntry>& entries,
                                 const std::string& quantizer_name, QuantizerSetting initial);

/// ModelOpt's defaults for a fresh nn.Linear: weight INT8 per-channel (axis 0), input INT8 per-tensor.
QuantizerSetting default_linear_weight_quantizer();
QuantizerSetting default_linear_input_quantizer();

enum class Role { kWeight, kInput };

/// What `mqdist tensor` quantizes with.
struct QuantizerSpec {
  std::string label;        ///< "NVFP4_DEFAULT_CFG:weight", or "--attr"
  Role role = Role::kWeight;
  QuantizerSetting quantizer;
  /// The linear's input quantizer (for the HF export format of a weight; never calibrated here,
  /// so no input_scale is written).
  QuantizerSetting companion_input;
};

/// "<PRESET or config path>:<weight|input>". Throws mq::ConfigError for a malformed spec, and
/// whatever load_quantize_config throws for an unknown preset or a bad file.
QuantizerSpec parse_quantizer_spec(const std::string& spec);
QuantizerSpec preset_quantizer_spec(const std::string& preset, Role role);
/// One attribute dict (JSON text); the role is kWeight and the companion input is disabled.
/// Throws mq::ConfigError "--attr: <path>: <rule>" for bad JSON or a rule broken.
QuantizerSpec attr_quantizer_spec(const std::string& json_text, const std::string& label = "--attr");

struct TensorModeOptions {
  bool real = false;  ///< write ModelOpt's HF export tensors instead of fake-quantized ones
};

/// Per input tensor, for the summary line.
struct TensorReport {
  std::string name;
  std::vector<int64_t> shape;
  std::string dtype;
  std::string format;        ///< ModelOpt's quantizer repr (fake) or export format name (real)
  double amax = 0;           ///< max |x|
  double mean_abs_error = 0; ///< mean |x - fake_quant(x)| (in fp64)
  double snr_db = 0;         ///< 10 log10(sum x^2 / sum (x - q)^2); +inf when exact
  std::vector<std::string> written;  ///< output tensor names
};

struct TensorModeResult {
  std::map<std::string, at::Tensor> tensors;
  std::vector<TensorReport> reports;  ///< in input-name order
};

/// Quantizes every tensor of `inputs` with a fresh quantizer built from `spec`:
///  - fake (default): max-calibrate when the format needs an amax, fake-quantize; writes `<name>`
///    (same dtype and shape), `<name>._amax` when the quantizer holds an amax, `<name>._global_amax`
///    for a static NVFP4 (StaticBlockScaleQuantizer) weight; a SequentialQuantizer writes
///    `<name>.<i>._amax` per stage. A disabled quantizer passes the tensor through.
///  - real: calibrate, then export_linear() (role must be weight; tensors must be 2-D).
/// Errors (non-float tensor, wrong rank for real, a quantizer error) throw mq::Error
/// "tensor '<name>': <message>".
TensorModeResult quantize_tensors(const std::map<std::string, at::Tensor>& inputs,
                                  const QuantizerSpec& spec, const TensorModeOptions& options);

}  // namespace mq::hf_export
