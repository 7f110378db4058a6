// TensorQuantizer save/restore: a JSON property map in ModelOpt's modelopt_state spelling plus the
// named buffers, so a calibrated quantizer can be rebuilt without recalibration.
#include <ATen/ATen.h>

#include "fake_quant_impl.hpp"
#include "mq/core/error.hpp"
#include "mq/quant/tensor_quantizer.hpp"

namespace mq::quant {
namespace {

using nlohmann::json;

constexpr const char* kBufferNames[] = {"_amax",  "_pre_quant_scale", "_bias_value",  "_global_amax",
                                        "_scale", "_double_scale",    "_scale_zeros"};

std::string dtype_name(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "torch.float32";
    case at::kDouble: return "torch.float64";
    case at::kBFloat16: return "torch.bfloat16";
    case at::kHalf: return "torch.float16";
    case at::kChar: return "torch.int8";
    case at::kByte: return "torch.uint8";
    case at::kInt: return "torch.int32";
    case at::kLong: return "torch.int64";
    case at::kFloat8_e4m3fn: return "torch.float8_e4m3fn";
    default: MQ_THROW(::mq::Error, "quantizer state: unsupported dtype ", t);
  }
}

at::ScalarType dtype_from_name(const std::string& s) {
  for (at::ScalarType t : {at::kFloat, at::kDouble, at::kBFloat16, at::kHalf, at::kChar, at::kByte, at::kInt,
                           at::kLong, at::kFloat8_e4m3fn}) {
    if (dtype_name(t) == s) return t;
  }
  MQ_THROW(::mq::Error, "quantizer state: unknown dtype '", s, "'");
}

json num_bits_json(const config::NumBits& nb) {
  switch (nb.kind) {
    case config::NumBits::Kind::kInt: return nb.bits;
    case config::NumBits::Kind::kFloat: return json::array({nb.exponent, nb.mantissa});
    case config::NumBits::Kind::kCustom: return nb.custom;
  }
  return nullptr;
}

config::NumBits num_bits_from(const json& j, const char* key) {
  if (j.is_number_integer()) return config::NumBits::integer(j.get<int>());
  if (j.is_array() && j.size() == 2) return config::NumBits::floating(j[0].get<int>(), j[1].get<int>());
  if (j.is_string()) {
    config::NumBits nb;
    nb.kind = config::NumBits::Kind::kCustom;
    nb.custom = j.get<std::string>();
    return nb;
  }
  MQ_THROW(::mq::Error, "quantizer state: ", key, " must be an int, an [E, M] pair or a string, got ", j.dump());
}

json axis_map_json(const config::AxisBlockMap& m) {
  json o = json::object();
  for (const auto& [k, v] : m) o[std::to_string(k)] = v ? json(*v) : json(nullptr);
  return o;
}

bool is_int_key(const std::string& k) {
  if (k.empty()) return false;
  size_t i = (k[0] == '-') ? 1 : 0;
  if (i == k.size()) return false;
  for (; i < k.size(); ++i)
    if (k[i] < '0' || k[i] > '9') return false;
  return true;
}

config::AxisBlockMap axis_map_from(const json& j, const char* key) {
  MQ_CHECK(j.is_object(), "quantizer state: ", key, " must be an object");
  config::AxisBlockMap m;
  for (const auto& [k, v] : j.items()) {
    MQ_CHECK(is_int_key(k), "quantizer state: ", key, ": unexpected key '", k, "'");
    m[std::stoi(k)] = v.is_null() ? std::nullopt : std::optional<int64_t>(v.get<int64_t>());
  }
  return m;
}

json block_sizes_json(const config::BlockSizes& bs) {
  json o = axis_map_json(bs.axes);
  if (bs.type) o["type"] = *bs.type;
  if (bs.scale_bits) o["scale_bits"] = num_bits_json(*bs.scale_bits);
  if (bs.scale_block_sizes) o["scale_block_sizes"] = axis_map_json(*bs.scale_block_sizes);
  if (bs.four_over_six) o["four_over_six"] = *bs.four_over_six;
  return o;
}

config::BlockSizes block_sizes_from(const json& j) {
  MQ_CHECK(j.is_object(), "quantizer state: _block_sizes must be an object or null");
  config::BlockSizes bs;
  for (const auto& [k, v] : j.items()) {
    if (is_int_key(k)) {
      bs.axes[std::stoi(k)] = v.is_null() ? std::nullopt : std::optional<int64_t>(v.get<int64_t>());
    } else if (k == "type") {
      bs.type = v.get<std::string>();
    } else if (k == "scale_bits") {
      bs.scale_bits = num_bits_from(v, "_block_sizes.scale_bits");
    } else if (k == "scale_block_sizes") {
      bs.scale_block_sizes = axis_map_from(v, "_block_sizes.scale_block_sizes");
    } else if (k == "four_over_six") {
      bs.four_over_six = v.get<int>();
    } else {
      MQ_THROW(::mq::Error, "quantizer state: _block_sizes: unexpected key '", k, "'");
    }
  }
  return bs;
}

json bias_json(const config::BiasConfig& b) {
  json o = axis_map_json(b.axes);
  if (b.type) o["type"] = *b.type;
  if (b.method) o["method"] = *b.method;
  return o;
}

config::BiasConfig bias_from(const json& j) {
  MQ_CHECK(j.is_object(), "quantizer state: _bias must be an object or null");
  config::BiasConfig b;
  for (const auto& [k, v] : j.items()) {
    if (is_int_key(k)) {
      b.axes[std::stoi(k)] = v.is_null() ? std::nullopt : std::optional<int64_t>(v.get<int64_t>());
    } else if (k == "type") {
      b.type = v.get<std::string>();
    } else if (k == "method") {
      b.method = v.get<std::string>();
    } else {
      MQ_THROW(::mq::Error, "quantizer state: _bias: unexpected key '", k, "'");
    }
  }
  return b;
}

json axis_json(const config::Axis& a) {
  if (!a.is_tuple && a.dims.size() == 1) return a.dims[0];
  return json(a.dims);
}

config::Axis axis_from(const json& j) {
  config::Axis a;
  if (j.is_number_integer()) {
    a.dims = {j.get<int>()};
    a.is_tuple = false;
  } else {
    MQ_CHECK(j.is_array(), "quantizer state: _axis must be null, an int or a list, got ", j.dump());
    a.dims = j.get<std::vector<int>>();
    a.is_tuple = true;
  }
  return a;
}

template <typename T>
T get_or(const json& j, const char* key, T dflt) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return dflt;
  return it->get<T>();
}

}  // namespace

std::map<std::string, at::Tensor> TensorQuantizer::named_buffers() const {
  std::map<std::string, at::Tensor> m;
  const at::Tensor* bufs[] = {&amax_, &pre_quant_scale_, &bias_value_, &global_amax_,
                              &scale_, &double_scale_,   &scale_zeros_};
  for (size_t i = 0; i < std::size(kBufferNames); ++i)
    if (bufs[i]->defined()) m[kBufferNames[i]] = *bufs[i];
  return m;
}

TensorQuantizerState TensorQuantizer::get_state() const {
  TensorQuantizerState st;
  json& p = st.properties;
  p["_disabled"] = disabled_;
  p["_num_bits"] = num_bits_json(num_bits_);
  p["_effective_bits"] = effective_bits_ ? json(*effective_bits_) : json(nullptr);
  p["_axis"] = axis_ ? axis_json(*axis_) : json(nullptr);
  p["_fake_quant"] = fake_quant_;
  p["_unsigned"] = unsigned_;
  p["_narrow_range"] = narrow_range_;
  p["_learn_amax"] = learn_amax_;
  p["_dynamic"] = dynamic_;
  p["_block_sizes"] = block_sizes_ ? block_sizes_json(*block_sizes_) : json(nullptr);
  p["_bias"] = bias_ ? bias_json(*bias_) : json(nullptr);
  p["_trt_high_precision_dtype"] = trt_high_precision_dtype_;
  p["_calibrator"] = calibrator_kind_;
  p["_rotate"] = json{{"enable", rotate_.enable},
                      {"mode", rotate_.mode},
                      {"rotate_fp32", rotate_.rotate_fp32},
                      {"block_size", rotate_.block_size ? json(*rotate_.block_size) : json(nullptr)}};
  p["_pass_through_bwd"] = pass_through_bwd_;
  p["backend"] = backend_ ? json(*backend_) : json(nullptr);
  p["backend_extra_args"] = backend_extra_args_;
  p["_use_constant_amax"] = use_constant_amax_;
  p["_constant_amax"] = constant_amax_ ? json(*constant_amax_) : json(nullptr);
  p["_if_quant"] = if_quant_;
  p["_if_calib"] = if_calib_;
  p["_enable_pre_quant_scale"] = enable_pre_quant_scale_;
  p["_dequantize"] = dequantize_;
  p["_input_dtype"] = input_dtype_ ? json(dtype_name(*input_dtype_)) : json(nullptr);
  p["_amax_shape_for_export"] = amax_shape_for_export_ ? json(*amax_shape_for_export_) : json(nullptr);
  if (static_block_scale_) p["_is_static_block_scale_quantizer"] = true;
  if (nvfp4_static_quantizer_) p["_is_nvfp4_static_quantizer"] = true;
  json meta = {{"params", json::object()}, {"buffers", json::object()}};
  for (const auto& [name, t] : named_buffers()) {
    meta["buffers"][name] = {{"shape", t.sizes().vec()}, {"dtype", dtype_name(t.scalar_type())}};
    st.buffers[name] = t.detach().clone();
  }
  p["_pytorch_state_metadata"] = meta;
  return st;
}

void TensorQuantizer::set_state(const TensorQuantizerState& st) {
  const json& p = st.properties;
  MQ_CHECK(p.is_object(), "quantizer state: properties must be a JSON object");
  try {
    disabled_ = get_or<bool>(p, "_disabled", false);
    num_bits_ = p.contains("_num_bits") ? num_bits_from(p["_num_bits"], "_num_bits") : config::NumBits::integer(8);
    effective_bits_ = p.contains("_effective_bits") && !p["_effective_bits"].is_null()
                          ? std::optional<double>(p["_effective_bits"].get<double>())
                          : std::nullopt;
    axis_ = p.contains("_axis") && !p["_axis"].is_null() ? std::optional<config::Axis>(axis_from(p["_axis"]))
                                                         : std::nullopt;
    fake_quant_ = get_or<bool>(p, "_fake_quant", true);
    unsigned_ = get_or<bool>(p, "_unsigned", false);
    narrow_range_ = get_or<bool>(p, "_narrow_range", false);
    learn_amax_ = get_or<bool>(p, "_learn_amax", false);
    dynamic_ = get_or<bool>(p, "_dynamic", false);
    block_sizes_ = p.contains("_block_sizes") && !p["_block_sizes"].is_null()
                       ? std::optional<config::BlockSizes>(block_sizes_from(p["_block_sizes"]))
                       : std::nullopt;
    bias_ = p.contains("_bias") && !p["_bias"].is_null() ? std::optional<config::BiasConfig>(bias_from(p["_bias"]))
                                                         : std::nullopt;
    trt_high_precision_dtype_ = get_or<std::string>(p, "_trt_high_precision_dtype", "Float");
    calibrator_kind_ = get_or<std::string>(p, "_calibrator", "max");
    config::RotateConfig rot;
    if (p.contains("_rotate") && p["_rotate"].is_boolean()) {
      rot.enable = p["_rotate"].get<bool>();
    } else if (p.contains("_rotate") && p["_rotate"].is_object()) {
      const json& r = p["_rotate"];
      rot.enable = get_or<bool>(r, "enable", false);
      rot.mode = get_or<std::string>(r, "mode", "rotate");
      rot.rotate_fp32 = get_or<bool>(r, "rotate_fp32", false);
      if (r.contains("block_size") && !r["block_size"].is_null()) rot.block_size = r["block_size"].get<int>();
      rot.given_as_bool = false;
    }
    rotate_ = rot;
    pass_through_bwd_ = get_or<bool>(p, "_pass_through_bwd", true);
    backend_ = p.contains("backend") && !p["backend"].is_null() ? std::optional<std::string>(p["backend"].get<std::string>())
                                                                : std::nullopt;
    backend_extra_args_ = p.contains("backend_extra_args") && !p["backend_extra_args"].is_null()
                              ? p["backend_extra_args"]
                              : json::object();
    use_constant_amax_ = get_or<bool>(p, "_use_constant_amax", false);
    constant_amax_ = p.contains("_constant_amax") && !p["_constant_amax"].is_null()
                         ? std::optional<double>(p["_constant_amax"].get<double>())
                         : std::nullopt;
    if_quant_ = get_or<bool>(p, "_if_quant", true);
    if_calib_ = get_or<bool>(p, "_if_calib", false);
    enable_pre_quant_scale_ = get_or<bool>(p, "_enable_pre_quant_scale", true);
    dequantize_ = get_or<bool>(p, "_dequantize", false);
    input_dtype_ = p.contains("_input_dtype") && !p["_input_dtype"].is_null()
                       ? std::optional<at::ScalarType>(dtype_from_name(p["_input_dtype"].get<std::string>()))
                       : std::nullopt;
    amax_shape_for_export_ =
        p.contains("_amax_shape_for_export") && !p["_amax_shape_for_export"].is_null()
            ? std::optional<std::vector<int64_t>>(p["_amax_shape_for_export"].get<std::vector<int64_t>>())
            : std::nullopt;
    static_block_scale_ = get_or<bool>(p, "_is_static_block_scale_quantizer", false);
    nvfp4_static_quantizer_ = get_or<bool>(p, "_is_nvfp4_static_quantizer", false);
  } catch (const nlohmann::json::exception& e) {
    MQ_THROW(::mq::Error, "quantizer state: malformed property: ", e.what());
  }
  rebuild_calibrator();
  bias_calibrator_.reset();
  block_plan_.reset();
  last_qtensor_.reset();

  at::Tensor* bufs[] = {&amax_, &pre_quant_scale_, &bias_value_, &global_amax_, &scale_, &double_scale_, &scale_zeros_};
  for (at::Tensor* b : bufs) *b = at::Tensor();
  json meta = p.contains("_pytorch_state_metadata") ? p["_pytorch_state_metadata"] : json::object();
  json bmeta = meta.contains("buffers") ? meta["buffers"] : json::object();
  for (const auto& [name, t] : st.buffers) {
    MQ_CHECK(bmeta.contains(name), "quantizer state: buffer '", name, "' is not listed in _pytorch_state_metadata");
  }
  for (const auto& [name, info] : bmeta.items()) {
    size_t i = 0;
    while (i < std::size(kBufferNames) && name != kBufferNames[i]) ++i;
    MQ_CHECK(i < std::size(kBufferNames), "quantizer state: unknown buffer '", name, "'");
    auto it = st.buffers.find(name);
    MQ_CHECK(it != st.buffers.end() && it->second.defined(), "quantizer state: buffer '", name, "' is missing");
    const auto shape = info.at("shape").get<std::vector<int64_t>>();
    MQ_CHECK(it->second.sizes() == at::IntArrayRef(shape), "quantizer state: buffer '", name, "' has shape ",
             format_torch_size(it->second.sizes()), ", expected ", format_torch_size(shape));
    *bufs[i] = it->second.detach().to(dtype_from_name(info.at("dtype").get<std::string>())).clone();
  }
}

}  // namespace mq::quant
