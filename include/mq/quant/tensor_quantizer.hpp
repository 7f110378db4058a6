#pragma once
/// TensorQuantizer: ModelOpt's `nn/modules/tensor_quantizer.py` TensorQuantizer (reference §5), plus the
/// StaticBlockScaleQuantizer (alias NVFP4StaticQuantizer) behaviour it is promoted to after calibration
/// of a static NVFP4 / INT static-block weight (reference §2.5, §4.6).
///
/// Example (max-calibrate an FP8 per-tensor input quantizer, then fake-quantize):
///   mq::config::QuantizerAttributeConfig cfg;
///   cfg.num_bits = mq::config::NumBits::floating(4, 3);
///   mq::quant::TensorQuantizer q(cfg);
///   q.enable_calib(); q.disable_quant();
///   q.forward(x);                      // collects max|x|, returns x unchanged
///   q.load_calib_amax();
///   q.enable_quant(); q.disable_calib();
///   at::Tensor y = q.forward(x);       // FP8 fake quant, same shape/dtype as x
/// or simply `mq::quant::calibrate_and_fake_quant(q, x)`.
///
/// Gradients: forward() is differentiable with a straight-through estimator (pass_through_bwd=true:
/// gradient passes unchanged; false: zeroed where |x| > amax; MX forces true).
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include "mq/config/quantizer_attribute.hpp"
#include "mq/quant/calibrator.hpp"
#include "mq/quant/fake_quant.hpp"
#include "mq/quant/qtensor.hpp"

namespace mq::quant {

class TensorQuantizer;

/// A custom fake-quant functional selected by the `backend` config field
/// (ModelOpt's register_quant_backend). It receives the (pre-scaled, rotated, block-reshaped) input.
using QuantBackendFn = std::function<at::Tensor(const at::Tensor& x, TensorQuantizer& q)>;
void register_quant_backend(const std::string& name, QuantBackendFn fn);
void unregister_quant_backend(const std::string& name);
bool is_registered_quant_backend(const std::string& name);

/// Everything needed to restore a quantizer without recalibrating: `properties` is JSON (ModelOpt's
/// modelopt_state keys: "_num_bits", "_axis", "_block_sizes", "_disabled", ..., plus
/// "_pytorch_state_metadata": {"buffers": {name: {"shape", "dtype"}}}), `buffers` holds the tensors
/// ("_amax", "_pre_quant_scale", "_bias_value", "_global_amax", "_scale", "_double_scale",
/// "_scale_zeros"), exactly the ones that exist.
struct TensorQuantizerState {
  nlohmann::json properties;
  std::map<std::string, at::Tensor> buffers;
};

class TensorQuantizer {
 public:
  /// Default config: INT8 per-tensor, max calibrator, quant on, calib off.
  TensorQuantizer();
  explicit TensorQuantizer(const config::QuantizerAttributeConfig& cfg, bool if_quant = true,
                           bool if_calib = false);
  ~TensorQuantizer();
  TensorQuantizer(TensorQuantizer&&) noexcept;
  TensorQuantizer& operator=(TensorQuantizer&&) noexcept;
  TensorQuantizer(const TensorQuantizer&) = delete;
  TensorQuantizer& operator=(const TensorQuantizer&) = delete;

  // ---- configuration ----
  /// Applies every field of `cfg` in declaration order (reference §1.1): a full replacement.
  void set_from_attribute_config(const config::QuantizerAttributeConfig& cfg);
  /// Applies only the fields named in cfg.fields_set, in declaration order (ModelOpt's partial dict).
  /// An enable-only {"enable": false} also turns rotation off permanently (reference §8.5).
  void set_from_partial_attribute_config(const config::QuantizerAttributeConfig& cfg);

  // ---- forward ----
  /// The forward of reference §5.1. With fake_quant=false (and quant on) the input is really quantized:
  /// the scales are stored (`_scale`, ...), the packed result is kept (last_qtensor()) and its
  /// dequantized value is returned.
  at::Tensor forward(const at::Tensor& x);
  at::Tensor operator()(const at::Tensor& x) { return forward(x); }
  /// The real-quantization step alone on x (fake_quant=false path of _real_quantize); registers
  /// `_scale` (and `_double_scale`, `_scale_zeros`) and sets the dequantize flag.
  QTensor real_quantize(const at::Tensor& x);
  /// Dequantizes a real-quantized tensor with the stored scales.
  at::Tensor dequantize(const QTensor& q) const;
  const std::optional<QTensor>& last_qtensor() const { return last_qtensor_; }

  // ---- state machine ----
  void enable() { disabled_ = false; }
  void disable() { disabled_ = true; }
  bool is_enabled() const { return !disabled_; }
  void enable_quant() { if_quant_ = true; }
  void disable_quant() { if_quant_ = false; }
  /// No-op for type "dynamic" (reference §4.6).
  void enable_calib();
  void disable_calib() { if_calib_ = false; }
  bool quant_enabled() const { return if_quant_; }
  bool calib_enabled() const { return if_calib_; }
  /// Feeds x to the calibrators (static bias first), when calibrating and not dynamic.
  void collect(const at::Tensor& x);
  /// `_amax` = calibrator result. Throws when no data was collected, unless strict=false (amax NaN).
  void load_calib_amax(const CalibAmaxArgs& args = {}, bool strict = true);
  /// `_bias_value` = bias calibrator result.
  void load_calib_bias();

  // ---- attributes ----
  const config::NumBits& num_bits() const { return num_bits_; }
  const std::optional<config::Axis>& axis() const { return axis_; }
  void set_axis(std::optional<config::Axis> axis);
  const std::optional<config::BlockSizes>& block_sizes() const { return block_sizes_; }
  /// Sets block_sizes and clears axis (ModelOpt's property setter).
  void set_block_sizes(std::optional<config::BlockSizes> bs);
  const std::optional<config::BiasConfig>& bias() const { return bias_; }
  bool fake_quant() const { return fake_quant_; }
  bool is_unsigned() const { return unsigned_; }
  bool narrow_range() const { return narrow_range_; }
  bool is_dynamic() const { return dynamic_; }
  bool pass_through_bwd() const { return pass_through_bwd_; }
  std::optional<double> effective_bits() const { return effective_bits_; }
  const std::string& trt_high_precision_dtype() const { return trt_high_precision_dtype_; }
  const std::optional<std::string>& backend() const { return backend_; }
  const nlohmann::json& backend_extra_args() const { return backend_extra_args_; }
  bool use_constant_amax() const { return use_constant_amax_; }
  std::optional<double> constant_amax() const { return constant_amax_; }
  const config::RotateConfig& rotate() const { return rotate_; }
  bool rotate_is_enabled() const { return rotate_.enable; }
  bool rotate_back_is_enabled() const { return rotate_.enable && rotate_.mode == "rotate_back"; }
  bool rotate_is_fp32() const { return rotate_.enable && rotate_.rotate_fp32; }
  std::optional<int> rotate_block_size() const { return rotate_.enable ? rotate_.block_size : std::nullopt; }
  void disable_rotate() { rotate_.enable = false; }
  Calibrator* calibrator() const { return calibrator_.get(); }
  const std::string& calibrator_kind() const { return calibrator_kind_; }
  BiasCalibrator* bias_calibrator();
  std::optional<at::ScalarType> input_dtype() const { return input_dtype_; }
  const std::optional<StaticBlockPlan>& block_plan() const { return block_plan_; }
  const std::optional<std::vector<int64_t>>& amax_shape_for_export() const { return amax_shape_for_export_; }

  bool is_mx_format() const;
  bool is_fp8() const;
  bool is_nvfp4_dynamic() const;
  bool is_nvfp4_static() const;
  bool is_static_block_quant() const;
  /// MXFP4 / MXFP6 / MXFP8 with block 32 (ModelOpt is_mxfp(bits)).
  bool is_mxfp(int bits) const;

  /// 448 for (4,3); 6 for NVFP4; 2^(N-1+unsigned)-1 for INT-N; throws otherwise.
  double maxbound() const;
  /// amax / (2^(N-1+unsigned) - 1); nullopt without an amax; throws for non-integer formats.
  std::optional<at::Tensor> step_size() const;

  // ---- amax and buffers ----
  /// The `_amax` buffer; nullopt when absent or for MX formats. Throws for a dynamic quantizer that has
  /// one (ModelOpt asserts).
  std::optional<at::Tensor> amax() const;
  bool has_amax_buffer() const { return amax_.defined(); }
  const at::Tensor& amax_buffer() const { return amax_; }
  /// Registers `_amax` (a copy) or copies into the existing one; a shape change throws
  /// "Changing shape when setting amax is not allowed."
  void set_amax(const at::Tensor& value);
  void set_amax(double value);
  /// Drops `_amax`, resets the calibrator and the bias.
  void reset_amax();
  void reset_bias();
  /// The amax used for x: 448 with use_constant_amax, else `_amax`, else reduce_amax of x over the
  /// non-axis dims (ModelOpt _get_amax).
  at::Tensor get_amax(const at::Tensor& x) const;
  /// reference §5.3 export_amax(); nullopt when there is no amax.
  std::optional<at::Tensor> export_amax() const;

  /// `_pre_quant_scale` (nullopt when absent or disabled through set_enable_pre_quant_scale(false)).
  std::optional<at::Tensor> pre_quant_scale() const;
  void set_pre_quant_scale(const at::Tensor& value);
  void remove_pre_quant_scale() { pre_quant_scale_ = at::Tensor(); }
  bool pre_quant_scale_enabled() const { return enable_pre_quant_scale_; }
  void set_enable_pre_quant_scale(bool on) { enable_pre_quant_scale_ = on; }

  std::optional<at::Tensor> bias_value() const;
  void set_bias_value(const at::Tensor& value);

  // ---- StaticBlockScaleQuantizer (NVFP4StaticQuantizer) ----
  /// Promotes in place (ModelOpt StaticBlockScaleQuantizer.from_tensor_quantizer): `_amax` is kept in
  /// fp32, and `_global_amax` is set when given. Idempotent.
  void promote_to_static_block_scale(const std::optional<at::Tensor>& global_amax = std::nullopt);
  bool is_static_block_scale_quantizer() const { return static_block_scale_; }
  std::optional<at::Tensor> global_amax() const;
  /// 0-d fp32 `_global_amax` (registered or copied into).
  void set_global_amax(const at::Tensor& value);

  // ---- repr and state ----
  /// ModelOpt's extra_repr (reference §5.4).
  std::string extra_repr() const;
  /// "TensorQuantizer" or "StaticBlockScaleQuantizer".
  std::string class_name() const;
  /// class_name() + "(" + extra_repr() + ")".
  std::string repr() const;
  /// Named buffers that exist, by ModelOpt name.
  std::map<std::string, at::Tensor> named_buffers() const;
  TensorQuantizerState get_state() const;
  /// Restores properties and buffers saved by get_state() (rebuilding the calibrator). A buffer listed
  /// in the metadata but missing from `state.buffers`, or one of a different shape, throws.
  void set_state(const TensorQuantizerState& state);

 private:
  void apply_field(const std::string& field, const config::QuantizerAttributeConfig& cfg);
  void rebuild_calibrator();
  at::Tensor rotate_inputs(const at::Tensor& x) const;
  void block_sizes_to_axis(const at::Tensor& x);
  at::Tensor fake_quantize(const at::Tensor& x);
  at::Tensor get_bias(const at::Tensor& x);
  std::string short_amax(const char* fmt) const;

  // Attributes set from the config (ModelOpt `_<field>` names).
  bool disabled_ = false;
  config::NumBits num_bits_ = config::NumBits::integer(8);
  std::optional<double> effective_bits_;
  std::optional<config::Axis> axis_;
  bool fake_quant_ = true;
  bool unsigned_ = false;
  bool narrow_range_ = false;
  bool learn_amax_ = false;
  bool dynamic_ = false;
  std::optional<config::BlockSizes> block_sizes_;
  std::optional<config::BiasConfig> bias_;
  std::string trt_high_precision_dtype_ = "Float";
  std::string calibrator_kind_ = "max";
  std::unique_ptr<Calibrator> calibrator_;
  config::RotateConfig rotate_;
  bool pass_through_bwd_ = true;
  std::optional<std::string> backend_;
  nlohmann::json backend_extra_args_ = nlohmann::json::object();
  bool use_constant_amax_ = false;
  std::optional<double> constant_amax_;

  // Runtime flags.
  bool if_quant_ = true;
  bool if_calib_ = false;
  bool enable_pre_quant_scale_ = true;
  bool dequantize_ = false;
  std::optional<at::ScalarType> input_dtype_;

  // Buffers (undefined when absent).
  at::Tensor amax_;
  at::Tensor pre_quant_scale_;
  at::Tensor bias_value_;
  at::Tensor global_amax_;
  at::Tensor scale_;
  at::Tensor double_scale_;
  at::Tensor scale_zeros_;

  std::unique_ptr<BiasCalibrator> bias_calibrator_;
  std::optional<StaticBlockPlan> block_plan_;
  std::optional<std::vector<int64_t>> amax_shape_for_export_;
  bool static_block_scale_ = false;
  bool nvfp4_static_quantizer_ = false;
  std::optional<QTensor> last_qtensor_;
};

/// Max-calibrates q on x when its format needs a calibrated amax (ModelOpt's state machine:
/// enable_calib + disable_quant, forward, load_calib_amax (and load_calib_bias for a static affine bias),
/// enable_quant + disable_calib; a static NVFP4 quantizer is then promoted to StaticBlockScaleQuantizer
/// with global amax = max of the per-block amax), then returns q.forward(x). Quantizers that are disabled, dynamic, MX or
/// constant-amax are not calibrated.
at::Tensor calibrate_and_fake_quant(TensorQuantizer& q, const at::Tensor& x);

/// Renders a config value the way Python prints it in extra_repr: num_bits `8` / `(4, 3)`, axis `0` /
/// `(0, 1)`, block_sizes `{-1: 16, 'type': 'dynamic', 'scale_bits': (4, 3)}`.
std::string py_repr(const config::NumBits& nb);
std::string py_repr(const config::Axis& axis);
std::string py_repr(const config::BlockSizes& bs);
std::string py_repr(const config::BiasConfig& bias);

}  // namespace mq::quant
