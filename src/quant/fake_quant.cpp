#include "mq/quant/fake_quant.hpp"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "fake_quant_impl.hpp"
#include "mq/core/error.hpp"
#include "mqk/detail/numerics.hpp"

#if defined(MQ_HAVE_CUDA) && defined(MQ_TORCH_CUDA)
#include <ATen/cuda/CUDAContext.h>

#include "mqk/cuda.hpp"
#define MQ_QUANT_CUDA 1
#endif

namespace mq::quant {
namespace {

// Elements per parallel task: large enough that scheduling costs nothing next to the arithmetic.
constexpr int64_t kGrain = int64_t{1} << 15;

std::string shape_str(at::IntArrayRef s) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << "]";
  return os.str();
}

void check_float_input(const at::Tensor& x, const char* what) {
  MQ_CHECK(x.defined(), what, ": input tensor is undefined");
  MQ_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16 ||
               x.scalar_type() == at::kHalf,
           what, ": input dtype must be float32, bfloat16 or float16, got ", x.scalar_type());
}

at::Tensor to_f32_contig(const at::Tensor& x) { return x.to(at::kFloat).contiguous(); }

// Runs a row kernel f(row0, nrows) over a (rows, cols) matrix in parallel.
template <typename F>
void run_rows(int64_t rows, int64_t cols, F&& f) {
  if (rows == 0 || cols == 0) return;
  at::parallel_for(0, rows, std::max<int64_t>(1, kGrain / std::max<int64_t>(cols, 1)),
                   [&](int64_t b, int64_t e) { f(b, e - b); });
}

// Element <-> fp32 conversions of the fused loops, each the same as c10's cast (Tensor::to). fp16
// goes through mqk's mask form of c10's software conversion: the same bits, and unlike c10's
// selects it lets the loops vectorise (as long as it is inlined: hence always_inline).
[[gnu::always_inline]] inline float to_f32(float v) { return v; }
[[gnu::always_inline]] inline float to_f32(at::BFloat16 v) { return static_cast<float>(v); }
[[gnu::always_inline]] inline float to_f32(at::Half v) {
  return mqk::detail::fp16_bits_to_float(v.x);
}
[[gnu::always_inline]] inline void store_f32(float& y, float v) { y = v; }
[[gnu::always_inline]] inline void store_f32(at::BFloat16& y, float v) {
  y = static_cast<at::BFloat16>(v);
}
[[gnu::always_inline]] inline void store_f32(at::Half& y, float v) {
  y.x = mqk::detail::float_to_fp16_bits(v);
}

// Fused CPU loop for the per-element formats (INT, FP8): reads x in its own dtype, applies `op` in
// fp32 and writes y in x's dtype, with no temporaries. The scalar numerics are mqk's shared ones
// (mqk/detail/numerics.hpp), so the result is the reference's bit for bit; the conversions (to_f32,
// store_f32) give the bits of c10's round-to-nearest-even casts, as Tensor::to. `make(amax)` builds
// the per-channel state once per run of `inner` elements that share an amax, `op(x, state)`
// quantizes one element; it must be inlined for the loop to vectorise (the callers' lambdas are
// always_inline).
template <typename T, typename Make, typename Op>
void fused_flat_typed(const T* x, T* y, int64_t n, const float* amax, mqk::AmaxLayout L, Make make,
                      Op op) {
  if (L.axis_len == 1) {
    const auto st = make(amax[0]);
    at::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) store_f32(y[i], op(to_f32(x[i]), st));
    });
    return;
  }
  const int64_t units = n / L.inner;
  at::parallel_for(0, units, std::max<int64_t>(1, kGrain / L.inner), [&](int64_t b, int64_t e) {
    for (int64_t u = b; u < e; ++u) {
      const auto st = make(amax[u % L.axis_len]);
      const T* xs = x + u * L.inner;
      T* ys = y + u * L.inner;
      for (int64_t i = 0; i < L.inner; ++i) store_f32(ys[i], op(to_f32(xs[i]), st));
    }
  });
}

// A large output comes from the allocator as fresh pages (glibc maps blocks above 32 MiB anew each
// time): writing them costs one page fault per 4 KiB, which took longer than the fake quant itself
// (64 MiB: ~35 ms against ~10 ms). Where transparent huge pages are in madvise mode, asking for
// them on the 2 MiB-aligned part makes that one fault per 2 MiB, as c10's THP_MEM_ALLOC_ENABLE does
// for every allocation. A hint only: failures are ignored and the values are unaffected.
void advise_huge_pages(void* p, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t k2M = uintptr_t{1} << 21;
  if (bytes < 8 * k2M) return;
  const uintptr_t b = (reinterpret_cast<uintptr_t>(p) + k2M - 1) & ~(k2M - 1);
  const uintptr_t e = (reinterpret_cast<uintptr_t>(p) + bytes) & ~(k2M - 1);
  if (e > b) (void)madvise(reinterpret_cast<void*>(b), e - b, MADV_HUGEPAGE);
#else
  (void)p;
  (void)bytes;
#endif
}

template <typename Make, typename Op>
at::Tensor fused_flat(const at::Tensor& x, const AmaxView& av, Make make, Op op) {
  at::Tensor xc = x.contiguous();
  at::Tensor y = at::empty_like(xc);
  advise_huge_pages(y.data_ptr(), y.nbytes());
  const float* a = av.amax.data_ptr<float>();
  switch (xc.scalar_type()) {
    case at::kFloat:
      fused_flat_typed(xc.data_ptr<float>(), y.data_ptr<float>(), xc.numel(), a, av.layout, make,
                       op);
      break;
    case at::kBFloat16:
      fused_flat_typed(xc.data_ptr<at::BFloat16>(), y.data_ptr<at::BFloat16>(), xc.numel(), a,
                       av.layout, make, op);
      break;
    case at::kHalf:
      fused_flat_typed(xc.data_ptr<at::Half>(), y.data_ptr<at::Half>(), xc.numel(), a, av.layout,
                       make, op);
      break;
    default:
      MQ_THROW(::mq::Error, "fake quant: unsupported dtype ", xc.scalar_type());
  }
  return y;
}

#ifdef MQ_QUANT_CUDA
mqk::DType cuda_dtype(const at::Tensor& x) {
  switch (x.scalar_type()) {
    case at::kFloat:
      return mqk::DType::kF32;
    case at::kHalf:
      return mqk::DType::kF16;
    case at::kBFloat16:
      return mqk::DType::kBF16;
    default:
      MQ_THROW(::mq::Error, "CUDA fake quant: unsupported dtype ", x.scalar_type());
  }
}

// What every CUDA fake-quant launch starts from: the input made contiguous, an output like it, and
// the current stream of the input's device.
struct CudaCall {
  at::Tensor x;
  at::Tensor y;
  cudaStream_t stream;
};
CudaCall cuda_call(const at::Tensor& x) {
  at::Tensor xc = x.contiguous();
  at::Tensor y = at::empty_like(xc);
  return {xc, y, at::cuda::getCurrentCUDAStream(x.device().index()).stream()};
}

// ModelOpt runs its CUDA extension (fake_tensor_quant[_with_axis], fake_e4m3fy) for a scalar or 1-D
// amax; a multi-dim amax falls back to its eager torch path, which rounds scales and zero amaxes
// differently (see the per-format modes).
bool modelopt_uses_cuda_kernel(const at::Tensor& amax) { return amax.squeeze().dim() <= 1; }
#endif

void require_cpu_or_cuda(const at::Tensor& x, const char* what) {
#ifdef MQ_QUANT_CUDA
  MQ_CHECK(x.is_cpu() || x.is_cuda(), what, ": tensors must be on CPU or CUDA, got ", x.device());
#else
  MQ_CHECK(
      x.is_cpu(), what,
      ": this build has no CUDA tensor support (MQ_HAVE_CUDA and MQ_TORCH_CUDA); got a tensor on ",
      x.device());
#endif
}

float scalar_global_amax(const at::Tensor& global_amax) {
  MQ_CHECK(global_amax.defined() && global_amax.numel() >= 1, "NVFP4: global amax is missing");
  at::Tensor g = global_amax.numel() == 1 ? global_amax : global_amax.max();
  return g.to(at::kFloat).item<float>();
}

}  // namespace

std::string format_torch_size(at::IntArrayRef shape) {
  return "torch.Size(" + shape_str(shape) + ")";
}

AmaxView plan_amax_layout(const at::Tensor& x, const at::Tensor& amax) {
  MQ_CHECK(amax.defined(), "fake quant: amax is undefined");
  const int64_t xd = x.dim();
  const int64_t ad = amax.dim();
  const at::Tensor af = amax.to(at::kFloat);
  if (amax.numel() == 1) return {af.reshape({1}).contiguous(), mqk::AmaxLayout{1, 1}};

  MQ_CHECK(ad <= xd || std::all_of(amax.sizes().begin(), amax.sizes().begin() + (ad - xd),
                                   [](int64_t s) { return s == 1; }),
           "fake quant: amax shape ", shape_str(amax.sizes()),
           " does not broadcast to input shape ", shape_str(x.sizes()));
  std::vector<int64_t> a(xd, 1);
  for (int64_t i = 0; i < std::min(xd, ad); ++i) a[xd - 1 - i] = amax.size(ad - 1 - i);
  int64_t d0 = -1, d1 = -1;
  for (int64_t i = 0; i < xd; ++i) {
    MQ_CHECK(a[i] == 1 || a[i] == x.size(i), "fake quant: amax shape ", shape_str(amax.sizes()),
             " does not broadcast to input shape ", shape_str(x.sizes()));
    if (a[i] != 1) {
      if (d0 < 0) d0 = i;
      d1 = i;
    }
  }
  bool run = d0 >= 0;
  for (int64_t i = std::max<int64_t>(d0, 0); run && i <= d1; ++i) run = a[i] == x.size(i);
  if (run) {
    int64_t axis_len = 1, inner = 1;
    for (int64_t i = d0; i <= d1; ++i) axis_len *= x.size(i);
    for (int64_t i = d1 + 1; i < xd; ++i) inner *= x.size(i);
    return {af.reshape({-1}).contiguous(), mqk::AmaxLayout{axis_len, inner}};
  }
  return {af.reshape(a).expand(x.sizes()).contiguous().reshape({-1}),
          mqk::AmaxLayout{std::max<int64_t>(x.numel(), 1), 1}};
}

at::Tensor int_fake_quant(const at::Tensor& x, const at::Tensor& amax, int num_bits,
                          bool is_unsigned, bool narrow_range) {
  check_float_input(x, "INT fake quant");
  require_cpu_or_cuda(x, "INT fake quant");
  MQ_CHECK(num_bits >= 1 && num_bits <= 31, "INT fake quant: num_bits must be in [1, 31], got ",
           num_bits);
  if (x.numel() == 0) return x.clone();
  MQ_CHECK(amax.defined(), "INT fake quant: amax is undefined");
  MQ_CHECK(!(amax.min().item<double>() < 0), "INT fake quant: Negative values in amax");
  if (is_unsigned) {
    MQ_CHECK(!(x.min().item<double>() < 0.0),
             "Negative values encountered in unsigned quantization.");
  }
  AmaxView av = plan_amax_layout(x, amax);
#ifdef MQ_QUANT_CUDA
  if (x.is_cuda()) {
    const CudaCall c = cuda_call(x);
    at::Tensor a = av.amax.to(x.device());
    // The eager path's zero-amax rule differs from the CUDA kernel's.
    const auto zero = modelopt_uses_cuda_kernel(amax) ? mqk::IntZeroAmaxMode::kCudaKernel
                                                      : mqk::IntZeroAmaxMode::kEager;
    mqk::launch_int_fake_quant(c.x.data_ptr(), c.y.data_ptr(), cuda_dtype(c.x), c.x.numel(),
                               a.data_ptr<float>(), av.layout, num_bits, is_unsigned, narrow_range,
                               c.stream, zero);
    return c.y;
  }
#endif
  MQ_CHECK(num_bits >= 2 && num_bits <= 16, "INT fake quant: num_bits must be in [2, 16], got ",
           num_bits);
  const mqk::detail::IntBounds bounds =
      mqk::detail::int_bounds(num_bits, is_unsigned, narrow_range);
  // On CPU ModelOpt always takes its eager path (_tensor_quant): amax <= 2^-24 zeroes the scale, so
  // those elements come out as x * 0, a zero that keeps the sign of x (and NaN stays NaN).
  return fused_flat(
      x, av, [](float a) { return a; },
      [bounds](float v, float a) __attribute__((always_inline)) {
        return mqk::detail::int_fake_quant_one_magic(v, a, bounds, mqk::IntZeroAmaxMode::kEager);
      });
}

at::Tensor fp8_fake_quant(const at::Tensor& x, const at::Tensor& amax) {
  check_float_input(x, "FP8 fake quant");
  require_cpu_or_cuda(x, "FP8 fake quant");
  if (x.numel() == 0) return x.clone();
  AmaxView av = plan_amax_layout(x, amax);
#ifdef MQ_QUANT_CUDA
  if (x.is_cuda()) {
    const CudaCall c = cuda_call(x);
    at::Tensor a = av.amax.to(x.device());
    // ModelOpt's CUDA extension (fake_e4m3fy) divides 448/amax; its eager torch path multiplies by
    // the reciprocal.
    const auto mode = modelopt_uses_cuda_kernel(amax) ? mqk::Fp8ScaleMode::kDivide
                                                      : mqk::Fp8ScaleMode::kReciprocal;
    mqk::launch_fp8_fake_quant(c.x.data_ptr(), c.y.data_ptr(), cuda_dtype(c.x), c.x.numel(),
                               a.data_ptr<float>(), av.layout, c.stream, mode);
    return c.y;
  }
#endif
  // On CPU ModelOpt always takes its eager path, where 448.0 / amax is torch's amax.reciprocal() *
  // 448. The magic-number form of e4m3_round_sat (same bits, no rint call, no branches) lets the
  // loop vectorise.
  return fused_flat(
      x, av, [](float a) { return mqk::detail::fp8_scales(a, /*reciprocal=*/true); },
      [](float v, const mqk::detail::Fp8Scales& sc)
          __attribute__((always_inline)) { return mqk::detail::fp8_fake_quant_one_magic(v, sc); });
}

at::Tensor nvfp4_fake_quant(const at::Tensor& x, int64_t block, const at::Tensor& global_amax) {
  check_float_input(x, "NVFP4 fake quant");
  require_cpu_or_cuda(x, "NVFP4 fake quant");
  MQ_CHECK(block > 0, "NVFP4 fake quant: block size must be positive, got ", block);
  if (x.numel() == 0) return x.clone();
  const int64_t cols = x.size(-1);
  const int64_t rows = x.numel() / cols;
#ifdef MQ_QUANT_CUDA
  if (x.is_cuda()) {
    const CudaCall c = cuda_call(x);
    at::Tensor g = (global_amax.numel() == 1 ? global_amax : global_amax.max())
                       .to(x.device(), at::kFloat)
                       .reshape({1});
    mqk::launch_nvfp4_fake_quant(c.x.data_ptr(), c.y.data_ptr(), cuda_dtype(c.x), rows, cols,
                                 static_cast<int>(block), g.data_ptr<float>(), c.stream);
    return c.y;
  }
#endif
  const float g = scalar_global_amax(global_amax);
  at::Tensor xf = to_f32_contig(x);
  at::Tensor yf = at::empty_like(xf);
  const float* xp = xf.data_ptr<float>();
  float* yp = yf.data_ptr<float>();
  run_rows(rows, cols, [&](int64_t r0, int64_t nr) {
    mqk::nvfp4_fake_quant_ref(xp + r0 * cols, yp + r0 * cols, nr, cols, static_cast<int>(block), g);
  });
  return yf.to(x.scalar_type());
}

at::Tensor nvfp4_static_fake_quant(const at::Tensor& x, int64_t block, const at::Tensor& block_amax,
                                   const at::Tensor& global_amax, bool four_over_six) {
  check_float_input(x, "static NVFP4 fake quant");
  require_cpu_or_cuda(x, "static NVFP4 fake quant");
  MQ_CHECK(block > 0, "static NVFP4 fake quant: block size must be positive, got ", block);
  if (x.numel() == 0) return x.clone();
  const int64_t cols = x.size(-1);
  const int64_t rows = x.numel() / cols;
  const int64_t nb = (cols + block - 1) / block;
  MQ_CHECK(block_amax.defined() && block_amax.numel() == rows * nb,
           "static NVFP4 fake quant: expected ", rows * nb, " per-block amax values for input ",
           shape_str(x.sizes()), " and block ", block, ", got ",
           block_amax.defined() ? block_amax.numel() : 0);
  at::Tensor ba = block_amax.to(at::kFloat).contiguous();
#ifdef MQ_QUANT_CUDA
  if (x.is_cuda()) {
    const CudaCall c = cuda_call(x);
    at::Tensor g = (global_amax.numel() == 1 ? global_amax : global_amax.max())
                       .to(x.device(), at::kFloat)
                       .reshape({1});
    at::Tensor bad = ba.to(x.device());
    mqk::launch_nvfp4_static_fake_quant(c.x.data_ptr(), c.y.data_ptr(), cuda_dtype(c.x), rows, cols,
                                        static_cast<int>(block), bad.data_ptr<float>(),
                                        g.data_ptr<float>(), four_over_six, c.stream);
    return c.y;
  }
#endif
  const float g = scalar_global_amax(global_amax);
  at::Tensor xf = to_f32_contig(x);
  at::Tensor yf = at::empty_like(xf);
  const float* xp = xf.data_ptr<float>();
  const float* bp = ba.data_ptr<float>();
  float* yp = yf.data_ptr<float>();
  run_rows(rows, cols, [&](int64_t r0, int64_t nr) {
    mqk::nvfp4_static_fake_quant_ref(xp + r0 * cols, yp + r0 * cols, nr, cols,
                                     static_cast<int>(block), bp + r0 * nb, g, four_over_six);
  });
  return yf.to(x.scalar_type());
}

mqk::ElemFormat mx_elem_format(const config::NumBits& nb) {
  if (nb.is_float(4, 3)) return mqk::ElemFormat::kE4M3;
  if (nb.is_float(5, 2)) return mqk::ElemFormat::kE5M2;
  if (nb.is_float(3, 2)) return mqk::ElemFormat::kE3M2;
  if (nb.is_float(2, 3)) return mqk::ElemFormat::kE2M3;
  if (nb.is_float(2, 1)) return mqk::ElemFormat::kE2M1;
  if (nb.is_int() && nb.bits == 8) return mqk::ElemFormat::kInt8;
  if (nb.kind == config::NumBits::Kind::kFloat) {
    MQ_THROW(::mq::Error, "MX fake quant: unsupported element format (", nb.exponent, ", ",
             nb.mantissa, ")");
  }
  MQ_THROW(::mq::Error, "MX fake quant: unsupported element format num_bits=",
           nb.is_int() ? std::to_string(nb.bits) : nb.custom);
}

at::Tensor mx_fake_quant(const at::Tensor& x, int64_t block, mqk::ElemFormat elem) {
  check_float_input(x, "MX fake quant");
  require_cpu_or_cuda(x, "MX fake quant");
  MQ_CHECK(block == 8 || block == 16 || block == 32,
           "MX fake quant: block size must be 8, 16 or 32, got ", block);
  if (x.numel() == 0) return x.clone();
  const int64_t cols = x.size(-1);
  const int64_t rows = x.numel() / cols;
#ifdef MQ_QUANT_CUDA
  if (x.is_cuda()) {
    const CudaCall c = cuda_call(x);
    mqk::launch_mx_fake_quant(c.x.data_ptr(), c.y.data_ptr(), cuda_dtype(c.x), rows, cols,
                              static_cast<int>(block), elem, c.stream);
    return c.y;
  }
#endif
  at::Tensor xf = to_f32_contig(x);
  at::Tensor yf = at::empty_like(xf);
  const float* xp = xf.data_ptr<float>();
  float* yp = yf.data_ptr<float>();
  run_rows(rows, cols, [&](int64_t r0, int64_t nr) {
    mqk::mx_fake_quant_ref(xp + r0 * cols, yp + r0 * cols, nr, cols, static_cast<int>(block), elem);
  });
  return yf.to(x.scalar_type());
}

// ---- static block plan (ModelOpt _setup_for_blockquant) ----

StaticBlockPlan StaticBlockPlan::make(at::IntArrayRef shape, const config::BlockSizes& bs) {
  const int64_t nd = static_cast<int64_t>(shape.size());
  MQ_CHECK(nd >= 1, "static block quantization needs an input of rank >= 1");
  auto block_of = [&](int64_t ax) -> std::optional<int64_t> {
    auto it = bs.axes.find(static_cast<int>(ax));
    if (it == bs.axes.end()) it = bs.axes.find(static_cast<int>(ax - nd));
    if (it == bs.axes.end()) return std::nullopt;
    return it->second;
  };
  for (const auto& [k, v] : bs.axes) {
    MQ_CHECK(k >= -nd && k < nd, "block_sizes: axis ", k, " is out of range for an input of rank ",
             nd);
    MQ_CHECK(!v || *v > 0, "block_sizes: block size of axis ", k, " must be positive, got ",
             v.value_or(0));
  }

  StaticBlockPlan p;
  p.input_shape.assign(shape.begin(), shape.end());
  p.padded_shape = p.input_shape;
  auto last_block = block_of(nd - 1);
  if (last_block && bs.axes.size() == 1) {
    const int64_t b = *last_block;
    const int64_t s = shape[nd - 1];
    if (s % b != 0) {
      p.padding = {0, b - s % b};
      p.padded_shape[nd - 1] = s + (b - s % b);
    }
    p.block_reshape = {-1, b};
    p.axis = {0};
    std::vector<int64_t> ex(shape.begin(), shape.end() - 1);
    ex.push_back(-1);
    p.amax_shape_for_export = ex;
    return p;
  }
  // Padding pairs per axis as F.pad expects them, last dim first; leading unpadded axes are
  // omitted.
  std::vector<std::pair<int64_t, int64_t>> pads(nd, {0, 0});
  int64_t first_padded = -1;
  for (int64_t ax = 0; ax < nd; ++ax) {
    auto b = block_of(ax);
    if (b) {
      const int64_t s = shape[ax];
      const int64_t nblk = (s + *b - 1) / *b;
      if (s % *b != 0) {
        pads[ax] = {0, *b - s % *b};
        p.padded_shape[ax] = nblk * *b;
        if (first_padded < 0) first_padded = ax;
      }
      p.axis.push_back(static_cast<int>(p.block_reshape.size()));
      p.block_reshape.push_back(nblk);
      p.block_reshape.push_back(*b);
    } else {
      p.axis.push_back(static_cast<int>(p.block_reshape.size()));
      p.block_reshape.push_back(shape[ax]);
    }
  }
  if (first_padded >= 0) {
    for (int64_t ax = nd - 1; ax >= first_padded; --ax) {
      p.padding.push_back(pads[ax].first);
      p.padding.push_back(pads[ax].second);
    }
  }
  return p;
}

at::Tensor StaticBlockPlan::apply(const at::Tensor& x) const {
  at::Tensor xp = padding.empty() ? x : at::constant_pad_nd(x, padding, 0);
  if (xp.sizes() != at::IntArrayRef(padded_shape)) {
    MQ_THROW(::mq::Error, "Input shape has changed from ", format_torch_size(padded_shape), " to ",
             format_torch_size(xp.sizes()), ". Block-quantization requires a fixed input shape.");
  }
  return xp.reshape(block_reshape);
}

at::Tensor StaticBlockPlan::restore(const at::Tensor& y) const {
  at::Tensor out = y.reshape(padded_shape);
  for (size_t d = 0; d < input_shape.size(); ++d) {
    if (padded_shape[d] != input_shape[d])
      out = out.narrow(static_cast<int64_t>(d), 0, input_shape[d]);
  }
  return out;
}

// ---- rotation ----

at::Tensor normalized_hadamard_transform(const at::Tensor& x, std::optional<int> block_size,
                                         bool rotate_fp32) {
  MQ_CHECK(x.dim() >= 1, "Hadamard transform needs an input of rank >= 1");
  const int64_t dim = x.size(-1);
  auto is_pow2 = [](int64_t v) { return v > 0 && (v & (v - 1)) == 0; };
  auto largest_pow2_divisor = [](int64_t v) { return v > 0 ? (v & -v) : int64_t{0}; };
  int64_t bs = 0;
  if (!block_size) {
    bs = is_pow2(dim) ? dim : largest_pow2_divisor(dim);
    MQ_CHECK(
        bs >= 2 || is_pow2(dim), "Block RHT: dimension ", dim,
        " has no power-of-2 divisor >= 2. Set rotate.block_size explicitly (e.g. 128) or use a "
        "dimension divisible by a power of 2.");
  } else {
    bs = *block_size;
  }
  MQ_CHECK(is_pow2(bs), "Block RHT: block_size must be power of 2, got ", bs, ".");
  MQ_CHECK(dim % bs == 0, "Block RHT: inputs.shape[-1]=", dim,
           " is not divisible by block_size=", bs, ". Use a block_size that divides ", dim,
           " (e.g. ", largest_pow2_divisor(dim), ").");
  (void)
      rotate_fp32;  // the transform is always accumulated in fp32 here; both modes return x's dtype
  at::Tensor v = x.to(at::kFloat).reshape({-1, bs});
  const int64_t m = v.size(0);
  // Sylvester butterfly: H_2n = [[H_n, H_n], [H_n, -H_n]], built with differentiable ops.
  for (int64_t h = 1; h < bs; h *= 2) {
    at::Tensor w = v.view({m, bs / (2 * h), 2, h});
    at::Tensor a = w.select(2, 0);
    at::Tensor b = w.select(2, 1);
    v = at::stack({a + b, a - b}, 2).reshape({m, bs});
  }
  v = v * (1.0 / std::sqrt(static_cast<double>(bs)));
  return v.reshape(x.sizes()).to(x.scalar_type());
}

// ---- private helpers ----

namespace detail {

std::optional<std::vector<int64_t>> axis_dims(const std::optional<config::Axis>& axis) {
  if (!axis) return std::nullopt;
  return std::vector<int64_t>(axis->dims.begin(), axis->dims.end());
}

std::string py_format(double v, const char* fmt) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  std::snprintf(buf, sizeof(buf), fmt, v);
  return buf;
}

}  // namespace detail
}  // namespace mq::quant
