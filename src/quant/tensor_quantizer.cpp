#include "mq/quant/tensor_quantizer.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <mutex>
#include <sstream>
#include <unordered_map>

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include "autograd_impl.hpp"
#include "fake_quant_impl.hpp"
#include "mq/core/error.hpp"
#include "mq/quant/utils.hpp"

namespace mq::quant {
namespace {

// Declaration order of QuantizerAttributeConfig (reference §1.1): set_from_attribute_config applies the
// fields in this order, and later fields see the effects of earlier ones (e.g. the calibrator is
// built from the num_bits/axis/unsigned already set).
constexpr const char* kFieldOrder[] = {
    "enable",     "num_bits", "effective_bits",           "axis",       "fake_quant",
    "unsigned",   "narrow_range", "learn_amax",           "type",       "block_sizes",
    "bias",       "trt_high_precision_dtype", "calibrator", "rotate",   "pass_through_bwd",
    "backend",    "backend_extra_args", "use_constant_amax", "constant_amax"};

constexpr double kE4M3Max = 448.0;

std::mutex& backend_mutex() {
  static std::mutex m;
  return m;
}
std::unordered_map<std::string, QuantBackendFn>& backend_registry() {
  static std::unordered_map<std::string, QuantBackendFn> r;
  return r;
}

std::string short_tensor(const at::Tensor& t, const char* fmt) {
  at::Tensor f = t.detach().to(at::kCPU).to(at::kDouble);
  if (f.numel() == 1) return detail::py_format(f.item<double>(), fmt);
  return "[" + detail::py_format(f.min().item<double>(), fmt) + ", " + detail::py_format(f.max().item<double>(), fmt) +
         "](" + std::to_string(f.numel()) + ")";
}

std::string py_opt_int(const std::optional<int64_t>& v) { return v ? std::to_string(*v) : "None"; }

std::string py_axis_map(const config::AxisBlockMap& m) {
  // ModelOpt prints the dict in the user's insertion order; presets list the axes last dim first
  // ({-1: 128, -2: 128}, {-2: None, -4: None}), which is descending key order.
  std::string s;
  for (auto it = m.rbegin(); it != m.rend(); ++it) {
    if (!s.empty()) s += ", ";
    s += std::to_string(it->first) + ": " + py_opt_int(it->second);
  }
  return s;
}

// Dynamic-block size of the last dim (block_sizes[-1] or block_sizes[ndim-1]).
std::optional<int64_t> last_dim_block(const config::BlockSizes& bs, int64_t ndim) {
  auto it = bs.axes.find(-1);
  if (it != bs.axes.end() && it->second) return it->second;
  it = bs.axes.find(static_cast<int>(ndim - 1));
  if (it != bs.axes.end() && it->second) return it->second;
  return std::nullopt;
}

}  // namespace

// ---- python-style rendering ----

std::string py_repr(const config::NumBits& nb) {
  switch (nb.kind) {
    case config::NumBits::Kind::kInt: return std::to_string(nb.bits);
    case config::NumBits::Kind::kFloat:
      return "(" + std::to_string(nb.exponent) + ", " + std::to_string(nb.mantissa) + ")";
    case config::NumBits::Kind::kCustom: return nb.custom;
  }
  return "";
}

std::string py_repr(const config::Axis& axis) {
  if (!axis.is_tuple && axis.dims.size() == 1) return std::to_string(axis.dims[0]);
  std::string s = "(";
  for (size_t i = 0; i < axis.dims.size(); ++i) s += (i ? ", " : "") + std::to_string(axis.dims[i]);
  if (axis.dims.size() == 1) s += ",";
  return s + ")";
}

std::string py_repr(const config::BlockSizes& bs) {
  std::string s = py_axis_map(bs.axes);
  auto add = [&](const std::string& item) { s += (s.empty() ? "" : ", ") + item; };
  if (bs.type) add("'type': '" + *bs.type + "'");
  if (bs.scale_bits) add("'scale_bits': " + py_repr(*bs.scale_bits));
  if (bs.scale_block_sizes) add("'scale_block_sizes': {" + py_axis_map(*bs.scale_block_sizes) + "}");
  if (bs.four_over_six) add("'four_over_six': " + std::to_string(*bs.four_over_six));
  return "{" + s + "}";
}

std::string py_repr(const config::BiasConfig& b) {
  std::string s = py_axis_map(b.axes);
  auto add = [&](const std::string& item) { s += (s.empty() ? "" : ", ") + item; };
  if (b.type) add("'type': '" + *b.type + "'");
  if (b.method) add("'method': '" + *b.method + "'");
  return "{" + s + "}";
}

// ---- backends ----

void register_quant_backend(const std::string& name, QuantBackendFn fn) {
  MQ_CHECK(fn != nullptr, "register_quant_backend: the functional for '", name, "' is empty");
  std::lock_guard<std::mutex> lock(backend_mutex());
  backend_registry()[name] = std::move(fn);
}

void unregister_quant_backend(const std::string& name) {
  std::lock_guard<std::mutex> lock(backend_mutex());
  backend_registry().erase(name);
}

bool is_registered_quant_backend(const std::string& name) {
  std::lock_guard<std::mutex> lock(backend_mutex());
  return backend_registry().count(name) != 0;
}

// ---- construction and config ----

TensorQuantizer::TensorQuantizer() : TensorQuantizer(config::QuantizerAttributeConfig{}) {}

TensorQuantizer::TensorQuantizer(const config::QuantizerAttributeConfig& cfg, bool if_quant, bool if_calib) {
  set_from_attribute_config(cfg);
  if_quant_ = if_quant;
  if_calib_ = if_calib;
}

TensorQuantizer::~TensorQuantizer() = default;
TensorQuantizer::TensorQuantizer(TensorQuantizer&&) noexcept = default;
TensorQuantizer& TensorQuantizer::operator=(TensorQuantizer&&) noexcept = default;

void TensorQuantizer::rebuild_calibrator() {
  // ModelOpt builds the calibrator from (num_bits, axis, unsigned). A custom-string num_bits (backend
  // formats) has no meaning to the max calibrator, which only tracks max|x|; it gets 8.
  auto axis = detail::axis_dims(axis_);
  if (num_bits_.kind == config::NumBits::Kind::kFloat) {
    calibrator_ = make_calibrator(calibrator_kind_, std::pair<int, int>{num_bits_.exponent, num_bits_.mantissa},
                                  axis, unsigned_);
  } else {
    calibrator_ = make_calibrator(calibrator_kind_, num_bits_.is_int() ? num_bits_.bits : 8, axis, unsigned_);
  }
}

void TensorQuantizer::apply_field(const std::string& f, const config::QuantizerAttributeConfig& c) {
  if (f == "enable") {
    disabled_ = !c.enable;
  } else if (f == "num_bits") {
    num_bits_ = c.num_bits;
  } else if (f == "effective_bits") {
    effective_bits_ = c.effective_bits;
  } else if (f == "axis") {
    axis_ = c.axis;
    if (calibrator_) calibrator_->set_axis(detail::axis_dims(axis_));
  } else if (f == "fake_quant") {
    fake_quant_ = c.fake_quant;
  } else if (f == "unsigned") {
    unsigned_ = c.is_unsigned;
  } else if (f == "narrow_range") {
    narrow_range_ = c.narrow_range;
  } else if (f == "learn_amax") {
    learn_amax_ = c.learn_amax;
  } else if (f == "type") {
    dynamic_ = c.type == "dynamic";
  } else if (f == "block_sizes") {
    block_sizes_ = c.block_sizes;
    if (block_sizes_) {
      axis_.reset();
      if (calibrator_) calibrator_->set_axis(std::nullopt);
    }
  } else if (f == "bias") {
    // ModelOpt creates the bias calibrator lazily once and keeps it when the bias config is replaced
    // later, so a new method/axis would be ignored; we rebuild it from the current config instead.
    bias_ = c.bias;
    bias_calibrator_.reset();
  } else if (f == "trt_high_precision_dtype") {
    trt_high_precision_dtype_ = c.trt_high_precision_dtype;
  } else if (f == "calibrator") {
    calibrator_kind_ = c.calibrator;
    rebuild_calibrator();
  } else if (f == "rotate") {
    rotate_ = c.rotate;
  } else if (f == "pass_through_bwd") {
    pass_through_bwd_ = c.pass_through_bwd;
  } else if (f == "backend") {
    backend_ = c.backend;
  } else if (f == "backend_extra_args") {
    backend_extra_args_ = c.backend_extra_args.is_null() ? nlohmann::json::object() : c.backend_extra_args;
  } else if (f == "use_constant_amax") {
    use_constant_amax_ = c.use_constant_amax;
  } else if (f == "constant_amax") {
    constant_amax_ = c.constant_amax;
    if (constant_amax_) set_amax(at::scalar_tensor(*constant_amax_, at::kFloat));
  } else {
    MQ_THROW(::mq::ConfigError, f, " is not a valid `TensorQuantizer` attribute");
  }
}

void TensorQuantizer::set_from_attribute_config(const config::QuantizerAttributeConfig& cfg) {
  for (const char* f : kFieldOrder) apply_field(f, cfg);
  if (is_mx_format()) pass_through_bwd_ = true;
}

void TensorQuantizer::set_from_partial_attribute_config(const config::QuantizerAttributeConfig& cfg) {
  for (const auto& f : cfg.fields_set) {
    MQ_CHECK_T(::mq::ConfigError, std::find_if(std::begin(kFieldOrder), std::end(kFieldOrder),
                                               [&](const char* k) { return f == k; }) != std::end(kFieldOrder),
               f, " is not a valid `TensorQuantizer` attribute");
  }
  for (const char* f : kFieldOrder)
    if (cfg.fields_set.count(f)) apply_field(f, cfg);
  if (cfg.fields_set == std::set<std::string>{"enable"} && !cfg.enable) disable_rotate();
  if (is_mx_format()) pass_through_bwd_ = true;
}

// ---- attribute helpers ----

void TensorQuantizer::set_axis(std::optional<config::Axis> axis) {
  axis_ = std::move(axis);
  if (calibrator_) calibrator_->set_axis(detail::axis_dims(axis_));
}

void TensorQuantizer::set_block_sizes(std::optional<config::BlockSizes> bs) {
  axis_.reset();
  block_sizes_ = std::move(bs);
}

bool TensorQuantizer::is_mx_format() const {
  return block_sizes_ && block_sizes_->is_dynamic() && block_sizes_->scale_bits &&
         block_sizes_->scale_bits->is_float(8, 0);
}
bool TensorQuantizer::is_fp8() const { return num_bits_.is_float(4, 3) && !block_sizes_ && !axis_; }
bool TensorQuantizer::is_nvfp4_dynamic() const {
  return block_sizes_ && block_sizes_->is_dynamic() && num_bits_.is_float(2, 1) && block_sizes_->scale_bits &&
         block_sizes_->scale_bits->is_float(4, 3);
}
bool TensorQuantizer::is_static_block_quant() const {
  return block_sizes_ && !block_sizes_->is_dynamic() && fake_quant_;
}
bool TensorQuantizer::is_nvfp4_static() const {
  return is_static_block_quant() && num_bits_.is_float(2, 1) && block_sizes_->scale_bits &&
         block_sizes_->scale_bits->is_float(4, 3);
}
bool TensorQuantizer::is_mxfp(int bits) const {
  if (!is_mx_format()) return false;
  auto it = block_sizes_->axes.find(-1);
  const bool b32 = it != block_sizes_->axes.end() && it->second && *it->second == 32;
  switch (bits) {
    case 4: return b32 && num_bits_.is_float(2, 1);
    case 6: return b32 && num_bits_.is_float(3, 2);
    case 8: return b32 && num_bits_.is_float(4, 3);
    default: MQ_THROW(::mq::Error, "is_mxfp: bits must be 4, 6 or 8, got ", bits);
  }
}

double TensorQuantizer::maxbound() const {
  if (num_bits_.is_float(4, 3)) return kE4M3Max;
  if (num_bits_.is_float(2, 1) && block_sizes_ && block_sizes_->scale_bits && block_sizes_->scale_bits->is_float(4, 3))
    return 6.0;
  MQ_CHECK(num_bits_.is_int(), "maxbound is undefined for num_bits=", py_repr(num_bits_));
  return static_cast<double>((int64_t{1} << (num_bits_.bits - 1 + (unsigned_ ? 1 : 0))) - 1);
}

std::optional<at::Tensor> TensorQuantizer::step_size() const {
  if (!amax_.defined()) return std::nullopt;
  MQ_CHECK(num_bits_.is_int(), "Step size is not defined for non-integer quantization.");
  return amax_ / (std::pow(2.0, num_bits_.bits - 1 + (unsigned_ ? 1 : 0)) - 1.0);
}

void TensorQuantizer::enable_calib() {
  MQ_CHECK(calibrator_ != nullptr, "Calibrator was not created, cannot enable calibration.");
  if (dynamic_) return;
  if_calib_ = true;
}

BiasCalibrator* TensorQuantizer::bias_calibrator() {
  if (!bias_calibrator_ && bias_) {
    std::vector<int64_t> axes;
    for (const auto& [k, v] : bias_->axes) axes.push_back(k);
    bias_calibrator_ = std::make_unique<BiasCalibrator>(bias_->method.value_or("mean"), axes);
  }
  return bias_calibrator_.get();
}

// ---- amax and buffers ----

std::optional<at::Tensor> TensorQuantizer::amax() const {
  if (!amax_.defined() || is_mx_format()) return std::nullopt;
  MQ_CHECK(!dynamic_ || static_block_scale_, "Dynamic quantization does not have fixed amax");
  return amax_;
}

void TensorQuantizer::set_amax(const at::Tensor& value) {
  MQ_CHECK(value.defined(), "amax cannot be set to None.");
  at::Tensor v = value.detach();
  if (!amax_.defined()) {
    amax_ = v.clone();
  } else {
    MQ_CHECK(amax_.sizes() == v.sizes(), "Changing shape when setting amax is not allowed.");
    amax_.copy_(v.to(amax_.device()));
  }
  if (static_block_scale_ && amax_.scalar_type() != at::kFloat) amax_ = amax_.to(at::kFloat);
}

void TensorQuantizer::set_amax(double value) { set_amax(at::scalar_tensor(value, at::kFloat)); }

void TensorQuantizer::reset_amax() {
  amax_ = at::Tensor();
  if (calibrator_) calibrator_->reset();
  reset_bias();
}

void TensorQuantizer::reset_bias() {
  bias_value_ = at::Tensor();
  if (bias_calibrator_) bias_calibrator_->reset();
}

at::Tensor TensorQuantizer::get_amax(const at::Tensor& x) const {
  if (use_constant_amax_) return at::scalar_tensor(kE4M3Max, x.options().dtype(at::kFloat));
  if (amax_.defined()) return amax_.device() == x.device() ? amax_ : amax_.to(x.device());
  c10::NoGradGuard no_grad;
  return reduce_amax(x.detach(), convert_quantization_axis_to_reduce_axis(x, detail::axis_dims(axis_)));
}

std::optional<at::Tensor> TensorQuantizer::export_amax() const {
  auto sanitize = [&](const at::Tensor& a) {
    const double mb = maxbound();
    at::Tensor s = at::where(a == 0, at::full_like(a, mb), a);
    return at::nan_to_num(s, mb);
  };
  if (block_sizes_ && block_sizes_->is_dynamic()) {
    auto a = amax();
    if (!a) return std::nullopt;
    return sanitize(*a);
  }
  auto a0 = amax();
  if (!a0) return std::nullopt;
  at::Tensor a = amax_shape_for_export_ ? a0->reshape(*amax_shape_for_export_) : *a0;
  a = sanitize(a);
  double tiny = 0, big = 0;
  switch (a.scalar_type()) {
    case at::kFloat: tiny = std::numeric_limits<float>::min(); big = std::numeric_limits<float>::max(); break;
    case at::kDouble: tiny = std::numeric_limits<double>::min(); big = std::numeric_limits<double>::max(); break;
    case at::kBFloat16: tiny = 1.1754943508222875e-38; big = 3.3895313892515355e+38; break;
    case at::kHalf: tiny = 6.103515625e-05; big = 65504.0; break;
    default: MQ_THROW(::mq::Error, "export_amax: unsupported amax dtype ", a.scalar_type());
  }
  a = a.clamp(tiny, big);
  if (!block_sizes_) {
    if (!axis_) {
      a = a.unsqueeze(0);
    } else if (axis_->dims.size() == 1) {
      a = a.squeeze();
    }
  }
  return a;
}

std::optional<at::Tensor> TensorQuantizer::pre_quant_scale() const {
  if (!pre_quant_scale_.defined() || !enable_pre_quant_scale_) return std::nullopt;
  return pre_quant_scale_;
}

void TensorQuantizer::set_pre_quant_scale(const at::Tensor& value) {
  MQ_CHECK(value.defined(), "pre_quant_scale cannot be set to None.");
  MQ_CHECK(enable_pre_quant_scale_, "pre_quant_scale cannot be set when forward_with_pre_quant_scale is False.");
  if (!pre_quant_scale_.defined()) {
    pre_quant_scale_ = value.detach().clone();
  } else {
    MQ_CHECK(pre_quant_scale_.sizes() == value.sizes(),
             "Changing shape when setting pre_quant_scale is not allowed.");
    pre_quant_scale_.copy_(value.detach().to(pre_quant_scale_.device()));
  }
}

std::optional<at::Tensor> TensorQuantizer::bias_value() const {
  if (!bias_value_.defined()) return std::nullopt;
  return bias_value_;
}

void TensorQuantizer::set_bias_value(const at::Tensor& value) {
  MQ_CHECK(value.defined(), "bias cannot be set to None.");
  if (!bias_value_.defined()) {
    bias_value_ = value.detach().clone();
  } else {
    MQ_CHECK(bias_value_.sizes() == value.sizes(), "Changing shape when setting bias is not allowed.");
    bias_value_.copy_(value.detach().to(bias_value_.device()));
  }
}

std::optional<at::Tensor> TensorQuantizer::global_amax() const {
  if (!global_amax_.defined()) return std::nullopt;
  return global_amax_;
}

void TensorQuantizer::set_global_amax(const at::Tensor& value) {
  MQ_CHECK(value.defined(), "global_amax cannot be set to None.");
  at::Tensor v = value.detach().to(at::kFloat);
  if (!global_amax_.defined()) {
    global_amax_ = v.clone();
  } else {
    global_amax_.copy_(v.to(global_amax_.device()));
  }
}

void TensorQuantizer::promote_to_static_block_scale(const std::optional<at::Tensor>& global_amax) {
  if (!static_block_scale_) {
    nvfp4_static_quantizer_ = is_nvfp4_static();
    static_block_scale_ = true;
  }
  if (amax_.defined()) amax_ = amax_.to(at::kFloat);
  if (global_amax_.defined()) global_amax_ = global_amax_.to(at::kFloat);
  if (global_amax) set_global_amax(*global_amax);
}

// ---- calibration ----

void TensorQuantizer::collect(const at::Tensor& x) {
  if (!if_calib_ || dynamic_) return;
  c10::NoGradGuard no_grad;
  at::Tensor xc = x.detach();
  if (bias_ && bias_->type.value_or("static") == "static") {
    BiasCalibrator* bc = bias_calibrator();
    bc->collect(xc);
    xc = xc - *bc->compute_bias();
  }
  MQ_CHECK(calibrator_ != nullptr, "Calibrator was not created.");
  calibrator_->collect(xc);
}

void TensorQuantizer::load_calib_amax(const CalibAmaxArgs& args, bool strict) {
  MQ_CHECK(!dynamic_, "Dynamic quantization does not need calibration.");
  MQ_CHECK(calibrator_ != nullptr, "Calibrator not created.");
  std::optional<at::Tensor> a = calibrator_->compute_amax(args);
  if (!a) {
    MQ_CHECK(!strict,
             "Calibrator returned None. This usually happens when calibrator hasn't seen any tensor. Passing "
             "'strict=False' to `load_calib_amax()` will ignore the error.");
    a = at::scalar_tensor(std::numeric_limits<double>::quiet_NaN(), at::kFloat);
  }
  set_amax(*a);
}

void TensorQuantizer::load_calib_bias() {
  MQ_CHECK(!dynamic_, "Dynamic quantization does not need calibration.");
  BiasCalibrator* bc = bias_calibrator();
  MQ_CHECK(bc != nullptr, "load_calib_bias: this quantizer has no bias config");
  auto b = bc->compute_bias();
  MQ_CHECK(b.has_value(),
           "Calibrator returned None. This usually happens when calibrator hasn't seen any tensor.");
  if (!bias_value_.defined()) {
    bias_value_ = b->detach().clone();
  } else {
    bias_value_.copy_(b->detach());
  }
}

at::Tensor TensorQuantizer::get_bias(const at::Tensor& x) {
  if (!bias_) return at::Tensor();
  const std::string type = bias_->type.value_or("static");
  if (type == "static") {
    MQ_CHECK(bias_value_.defined(), "static affine bias (_bias_value) is not calibrated; run bias calibration "
             "(load_calib_bias) before quantizing");
    return bias_value_.device() == x.device() ? bias_value_ : bias_value_.to(x.device());
  }
  MQ_CHECK(type == "dynamic", "Unsupported bias type: ", type);
  return bias_calibrator()->compute_dynamic_bias(x);
}

// ---- forward ----

at::Tensor TensorQuantizer::rotate_inputs(const at::Tensor& x) const {
  return normalized_hadamard_transform(x, rotate_block_size(), rotate_is_fp32());
}

void TensorQuantizer::block_sizes_to_axis(const at::Tensor& x) {
  if (!block_sizes_) return;
  const bool per_channel = std::all_of(block_sizes_->axes.begin(), block_sizes_->axes.end(),
                                       [](const auto& kv) { return !kv.second.has_value(); });
  if (!per_channel) return;
  MQ_CHECK(!axis_, "Axis and block_sizes are both set.");
  const int64_t nd = x.dim();
  std::vector<bool> listed(nd, false);
  for (const auto& [k, v] : block_sizes_->axes) {
    MQ_CHECK(k >= -nd && k < nd, "block_sizes: axis ", k, " is out of range for an input of rank ", nd);
    listed[k < 0 ? k + nd : k] = true;
  }
  config::Axis keep;
  keep.is_tuple = true;
  for (int64_t i = 0; i < nd; ++i)
    if (!listed[i]) keep.dims.push_back(static_cast<int>(i));
  set_axis(keep.dims.empty() ? std::nullopt : std::optional<config::Axis>(keep));
  block_sizes_.reset();
}

at::Tensor TensorQuantizer::fake_quantize(const at::Tensor& x) {
  if (backend_) {
    QuantBackendFn fn;
    {
      std::lock_guard<std::mutex> lock(backend_mutex());
      auto it = backend_registry().find(*backend_);
      MQ_CHECK(it != backend_registry().end(), "Quant backend '", *backend_, "' is not registered.");
      fn = it->second;
    }
    return fn(x, *this);
  }

  at::Tensor amax;
  if (!is_mx_format()) amax = get_amax(x);
  const at::Tensor no_clip;

  if (block_sizes_ && block_sizes_->is_dynamic()) {
    auto block = last_dim_block(*block_sizes_, x.dim());
    MQ_CHECK(block.has_value(), "block size for dynamic quantization not found.");
    const auto& sb = block_sizes_->scale_bits;
    // The affine bias is accepted but ignored by ModelOpt's dynamic-block path (reference §2.8).
    if (sb && sb->is_float(8, 0)) {
      const mqk::ElemFormat elem = mx_elem_format(num_bits_);
      const int64_t b = *block;
      return detail::apply_ste(x, no_clip, [&](const at::Tensor& t) { return mx_fake_quant(t, b, elem); });
    }
    if (sb && sb->is_float(4, 3) && num_bits_.is_float(2, 1)) {
      const int64_t b = *block;
      return detail::apply_ste(x, pass_through_bwd_ ? no_clip : amax,
                               [&](const at::Tensor& t) { return nvfp4_fake_quant(t, b, amax); });
    }
    MQ_THROW(::mq::Error, "Unsupported num_bits: ", py_repr(num_bits_),
             ", scale_bits: ", sb ? py_repr(*sb) : std::string("None"), " for dynamic block quantization.");
  }

  if (static_block_scale_ && amax_.defined() && is_nvfp4_static()) {
    MQ_CHECK(global_amax_.defined(), "static NVFP4: _global_amax is not set (promote the quantizer with a global "
             "amax after calibration)");
    const bool fos = block_sizes_->four_over_six.value_or(0) != 0;
    const at::Tensor block_amax = amax.to(at::kFloat);
    const at::Tensor g = global_amax_.to(x.device());
    const int64_t b = x.size(-1);
    return detail::apply_ste(x, pass_through_bwd_ ? no_clip : block_amax, [&](const at::Tensor& t) {
      return nvfp4_static_fake_quant(t, b, block_amax, g, fos);
    });
  }

  if (num_bits_.kind == config::NumBits::Kind::kFloat) {
    MQ_CHECK(num_bits_.is_float(4, 3), "Only support E=4 & M=3 for now. (num_bits=", py_repr(num_bits_), ")");
    const at::Tensor bias = get_bias(x);
    const at::Tensor xb = bias.defined() ? x - bias : x;
    at::Tensor y = detail::apply_ste(xb, pass_through_bwd_ ? no_clip : amax,
                                     [&](const at::Tensor& t) { return fp8_fake_quant(t, amax); });
    return bias.defined() ? y + bias : y;
  }
  MQ_CHECK(num_bits_.is_int(), "num_bits '", num_bits_.custom, "' needs a registered quant backend");
  const at::Tensor bias = get_bias(x);
  const at::Tensor xb = bias.defined() ? x - bias : x;
  const int bits = num_bits_.bits;
  const bool uns = unsigned_, narrow = narrow_range_;
  at::Tensor y = detail::apply_ste(xb, pass_through_bwd_ ? no_clip : amax, [&](const at::Tensor& t) {
    return int_fake_quant(t, amax, bits, uns, narrow);
  });
  return bias.defined() ? y + bias : y;
}

at::Tensor TensorQuantizer::forward(const at::Tensor& input) {
  MQ_CHECK(input.defined(), "TensorQuantizer.forward: the input tensor is undefined");
  if (input.numel() == 0) return input;
  at::Tensor x = input;
  if (auto pqs = pre_quant_scale()) x = x * *pqs;
  MQ_CHECK(!(rotate_back_is_enabled() && if_quant_ && !fake_quant_),
           "rotate_back mode is only supported with fake_quant=True.");
  if (rotate_is_enabled()) x = rotate_inputs(x);
  if (disabled_) {
    input_dtype_ = x.scalar_type();
    if (rotate_back_is_enabled()) x = rotate_inputs(x);
    return x;
  }
  if (block_sizes_ && fake_quant_) block_sizes_to_axis(x);
  const bool static_block = is_static_block_quant();
  if (static_block) {
    if (!block_plan_) {
      StaticBlockPlan plan = StaticBlockPlan::make(x.sizes(), *block_sizes_);
      config::Axis ax;
      ax.dims = plan.axis;
      ax.is_tuple = true;
      set_axis(ax);
      if (plan.amax_shape_for_export) amax_shape_for_export_ = plan.amax_shape_for_export;
      block_plan_ = std::move(plan);
    }
    x = block_plan_->apply(x);
  }
  at::Tensor out = x;
  if (if_calib_ && !dynamic_) {
    MQ_CHECK(calibrator_ != nullptr, "Calibrator was not created.");
    collect(x);
  }
  if (if_quant_) {
    x = x.contiguous();
    if (fake_quant_) {
      out = fake_quantize(x);
    } else {
      // ModelOpt returns the packed QTensor here and refuses a second plain-tensor forward; a C++
      // caller gets the dequantized value and may quantize again (the scales are replaced).
      last_qtensor_ = real_quantize(x);
      out = dequantize(*last_qtensor_);
    }
  }
  if (static_block) out = block_plan_->restore(out);
  if (rotate_back_is_enabled()) out = rotate_inputs(out);
  return out;
}

// ---- real quantization ----

QTensor TensorQuantizer::real_quantize(const at::Tensor& x) {
  const bool supported = (num_bits_.is_int() && num_bits_.bits == 4 && block_sizes_) ||
                         (num_bits_.is_float(2, 1) && block_sizes_) || num_bits_.is_float(4, 3) ||
                         (num_bits_.is_int() && num_bits_.bits == 8);
  MQ_CHECK(supported, "Real quantization not supported for this format (num_bits=", py_repr(num_bits_), ").");
  c10::NoGradGuard no_grad;
  QTensor q;
  if (block_sizes_ && block_sizes_->scale_bits && block_sizes_->scale_bits->is_float(8, 0) &&
      block_sizes_->is_dynamic()) {
    auto b = last_dim_block(*block_sizes_, x.dim());
    MQ_CHECK(b.has_value(), "MX real quantization: block_sizes has no last-dim block");
    if (num_bits_.is_float(2, 1)) {
      q = mxfp4_quantize(x, *b);
    } else if (num_bits_.is_float(4, 3)) {
      MQ_CHECK(*b == 32, "MXFP8 requires block size 32, got ", *b);
      q = mxfp8_quantize(x, *b);
    } else {
      MQ_THROW(::mq::Error, "Unsupported MX format: num_bits=", py_repr(num_bits_),
               ". Expected (2, 1) for MXFP4 or (4, 3) for MXFP8.");
    }
    scale_ = q.scale;
  } else if (num_bits_.is_float(4, 3)) {
    auto a = amax();
    const bool use_amax = a && !(block_sizes_ && a->numel() == 1);
    std::optional<at::Tensor> scales;
    if (use_amax) scales = *a / kE4M3Max;
    q = fp8_quantize(x, scales, axis_, block_sizes_);
    scale_ = q.scale;
  } else if (num_bits_.is_int() && num_bits_.bits == 8) {
    q = int8_quantize(x, axis_, block_sizes_);
    scale_ = q.scale;
  } else if (block_sizes_->scale_bits && block_sizes_->scale_bits->is_int() && block_sizes_->scale_bits->bits == 8 &&
             block_sizes_->scale_block_sizes) {
    auto b = last_dim_block(*block_sizes_, x.dim());
    auto it = block_sizes_->scale_block_sizes->find(-1);
    MQ_CHECK(b && it != block_sizes_->scale_block_sizes->end() && it->second,
             "NF4 real quantization needs block_sizes[-1] and scale_block_sizes[-1]");
    q = nf4_quantize(x, *b, *it->second, 8);
    scale_ = q.scale;
    double_scale_ = q.double_scale;
    scale_zeros_ = q.scale_zeros;
  } else if (block_sizes_->scale_bits && block_sizes_->scale_bits->is_float(4, 3)) {
    MQ_CHECK(block_sizes_->four_over_six.value_or(0) == 0,
             "NVFP4 Four-Over-Six (4/6) is not supported via compress: use fake quantization + export instead.");
    auto b = last_dim_block(*block_sizes_, x.dim());
    MQ_CHECK(b.has_value(), "NVFP4 real quantization: block_sizes has no last-dim block");
    std::optional<at::Tensor> g;
    if (global_amax_.defined()) {
      g = global_amax_;
    } else if (auto a = amax()) {
      g = a->numel() == 1 ? *a : a->max();
    }
    q = nvfp4_quantize(x, *b, g);
    scale_ = q.scale;
    double_scale_ = q.double_scale;
  } else {
    auto b = last_dim_block(*block_sizes_, x.dim());
    MQ_CHECK(b.has_value(), "INT4 real quantization: block_sizes has no last-dim block");
    q = int4_quantize(x, *b);
    scale_ = q.scale;
  }
  q.block_sizes = block_sizes_;
  dequantize_ = true;
  return q;
}

at::Tensor TensorQuantizer::dequantize(const QTensor& q) const { return q.dequantize(); }

// ---- repr ----

std::string TensorQuantizer::class_name() const {
  return static_block_scale_ ? "StaticBlockScaleQuantizer" : "TensorQuantizer";
}

std::string TensorQuantizer::short_amax(const char* fmt) const {
  if (is_mx_format()) return "None";
  if (use_constant_amax_) return detail::py_format(kE4M3Max, fmt) + "(const)";
  if (!amax_.defined()) return "dynamic";
  return short_tensor(amax_, fmt);
}

std::string TensorQuantizer::extra_repr() const {
  std::string rot;
  if (rotate_is_enabled()) rot += " rotated";
  if (rotate_back_is_enabled()) rot += " (rotate_back)";
  if (rotate_is_fp32()) rot += " (fp32)";
  if (rotate_block_size()) rot += " (block=" + std::to_string(*rotate_block_size()) + ")";
  const char* fmt = static_block_scale_ ? "%.4f" : "%.2e";
  auto pqs = pre_quant_scale();
  if (disabled_) {
    std::string s = "disabled";
    if (pqs) s += " pre_quant_scale=" + short_tensor(*pqs, "%.2e");
    return s + rot;
  }
  std::string s = std::string(unsigned_ ? "unsigned " : "") + py_repr(num_bits_) + " bit";
  if (narrow_range_) s += " narrow";
  if (fake_quant_) s += " fake";
  if (block_sizes_) {
    s += " block_sizes=" + py_repr(*block_sizes_) + ",";
  } else {
    s += axis_ ? " axis=" + py_repr(*axis_) : std::string(" per-tensor");
  }
  s += " amax=" + short_amax(fmt);
  if (pqs) s += " pre_quant_scale=" + short_tensor(*pqs, "%.2e");
  s += rot;
  if (calibrator_) s += " calibrator=" + calibrator_->class_name();
  if (bias_) s += " bias=" + py_repr(*bias_);
  if (if_quant_) s += " quant";
  if (if_calib_) s += " calib";
  if (backend_) s += " backend=" + *backend_ + ", extra_args=" + backend_extra_args_.dump();
  return s;
}

std::string TensorQuantizer::repr() const { return class_name() + "(" + extra_repr() + ")"; }

// ---- convenience ----

at::Tensor calibrate_and_fake_quant(TensorQuantizer& q, const at::Tensor& x) {
  const bool needs_calib = q.is_enabled() && !q.is_dynamic() && !q.use_constant_amax() &&
                           !q.constant_amax().has_value() && q.calibrator() != nullptr &&
                           !q.is_static_block_scale_quantizer();
  if (needs_calib) {
    q.disable_quant();
    q.enable_calib();
    q.forward(x);
    if (q.calibrator()->has_data()) q.load_calib_amax();
    if (q.bias() && q.bias()->type.value_or("static") == "static" && q.bias_calibrator()->has_data()) {
      q.load_calib_bias();
    }
    q.disable_calib();
    q.enable_quant();
    // Static block weights are promoted after max calibration (ModelOpt
    // promote_static_block_weight_quantizers): NVFP4 static needs the global amax to quantize at all.
    if (q.is_nvfp4_static() && q.has_amax_buffer()) {
      q.promote_to_static_block_scale(q.amax_buffer().to(at::kFloat).max());
    }
  }
  return q.forward(x);
}

}  // namespace mq::quant
