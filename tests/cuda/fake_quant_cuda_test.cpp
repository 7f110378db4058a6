// GPU kernels against the C++ reference, bit for bit, for every kernel x dtype x shape (odd shapes,
// partial blocks, misaligned pointers). Each test skips itself where no GPU is visible.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "mqk/cuda.hpp"
#include "mqk/ref.hpp"

namespace {

using mqk::DType;
using Vec = std::vector<float>;

#define SKIP_WITHOUT_GPU() \
  if (mqk::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device"

#define CUDA_OK(expr) ASSERT_EQ((expr), cudaSuccess) << #expr

size_t elem_size(DType dt) { return dt == DType::kF32 ? 4 : 2; }
const char* dtype_name(DType dt) {
  return dt == DType::kF32 ? "f32" : (dt == DType::kF16 ? "f16" : "bf16");
}

// Host-side storage of a tensor in dtype dt, as raw bits (the conversions are the CUDA headers'
// RNE).
std::vector<uint8_t> encode(const Vec& v, DType dt) {
  std::vector<uint8_t> out(v.size() * elem_size(dt));
  for (size_t i = 0; i < v.size(); ++i) {
    if (dt == DType::kF32) {
      std::memcpy(&out[i * 4], &v[i], 4);
    } else if (dt == DType::kF16) {
      const __half h = __float2half_rn(v[i]);
      std::memcpy(&out[i * 2], &h, 2);
    } else {
      const __nv_bfloat16 h = __float2bfloat16_rn(v[i]);
      std::memcpy(&out[i * 2], &h, 2);
    }
  }
  return out;
}

Vec decode(const std::vector<uint8_t>& b, DType dt) {
  const size_t n = b.size() / elem_size(dt);
  Vec v(n);
  for (size_t i = 0; i < n; ++i) {
    if (dt == DType::kF32) {
      std::memcpy(&v[i], &b[i * 4], 4);
    } else if (dt == DType::kF16) {
      __half h;
      std::memcpy(&h, &b[i * 2], 2);
      v[i] = __half2float(h);
    } else {
      __nv_bfloat16 h;
      std::memcpy(&h, &b[i * 2], 2);
      v[i] = __bfloat162float(h);
    }
  }
  return v;
}

class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes) {
    if (cudaMalloc(&p_, bytes ? bytes : 1) != cudaSuccess)
      throw std::runtime_error("cudaMalloc failed");
  }
  ~DeviceBuffer() { cudaFree(p_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  template <typename T>
  T* as() const {
    return static_cast<T*>(p_);
  }
  void upload(const void* src, size_t bytes, size_t offset = 0) {
    if (cudaMemcpy(static_cast<char*>(p_) + offset, src, bytes, cudaMemcpyHostToDevice) !=
        cudaSuccess)
      throw std::runtime_error("upload failed");
  }
  void download(void* dst, size_t bytes, size_t offset = 0) const {
    if (cudaMemcpy(dst, static_cast<char*>(p_) + offset, bytes, cudaMemcpyDeviceToHost) !=
        cudaSuccess)
      throw std::runtime_error("download failed");
  }

 private:
  void* p_ = nullptr;
  size_t bytes_;
};

// Input values: normal noise with a few exact zeros, negative zeros, large outliers and values on
// the E2M1 / integer grids, so ties and saturation are exercised.
Vec make_input(size_t n, uint32_t seed, float scale) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  Vec v(n);
  for (size_t i = 0; i < n; ++i) {
    switch (i % 23) {
      case 3:
        v[i] = 0.0f;
        break;
      case 7:
        v[i] = -0.0f;
        break;
      case 11:
        v[i] = scale * 40.0f * (i % 2 ? 1.0f : -1.0f);
        break;
      case 13:
        v[i] = 0.5f * static_cast<float>(static_cast<int>(i % 13) - 6);
        break;
      default:
        v[i] = d(rng);
    }
  }
  return v;
}

struct Case {
  DType dt;
  int64_t rows, cols;
  int64_t
      offset;  // elements the device pointers are shifted by (breaks 16-byte alignment when odd)
};

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  return std::string(dtype_name(info.param.dt)) + "_" + std::to_string(info.param.rows) + "x" +
         std::to_string(info.param.cols) +
         (info.param.offset ? "_off" + std::to_string(info.param.offset) : "");
}

// Runs `gpu(x_dev, y_dev)` on x (rounded to the dtype) and compares with `ref(x_f32, y_f32)`
// rounded to the dtype, bit for bit.
template <typename Gpu, typename Ref>
void check_bit_exact(const Case& c, const Vec& x_in, Gpu&& gpu, Ref&& ref, const std::string& what,
                     bool nan_as_equal = false) {
  const size_t n = x_in.size(), es = elem_size(c.dt);
  const std::vector<uint8_t> xb = encode(x_in, c.dt);
  const Vec x = decode(xb, c.dt);  // the values the GPU sees, in fp32
  Vec y_ref(n);
  ref(x.data(), y_ref.data());
  const std::vector<uint8_t> want = encode(y_ref, c.dt);

  const size_t off = static_cast<size_t>(c.offset) * es;
  DeviceBuffer dx(n * es + off), dy(n * es + off);
  dx.upload(xb.data(), xb.size(), off);
  gpu(static_cast<const void*>(dx.as<char>() + off), static_cast<void*>(dy.as<char>() + off));
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::vector<uint8_t> got(n * es);
  dy.download(got.data(), got.size(), off);
  int bad = 0;
  for (size_t i = 0; i < n && bad < 10; ++i) {
    if (std::memcmp(&got[i * es], &want[i * es], es) != 0) {
      if (nan_as_equal &&
          std::isnan(decode({got.begin() + i * es, got.begin() + (i + 1) * es}, c.dt)[0]) &&
          std::isnan(decode({want.begin() + i * es, want.begin() + (i + 1) * es}, c.dt)[0]))
        continue;
      ++bad;
      const float g = decode({got.begin() + i * es, got.begin() + (i + 1) * es}, c.dt)[0];
      ADD_FAILURE() << what << " i=" << i << " x=" << x[i] << " gpu=" << g << " ref=" << y_ref[i];
    }
  }
}

// Runs the block kernels with 1 and with 2 vectors per thread
// (mqk::set_block_quant_vectors_per_thread): both layouts of the vectorised kernel must give the
// reference's bits.
template <typename Fn>
void for_each_vectors_per_thread(Fn&& fn) {
  for (int v : {1, 2}) {
    SCOPED_TRACE("vectors per thread " + std::to_string(v));
    mqk::set_block_quant_vectors_per_thread(v);
    fn();
  }
  mqk::set_block_quant_vectors_per_thread(2);
}

class KernelVsRef : public ::testing::TestWithParam<Case> {};

TEST_P(KernelVsRef, IntFakeQuant) {
  SKIP_WITHOUT_GPU();
  const Case c = GetParam();
  const int64_t n = c.rows * c.cols;
  const Vec x = make_input(n, 1, 2.0f);
  const Vec xpos = [&] {
    Vec v = x;
    for (auto& e : v) e = std::fabs(e);
    return v;
  }();
  Vec amax_rows(c.rows);
  for (int64_t r = 0; r < c.rows; ++r) amax_rows[r] = 0.7f * (1.0f + static_cast<float>(r % 5));
  amax_rows[0] = 0.0f;  // a zero channel: output 0
  DeviceBuffer damax(amax_rows.size() * 4);
  damax.upload(amax_rows.data(), amax_rows.size() * 4);
  const float* da = damax.as<float>();
  struct Cfg {
    int bits;
    bool uns, narrow;
  };
  for (Cfg cfg :
       {Cfg{8, false, false}, Cfg{8, false, true}, Cfg{4, false, false}, Cfg{8, true, false}})
    for (auto zero : {mqk::IntZeroAmaxMode::kCudaKernel, mqk::IntZeroAmaxMode::kEager}) {
      const Vec& in = cfg.uns ? xpos : x;
      const std::string tag = "int" + std::to_string(cfg.bits) + (cfg.uns ? "u" : "") +
                              (cfg.narrow ? "n" : "") +
                              (zero == mqk::IntZeroAmaxMode::kEager ? " eager" : " cuda-kernel");
      for (mqk::AmaxLayout layout : {mqk::AmaxLayout{1, 1}, mqk::AmaxLayout{c.rows, c.cols}}) {
        const float* amax_dev = layout.axis_len == 1 ? da + (c.rows > 1 ? 1 : 0) : da;
        const float* amax_host =
            layout.axis_len == 1 ? amax_rows.data() + (c.rows > 1 ? 1 : 0) : amax_rows.data();
        check_bit_exact(
            c, in,
            [&](const void* dx, void* dy) {
              mqk::launch_int_fake_quant(dx, dy, c.dt, n, amax_dev, layout, cfg.bits, cfg.uns,
                                         cfg.narrow, nullptr, zero);
            },
            [&](const float* hx, float* hy) {
              mqk::int_fake_quant_ref(hx, hy, n, amax_host, layout, cfg.bits, cfg.uns, cfg.narrow,
                                      zero);
            },
            tag + (layout.axis_len == 1 ? " per-tensor" : " per-channel"));
      }
    }
}

TEST_P(KernelVsRef, Fp8FakeQuant) {
  SKIP_WITHOUT_GPU();
  const Case c = GetParam();
  const int64_t n = c.rows * c.cols;
  const Vec x = make_input(n, 2, 3.0f);
  Vec amax(c.rows);
  for (int64_t r = 0; r < c.rows; ++r) amax[r] = 1.3f * static_cast<float>(1 + r % 7);
  amax[0] = 0.0f;  // taken as 1.0
  DeviceBuffer damax(amax.size() * 4);
  damax.upload(amax.data(), amax.size() * 4);
  for (auto mode : {mqk::Fp8ScaleMode::kDivide, mqk::Fp8ScaleMode::kReciprocal})
    for (mqk::AmaxLayout layout : {mqk::AmaxLayout{1, 1}, mqk::AmaxLayout{c.rows, c.cols}}) {
      const int64_t first = layout.axis_len == 1 && c.rows > 1 ? 1 : 0;
      check_bit_exact(
          c, x,
          [&](const void* dx, void* dy) {
            mqk::launch_fp8_fake_quant(dx, dy, c.dt, n, damax.as<float>() + first, layout, nullptr,
                                       mode);
          },
          [&](const float* hx, float* hy) {
            mqk::fp8_fake_quant_ref(hx, hy, n, amax.data() + first, layout, mode);
          },
          std::string(layout.axis_len == 1 ? "fp8 per-tensor" : "fp8 per-channel") +
              (mode == mqk::Fp8ScaleMode::kDivide ? " divide" : " reciprocal"));
    }
}

TEST_P(KernelVsRef, Nvfp4Dynamic) {
  SKIP_WITHOUT_GPU();
  const Case c = GetParam();
  const Vec x = make_input(c.rows * c.cols, 3, 1.5f);
  for_each_vectors_per_thread([&] {
    for (int block : {16, 32}) {
      for (float gamax : {0.0f, 7.0f, 60.0f * 1.5f, 1e4f}) {
        DeviceBuffer dg(4);
        dg.upload(&gamax, 4);
        check_bit_exact(
            c, x,
            [&](const void* dx, void* dy) {
              mqk::launch_nvfp4_fake_quant(dx, dy, c.dt, c.rows, c.cols, block, dg.as<float>(),
                                           nullptr);
            },
            [&](const float* hx, float* hy) {
              mqk::nvfp4_fake_quant_ref(hx, hy, c.rows, c.cols, block, gamax);
            },
            "nvfp4 block " + std::to_string(block) + " global " + std::to_string(gamax));
      }
    }
  });
}

TEST_P(KernelVsRef, Nvfp4Static) {
  SKIP_WITHOUT_GPU();
  const Case c = GetParam();
  const Vec x = make_input(c.rows * c.cols, 4, 1.5f);
  const Vec xr = decode(encode(x, c.dt), c.dt);
  const int block = 16;
  const int64_t nb = (c.cols + block - 1) / block;
  Vec bamax(c.rows * nb);
  for (int64_t r = 0; r < c.rows; ++r)
    for (int64_t b = 0; b < nb; ++b) {
      const int64_t c0 = b * block, len = std::min<int64_t>(block, c.cols - c0);
      // Calibrated amax: the block max, scaled differently per block (MSE-style), some zero.
      const float m = mqk::amax_ref(xr.data() + r * c.cols + c0, len);
      bamax[r * nb + b] = (b % 5 == 4) ? 0.0f : m * (1.0f + 0.125f * static_cast<float>(b % 3));
    }
  const float gamax = mqk::amax_ref(bamax.data(), static_cast<int64_t>(bamax.size()));
  DeviceBuffer db(bamax.size() * 4), dg(4);
  db.upload(bamax.data(), bamax.size() * 4);
  dg.upload(&gamax, 4);
  for_each_vectors_per_thread([&] {
    for (bool fos : {false, true}) {
      check_bit_exact(
          c, x,
          [&](const void* dx, void* dy) {
            mqk::launch_nvfp4_static_fake_quant(dx, dy, c.dt, c.rows, c.cols, block, db.as<float>(),
                                                dg.as<float>(), fos, nullptr);
          },
          [&](const float* hx, float* hy) {
            mqk::nvfp4_static_fake_quant_ref(hx, hy, c.rows, c.cols, block, bamax.data(), gamax,
                                             fos);
          },
          fos ? "nvfp4 static 4/6" : "nvfp4 static");
    }
  });
}

TEST_P(KernelVsRef, Mx) {
  SKIP_WITHOUT_GPU();
  const Case c = GetParam();
  const Vec x = make_input(c.rows * c.cols, 5, 4.0f);
  for_each_vectors_per_thread([&] {
    for (auto f : {mqk::ElemFormat::kE4M3, mqk::ElemFormat::kE5M2, mqk::ElemFormat::kE3M2,
                   mqk::ElemFormat::kE2M3, mqk::ElemFormat::kE2M1, mqk::ElemFormat::kInt8}) {
      for (int block : {8, 16, 32}) {
        check_bit_exact(
            c, x,
            [&](const void* dx, void* dy) {
              mqk::launch_mx_fake_quant(dx, dy, c.dt, c.rows, c.cols, block, f, nullptr);
            },
            [&](const float* hx, float* hy) {
              mqk::mx_fake_quant_ref(hx, hy, c.rows, c.cols, block, f);
            },
            std::string("mx ") + mqk::elem_traits(f).name + " block " + std::to_string(block));
      }
    }
  });
}

TEST_P(KernelVsRef, Amax) {
  SKIP_WITHOUT_GPU();
  const Case c = GetParam();
  const int64_t n = c.rows * c.cols;
  Vec x = make_input(n, 6, 1.0f);
  const size_t es = elem_size(c.dt), off = static_cast<size_t>(c.offset) * es;
  for (int pass = 0; pass < 2; ++pass) {
    if (pass == 1) x[n / 2] = std::nanf("");  // NaN propagates
    const std::vector<uint8_t> xb = encode(x, c.dt);
    const Vec xr = decode(xb, c.dt);
    DeviceBuffer dx(xb.size() + off), dout(4);
    dx.upload(xb.data(), xb.size(), off);
    mqk::launch_amax(dx.as<char>() + off, c.dt, n, dout.as<float>(), nullptr);
    CUDA_OK(cudaDeviceSynchronize());
    float got = 0;
    dout.download(&got, 4);
    const float want = mqk::amax_ref(xr.data(), n);
    if (pass == 0)
      EXPECT_EQ(got, want);
    else
      EXPECT_TRUE(std::isnan(got)) << got;
  }
}

std::vector<Case> cases() {
  std::vector<Case> v;
  for (DType dt : {DType::kF32, DType::kF16, DType::kBF16}) {
    for (auto [r, cc] : std::vector<std::pair<int64_t, int64_t>>{
             {1, 1}, {1, 16}, {1, 17}, {33, 64}, {33, 100}, {7, 96}, {64, 4096}})
      v.push_back({dt, r, cc, 0});
    v.push_back({dt, 33, 64, 1});  // misaligned: scalar paths
  }
  return v;
}

INSTANTIATE_TEST_SUITE_P(Sweep, KernelVsRef, ::testing::ValuesIn(cases()), case_name);

// Elements exactly on the E2M1 thresholds (and one ulp either side) of blocks whose scale is known
// and not a power of two, so that the GPU's reciprocal fast path must fall back to the exact
// quotient.
TEST(KernelVsRefTies, Nvfp4ThresholdsTimesBlockScale) {
  SKIP_WITHOUT_GPU();
  const float thresholds[7] = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f};
  const float scales[] = {1.125f,     1.375f, 0.8125f, 3.25f,
                          0.0703125f, 1.0f,   448.0f,  0.001953125f * 1.25f};
  Vec x;
  Vec bamax;
  for (float bs : scales) {
    Vec probes;
    for (float t : thresholds)
      for (float v : {t * bs, std::nextafter(t * bs, 0.0f), std::nextafter(t * bs, 1e9f)}) {
        probes.push_back(v);
        probes.push_back(-v);
      }
    probes.resize(60, 0.0f);
    for (int b = 0; b < 4; ++b) {
      x.push_back(6.0f * bs);  // block max: with global amax 2688 (gs = 1) the block scale is bs
      for (int k = 0; k < 15; ++k) x.push_back(probes[b * 15 + k]);
      bamax.push_back(6.0f * bs);
    }
  }
  const int64_t rows = static_cast<int64_t>(sizeof(scales) / sizeof(scales[0])), cols = 64;
  for (DType dt : {DType::kF32, DType::kBF16, DType::kF16}) {
    const Case c{dt, rows, cols, 0};
    const float gamax = 2688.0f;
    DeviceBuffer dg(4), db(bamax.size() * 4);
    dg.upload(&gamax, 4);
    db.upload(bamax.data(), bamax.size() * 4);
    check_bit_exact(
        c, x,
        [&](const void* dx, void* dy) {
          mqk::launch_nvfp4_fake_quant(dx, dy, dt, rows, cols, 16, dg.as<float>(), nullptr);
        },
        [&](const float* hx, float* hy) {
          mqk::nvfp4_fake_quant_ref(hx, hy, rows, cols, 16, gamax);
        },
        std::string("nvfp4 ties ") + dtype_name(dt));
    check_bit_exact(
        c, x,
        [&](const void* dx, void* dy) {
          mqk::launch_nvfp4_static_fake_quant(dx, dy, dt, rows, cols, 16, db.as<float>(),
                                              dg.as<float>(), false, nullptr);
        },
        [&](const float* hx, float* hy) {
          mqk::nvfp4_static_fake_quant_ref(hx, hy, rows, cols, 16, bamax.data(), gamax, false);
        },
        std::string("nvfp4 static ties ") + dtype_name(dt));
  }
}

// The packed bf16/fp16 NVFP4 path against the reference at the edges of its scale range: block
// scales from 0 and fp32-subnormal through 2^-100 (the packed path's lower limit) to near FLT_MAX,
// products q * s that round to a T zero (fp16 underflow: the sign of zero must follow x),
// thresholds beyond the T range (fp16 overflow to +Inf), and signed zeros and tiny values in every
// block. Static NVFP4 sets the scales directly (block amax / 6, FP8-quantized against the global
// amax); each global amax is a separate launch.
TEST(KernelVsRefEdges, Nvfp4PackedScaleRange) {
  SKIP_WITHOUT_GPU();
  const int64_t rows = 6, cols = 64;
  const int block = 16;
  const int64_t nb = cols / block;
  std::mt19937 rng(11);
  std::normal_distribution<float> d(0.0f, 1.0f);
  for (float gamax : {6e-38f, 6e-30f, 0x1p-98f, 6e-20f, 6e-8f, 1e-4f, 6.0f, 7e4f, 1e30f, 3e38f}) {
    Vec bamax(rows * nb), x(rows * cols);
    const float fracs[6] = {1.0f, 0.5f, 0.1f, 0.01f, 0.0f, 1e-3f};
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t b = 0; b < nb; ++b) {
        const float a = gamax * fracs[(r + b) % 6];
        bamax[r * nb + b] = a;
        for (int64_t k = 0; k < block; ++k) {
          float v = std::clamp(d(rng), -2.5f, 2.5f) * (a > 0 ? a : gamax) / 3.0f;
          if (k == 0) v = a;  // the block max itself
          if (k == 1) v = -a;
          if (k == 2) v = 0.0f;
          if (k == 3) v = -0.0f;
          if (k == 4) v = -a * 1e-3f;  // rounds to a zero of the block
          if (k == 5) v = -1e-30f;
          if (k == 6) v = -6e-8f;  // fp16 subnormal range
          x[r * cols + b * block + k] = v;
        }
      }
    for (DType dt : {DType::kBF16, DType::kF16, DType::kF32}) {
      const Case c{dt, rows, cols, 0};
      // The reference sees the values the GPU sees (rounded to dt); the block amax stays as given.
      DeviceBuffer db(bamax.size() * 4), dg(4);
      db.upload(bamax.data(), bamax.size() * 4);
      dg.upload(&gamax, 4);
      for_each_vectors_per_thread([&] {
        for (bool fos : {false, true})
          check_bit_exact(
              c, x,
              [&](const void* dx, void* dy) {
                mqk::launch_nvfp4_static_fake_quant(dx, dy, dt, rows, cols, block, db.as<float>(),
                                                    dg.as<float>(), fos, nullptr);
              },
              [&](const float* hx, float* hy) {
                mqk::nvfp4_static_fake_quant_ref(hx, hy, rows, cols, block, bamax.data(), gamax,
                                                 fos);
              },
              std::string("nvfp4 static edges ") + dtype_name(dt) + " global " +
                  std::to_string(gamax),
              true);
        check_bit_exact(
            c, x,
            [&](const void* dx, void* dy) {
              mqk::launch_nvfp4_fake_quant(dx, dy, dt, rows, cols, block, dg.as<float>(), nullptr);
            },
            [&](const float* hx, float* hy) {
              mqk::nvfp4_fake_quant_ref(hx, hy, rows, cols, block, gamax);
            },
            std::string("nvfp4 dynamic edges ") + dtype_name(dt) + " global " +
                std::to_string(gamax),
            true);
      });
    }
  }
}

// NaN and Inf elements: a NaN anywhere in a dynamic block makes the whole block NaN (its block max
// is NaN), an Inf block max gives NaN scales too; blocks without them are unaffected. Compared bit
// for bit where the reference is a number and as "both NaN" elsewhere (NaN payloads are the
// device's).
TEST(KernelVsRefEdges, Nvfp4NanInfBlocks) {
  SKIP_WITHOUT_GPU();
  const int64_t rows = 4, cols = 128, n = rows * cols;
  Vec x = make_input(n, 12, 2.0f);
  x[5] = std::nanf("");
  x[40] = INFINITY;
  x[70] = -INFINITY;
  x[200] = -std::nanf("");
  for (DType dt : {DType::kBF16, DType::kF16, DType::kF32}) {
    for (float gamax : {10.0f, INFINITY}) {
      const size_t es = elem_size(dt);
      const std::vector<uint8_t> xb = encode(x, dt);
      const Vec xr = decode(xb, dt);
      Vec want(n);
      mqk::nvfp4_fake_quant_ref(xr.data(), want.data(), rows, cols, 16, gamax);
      const Vec want_t = decode(encode(want, dt), dt);
      DeviceBuffer dx(n * es), dy(n * es), dg(4);
      dx.upload(xb.data(), xb.size());
      dg.upload(&gamax, 4);
      for_each_vectors_per_thread([&] {
        mqk::launch_nvfp4_fake_quant(dx.as<void>(), dy.as<void>(), dt, rows, cols, 16,
                                     dg.as<float>(), nullptr);
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
        std::vector<uint8_t> got(n * es);
        dy.download(got.data(), got.size());
        const Vec g = decode(got, dt);
        const std::vector<uint8_t> wb = encode(want, dt);
        int bad = 0;
        for (int64_t i = 0; i < n && bad < 10; ++i) {
          const bool ok = std::isnan(want_t[i]) ? std::isnan(g[i])
                                                : std::memcmp(&got[i * es], &wb[i * es], es) == 0;
          if (!ok) {
            ++bad;
            ADD_FAILURE() << dtype_name(dt) << " global " << gamax << " i=" << i << " x=" << xr[i]
                          << " gpu=" << g[i] << " ref=" << want_t[i];
          }
        }
      });
    }
  }
}

// Large enough that the grid-stride loops (grid capped at 16 blocks per SM) run several iterations.
TEST(KernelVsRefLarge, GridStrideLoopsBf16) {
  SKIP_WITHOUT_GPU();
  const Case c{DType::kBF16, 2048, 8448, 0};
  const int64_t n = c.rows * c.cols;
  const Vec x = make_input(n, 8, 1.0f);
  const float gamax = 40.0f;
  DeviceBuffer dg(4);
  dg.upload(&gamax, 4);
  check_bit_exact(
      c, x,
      [&](const void* dx, void* dy) {
        mqk::launch_nvfp4_fake_quant(dx, dy, c.dt, c.rows, c.cols, 16, dg.as<float>(), nullptr);
      },
      [&](const float* hx, float* hy) {
        mqk::nvfp4_fake_quant_ref(hx, hy, c.rows, c.cols, 16, gamax);
      },
      "nvfp4 large");
  check_bit_exact(
      c, x,
      [&](const void* dx, void* dy) {
        mqk::launch_mx_fake_quant(dx, dy, c.dt, c.rows, c.cols, 32, mqk::ElemFormat::kE2M1,
                                  nullptr);
      },
      [&](const float* hx, float* hy) {
        mqk::mx_fake_quant_ref(hx, hy, c.rows, c.cols, 32, mqk::ElemFormat::kE2M1);
      },
      "mxfp4 large");
  check_bit_exact(
      c, x,
      [&](const void* dx, void* dy) {
        mqk::launch_fp8_fake_quant(dx, dy, c.dt, n, dg.as<float>(), {}, nullptr);
      },
      [&](const float* hx, float* hy) { mqk::fp8_fake_quant_ref(hx, hy, n, &gamax, {}); },
      "fp8 large");
  DeviceBuffer dx(n * 2), dout(4);
  const std::vector<uint8_t> xb = encode(x, c.dt);
  dx.upload(xb.data(), xb.size());
  mqk::launch_amax(dx.as<void>(), c.dt, n, dout.as<float>(), nullptr);
  CUDA_OK(cudaDeviceSynchronize());
  float got = 0;
  dout.download(&got, 4);
  const Vec xr = decode(xb, c.dt);
  EXPECT_EQ(got, mqk::amax_ref(xr.data(), n));
}

TEST(CudaDevice, CountIsNonNegativeAndLaunchesCheckArguments) {
  const int n = mqk::cuda_device_count();
  EXPECT_GE(n, 0);
  if (n == 0) GTEST_SKIP() << "no CUDA device";
  DeviceBuffer d(64);
  EXPECT_THROW(mqk::launch_mx_fake_quant(d.as<void>(), d.as<void>(), DType::kF32, 1, 4, 0,
                                         mqk::ElemFormat::kE2M1, nullptr),
               mqk::CudaError);
  EXPECT_THROW(mqk::launch_int_fake_quant(d.as<void>(), d.as<void>(), DType::kF32, 4, d.as<float>(),
                                          {}, 1, false, false, nullptr),
               mqk::CudaError);
}

}  // namespace
