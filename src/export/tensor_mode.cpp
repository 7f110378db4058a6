#include "mq/export/tensor_mode.hpp"

#include <cmath>
#include <limits>
#include <sstream>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

#include "mq/config/json.hpp"
#include "mq/config/presets.hpp"
#include "mq/core/error.hpp"
#include "mq/export/hf_tensors.hpp"
#include "mq/quant/sequential_quantizer.hpp"
#include "mq/quant/tensor_quantizer.hpp"

namespace mq::hf_export {

namespace {

// The quantizer names of the single linear tensor mode stands for.
constexpr const char* kWeightQuantizerName = "model.layers.0.mlp.up_proj.weight_quantizer";
constexpr const char* kInputQuantizerName = "model.layers.0.mlp.up_proj.input_quantizer";

// Matches one bracket expression starting at pattern[i] == '['. Returns false when it is not a
// complete set (then '[' is a literal); otherwise sets `matched` and `next` (index after ']').
bool match_set(std::string_view p, std::size_t i, char c, bool& matched, std::size_t& next) {
  std::size_t j = i + 1;
  bool negate = false;
  if (j < p.size() && p[j] == '!') {
    negate = true;
    ++j;
  }
  const std::size_t first = j;
  if (j < p.size() && p[j] == ']') ++j;  // a leading ']' is literal
  while (j < p.size() && p[j] != ']') ++j;
  if (j >= p.size()) return false;
  bool in = false;
  for (std::size_t k = first; k < j; ++k) {
    if (k + 2 < j && p[k + 1] == '-') {
      if (p[k] <= c && c <= p[k + 2]) in = true;
      k += 2;
    } else if (p[k] == c) {
      in = true;
    }
  }
  matched = in != negate;
  next = j + 1;
  return true;
}

std::string first_line(const std::string& s) {
  auto nl = s.find('\n');
  return nl == std::string::npos ? s : s.substr(0, nl);
}

std::string dtype_str(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "float32";
    case at::kBFloat16: return "bfloat16";
    case at::kHalf: return "float16";
    case at::kDouble: return "float64";
    case at::kLong: return "int64";
    case at::kInt: return "int32";
    case at::kShort: return "int16";
    case at::kChar: return "int8";
    case at::kByte: return "uint8";
    case at::kBool: return "bool";
    default: return c10::toString(t);
  }
}

struct Built {
  std::optional<quant::TensorQuantizer> single;
  std::optional<quant::SequentialQuantizer> seq;
};

Built build(const QuantizerSetting& s) {
  Built b;
  if (s.is_sequential()) {
    b.seq.emplace(s.cfgs.size());
    b.seq->set_from_attribute_config(s.cfgs);
  } else {
    b.single.emplace(s.cfgs.at(0));
  }
  return b;
}

}  // namespace

bool fnmatch(std::string_view p, std::string_view s) {
  // Iterative glob with single-star backtracking (the last '*' seen absorbs one more character on
  // a mismatch), which is exact for patterns of '*', '?', sets and literals.
  std::size_t pi = 0, si = 0, star_p = std::string_view::npos, star_s = 0;
  while (si < s.size()) {
    bool advanced = false;
    if (pi < p.size()) {
      const char c = p[pi];
      if (c == '*') {
        star_p = pi++;
        star_s = si;
        continue;
      }
      if (c == '?') {
        ++pi, ++si;
        advanced = true;
      } else if (c == '[') {
        bool matched = false;
        std::size_t next = 0;
        if (match_set(p, pi, s[si], matched, next)) {
          if (matched) {
            pi = next, ++si;
            advanced = true;
          }
        } else if (s[si] == '[') {
          ++pi, ++si;
          advanced = true;
        }
      } else if (c == s[si]) {
        ++pi, ++si;
        advanced = true;
      }
    }
    if (advanced) continue;
    if (star_p == std::string_view::npos) return false;
    pi = star_p + 1;
    si = ++star_s;
  }
  while (pi < p.size() && p[pi] == '*') ++pi;
  return pi == p.size();
}

QuantizerSetting apply_quant_cfg(const std::vector<config::QuantizerCfgEntry>& entries,
                                 const std::string& quantizer_name, QuantizerSetting setting) {
  for (const auto& e : entries) {
    if (!fnmatch(e.quantizer_name, quantizer_name)) continue;
    if (e.parent_class && *e.parent_class != "nn.Linear") continue;
    if (!e.has_cfg()) {
      // set_quantizer_attributes_partial({"enable": ...}), broadcast to sequential stages; turning
      // a quantizer off this way also turns its rotation off for good (reference §8.5).
      for (auto& c : setting.cfgs) {
        c.enable = e.is_enabled();
        if (!e.is_enabled()) c.rotate.enable = false;
      }
    } else if (e.single_cfg() != nullptr) {
      setting.cfgs = {e.effective_cfg()};
    } else {
      setting.cfgs = *e.sequential_cfg();
      for (auto& c : setting.cfgs) c.enable = e.is_enabled();
    }
  }
  return setting;
}

QuantizerSetting default_linear_weight_quantizer() {
  config::QuantizerAttributeConfig c;
  c.axis = config::Axis{{0}, false};
  return {{c}};
}

QuantizerSetting default_linear_input_quantizer() { return {{config::QuantizerAttributeConfig{}}}; }

QuantizerSpec preset_quantizer_spec(const std::string& preset, Role role) {
  const config::QuantizeConfig qc = config::load_quantize_config(preset);
  QuantizerSpec spec;
  spec.label = preset + (role == Role::kWeight ? ":weight" : ":input");
  spec.role = role;
  QuantizerSetting w = apply_quant_cfg(qc.quant_cfg, kWeightQuantizerName, default_linear_weight_quantizer());
  QuantizerSetting i = apply_quant_cfg(qc.quant_cfg, kInputQuantizerName, default_linear_input_quantizer());
  spec.quantizer = role == Role::kWeight ? w : i;
  spec.companion_input = i;
  return spec;
}

QuantizerSpec parse_quantizer_spec(const std::string& text) {
  const auto colon = text.rfind(':');
  MQ_CHECK_T(ConfigError, colon != std::string::npos && colon > 0,
             "--quantizer: '", text, "' is not <PRESET>:<weight|input> (e.g. NVFP4_DEFAULT_CFG:weight)");
  const std::string preset = text.substr(0, colon), role = text.substr(colon + 1);
  MQ_CHECK_T(ConfigError, role == "weight" || role == "input", "--quantizer: '", text,
             "': the role after ':' must be 'weight' or 'input', got '", role, "'");
  return preset_quantizer_spec(preset, role == "weight" ? Role::kWeight : Role::kInput);
}

QuantizerSpec attr_quantizer_spec(const std::string& json_text, const std::string& label) {
  nlohmann::ordered_json j;
  try {
    j = nlohmann::ordered_json::parse(json_text);
  } catch (const nlohmann::json::exception& e) {
    MQ_THROW(ConfigError, label, ": invalid JSON: ", first_line(e.what()));
  }
  MQ_CHECK_T(ConfigError, j.is_object(), label, ": expected a JSON object of quantizer attributes, got ",
             j.type_name());
  QuantizerSpec spec;
  spec.label = label;
  spec.role = Role::kWeight;
  spec.quantizer = {{config::parse_quantizer_attribute(j, config::ErrorContext{label, ""})}};
  config::QuantizerAttributeConfig off;
  off.enable = false;
  spec.companion_input = {{off}};
  return spec;
}

TensorModeResult quantize_tensors(const std::map<std::string, at::Tensor>& inputs,
                                  const QuantizerSpec& spec, const TensorModeOptions& options) {
  MQ_CHECK(!spec.quantizer.cfgs.empty(), spec.label, ": no quantizer config");
  MQ_CHECK(!options.real || spec.role == Role::kWeight, spec.label,
           ": --real exports weights; an input quantizer has no packed form (use :weight)");
  TensorModeResult result;
  for (const auto& [name, x] : inputs) {
    try {
      const auto t = x.scalar_type();
      MQ_CHECK(t == at::kFloat || t == at::kBFloat16 || t == at::kHalf, "dtype ", dtype_str(t),
               " is not quantizable (float32, bfloat16 or float16 only)");
      TensorReport rep;
      rep.name = name;
      rep.shape.assign(x.sizes().begin(), x.sizes().end());
      rep.dtype = dtype_str(t);
      at::Tensor y = x;
      Built q = build(spec.quantizer);
      if (spec.quantizer.enabled()) {
        y = q.seq ? quant::calibrate_and_fake_quant(*q.seq, x) : quant::calibrate_and_fake_quant(*q.single, x);
      }
      rep.format = !spec.quantizer.enabled() ? "disabled"
                   : q.seq ? "SequentialQuantizer(" + (*q.seq)[0].extra_repr() + "; " +
                                 (*q.seq)[1].extra_repr() + ")"
                           : q.single->repr();
      if (options.real) {
        MQ_CHECK(spec.quantizer.enabled(), "the weight quantizer of ", spec.label,
                 " is disabled: nothing to export");
        Built iq = build(spec.companion_input);
        MQ_CHECK(iq.single.has_value(), "a sequential input quantizer is not supported");
        auto exported = q.seq ? export_linear(name, x, *q.seq, &*iq.single)
                              : export_linear(name, x, *q.single, &*iq.single);
        LinearExportInputs li = q.seq ? linear_export_inputs(*q.seq, &*iq.single)
                                      : linear_export_inputs(*q.single, &*iq.single);
        rep.format = std::string(quant_format_name(li.format));
        for (auto& [k, v] : exported) {
          MQ_CHECK(!result.tensors.count(k) && (k == name || !inputs.count(k)), "output name '", k,
                   "' collides with another tensor");
          rep.written.push_back(k);
          result.tensors[k] = v;
        }
      } else {
        auto put = [&](const std::string& k, const at::Tensor& v) {
          MQ_CHECK(!result.tensors.count(k) && (k == name || !inputs.count(k)), "output name '", k,
                   "' collides with another tensor");
          rep.written.push_back(k);
          result.tensors[k] = v;
        };
        put(name, y);
        if (q.single) {
          if (q.single->has_amax_buffer()) put(name + "._amax", q.single->amax_buffer());
          if (auto g = q.single->global_amax()) put(name + "._global_amax", *g);
        } else if (q.seq) {
          for (size_t i = 0; i < q.seq->size(); ++i)
            if ((*q.seq)[i].has_amax_buffer())
              put(name + "." + std::to_string(i) + "._amax", (*q.seq)[i].amax_buffer());
        }
      }
      const at::Tensor xd = x.to(at::kDouble), err = xd - y.to(at::kDouble);
      rep.amax = x.numel() ? xd.abs().max().item<double>() : 0.0;
      rep.mean_abs_error = x.numel() ? err.abs().mean().item<double>() : 0.0;
      const double sig = xd.pow(2).sum().item<double>(), noise = err.pow(2).sum().item<double>();
      rep.snr_db = noise == 0 ? std::numeric_limits<double>::infinity() : 10.0 * std::log10(sig / noise);
      result.reports.push_back(std::move(rep));
    } catch (const c10::Error& e) {
      MQ_THROW(::mq::Error, "tensor '", name, "': ", first_line(e.what_without_backtrace()));
    } catch (const std::exception& e) {
      MQ_THROW(::mq::Error, "tensor '", name, "': ", first_line(e.what()));
    }
  }
  return result;
}

}  // namespace mq::hf_export
