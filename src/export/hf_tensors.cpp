#include "mq/export/hf_tensors.hpp"

#include <ATen/ATen.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "mq/core/error.hpp"
#include "mqk/ref.hpp"

namespace mq::hf_export {

namespace {

using config::NumBits;

constexpr double kE4M3Max = 448.0;
constexpr double kE2M1Max = 6.0;

bool is_fp8(const NumBits& nb) { return nb.is_float(4, 3); }
bool scale_bits_are(const std::optional<config::BlockSizes>& bs, int e, int m) {
  return bs && bs->scale_bits && bs->scale_bits->is_float(e, m);
}
int64_t last_block(const std::optional<config::BlockSizes>& bs) {
  if (!bs) return 0;
  auto it = bs->axes.find(-1);
  return it != bs->axes.end() && it->second ? *it->second : 0;
}

// The export packs on the host (C++ reference kernels): every amax and scale comes to the CPU.
at::Tensor f32(const at::Tensor& t) { return t.to(at::kCPU, at::kFloat).contiguous(); }

at::Tensor scalar_f32(float v) {
  return at::scalar_tensor(v, at::TensorOptions().dtype(at::kFloat));
}

// The fp32 copy the mqk packers read (exact for bf16/fp16/fp32 weights).
struct Weight2d {
  at::Tensor w32;
  int64_t rows = 0, cols = 0;
};

Weight2d prepare_weight(const std::string& name, const at::Tensor& w) {
  MQ_CHECK(w.defined(), name, ": weight is undefined");
  MQ_CHECK(w.dim() == 2, name, ": HF export needs a 2-D (out, in) weight, got ", w.dim(), "-D ",
           w.sizes());
  const auto t = w.scalar_type();
  MQ_CHECK(t == at::kFloat || t == at::kBFloat16 || t == at::kHalf, name,
           ": HF export needs a float32/bfloat16/float16 weight, got ", c10::toString(t));
  return {f32(w.cpu()), w.size(0), w.size(1)};
}

void need(bool cond, const std::string& name, QuantFormat f, const char* what) {
  MQ_CHECK(cond, name, ": cannot export as ", quant_format_name(f), ": ", what);
}

void check_divisible(const std::string& name, QuantFormat f, int64_t cols, int64_t block) {
  MQ_CHECK(block > 0 && cols % block == 0, name, ": cannot export as ", quant_format_name(f),
           ": input dimension ", cols, " is not a multiple of the block size ", block,
           " (ModelOpt supports no partial blocks here)");
}

at::Tensor u8_empty(at::IntArrayRef shape) {
  return at::empty(shape, at::TensorOptions().dtype(at::kByte));
}

// A uint8 tensor of FP8 bit patterns, reinterpreted as float8_e4m3fn.
at::Tensor as_e4m3(const at::Tensor& bits) { return bits.view(at::kFloat8_e4m3fn); }

// NVFP4 with a given weight_scale_2 (w4a8_nvfp4_fp8 uses amax/448 instead of amax/2688, so the mqk
// packer, which derives weight_scale_2 from the global amax, does not apply). The steps are
// NVFP4QTensor.get_weights_scaling_factor + quantize with the mqk scalar conversions.
void nvfp4_pack_with_scale_2(const float* x, int64_t rows, int64_t cols, int64_t block, float wsf2,
                             uint8_t* packed, uint8_t* scales) {
  const float denom = static_cast<float>(kE2M1Max) * wsf2;
  const int64_t nb = cols / block, row_bytes = cols / 2;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t b = 0; b < nb; ++b) {
      const float* v = x + r * cols + b * block;
      float bmax = 0.0f;
      for (int64_t j = 0; j < block; ++j) {
        const float a = std::fabs(v[j]);
        if (a > bmax || std::isnan(a)) bmax = a;
      }
      float pbs = bmax / denom;
      if (pbs == 0.0f) pbs = 1.0f;
      pbs = pbs < 0.001953125f ? 0.001953125f : (pbs > 448.0f ? 448.0f : pbs);
      const uint8_t s = mqk::e4m3_to_bits(mqk::e4m3_round_torch(pbs));
      scales[r * nb + b] = s;
      const float d = mqk::e4m3_from_bits(s) * wsf2;
      for (int64_t j = 0; j < block; j += 2) {
        auto nib = [&](float y) {
          return static_cast<uint8_t>((y < 0.0f ? 8 : 0) | mqk::e2m1_index(std::fabs(y)));
        };
        packed[r * row_bytes + (b * block + j) / 2] =
            static_cast<uint8_t>(nib(v[j] / d) | (nib(v[j + 1] / d) << 4));
      }
    }
}

}  // namespace

std::string_view quant_format_name(QuantFormat f) {
  switch (f) {
    case QuantFormat::kNone:
      return "";
    case QuantFormat::kFp8:
      return "fp8";
    case QuantFormat::kFp8PcPt:
      return "fp8_pc_pt";
    case QuantFormat::kFp8PbWo:
      return "fp8_pb_wo";
    case QuantFormat::kInt8Sq:
      return "int8_sq";
    case QuantFormat::kInt8Wo:
      return "int8_wo";
    case QuantFormat::kInt4Awq:
      return "int4_awq";
    case QuantFormat::kW4A8Awq:
      return "w4a8_awq";
    case QuantFormat::kNvfp4:
      return "nvfp4";
    case QuantFormat::kNvfp4Awq:
      return "nvfp4_awq";
    case QuantFormat::kNvfp4Svdquant:
      return "nvfp4_svdquant";
    case QuantFormat::kW4A16Nvfp4:
      return "w4a16_nvfp4";
    case QuantFormat::kW4A8Nvfp4Fp8:
      return "w4a8_nvfp4_fp8";
    case QuantFormat::kMxfp4:
      return "mxfp4";
    case QuantFormat::kW4A8Mxfp4Fp8:
      return "w4a8_mxfp4_fp8";
    case QuantFormat::kMxfp8:
      return "mxfp8";
  }
  MQ_ASSERT(false);
  return "";
}

QuantFormat detect_quant_format(const quant::TensorQuantizer& wq, const quant::TensorQuantizer* iq,
                                bool has_svdquant_lora, bool fused_with_prequant) {
  if (!wq.is_enabled()) return QuantFormat::kNone;
  const NumBits& nb = wq.num_bits();
  const auto& bs = wq.block_sizes();
  const bool input_on = iq != nullptr && iq->is_enabled();
  if (nb.is_int() && nb.bits == 4) {
    MQ_CHECK(last_block(bs) > 0,
             "export: an INT4 weight quantizer needs block_sizes with a positive "
             "block along -1");
    return QuantFormat::kInt4Awq;
  }
  if (nb.is_int() && nb.bits == 8) {
    MQ_CHECK(!wq.is_mx_format(), "export: MXINT8 weights have no HF export format in ModelOpt");
    return input_on ? QuantFormat::kInt8Sq : QuantFormat::kInt8Wo;
  }
  if (is_fp8(nb)) {
    if (bs) {
      MQ_CHECK(last_block(bs) > 0,
               "export: an FP8 block weight quantizer needs a positive block "
               "along -1");
      if (bs->is_dynamic() && scale_bits_are(bs, 8, 0)) return QuantFormat::kMxfp8;
      MQ_CHECK(wq.fake_quant(),
               "export: real-quantized FP8 block weights (fp8_pb_real) are not "
               "supported");
      return QuantFormat::kFp8PbWo;
    }
    const auto& ax = wq.axis();
    if (ax && ax->dims.size() == 1 && ax->dims[0] == 0) return QuantFormat::kFp8PcPt;
    return QuantFormat::kFp8;
  }
  if (nb.is_float(2, 1)) {
    MQ_CHECK(bs.has_value(), "export: an E2M1 weight quantizer needs block_sizes");
    if (iq != nullptr && has_svdquant_lora) return QuantFormat::kNvfp4Svdquant;
    if (iq != nullptr && iq->pre_quant_scale()) return QuantFormat::kNvfp4Awq;
    if (fused_with_prequant) return QuantFormat::kNvfp4Awq;
    if (!input_on && scale_bits_are(bs, 4, 3)) return QuantFormat::kW4A16Nvfp4;
    MQ_CHECK(iq != nullptr, "export: an MXFP4 weight needs an input quantizer (ModelOpt asserts)");
    const bool fp8_input = input_on && is_fp8(iq->num_bits()) && !iq->block_sizes();
    if (bs->is_dynamic() && scale_bits_are(bs, 8, 0) && fp8_input)
      return QuantFormat::kW4A8Mxfp4Fp8;
    if (bs->is_dynamic() && scale_bits_are(bs, 4, 3) && fp8_input)
      return QuantFormat::kW4A8Nvfp4Fp8;
    if (scale_bits_are(bs, 4, 3)) return QuantFormat::kNvfp4;
    if (scale_bits_are(bs, 8, 0)) return QuantFormat::kMxfp4;
  }
  MQ_THROW(::mq::Error,
           "export: ModelOpt has no HF export format for a weight quantizer with "
           "num_bits=",
           quant::py_repr(nb), bs ? " block_sizes=" + quant::py_repr(*bs) : std::string());
}

QuantFormat detect_quant_format(const quant::SequentialQuantizer& wq,
                                const quant::TensorQuantizer*) {
  if (!wq.is_enabled()) return QuantFormat::kNone;
  MQ_CHECK(wq.size() == 2 && wq[0].num_bits().is_int() && wq[0].num_bits().bits == 4 &&
               is_fp8(wq[1].num_bits()),
           "export: a SequentialQuantizer weight must be [INT4 block, FP8] (W4A8 AWQ)");
  MQ_CHECK(last_block(wq[0].block_sizes()) > 0,
           "export: the INT4 stage of a W4A8 weight needs a positive block along -1");
  return QuantFormat::kW4A8Awq;
}

HfTensorNames hf_tensor_names(const std::string& weight_name) {
  const auto dot = weight_name.rfind('.');
  const std::string module = dot == std::string::npos ? "" : weight_name.substr(0, dot + 1);
  const std::string attr = dot == std::string::npos ? weight_name : weight_name.substr(dot + 1);
  const std::string p = module + (attr == "weight" ? "" : attr + "_");
  return {weight_name, p + "weight_scale", p + "weight_scale_2", p + "input_scale",
          module + "pre_quant_scale"};
}

namespace {

void fill_input(LinearExportInputs& in, const quant::TensorQuantizer* iq) {
  if (iq == nullptr || !iq->is_enabled()) return;
  auto a = iq->export_amax();
  if (!a) return;
  in.input_amax = *a;
  in.input_maxbound = iq->num_bits().is_float(2, 1) ? kE2M1Max * kE4M3Max : iq->maxbound();
  if (auto pqs = iq->pre_quant_scale()) in.pre_quant_scale = *pqs;
}

at::Tensor need_amax(std::optional<at::Tensor> a, const char* which) {
  MQ_CHECK(a.has_value(), "export: the ", which, " has no amax (calibrate it first)");
  return *a;
}

}  // namespace

LinearExportInputs linear_export_inputs(const quant::TensorQuantizer& wq,
                                        const quant::TensorQuantizer* iq) {
  LinearExportInputs in;
  in.format = detect_quant_format(wq, iq);
  if (in.format == QuantFormat::kNone) return in;
  in.block_size = last_block(wq.block_sizes());
  switch (in.format) {
    case QuantFormat::kMxfp4:
    case QuantFormat::kW4A8Mxfp4Fp8:
    case QuantFormat::kMxfp8:
      break;  // scales come from the weight itself
    case QuantFormat::kNvfp4:
    case QuantFormat::kNvfp4Awq:
    case QuantFormat::kNvfp4Svdquant:
    case QuantFormat::kW4A16Nvfp4:
    case QuantFormat::kW4A8Nvfp4Fp8:
      // ModelOpt reads `_amax` directly here, not export_amax().
      MQ_CHECK(wq.has_amax_buffer(),
               "export: the weight quantizer has no amax (calibrate it first)");
      in.weight_amax = wq.amax_buffer();
      if (auto g = wq.global_amax()) {
        in.global_amax = *g;
        const auto& bs = wq.block_sizes();
        in.four_over_six = bs && bs->four_over_six.value_or(0) != 0;
      }
      break;
    default:
      in.weight_amax = need_amax(wq.export_amax(), "weight quantizer");
  }
  fill_input(in, iq);
  return in;
}

LinearExportInputs linear_export_inputs(const quant::SequentialQuantizer& wq,
                                        const quant::TensorQuantizer* iq) {
  LinearExportInputs in;
  in.format = detect_quant_format(wq, iq);
  if (in.format == QuantFormat::kNone) return in;
  in.block_size = last_block(wq[0].block_sizes());
  in.weight_amax = need_amax(wq[0].export_amax(), "INT4 stage of the weight quantizer");
  if (wq[1].is_enabled())
    in.weight_amax_2 = need_amax(wq[1].export_amax(), "FP8 stage of the weight quantizer");
  fill_input(in, iq);
  return in;
}

std::map<std::string, at::Tensor> export_linear(const std::string& weight_name,
                                                const at::Tensor& weight,
                                                const LinearExportInputs& in) {
  const QuantFormat f = in.format;
  MQ_CHECK(f != QuantFormat::kNone, weight_name,
           ": the weight quantizer is disabled: nothing to export");
  const HfTensorNames names = hf_tensor_names(weight_name);
  const Weight2d w = prepare_weight(weight_name, weight);
  const int64_t rows = w.rows, cols = w.cols, n = rows * cols;
  const float* x = w.w32.data_ptr<float>();
  std::map<std::string, at::Tensor> out;

  switch (f) {
    case QuantFormat::kFp8: {
      need(in.weight_amax.defined(), weight_name, f, "no weight amax");
      need(in.weight_amax.numel() == 1, weight_name, f, "the weight amax is not per-tensor");
      const at::Tensor ws = f32(in.weight_amax).reshape({}) / kE4M3Max;  // 0-d
      // `weight / ws` with a 0-d fp32 ws keeps the weight's dtype in torch's type promotion: the
      // quotient is rounded to bf16/fp16 before the FP8 cast. Reproduce that, then cast (scale 1).
      const at::Tensor quotient = f32(at::div(weight.cpu(), ws));
      at::Tensor q = u8_empty({rows, cols});
      const float one = 1.0f;
      mqk::fp8_quantize_ref(quotient.data_ptr<float>(), n, &one, {}, q.data_ptr<uint8_t>());
      out[names.weight] = as_e4m3(q);
      out[names.weight_scale] = ws;
      break;
    }
    case QuantFormat::kFp8PcPt: {
      need(in.weight_amax.defined() && in.weight_amax.numel() == rows, weight_name, f,
           "the weight amax is not per output channel");
      const at::Tensor ws = (f32(in.weight_amax) / kE4M3Max).reshape({rows});
      at::Tensor q = u8_empty({rows, cols});
      mqk::fp8_quantize_ref(x, n, ws.data_ptr<float>(), {rows, cols}, q.data_ptr<uint8_t>());
      out[names.weight] = as_e4m3(q);
      out[names.weight_scale] = ws;
      break;
    }
    case QuantFormat::kFp8PbWo: {
      need(in.weight_amax.defined() && in.weight_amax.dim() == 4, weight_name, f,
           "the weight amax is not a 2-D block amax (out/b, 1, in/b, 1)");
      const at::Tensor ws = f32(in.weight_amax) / kE4M3Max;
      // ModelOpt exports square blocks: block_sizes {-1: bs, -2: bs} with bs = block_sizes[-1].
      const int64_t bs = in.block_size, br = ws.size(0), bc = ws.size(2);
      need(bs > 0 && br == (rows + bs - 1) / bs && bc == (cols + bs - 1) / bs, weight_name, f,
           "the block amax does not tile the weight in square blocks of block_size");
      const at::Tensor expanded = ws.reshape({br, bc})
                                      .repeat_interleave(bs, 0)
                                      .repeat_interleave(bs, 1)
                                      .slice(0, 0, rows)
                                      .slice(1, 0, cols)
                                      .contiguous();
      at::Tensor q = u8_empty({rows, cols});
      mqk::fp8_quantize_ref(x, n, expanded.data_ptr<float>(), {n, 1}, q.data_ptr<uint8_t>());
      out[names.weight] = as_e4m3(q);
      out[names.weight_scale] = ws;
      break;
    }
    case QuantFormat::kInt8Sq:
    case QuantFormat::kInt8Wo: {
      need(in.weight_amax.defined() &&
               (in.weight_amax.numel() == rows || in.weight_amax.numel() == 1),
           weight_name, f, "the weight amax is neither per output channel nor per tensor");
      const at::Tensor ws = f32(in.weight_amax) / 127.0;
      const mqk::AmaxLayout layout =
          ws.numel() == 1 ? mqk::AmaxLayout{} : mqk::AmaxLayout{rows, cols};
      at::Tensor q = at::empty({rows, cols}, at::TensorOptions().dtype(at::kChar));
      mqk::int8_quantize_ref(x, n, ws.data_ptr<float>(), layout, q.data_ptr<int8_t>());
      out[names.weight] = q;
      out[names.weight_scale] = ws.reshape({ws.numel() == 1 ? 1 : rows});
      break;
    }
    case QuantFormat::kInt4Awq:
    case QuantFormat::kW4A8Awq: {
      const int64_t bs = in.block_size;
      MQ_CHECK(rows % 2 == 0, weight_name, ": cannot export as ", quant_format_name(f),
               ": out dimension ", rows, " is not even (two rows share a byte)");
      check_divisible(weight_name, f, cols, bs);
      need(in.weight_amax.defined() && in.weight_amax.numel() == rows * (cols / bs), weight_name, f,
           "the weight amax is not one value per (row, block)");
      const at::Tensor ws = (f32(in.weight_amax) / 7.0).reshape({rows, cols / bs});
      at::Tensor packed = u8_empty({rows / 2, cols});
      mqk::int4_awq_pack_ref(x, rows, cols, static_cast<int>(bs), ws.data_ptr<float>(),
                             packed.data_ptr<uint8_t>());
      out[names.weight] = packed;
      out[names.weight_scale] = ws;
      if (f == QuantFormat::kW4A8Awq) {
        need(in.weight_amax_2.defined(), weight_name, f, "no amax for the FP8 stage");
        out[names.weight_scale_2] = (f32(in.weight_amax_2) / kE4M3Max).squeeze();
      }
      break;
    }
    case QuantFormat::kNvfp4:
    case QuantFormat::kNvfp4Awq:
    case QuantFormat::kNvfp4Svdquant:
    case QuantFormat::kW4A16Nvfp4:
    case QuantFormat::kW4A8Nvfp4Fp8: {
      const int64_t bs = in.block_size;
      check_divisible(weight_name, f, cols, bs);
      need(in.weight_amax.defined(), weight_name, f, "no weight amax");
      at::Tensor packed = u8_empty({rows, cols / 2});
      at::Tensor scales = u8_empty({rows, cols / bs});
      float wsf2 = 0.0f;
      if (f == QuantFormat::kW4A8Nvfp4Fp8) {
        // ModelOpt: weight_scale_2 = amax/448 so that weight_scale spans 448/6 (the kernel
        // dequantizes the weight to FP8).
        wsf2 = static_cast<float>(f32(in.weight_amax).max().item<float>() /
                                  static_cast<float>(kE4M3Max));
        nvfp4_pack_with_scale_2(x, rows, cols, bs, wsf2, packed.data_ptr<uint8_t>(),
                                scales.data_ptr<uint8_t>());
      } else if (in.global_amax.defined()) {
        const at::Tensor block_amax = f32(in.weight_amax).reshape({-1});
        need(block_amax.numel() == rows * (cols / bs), weight_name, f,
             "the static per-block amax is not one value per (row, block)");
        wsf2 = mqk::nvfp4_static_quantize_ref(
            x, rows, cols, static_cast<int>(bs), block_amax.data_ptr<float>(),
            f32(in.global_amax).item<float>(), in.four_over_six, packed.data_ptr<uint8_t>(),
            scales.data_ptr<uint8_t>());
      } else {
        need(in.weight_amax.numel() == 1, weight_name, f, "the global weight amax is not a scalar");
        wsf2 = mqk::nvfp4_quantize_ref(x, rows, cols, static_cast<int>(bs),
                                       f32(in.weight_amax).item<float>(),
                                       packed.data_ptr<uint8_t>(), scales.data_ptr<uint8_t>());
      }
      out[names.weight] = packed;
      out[names.weight_scale] = as_e4m3(scales);
      out[names.weight_scale_2] = scalar_f32(wsf2);
      break;
    }
    case QuantFormat::kMxfp4:
    case QuantFormat::kW4A8Mxfp4Fp8:
    case QuantFormat::kMxfp8: {
      const int64_t bs = in.block_size;
      check_divisible(weight_name, f, cols, bs);
      at::Tensor scales = u8_empty({rows, cols / bs});
      if (f == QuantFormat::kMxfp8) {
        at::Tensor data = u8_empty({rows, cols});
        mqk::mxfp8_quantize_ref(x, rows, cols, static_cast<int>(bs), data.data_ptr<uint8_t>(),
                                scales.data_ptr<uint8_t>());
        out[names.weight] = as_e4m3(data);
      } else {
        at::Tensor packed = u8_empty({rows, cols / 2});
        mqk::mxfp4_quantize_ref(x, rows, cols, static_cast<int>(bs), packed.data_ptr<uint8_t>(),
                                scales.data_ptr<uint8_t>());
        out[names.weight] = packed;
      }
      out[names.weight_scale] = scales;
      break;
    }
    case QuantFormat::kNone:
      MQ_ASSERT(false);
  }

  // As ModelOpt: input_scale exists when the input quantizer is enabled and holds an amax (MX and
  // dynamic per-token inputs hold none).
  if (in.input_amax.defined()) {
    MQ_CHECK(in.input_maxbound > 0, weight_name, ": input_maxbound must be positive");
    out[names.input_scale] = (f32(in.input_amax) / in.input_maxbound).squeeze();
  }
  if (in.pre_quant_scale.defined()) out[names.pre_quant_scale] = in.pre_quant_scale;
  return out;
}

std::map<std::string, at::Tensor> export_linear(const std::string& weight_name,
                                                const at::Tensor& weight,
                                                const quant::TensorQuantizer& weight_q,
                                                const quant::TensorQuantizer* input_q) {
  return export_linear(weight_name, weight, linear_export_inputs(weight_q, input_q));
}

std::map<std::string, at::Tensor> export_linear(const std::string& weight_name,
                                                const at::Tensor& weight,
                                                const quant::SequentialQuantizer& weight_q,
                                                const quant::TensorQuantizer* input_q) {
  return export_linear(weight_name, weight, linear_export_inputs(weight_q, input_q));
}

}  // namespace mq::hf_export
