#include "mq/config/json.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <limits>

#include "config/json_impl.hpp"
#include "mq/core/error.hpp"

namespace mq::config {

using detail::ojson;

// ---------------------------------------------------------------------------------------------
// ErrorContext

namespace {
bool is_identifier(std::string_view k) {
  if (k.empty() || std::isdigit(static_cast<unsigned char>(k[0]))) return false;
  return std::all_of(k.begin(), k.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
  });
}
}  // namespace

ErrorContext ErrorContext::key(std::string_view k) const {
  ErrorContext c = *this;
  if (is_identifier(k)) {
    if (!c.path.empty()) c.path += '.';
    c.path += k;
  } else {
    c.path += '[';
    c.path += nlohmann::json(std::string(k)).dump();
    c.path += ']';
  }
  return c;
}

ErrorContext ErrorContext::index(size_t i) const {
  ErrorContext c = *this;
  c.path += '[' + std::to_string(i) + ']';
  return c;
}

std::string ErrorContext::where() const {
  return (file.empty() ? std::string("<inline>") : file) + ": " + (path.empty() ? "$" : path);
}

void ErrorContext::fail(const std::string& rule) const { throw ConfigError(where() + ": " + rule); }

// ---------------------------------------------------------------------------------------------
// Strict JSON accessors

namespace detail {

std::string show(const ojson& j) {
  std::string s = j.dump();
  if (s.size() > 80) s = s.substr(0, 77) + "...";
  return s;
}

bool get_bool(const ojson& j, const ErrorContext& ctx) {
  if (!j.is_boolean()) ctx.fail(show(j) + " is not a boolean (true/false)");
  return j.get<bool>();
}

int64_t get_int(const ojson& j, const ErrorContext& ctx) {
  if (!j.is_number_integer()) ctx.fail(show(j) + " is not an integer");
  if (j.is_number_unsigned() && j.get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max()))
    ctx.fail(show(j) + " is out of range");
  return j.get<int64_t>();
}

double get_number(const ojson& j, const ErrorContext& ctx) {
  if (!j.is_number()) ctx.fail(show(j) + " is not a number");
  return j.get<double>();
}

std::string get_string(const ojson& j, const ErrorContext& ctx) {
  if (!j.is_string()) ctx.fail(show(j) + " is not a string");
  return j.get<std::string>();
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + v[i];
  return s;
}

std::string get_enum(const ojson& j, const ErrorContext& ctx, const std::vector<std::string>& allowed) {
  if (j.is_string()) {
    const auto& s = j.get_ref<const std::string&>();
    if (std::find(allowed.begin(), allowed.end(), s) != allowed.end()) return s;
  }
  std::vector<std::string> quoted;
  for (const auto& a : allowed) quoted.push_back('"' + a + '"');
  ctx.fail(show(j) + " is not one of " + join(quoted));
}

const ojson& get_object(const ojson& j, const ErrorContext& ctx, std::string_view what) {
  if (!j.is_object()) ctx.fail("expected " + std::string(what) + " (a JSON object), got " + show(j));
  return j;
}

std::optional<int> parse_int_key(std::string_view key) {
  if (key.empty()) return std::nullopt;
  size_t start = key[0] == '-' ? 1 : 0;
  if (start == key.size()) return std::nullopt;
  for (size_t i = start; i < key.size(); ++i)
    if (!std::isdigit(static_cast<unsigned char>(key[i]))) return std::nullopt;
  int v = 0;
  auto [ptr, ec] = std::from_chars(key.data(), key.data() + key.size(), v);
  if (ec != std::errc() || ptr != key.data() + key.size()) return std::nullopt;
  return v;
}

void reject_unknown_keys(const ojson& j, const ErrorContext& ctx,
                         const std::vector<std::string>& allowed, std::string_view what) {
  for (const auto& [k, v] : j.items()) {
    if (std::find(allowed.begin(), allowed.end(), k) == allowed.end())
      ctx.key(k).fail("unknown " + std::string(what) + " key (allowed: " + join(allowed) + ")");
  }
}

}  // namespace detail

using namespace detail;

// ---------------------------------------------------------------------------------------------
// num_bits

std::optional<NumBits> parse_exmy(std::string_view s) {
  if (s.size() < 4 || (s[0] != 'e' && s[0] != 'E')) return std::nullopt;
  size_t m = s.find_first_of("mM", 1);
  if (m == std::string_view::npos || m == 1 || m + 1 == s.size()) return std::nullopt;
  auto digits = [](std::string_view d) {
    return std::all_of(d.begin(), d.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); });
  };
  std::string_view e_str = s.substr(1, m - 1), m_str = s.substr(m + 1);
  if (!digits(e_str) || !digits(m_str)) return std::nullopt;
  int e = 0, mm = 0;
  auto r1 = std::from_chars(e_str.data(), e_str.data() + e_str.size(), e);
  auto r2 = std::from_chars(m_str.data(), m_str.data() + m_str.size(), mm);
  if (r1.ec != std::errc() || r2.ec != std::errc()) return std::nullopt;
  return NumBits::floating(e, mm);
}

NumBits parse_num_bits(const ojson& j, const ErrorContext& ctx, bool allow_custom) {
  if (j.is_number_integer()) {
    int64_t v = get_int(j, ctx);
    if (v > std::numeric_limits<int>::max() || v < std::numeric_limits<int>::min())
      ctx.fail(show(j) + " is out of range");
    return NumBits::integer(int(v));
  }
  if (j.is_array()) {
    if (j.size() != 2 || !j[0].is_number_integer() || !j[1].is_number_integer())
      ctx.fail(show(j) + " is not an [E, M] pair of integers");
    int64_t e = j[0].get<int64_t>(), m = j[1].get<int64_t>();
    if (std::abs(e) > 64 || std::abs(m) > 64) ctx.fail(show(j) + " is out of range");
    return NumBits::floating(int(e), int(m));
  }
  if (j.is_string()) {
    const auto& s = j.get_ref<const std::string&>();
    if (auto nb = parse_exmy(s)) return *nb;
    if (allow_custom) {
      NumBits nb;
      nb.kind = NumBits::Kind::kCustom;
      nb.custom = s;
      return nb;
    }
    ctx.fail(show(j) + " is not an \"ExMy\" float format string (e.g. \"e4m3\")");
  }
  ctx.fail(show(j) + " is not an int, an [E, M] pair or an \"ExMy\" string");
}

nlohmann::json to_json(const NumBits& nb) {
  switch (nb.kind) {
    case NumBits::Kind::kInt: return nb.bits;
    case NumBits::Kind::kFloat: return nlohmann::json::array({nb.exponent, nb.mantissa});
    case NumBits::Kind::kCustom: return nb.custom;
  }
  MQ_ASSERT(false);
}

// ---------------------------------------------------------------------------------------------
// QuantizerAttributeConfig

namespace {

const std::vector<std::string>& attribute_keys() {
  static const std::vector<std::string> keys = {
      "enable",       "num_bits",   "effective_bits",           "axis",
      "fake_quant",   "unsigned",   "narrow_range",             "learn_amax",
      "type",         "block_sizes", "bias",                    "trt_high_precision_dtype",
      "calibrator",   "rotate",     "pass_through_bwd",         "backend",
      "backend_extra_args",         "use_constant_amax",        "constant_amax"};
  return keys;
}

// ModelOpt's before-validator: any dict that is exactly {"enable": True} is rejected, at any depth,
// except under a "rotate" key (RotateConfig(enable=True) is meaningful).
void reject_enable_only(const ojson& v, const ErrorContext& ctx, std::string_view field) {
  if (v.is_array()) {
    for (size_t i = 0; i < v.size(); ++i) reject_enable_only(v[i], ctx.index(i), {});
  } else if (v.is_object()) {
    if (field == "rotate") return;
    if (v.size() == 1 && v.contains("enable") && v["enable"].is_boolean() && v["enable"].get<bool>())
      ctx.fail("cannot specify only {\"enable\": true}; additional attributes are required to enable "
               "quantization");
    for (const auto& [k, sub] : v.items()) reject_enable_only(sub, ctx.key(k), k);
  }
}

std::optional<int64_t> parse_block_length(const ojson& v, const ErrorContext& ctx) {
  if (v.is_null()) return std::nullopt;
  if (!v.is_number_integer()) ctx.fail(show(v) + " is not a block length (a positive int or null)");
  int64_t n = get_int(v, ctx);
  if (n <= 0) ctx.fail(show(v) + " is not a block length (a positive int or null)");
  return n;
}

int parse_axis_key(const std::string& k, const ErrorContext& ctx, std::string_view what) {
  auto ax = parse_int_key(k);
  if (!ax) ctx.fail("\"" + k + "\" is not a valid " + std::string(what) + " key");
  return *ax;
}

BlockSizes parse_block_sizes(const ojson& j, const ErrorContext& ctx) {
  get_object(j, ctx, "a block_sizes dict");
  BlockSizes bs;
  for (const auto& [k, v] : j.items()) {
    ErrorContext c = ctx.key(k);
    if (auto ax = parse_int_key(k)) {
      if (bs.axes.count(*ax)) c.fail("axis " + std::to_string(*ax) + " is given twice");
      bs.axes[*ax] = parse_block_length(v, c);
    } else if (k == "type") {
      bs.type = get_enum(v, c, {"static", "dynamic"});
    } else if (k == "scale_bits") {
      if (v.is_null()) continue;  // pydantic allows None; it means "not quantized", same as absent
      bs.scale_bits = parse_num_bits(v, c, /*allow_custom=*/false);
    } else if (k == "scale_block_sizes") {
      if (v.is_null()) continue;
      get_object(v, c, "a scale_block_sizes dict of axis -> block length");
      AxisBlockMap m;
      for (const auto& [sk, sv] : v.items()) {
        ErrorContext sc = c.key(sk);
        int ax = parse_axis_key(sk, sc, "scale_block_sizes axis");
        if (m.count(ax)) sc.fail("axis " + std::to_string(ax) + " is given twice");
        if (sv.is_null()) sc.fail("null is not a block length (a positive int)");
        m[ax] = parse_block_length(sv, sc);
      }
      bs.scale_block_sizes = std::move(m);
    } else if (k == "four_over_six") {
      // pydantic coerces the bool to int (stored as 1); consumers read it with bool().
      if (v.is_boolean()) bs.four_over_six = v.get<bool>() ? 1 : 0;
      else if (v.is_number_integer()) bs.four_over_six = int(get_int(v, c) != 0);
      else c.fail(show(v) + " is not a boolean");
    } else {
      c.fail("unknown block_sizes key (allowed: int axes, type, scale_bits, scale_block_sizes, "
             "four_over_six)");
    }
  }
  if (bs.is_dynamic() && bs.axes.size() != 1)
    ctx.fail("dynamic block quantization needs exactly one block axis, got " +
             std::to_string(bs.axes.size()));
  return bs;
}

BiasConfig parse_bias(const ojson& j, const ErrorContext& ctx) {
  get_object(j, ctx, "a bias dict");
  BiasConfig b;
  for (const auto& [k, v] : j.items()) {
    ErrorContext c = ctx.key(k);
    if (k == "type") {
      b.type = get_enum(v, c, {"static", "dynamic"});
    } else if (k == "method") {
      b.method = get_enum(v, c, {"mean", "max_min"});
    } else if (auto ax = parse_int_key(k)) {
      if (b.axes.count(*ax)) c.fail("axis " + std::to_string(*ax) + " is given twice");
      if (v.is_null()) b.axes[*ax] = std::nullopt;
      else if (v.is_number_integer()) b.axes[*ax] = get_int(v, c);
      else c.fail(show(v) + " is not null or an int (the int keys of bias are the reduced axes)");
    } else {
      c.fail("bias keys are \"type\", \"method\" and int axes to reduce; \"" + k + "\" is none of them");
    }
  }
  if (b.axes.empty()) ctx.fail("the axis for bias computation is not specified (give at least one int axis key)");
  return b;
}

RotateConfig parse_rotate(const ojson& j, const ErrorContext& ctx) {
  RotateConfig r;
  if (j.is_boolean()) {
    r.enable = j.get<bool>();
    r.given_as_bool = true;
    return r;
  }
  if (!j.is_object()) ctx.fail(show(j) + " is not a boolean or a rotate dict");
  r.given_as_bool = false;
  reject_unknown_keys(j, ctx, {"enable", "mode", "rotate_fp32", "block_size"}, "rotate");
  for (const auto& [k, v] : j.items()) {
    ErrorContext c = ctx.key(k);
    if (k == "enable") r.enable = get_bool(v, c);
    else if (k == "mode") r.mode = get_enum(v, c, {"rotate", "rotate_back"});
    else if (k == "rotate_fp32") r.rotate_fp32 = get_bool(v, c);
    else if (k == "block_size") {
      if (v.is_null()) {
        r.block_size.reset();
      } else {
        if (!v.is_number_integer() || get_int(v, c) <= 0 || get_int(v, c) > std::numeric_limits<int>::max())
          c.fail("block_size must be a positive int, got " + show(v));
        r.block_size = int(v.get<int64_t>());
      }
    }
    r.fields_set.insert(k);
  }
  return r;
}

Axis parse_axis(const ojson& j, const ErrorContext& ctx) {
  Axis a;
  if (j.is_number_integer()) {
    a.dims.push_back(int(get_int(j, ctx)));
    a.is_tuple = false;
    return a;
  }
  if (!j.is_array()) ctx.fail(show(j) + " is not null, an int or a list of ints");
  a.is_tuple = true;
  for (size_t i = 0; i < j.size(); ++i) a.dims.push_back(int(get_int(j[i], ctx.index(i))));
  return a;
}

bool is_supported_float(int e, int m) {
  static const int kAllowed[][2] = {{4, 3}, {5, 2}, {2, 1}, {1, 2}, {0, 3}, {3, 0}, {3, 2}, {2, 3}};
  for (const auto& a : kAllowed)
    if (a[0] == e && a[1] == m) return true;
  return false;
}

void validate_num_bits(const QuantizerAttributeConfig& c, const ErrorContext& ctx) {
  if (c.backend) return;  // custom backends interpret num_bits themselves
  ErrorContext nctx = ctx.key("num_bits");
  const NumBits& nb = c.num_bits;
  switch (nb.kind) {
    case NumBits::Kind::kInt:
      if (nb.bits < 1) nctx.fail(std::to_string(nb.bits) + " must be a positive integer");
      return;
    case NumBits::Kind::kCustom:
      nctx.fail("\"" + nb.custom + "\" is not an \"ExMy\" float format; other strings need a custom `backend`");
    case NumBits::Kind::kFloat: break;
  }
  std::string shown = nlohmann::json::array({nb.exponent, nb.mantissa}).dump();
  if (nb.exponent <= 0 || nb.mantissa <= 0)
    nctx.fail(shown + ": exponent and mantissa bits must be positive integers");
  if (!is_supported_float(nb.exponent, nb.mantissa))
    nctx.fail(shown + " is not a supported float format (FP8 E4M3/E5M2, FP6 E3M2/E2M3, FP4 E2M1)");
  // ModelOpt's message here is a broken f-string ("E{num_bis[0]}M..."); this is what it meant to say.
  if (!nb.is_float(4, 3) && !nb.is_float(2, 1) && !c.is_dynamic_block())
    nctx.fail(shown + " (E" + std::to_string(nb.exponent) + "M" + std::to_string(nb.mantissa) +
              ") is only supported with dynamic block quantization (block_sizes type \"dynamic\")");
}

}  // namespace

QuantizerAttributeConfig parse_quantizer_attribute(const ojson& j, const ErrorContext& ctx) {
  if (!j.is_object()) ctx.fail("expected a dict of quantizer attributes, got " + show(j));
  reject_enable_only(j, ctx, {});
  reject_unknown_keys(j, ctx, attribute_keys(), "quantizer attribute");

  QuantizerAttributeConfig c;
  // Declaration order, as pydantic validates (and reports) fields.
  for (const std::string& key : attribute_keys()) {
    auto it = j.find(key);
    if (it == j.end()) continue;
    const ojson& v = *it;
    ErrorContext f = ctx.key(key);
    c.fields_set.insert(key);
    if (key == "enable") {
      c.enable = get_bool(v, f);
    } else if (key == "num_bits") {
      c.num_bits = parse_num_bits(v, f, /*allow_custom=*/true);
    } else if (key == "effective_bits") {
      if (v.is_null()) continue;
      double e = get_number(v, f);
      if (!(e > 0 && e <= 16)) f.fail("effective_bits must be in (0, 16], got " + show(v));
      c.effective_bits = e;
    } else if (key == "axis") {
      if (!v.is_null()) c.axis = parse_axis(v, f);
    } else if (key == "fake_quant") {
      c.fake_quant = get_bool(v, f);
    } else if (key == "unsigned") {
      c.is_unsigned = get_bool(v, f);
    } else if (key == "narrow_range") {
      c.narrow_range = get_bool(v, f);
    } else if (key == "learn_amax") {
      if (get_bool(v, f)) f.fail("learn_amax is deprecated and must not be true");
      c.learn_amax = false;
    } else if (key == "type") {
      c.type = get_enum(v, f, {"static", "dynamic"});
    } else if (key == "block_sizes") {
      if (v.is_null()) continue;
      if (c.axis) f.fail("axis must be null when block_sizes is set (axis is " + show(j["axis"]) + ")");
      c.block_sizes = parse_block_sizes(v, f);
    } else if (key == "bias") {
      if (!v.is_null()) c.bias = parse_bias(v, f);
    } else if (key == "trt_high_precision_dtype") {
      c.trt_high_precision_dtype = get_enum(v, f, {"Float", "Half", "BFloat16"});
    } else if (key == "calibrator") {
      c.calibrator = get_enum(v, f, {"max", "histogram"});
    } else if (key == "rotate") {
      c.rotate = parse_rotate(v, f);
    } else if (key == "pass_through_bwd") {
      c.pass_through_bwd = get_bool(v, f);
    } else if (key == "backend") {
      if (!v.is_null()) c.backend = get_string(v, f);
    } else if (key == "backend_extra_args") {
      if (!v.is_null()) c.backend_extra_args = to_unordered(get_object(v, f, "a dict or null"));
    } else if (key == "use_constant_amax") {
      c.use_constant_amax = get_bool(v, f);
    } else if (key == "constant_amax") {
      if (v.is_null()) continue;
      double a = get_number(v, f);
      if (!(a > 0)) f.fail("constant_amax must be a positive value, got " + show(v));
      c.constant_amax = a;
    }
  }
  validate_num_bits(c, ctx);
  if (c.use_constant_amax && c.constant_amax)
    ctx.key("constant_amax").fail("use_constant_amax and constant_amax are mutually exclusive; set only one");
  return c;
}

QuantizerAttributeConfig parse_quantizer_attribute(const nlohmann::json& j, const ErrorContext& ctx) {
  return parse_quantizer_attribute(to_ordered(j), ctx);
}

// ---------------------------------------------------------------------------------------------
// Dumping

namespace {

nlohmann::json block_map_to_json(const AxisBlockMap& m) {
  nlohmann::json o = nlohmann::json::object();
  for (const auto& [ax, len] : m) o[std::to_string(ax)] = len ? nlohmann::json(*len) : nlohmann::json();
  return o;
}

nlohmann::json block_sizes_to_json(const BlockSizes& bs) {
  nlohmann::json o = block_map_to_json(bs.axes);
  if (bs.type) o["type"] = *bs.type;
  if (bs.scale_bits) o["scale_bits"] = to_json(*bs.scale_bits);
  if (bs.scale_block_sizes) o["scale_block_sizes"] = block_map_to_json(*bs.scale_block_sizes);
  if (bs.four_over_six) o["four_over_six"] = *bs.four_over_six;
  return o;
}

nlohmann::json bias_to_json(const BiasConfig& b) {
  nlohmann::json o = block_map_to_json(b.axes);
  if (b.type) o["type"] = *b.type;
  if (b.method) o["method"] = *b.method;
  return o;
}

nlohmann::json rotate_to_json(const RotateConfig& r, bool exclude_unset) {
  if (r.given_as_bool) return r.enable;
  nlohmann::json o = nlohmann::json::object();
  auto want = [&](const char* k) { return !exclude_unset || r.fields_set.count(k); };
  if (want("enable")) o["enable"] = r.enable;
  if (want("mode")) o["mode"] = r.mode;
  if (want("rotate_fp32")) o["rotate_fp32"] = r.rotate_fp32;
  if (want("block_size")) o["block_size"] = r.block_size ? nlohmann::json(*r.block_size) : nlohmann::json();
  return o;
}

template <typename T>
nlohmann::json opt(const std::optional<T>& v) {
  return v ? nlohmann::json(*v) : nlohmann::json();
}

}  // namespace

nlohmann::json to_json(const QuantizerAttributeConfig& c, bool exclude_unset) {
  nlohmann::json o = nlohmann::json::object();
  for (const std::string& key : attribute_keys()) {
    if (exclude_unset && !c.fields_set.count(key)) continue;
    if (key == "enable") o[key] = c.enable;
    else if (key == "num_bits") o[key] = to_json(c.num_bits);
    else if (key == "effective_bits") o[key] = opt(c.effective_bits);
    else if (key == "axis") {
      if (!c.axis) o[key] = nullptr;
      else if (c.axis->is_tuple || c.axis->dims.size() != 1) o[key] = c.axis->dims;
      else o[key] = c.axis->dims[0];
    } else if (key == "fake_quant") o[key] = c.fake_quant;
    else if (key == "unsigned") o[key] = c.is_unsigned;
    else if (key == "narrow_range") o[key] = c.narrow_range;
    else if (key == "learn_amax") o[key] = c.learn_amax;
    else if (key == "type") o[key] = c.type;
    else if (key == "block_sizes") o[key] = c.block_sizes ? block_sizes_to_json(*c.block_sizes) : nlohmann::json();
    else if (key == "bias") o[key] = c.bias ? bias_to_json(*c.bias) : nlohmann::json();
    else if (key == "trt_high_precision_dtype") o[key] = c.trt_high_precision_dtype;
    else if (key == "calibrator") o[key] = c.calibrator;
    else if (key == "rotate") o[key] = rotate_to_json(c.rotate, exclude_unset);
    else if (key == "pass_through_bwd") o[key] = c.pass_through_bwd;
    else if (key == "backend") o[key] = opt(c.backend);
    else if (key == "backend_extra_args") o[key] = c.backend_extra_args;
    else if (key == "use_constant_amax") o[key] = c.use_constant_amax;
    else if (key == "constant_amax") o[key] = opt(c.constant_amax);
  }
  return o;
}

nlohmann::ordered_json to_ordered(const nlohmann::json& j) {
  return nlohmann::ordered_json::parse(j.dump());
}

nlohmann::json to_unordered(const nlohmann::ordered_json& j) { return nlohmann::json::parse(j.dump()); }

}  // namespace mq::config
