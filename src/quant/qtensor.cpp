// Real quantization. INT8/FP8/INT4/NF4 mirror ModelOpt's torch arithmetic op by op (it runs in the
// input dtype, which a float-only packer could not reproduce for bf16/fp16); NVFP4 and MX use the
// mqk packers, whose ModelOpt counterparts compute in fp32. On a CUDA tensor, INT4 and NF4 follow
// ModelOpt's CUDA extension kernels (INT4_quantize, NF4_quantize, NF4_dequantize in
// tensor_quant_gpu.cu), which ModelOpt uses there instead of its torch path and which round
// differently (checked against golden/manifest_cuda_replay.json).
#include "mq/quant/qtensor.hpp"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include "mq/core/error.hpp"
#include "mq/quant/utils.hpp"
#include "mqk/formats.hpp"
#include "mqk/ref.hpp"

namespace mq::quant {
namespace {

constexpr at::ScalarType kFp8 = at::ScalarType::Float8_e4m3fn;

// Blocked dims (normalised to >= 0) and their block sizes; every listed axis needs a size.
std::vector<std::pair<int64_t, int64_t>> blocked_dims(const config::BlockSizes& bs, int64_t nd) {
  std::vector<std::pair<int64_t, int64_t>> r;
  for (const auto& [k, v] : bs.axes) {
    MQ_CHECK(k >= -nd && k < nd, "real quantization: block axis ", k, " out of range for rank ",
             nd);
    MQ_CHECK(v.has_value() && *v > 0, "real quantization: block axis ", k,
             " needs a positive block size");
    r.emplace_back(k < 0 ? k + nd : k, *v);
  }
  return r;
}

// Zero-pads each blocked dim on the right up to a multiple of its block (ModelOpt
// reduce_block_padding).
at::Tensor pad_blocks(const at::Tensor& x, const std::vector<std::pair<int64_t, int64_t>>& dims) {
  at::Tensor y = x;
  for (const auto& [d, b] : dims) {
    const int64_t s = y.size(d);
    if (s % b == 0) continue;
    std::vector<int64_t> pad(2 * (y.dim() - d), 0);
    pad[2 * (y.dim() - 1 - d) + 1] = b - s % b;
    y = at::constant_pad_nd(y, pad, 0);
  }
  return y;
}

// Per-block max|x| with the blocked dims divided by their block (ModelOpt reduce_block_amax).
at::Tensor block_amax(const at::Tensor& x, const std::vector<std::pair<int64_t, int64_t>>& dims) {
  std::vector<int64_t> shape, reduce;
  for (int64_t d = 0; d < x.dim(); ++d) {
    int64_t b = 0;
    for (const auto& [dd, bb] : dims)
      if (dd == d) b = bb;
    if (b) {
      MQ_CHECK(x.size(d) % b == 0, "Tensor dimension ", d, ", ", x.size(d), " is not divisible by ",
               b, ".");
      shape.push_back(x.size(d) / b);
      shape.push_back(b);
      reduce.push_back(static_cast<int64_t>(shape.size()) - 1);
    } else {
      shape.push_back(x.size(d));
    }
  }
  return at::amax(at::abs(x.reshape(shape)), reduce, /*keepdim=*/false);
}

at::Tensor expand_blocks(at::Tensor scales, const std::vector<std::pair<int64_t, int64_t>>& dims) {
  for (const auto& [d, b] : dims) scales = scales.repeat_interleave(b, d);
  return scales;
}

at::Tensor crop_to(const at::Tensor& t, const std::vector<int64_t>& shape) {
  at::Tensor y = t;
  for (size_t d = 0; d < shape.size(); ++d)
    if (y.size(static_cast<int64_t>(d)) != shape[d])
      y = y.narrow(static_cast<int64_t>(d), 0, shape[d]);
  return y;
}

at::Tensor axis_amax(const at::Tensor& x, const std::optional<config::Axis>& axis) {
  std::optional<std::vector<int64_t>> ax;
  if (axis) ax = std::vector<int64_t>(axis->dims.begin(), axis->dims.end());
  return reduce_amax(x, convert_quantization_axis_to_reduce_axis(x, ax));
}

// (rows, cols) view of x over its last dim, fp32 contiguous, on the host: the mqk packers are host
// code reading data_ptr (a CUDA input is copied over; results go back with to_device_of).
at::Tensor rows_f32(const at::Tensor& x) {
  return x.to(at::kFloat).contiguous().reshape({-1, x.size(-1)}).cpu();
}

at::Tensor to_device_of(const at::Tensor& t, const at::Tensor& like) {
  return t.device() == like.device() ? t : t.to(like.device());
}

// ModelOpt's NF4 table (bf16 values) as fp32, on `device`.
at::Tensor nf4_table(const at::Device& device) {
  at::Tensor lut = at::empty({16}, at::kFloat);  // host: filled element by element
  float* p = lut.data_ptr<float>();
  for (int i = 0; i < 16; ++i) p[i] = mqk::nf4_lut(i);
  return lut.to(device);
}

// The table of ModelOpt's CUDA NF4 kernels: the fp32 constants as written (not rounded to bf16).
at::Tensor nf4_table_fp32(const at::Device& device) {
  at::Tensor lut = at::empty({16}, at::kFloat);
  float* p = lut.data_ptr<float>();
  for (int i = 0; i < 16; ++i) p[i] = mqk::kNf4Table[i];
  return lut.to(device);
}

// (w0, w1, w2, ...) 4-bit codes (uint8 values 0..15) packed as (w0 << 4 | w1), (w2 << 4 | w3), ...
at::Tensor pack_nibbles(const at::Tensor& codes) {
  return at::bitwise_or(at::__lshift__(codes.slice(0, 0, codes.numel(), 2), 4),
                        codes.slice(0, 1, codes.numel(), 2));
}

std::vector<int64_t> last_dim_replaced(const std::vector<int64_t>& shape, int64_t v) {
  std::vector<int64_t> s = shape;
  s.back() = v;
  return s;
}

void check_float(const at::Tensor& x, const char* what) {
  MQ_CHECK(x.defined() && x.dim() >= 1, what, ": input must be a tensor of rank >= 1");
  MQ_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16 ||
               x.scalar_type() == at::kHalf,
           what, ": input dtype must be float32, bfloat16 or float16, got ", x.scalar_type());
}

// A QTensor of `format` for x: its shape and dtype, and the last-dim block (0: none).
QTensor qtensor_for(const at::Tensor& x, QFormat format, int64_t block_size = 0) {
  QTensor q;
  q.format = format;
  q.shape = x.sizes().vec();
  q.dtype = x.scalar_type();
  q.block_size = block_size;
  return q;
}

// FP8 / INT8: the blocked dims when block_sizes names any axis, else none.
std::vector<std::pair<int64_t, int64_t>> blocked_dims_of(
    const std::optional<config::BlockSizes>& bs, int64_t nd) {
  if (bs && !bs->axes.empty()) return blocked_dims(*bs, nd);
  return {};
}

// 4-bit codes (uint8 values 0..15, flat) packed two per byte, shaped as `shape` with the last dim
// halved (-1).
at::Tensor packed_nibbles_as(const at::Tensor& codes, const std::vector<int64_t>& shape) {
  std::vector<int64_t> out_shape(shape.begin(), shape.end() - 1);
  out_shape.push_back(-1);
  return pack_nibbles(codes).reshape(out_shape);
}

// INT4 / NF4 dequantize: the high and low nibbles' values, (blocks, block/2) each, interleaved back
// into element order, cropped to numel and shaped as `shape` in dt.
at::Tensor interleave_nibbles(const at::Tensor& hi, const at::Tensor& lo, int64_t numel,
                              const std::vector<int64_t>& shape, at::ScalarType dt) {
  at::Tensor inter = at::stack({hi.flatten(), lo.flatten()}, -1).reshape({-1});
  return inter.slice(0, 0, numel).reshape(shape).to(dt);
}

// MXFP4 / MXFP8 quantize: x checked (float, last dim a multiple of the block) and packed on the
// host by the mqk packer `pack` into codes (rows, cols / codes_per_byte) and one E8M0 byte per
// block (rows, cols / block_size), x viewed as (rows, cols) over its last dim.
using MxPacker = void (*)(const float*, int64_t, int64_t, int, uint8_t*, uint8_t*);
std::pair<at::Tensor, at::Tensor> mx_pack(const at::Tensor& x, int64_t block_size, const char* what,
                                          int64_t codes_per_byte, MxPacker pack) {
  check_float(x, what);
  MQ_CHECK(x.size(-1) % block_size == 0, what, ": last dim ", x.size(-1),
           " is not a multiple of the block ", block_size);
  at::Tensor xf = rows_f32(x);
  const int64_t rows = xf.size(0), cols = xf.size(1);
  at::Tensor codes = at::empty({rows, cols / codes_per_byte}, at::kByte);
  at::Tensor scales = at::empty({rows, cols / block_size}, at::kByte);
  pack(xf.data_ptr<float>(), rows, cols, static_cast<int>(block_size), codes.data_ptr<uint8_t>(),
       scales.data_ptr<uint8_t>());
  return {codes, scales};
}

// NVFP4 / MX dequantize with a host unpacker: the codes (as bytes) and the scales (uint8) come to
// the host, `unpack(codes, scales, rows, cols, y)` fills y (rows, cols) fp32 over the last dim,
// which goes back to data's device in dt.
template <typename Unpack>
at::Tensor host_dequantize(const QTensor& q, const at::Tensor& scale_bytes, at::ScalarType dt,
                           Unpack unpack) {
  const int64_t cols = q.shape.back();
  const int64_t rows = c10::multiply_integers(q.shape) / cols;
  at::Tensor p = q.data.contiguous().view(at::kByte).cpu();
  at::Tensor s = scale_bytes.cpu();
  at::Tensor y = at::empty({rows, cols}, at::kFloat);
  unpack(p.data_ptr<uint8_t>(), s.data_ptr<uint8_t>(), rows, cols, y.data_ptr<float>());
  return to_device_of(y.reshape(q.shape).to(dt), q.data);
}

}  // namespace

std::string qformat_name(QFormat f) {
  switch (f) {
    case QFormat::kFp8:
      return "FP8QTensor";
    case QFormat::kInt8:
      return "INT8QTensor";
    case QFormat::kInt4:
      return "INT4QTensor";
    case QFormat::kNvfp4:
      return "NVFP4QTensor";
    case QFormat::kMxfp4:
      return "MXFP4QTensor";
    case QFormat::kMxfp8:
      return "MXFP8QTensor";
    case QFormat::kNf4:
      return "NF4QTensor";
  }
  return "";
}

QTensor fp8_quantize(const at::Tensor& x, const std::optional<at::Tensor>& scales_in,
                     const std::optional<config::Axis>& axis,
                     const std::optional<config::BlockSizes>& block_sizes) {
  check_float(x, "FP8 real quantization");
  QTensor q = qtensor_for(x, QFormat::kFp8);
  const auto dims = blocked_dims_of(block_sizes, x.dim());
  at::Tensor input = dims.empty() ? x : pad_blocks(x, dims);
  at::Tensor scales;
  if (scales_in) {
    scales = scales_in->to(x.device());
  } else {
    at::Tensor amax = dims.empty() ? axis_amax(input, axis) : block_amax(input, dims);
    scales = amax / 448.0;
  }
  at::Tensor expanded = scales;
  if (!dims.empty()) {
    std::vector<int64_t> expected = input.sizes().vec();
    for (const auto& [d, b] : dims) expected[d] = input.size(d) / b;
    if (scales.sizes() != at::IntArrayRef(expected) &&
        scales.numel() == c10::multiply_integers(expected)) {
      scales = scales.reshape(expected);
    }
    MQ_CHECK(scales.sizes() == at::IntArrayRef(expected),
             "Mismatch in expected scale shape: ", scales.sizes(), " vs ",
             at::IntArrayRef(expected));
    expanded = expand_blocks(scales, dims);
  }
  q.data = crop_to((input / expanded).to(kFp8), q.shape);
  q.scale = scales;
  if (!dims.empty()) q.block_sizes = block_sizes;
  return q;
}

QTensor int8_quantize(const at::Tensor& x, const std::optional<config::Axis>& axis,
                      const std::optional<config::BlockSizes>& block_sizes) {
  check_float(x, "INT8 real quantization");
  QTensor q = qtensor_for(x, QFormat::kInt8);
  const auto dims = blocked_dims_of(block_sizes, x.dim());
  at::Tensor amax = dims.empty() ? axis_amax(x, axis) : block_amax(x, dims);
  at::Tensor scales = amax / 127.0;
  at::Tensor expanded = dims.empty() ? scales : expand_blocks(scales, dims);
  q.data = (x / expanded).round().clamp(-128, 127).to(at::kChar);
  q.scale = scales;
  if (!dims.empty()) q.block_sizes = block_sizes;
  return q;
}

QTensor int4_quantize(const at::Tensor& x, int64_t block_size) {
  check_float(x, "INT4 real quantization");
  MQ_CHECK(block_size > 0 && block_size % 2 == 0,
           "INT4 real quantization: block size must be even, got ", block_size);
  MQ_CHECK(x.size(-1) % 2 == 0, "Input tensor must have even number on last dimension.");
  QTensor q = qtensor_for(x, QFormat::kInt4, block_size);
  at::Tensor flat = pad_blocks(x.reshape({-1}), {{0, block_size}});
  at::Tensor blocks = flat.view({-1, block_size});
  // Python's `7 / tensor` is Tensor.__rtruediv__, i.e. reciprocal() * 7 (ATen's C++ Scalar / Tensor
  // divides exactly, which differs by an ulp).
  at::Tensor scales =
      (reduce_amax(blocks, std::vector<int64_t>{-1}).reciprocal() * 7.0).view({blocks.size(0), -1});
  if (x.is_cuda()) {
    // ModelOpt's INT4_quantize kernel: v = x * scale in the input dtype; min(7, v) is fminf, so NaN
    // (0 * inf for an all-zero block) becomes 7; clamp to [-8, 7]; code = roundf(v + 8), i.e. half
    // away from zero (v + 8 >= 0: floor, plus one from .5 up), where the torch path rounds half to
    // even.
    at::Tensor v = blocks * scales;
    v = at::where(at::isnan(v), at::scalar_tensor(7.0, v.options()), v).clamp(-8, 7);
    const at::Tensor w = (v + 8).to(at::kFloat).flatten();
    const at::Tensor fl = at::floor(w);
    const at::Tensor code = (fl + (w - fl >= 0.5).to(at::kFloat)).to(at::kByte);
    q.data = packed_nibbles_as(code, q.shape);
  } else {
    at::Tensor f = (blocks * scales).flatten().round().clamp(-8, 7) + 8;
    q.data = packed_nibbles_as(f.to(at::kByte), q.shape);
  }
  q.scale = scales;
  return q;
}

QTensor nvfp4_quantize(const at::Tensor& x, int64_t block_size,
                       const std::optional<at::Tensor>& global_amax) {
  check_float(x, "NVFP4 real quantization");
  QTensor q = qtensor_for(x, QFormat::kNvfp4, block_size);
  const float g = global_amax ? global_amax->to(at::kFloat).max().item<float>()
                              : reduce_amax(x, std::nullopt).to(at::kFloat).item<float>();
  at::Tensor xf = rows_f32(x);
  const int64_t rows = xf.size(0), cols = xf.size(1);
  const int64_t nb = (cols + block_size - 1) / block_size;
  at::Tensor packed = at::empty({rows, (cols + 1) / 2}, at::kByte);
  at::Tensor scales = at::empty({rows, nb}, at::kByte);
  // NVFP4QTensor divides global_amax by 2688 with torch: exactly on a CPU tensor, as a
  // multiplication by fp32(1/2688) on a CUDA tensor.
  const auto div = x.is_cuda() ? mqk::ScalarDivMode::kReciprocal : mqk::ScalarDivMode::kDivide;
  const float s2 =
      mqk::nvfp4_quantize_ref(xf.data_ptr<float>(), rows, cols, static_cast<int>(block_size), g,
                              packed.data_ptr<uint8_t>(), scales.data_ptr<uint8_t>(), div);
  q.data = to_device_of(packed.reshape(last_dim_replaced(q.shape, (cols + 1) / 2)), x);
  q.scale = to_device_of(scales.view(kFp8).reshape(last_dim_replaced(q.shape, nb)), x);
  q.double_scale = at::scalar_tensor(s2, x.options().dtype(at::kFloat));
  return q;
}

QTensor mxfp4_quantize(const at::Tensor& x, int64_t block_size) {
  auto [packed, scales] =
      mx_pack(x, block_size, "MXFP4 real quantization", 2, mqk::mxfp4_quantize_ref);
  QTensor q = qtensor_for(x, QFormat::kMxfp4, block_size);
  q.data = to_device_of(packed.reshape(last_dim_replaced(q.shape, packed.size(1))), x);
  q.scale = to_device_of(scales.reshape({-1, 1}),
                         x);  // MXFP4QTensor: one E8M0 byte per block, (n_blocks, 1)
  return q;
}

QTensor mxfp8_quantize(const at::Tensor& x, int64_t block_size) {
  auto [data, scales] =
      mx_pack(x, block_size, "MXFP8 real quantization", 1, mqk::mxfp8_quantize_ref);
  QTensor q = qtensor_for(x, QFormat::kMxfp8, block_size);
  q.data = to_device_of(data.view(kFp8).reshape(q.shape), x);
  q.scale = to_device_of(scales.reshape(last_dim_replaced(q.shape, scales.size(1))), x);
  return q;
}

QTensor nf4_quantize(const at::Tensor& x, int64_t block_size, int64_t scale_block_size,
                     int scale_bits) {
  check_float(x, "NF4 real quantization");
  MQ_CHECK(block_size > 0 && block_size % 2 == 0, "NF4: block size must be even, got ", block_size);
  MQ_CHECK(scale_block_size > 0, "NF4: scale block size must be positive, got ", scale_block_size);
  QTensor q = qtensor_for(x, QFormat::kNf4, block_size);
  at::Tensor flat = pad_blocks(x.reshape({-1}), {{0, block_size}});
  at::Tensor blocks = flat.view({-1, block_size});
  at::Tensor scales = reduce_amax(blocks, std::vector<int64_t>{-1}).view({blocks.size(0), -1});
  at::Tensor idx;
  if (x.is_cuda()) {
    // ModelOpt's NF4_quantize kernel: x / scale in the input dtype, compared in fp32 with the fp32
    // table; the first index of the smallest |LUT[i] - v| (strict <: ties and NaN keep the lower
    // index, as torch's argmin does).
    const at::Tensor v = (blocks / scales).flatten().to(at::kFloat);
    idx = at::argmin(at::abs(v.unsqueeze(1) - nf4_table_fp32(x.device())), -1).to(at::kByte);
  } else {
    const at::Tensor lut = nf4_table(x.device()).to(at::kBFloat16).to(x.scalar_type());
    at::Tensor scaled = (blocks / scales).flatten();
    idx = at::argmin(at::abs(scaled.unsqueeze(1) - lut), -1).to(at::kByte);
  }
  q.data = pack_nibbles(idx);

  // Double quantization of the per-block scales (NF4QTensor.double_quantization).
  at::Tensor s = pad_blocks(scales.view({-1}), {{0, scale_block_size}});
  at::Tensor bs = s.view({-1, scale_block_size});
  const int64_t qmax = (int64_t{1} << (scale_bits - 1)) - 1;
  at::Tensor zero_point = bs.mean();
  bs = bs - zero_point;
  at::Tensor dq = reduce_amax(bs, std::vector<int64_t>{-1}).reciprocal() *
                  static_cast<double>(qmax);  // __rtruediv__
  at::Tensor qs = (bs * dq.expand({bs.size(0), scale_block_size}))
                      .round()
                      .clamp(-static_cast<double>(qmax), static_cast<double>(qmax))
                      .to(at::kChar);
  q.scale = qs;
  q.double_scale = dq.flatten();
  q.scale_zeros = zero_point;
  q.block_size = block_size;
  q.block_sizes = config::BlockSizes{};
  q.block_sizes->axes[-1] = block_size;
  q.block_sizes->scale_bits = config::NumBits::integer(scale_bits);
  q.block_sizes->scale_block_sizes = config::AxisBlockMap{{-1, scale_block_size}};
  return q;
}

at::Tensor QTensor::dequantize(std::optional<at::ScalarType> out_dtype) const {
  const at::ScalarType dt = out_dtype.value_or(dtype);
  MQ_CHECK(data.defined() && scale.defined(), qformat_name(format),
           ": dequantize needs data and scale");
  const int64_t numel = c10::multiply_integers(shape);
  switch (format) {
    case QFormat::kFp8:
    case QFormat::kInt8: {
      at::Tensor d = format == QFormat::kFp8 ? data : data.view(at::kChar);
      at::Tensor s = scale;
      if (block_sizes && !block_sizes->axes.empty()) {
        auto dims = blocked_dims(*block_sizes, d.dim());
        d = pad_blocks(d.to(dt), dims);
        s = expand_blocks(s, dims);
        return crop_to(d * s.to(d.device()).to(dt), shape);
      }
      return crop_to(d.to(dt) * s.to(d.device()).to(dt), shape);
    }
    case QFormat::kInt4: {
      at::Tensor first = at::__rshift__(data, 4).to(at::kLong) - 8;
      at::Tensor second = at::bitwise_and(data, 0x0F).to(at::kLong) - 8;
      const at::Tensor sc = to_device_of(scale, data).view({-1, 1});
      return interleave_nibbles(first.reshape({-1, block_size / 2}) / sc,
                                second.reshape({-1, block_size / 2}) / sc, numel, shape, dt);
    }
    case QFormat::kNf4: {
      MQ_CHECK(double_scale.defined() && scale_zeros.defined(),
               "NF4QTensor: dequantize needs double_scale and scale_zeros");
      const int64_t nblocks = (data.numel() * 2) / block_size;
      // ModelOpt divides the flattened scales by double_scale.unsqueeze(-1), which only broadcasts
      // correctly with a single scale block; we divide each scale block by its own double scale.
      at::Tensor s =
          (scale.view({double_scale.numel(), -1}) / double_scale.to(scale.device()).unsqueeze(-1))
              .to(dt) +
          scale_zeros.to(scale.device());
      s = to_device_of(s.flatten().slice(0, 0, nblocks), data);
      const at::Tensor lut = nf4_table(data.device()).to(at::kBFloat16);
      // ModelOpt's NF4_dequantize kernel (CUDA) multiplies in bf16: bf16(table) * bf16(scale) ->
      // bf16; its torch path multiplies the bf16 table by the scale in the scale's dtype.
      if (data.is_cuda()) s = s.to(at::kBFloat16);
      at::Tensor hi = lut.index({at::__rshift__(data, 4).to(at::kLong)});
      at::Tensor lo = lut.index({at::bitwise_and(data, 0x0F).to(at::kLong)});
      return interleave_nibbles(hi.reshape({-1, block_size / 2}) * s.view({-1, 1}),
                                lo.reshape({-1, block_size / 2}) * s.view({-1, 1}), numel, shape,
                                dt);
    }
    case QFormat::kNvfp4: {
      const at::Tensor s_bytes = scale.contiguous().view(at::kByte);  // e4m3 block scales
      return host_dequantize(
          *this, s_bytes, dt,
          [&](const uint8_t* p, const uint8_t* s, int64_t rows, int64_t cols, float* y) {
            mqk::nvfp4_dequantize_ref(p, s, double_scale.to(at::kFloat).item<float>(), rows, cols,
                                      static_cast<int>(block_size), y);
          });
    }
    case QFormat::kMxfp4:
    case QFormat::kMxfp8: {
      const auto unpack =
          format == QFormat::kMxfp4 ? mqk::mxfp4_dequantize_ref : mqk::mxfp8_dequantize_ref;
      return host_dequantize(
          *this, scale.contiguous(), dt,
          [&](const uint8_t* p, const uint8_t* s, int64_t rows, int64_t cols, float* y) {
            unpack(p, s, rows, cols, static_cast<int>(block_size), y);
          });
    }
  }
  MQ_THROW(::mq::InternalError, "unknown QFormat");
}

}  // namespace mq::quant
