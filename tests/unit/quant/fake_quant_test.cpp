// Fake-quant dispatch layer: amax layout mapping, parallel chunking, dtype handling, static block
// plan, Hadamard rotation. Expected values are closed forms or reference §2.12 examples.
#include "mq/quant/fake_quant.hpp"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "mq/core/error.hpp"
#include "mqk/detail/numerics.hpp"
#include "quant_test_util.hpp"

namespace mq::quant {
namespace {

using testing::expect_equal;
using testing::T;

// ---- amax layout ----

TEST(AmaxLayout, PerTensorScalar) {
  auto v = plan_amax_layout(at::zeros({3, 4}), at::scalar_tensor(2.0));
  EXPECT_EQ(v.layout.axis_len, 1);
  EXPECT_EQ(v.layout.inner, 1);
  EXPECT_EQ(v.amax.numel(), 1);
  EXPECT_EQ(v.amax.scalar_type(), at::kFloat);
}

TEST(AmaxLayout, PerRowAndPerLastDim) {
  auto r = plan_amax_layout(at::zeros({5, 7}), at::ones({5, 1}));
  EXPECT_EQ(r.layout.axis_len, 5);
  EXPECT_EQ(r.layout.inner, 7);
  auto c = plan_amax_layout(at::zeros({2, 3, 7}), at::ones({1, 1, 7}));
  EXPECT_EQ(c.layout.axis_len, 7);
  EXPECT_EQ(c.layout.inner, 1);
  // Lower-rank amax broadcasts from the right, as torch does.
  auto d = plan_amax_layout(at::zeros({2, 3, 7}), at::ones({7}));
  EXPECT_EQ(d.layout.axis_len, 7);
  EXPECT_EQ(d.layout.inner, 1);
}

TEST(AmaxLayout, ContiguousRunOfDims) {
  // Per-token amax (B, T, 1) on (B, T, H): one run of dims 0..1.
  auto v = plan_amax_layout(at::zeros({2, 3, 4}), at::ones({2, 3, 1}));
  EXPECT_EQ(v.layout.axis_len, 6);
  EXPECT_EQ(v.layout.inner, 4);
}

TEST(AmaxLayout, NonContiguousDimsExpand) {
  // 2-D block amax (M/b0, 1, N/b1, 1): dims 0 and 2 are not adjacent -> expanded to x's shape.
  auto x = at::zeros({2, 4, 3, 2});
  auto a = at::arange(6, at::kFloat).reshape({2, 1, 3, 1});
  auto v = plan_amax_layout(x, a);
  EXPECT_EQ(v.layout.axis_len, x.numel());
  EXPECT_EQ(v.layout.inner, 1);
  expect_equal(v.amax.reshape(x.sizes()), a.expand(x.sizes()));
}

TEST(AmaxLayout, BadShapeThrows) {
  EXPECT_THROW(plan_amax_layout(at::zeros({3, 4}), at::ones({2, 1})), mq::Error);
  EXPECT_THROW(plan_amax_layout(at::zeros({4}), at::ones({2, 4})), mq::Error);
}

// ---- INT / FP8 examples (reference §2.12) ----

TEST(IntFakeQuant, Int8PerTensorNarrowAndFull) {
  auto x = T({0.1f, -0.5f, 1.27f, 2.0f, -2.0f});
  auto amax = at::scalar_tensor(1.27f, at::kFloat);
  expect_equal(int_fake_quant(x, amax, 8, false, false), T({0.1f, -0.5f, 1.27f, 1.27f, -1.28f}));
  expect_equal(int_fake_quant(x, amax, 8, false, true), T({0.1f, -0.5f, 1.27f, 1.27f, -1.27f}));
}

TEST(IntFakeQuant, RoundHalfToEven) {
  auto y = int_fake_quant(T({0.5f, 1.5f, 2.5f, -0.5f, -1.5f}), at::scalar_tensor(127.0f), 8, false,
                          false);
  expect_equal(y, T({0.f, 2.f, 2.f, -0.f, -2.f}));
  EXPECT_TRUE(std::signbit(y[3].item<float>()));
}

TEST(IntFakeQuant, ZeroAndTinyAmaxGiveZero) {
  auto x = at::randn({4, 6});
  auto amax = T({1.0f, 0.0f, 1e-26f, 2.0f}).reshape({4, 1});
  auto y = int_fake_quant(x, amax, 8, false, false);
  EXPECT_TRUE(at::all(y[1] == 0).item<bool>());
  EXPECT_TRUE(at::all(y[2] == 0).item<bool>());
  EXPECT_FALSE(at::all(y[0] == 0).item<bool>());
}

TEST(IntFakeQuant, UnsignedNegativeAndNegativeAmaxThrow) {
  EXPECT_THROW(int_fake_quant(T({-1.f, 2.f}), at::scalar_tensor(2.0f), 8, true, false), mq::Error);
  EXPECT_THROW(int_fake_quant(T({1.f, 2.f}), at::scalar_tensor(-2.0f), 8, false, false), mq::Error);
  auto y = int_fake_quant(T({0.f, 1.f, 2.f}), at::scalar_tensor(2.0f), 8, true, false);
  // unsigned 8-bit: scale 255/2.
  EXPECT_FLOAT_EQ(y[1].item<float>(), std::rint(127.5f) / 127.5f);
}

TEST(Fp8FakeQuant, Examples) {
  auto x = T({0.3f, 1.1f, 17.0f, 500.0f, -0.001f, 0.0009f});
  expect_equal(fp8_fake_quant(x, at::scalar_tensor(448.0f)),
               T({0.3125f, 1.125f, 16.0f, 448.0f, -0.001953125f, 0.0f}));
  auto y = fp8_fake_quant(T({0.3f}), at::scalar_tensor(2.0f));
  EXPECT_EQ(y[0].item<float>(), 0.2857142984867096f);
}

TEST(Fp8FakeQuant, ZeroAmaxIsFiniteAndUsesOne) {
  auto x = T({0.3f, -1.1f, 0.0f});
  auto y = fp8_fake_quant(x, at::scalar_tensor(0.0f));
  expect_equal(y, fp8_fake_quant(x, at::scalar_tensor(1.0f)));
  EXPECT_TRUE(at::all(at::isfinite(y)).item<bool>());
}

// The CPU loops (vectorised: e4m3_round_sat_magic, int_fake_quant_one_magic, mask fp16 conversions)
// against the scalar references fp8_fake_quant_one / int_fake_quant_one with c10's casts, element
// by element and bit for bit (NaN payloads, signed zeros): every 16-bit pattern for bfloat16 and
// float16, random and special fp32 patterns for float32; per tensor and per row, with zero, tiny,
// ordinary and huge amaxes. `quant(x, amax)` is the fake quant under test, `ref(v, amax)` the
// scalar reference.
template <typename T, typename Bits, typename Quant, typename Ref>
void expect_cpu_equals_scalar_reference(const std::vector<Bits>& pattern, at::ScalarType dt,
                                        Quant quant, Ref ref) {
  const int64_t rows = 8;
  const int64_t cols = static_cast<int64_t>(pattern.size()) / rows;
  at::Tensor x = at::empty({rows, cols}, at::TensorOptions().dtype(dt));
  std::memcpy(x.data_ptr(), pattern.data(), rows * cols * sizeof(Bits));
  const std::vector<float> amaxes = {
      0.0f, 5.9604644775390625e-08f, 1e-6f, 0.02f, 1.0f, 3.7f, 448.0f, 3e38f};
  auto check = [&](const at::Tensor& amax) {
    const at::Tensor y = quant(x, amax);
    ASSERT_EQ(y.scalar_type(), dt);
    const at::Tensor ac = amax.reshape({-1}).contiguous();
    const std::vector<float> a(ac.data_ptr<float>(), ac.data_ptr<float>() + ac.numel());
    const T* xp = static_cast<const T*>(x.data_ptr());
    const Bits* yp = static_cast<const Bits*>(y.data_ptr());
    int64_t bad = 0;
    for (int64_t i = 0; i < rows * cols; ++i) {
      const float am = a[a.size() == 1 ? 0 : i / cols];
      const T want = static_cast<T>(ref(static_cast<float>(xp[i]), am));
      Bits wb;
      std::memcpy(&wb, &want, sizeof wb);
      if (wb != yp[i] && ++bad <= 5)
        ADD_FAILURE() << std::hex << "input 0x" << +pattern[i] << " amax " << am << ": got 0x"
                      << +yp[i] << ", reference 0x" << +wb;
    }
    EXPECT_EQ(bad, 0) << "dtype " << dt << ", amax " << amax.sizes();
  };
  for (float am : amaxes) check(at::scalar_tensor(am, at::kFloat));
  check(at::tensor(amaxes, at::kFloat).reshape({rows, 1}));
}

// Every bf16/fp16 pattern, and fp32: random patterns, half of them scaled near the amaxes' grids,
// and the specials.
struct CpuLoopPatterns {
  std::vector<uint16_t> all16;
  std::vector<uint32_t> f32;
};
CpuLoopPatterns cpu_loop_patterns() {
  CpuLoopPatterns p;
  p.all16.resize(1 << 16);
  for (uint32_t i = 0; i < p.all16.size(); ++i) p.all16[i] = static_cast<uint16_t>(i);

  std::mt19937 rng(5);
  std::vector<uint32_t>& f32 = p.f32;
  f32.resize(1 << 16);
  for (auto& v : f32) v = static_cast<uint32_t>(rng());
  const uint32_t special[] = {0x00000000u, 0x80000000u, 0x00000001u, 0x007fffffu, 0x00800000u,
                              0x3f800000u, 0x43e00000u, 0x7f7fffffu, 0x7f800000u, 0xff800000u,
                              0x7fc00000u, 0xffc00001u, 0x7f800001u, 0x7fbfffffu};
  for (size_t i = 0; i < f32.size() / 2; ++i) {  // half of them near the amaxes' grids
    const float m =
        std::ldexp(static_cast<float>(rng() & 0xffffff), -24 + static_cast<int>(rng() % 40) - 30);
    std::memcpy(&f32[i], &m, 4);
    f32[i] ^= rng() & 0x80000000u;
  }
  for (size_t i = 0; i < std::size(special); ++i) f32[i * 97] = special[i];
  return p;
}

template <typename Quant, typename Ref>
void expect_cpu_loops_equal_scalar_reference(Quant quant, Ref ref) {
  const CpuLoopPatterns p = cpu_loop_patterns();
  expect_cpu_equals_scalar_reference<at::BFloat16>(p.all16, at::kBFloat16, quant, ref);
  expect_cpu_equals_scalar_reference<at::Half>(p.all16, at::kHalf, quant, ref);
  expect_cpu_equals_scalar_reference<float>(p.f32, at::kFloat, quant, ref);
}

TEST(Fp8FakeQuant, CpuLoopEqualsScalarReferenceBitForBit) {
  expect_cpu_loops_equal_scalar_reference(
      [](const at::Tensor& x, const at::Tensor& a) { return fp8_fake_quant(x, a); },
      [](float v, float amax) {
        const auto sc = mqk::detail::fp8_scales(amax, /*reciprocal=*/true);
        return mqk::detail::fp8_fake_quant_one(v, sc);
      });
}

TEST(IntFakeQuant, CpuLoopEqualsScalarReferenceBitForBit) {
  for (int bits : {4, 8})
    for (bool narrow : {false, true}) {
      const auto b = mqk::detail::int_bounds(bits, false, narrow);
      expect_cpu_loops_equal_scalar_reference(
          [&](const at::Tensor& x, const at::Tensor& a) {
            return int_fake_quant(x, a, bits, false, narrow);
          },
          [&](float v, float amax) {
            return mqk::detail::int_fake_quant_one(v, amax, b, mqk::IntZeroAmaxMode::kEager);
          });
    }
}

// Per-channel dispatch (direct layout and chunked parallel path) equals the expanded fallback.
class ChannelSweep : public ::testing::TestWithParam<std::vector<int64_t>> {};

TEST_P(ChannelSweep, LayoutMatchesExpanded) {
  auto shape = GetParam();
  at::manual_seed(1);
  auto x = at::randn(shape) * 3;
  for (int64_t keep = 0; keep < static_cast<int64_t>(shape.size()); ++keep) {
    std::vector<int64_t> red;
    for (int64_t d = 0; d < static_cast<int64_t>(shape.size()); ++d)
      if (d != keep) red.push_back(d);
    auto amax = at::amax(at::abs(x), red, true) * 0.7;
    auto expanded = amax.expand(x.sizes()).contiguous();
    // The expanded tensor is used through its own (fallback) path when its dims are not one run.
    expect_equal(int_fake_quant(x, amax, 4, false, false),
                 int_fake_quant(x, expanded, 4, false, false));
    expect_equal(fp8_fake_quant(x, amax), fp8_fake_quant(x, expanded));
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, ChannelSweep,
                         ::testing::Values(std::vector<int64_t>{1, 33}, std::vector<int64_t>{33, 1},
                                           std::vector<int64_t>{3, 5, 7},
                                           std::vector<int64_t>{2, 70000},
                                           std::vector<int64_t>{70001, 2},
                                           std::vector<int64_t>{5, 3, 4099}));

TEST(FakeQuantDtypes, ComputesInFp32AndCastsBack) {
  at::manual_seed(2);
  auto x32 = at::randn({17, 33});
  for (auto dt : {at::kBFloat16, at::kHalf}) {
    auto x = x32.to(dt);
    auto amax = at::scalar_tensor(1.5, at::kFloat);
    auto y = int_fake_quant(x, amax, 8, false, false);
    EXPECT_EQ(y.scalar_type(), dt);
    expect_equal(y, int_fake_quant(x.to(at::kFloat), amax, 8, false, false).to(dt));
    expect_equal(fp8_fake_quant(x, amax), fp8_fake_quant(x.to(at::kFloat), amax).to(dt));
    expect_equal(nvfp4_fake_quant(x, 16, amax),
                 nvfp4_fake_quant(x.to(at::kFloat), 16, amax).to(dt));
    expect_equal(mx_fake_quant(x, 32, mqk::ElemFormat::kE2M1),
                 mx_fake_quant(x.to(at::kFloat), 32, mqk::ElemFormat::kE2M1).to(dt));
  }
}

// mqk's mask form of c10's software fp16 conversions (used by the fused CPU loops) against c10's
// casts: every fp16 pattern to fp32, and to fp16 every fp32 pattern around each fp16 value and
// rounding midpoint, the overflow and underflow edges, Inf/NaN, and 4M random patterns (all 2^32
// once outside the suite).
TEST(FakeQuantDtypes, Fp16MaskConversionsEqualC10Casts) {
  auto f32_bits = [](float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
  };
  for (uint32_t h = 0; h < (1u << 16); ++h) {
    c10::Half c;
    c.x = static_cast<uint16_t>(h);
    ASSERT_EQ(f32_bits(mqk::detail::fp16_bits_to_float(c.x)), f32_bits(static_cast<float>(c)))
        << std::hex << h;
  }
  std::vector<uint32_t> in;
  for (uint32_t h = 0; h < 0x7c00u;
       ++h) {  // finite fp16 magnitudes: value and midpoint to the next
    const uint32_t v = f32_bits(mqk::detail::fp16_bits_to_float(static_cast<uint16_t>(h)));
    const uint32_t mid = f32_bits((mqk::detail::fp16_bits_to_float(static_cast<uint16_t>(h)) +
                                   mqk::detail::fp16_bits_to_float(static_cast<uint16_t>(h + 1))) /
                                  2);
    for (uint32_t c : {v, mid})
      for (int d = -2; d <= 2; ++d) in.push_back(c + static_cast<uint32_t>(d));
  }
  for (uint32_t v : {0x00000000u, 0x00000001u, 0x33000000u, 0x33000001u, 0x477fefffu, 0x477ff000u,
                     0x477ff001u, 0x7f7fffffu, 0x7f800000u, 0x7f800001u, 0x7fc00000u, 0x7fffffffu})
    in.push_back(v);
  const size_t n = in.size();
  for (size_t i = 0; i < n; ++i) in.push_back(in[i] | 0x80000000u);
  std::mt19937 rng(3);
  for (int i = 0; i < (1 << 22); ++i) in.push_back(static_cast<uint32_t>(rng()));
  std::vector<float> x(in.size());
  std::vector<uint16_t> y(in.size());
  for (size_t i = 0; i < in.size(); ++i) std::memcpy(&x[i], &in[i], 4);
  for (size_t i = 0; i < x.size(); ++i) y[i] = mqk::detail::float_to_fp16_bits(x[i]);
  int64_t bad = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const uint16_t want = c10::Half(x[i]).x;
    if (y[i] != want && ++bad <= 5)
      ADD_FAILURE() << std::hex << "fp32 0x" << in[i] << ": 0x" << y[i] << ", c10 0x" << want;
  }
  EXPECT_EQ(bad, 0);
}

TEST(FakeQuantDtypes, NonContiguousInput) {
  auto x = at::randn({8, 6}).t();
  ASSERT_FALSE(x.is_contiguous());
  auto amax = at::scalar_tensor(2.0, at::kFloat);
  expect_equal(int_fake_quant(x, amax, 8, false, false),
               int_fake_quant(x.contiguous(), amax, 8, false, false));
}

TEST(Nvfp4FakeQuant, WorkedExample) {
  auto x = T({0.0f, 0.3f, -0.6f, 0.9f, 1.2f, -1.6f, 2.0f, 2.4f, -3.1f, 3.3f, 4.0f, -4.6f, 5.2f,
              6.1f, -7.0f, 7.5f});
  auto y = nvfp4_fake_quant(x.reshape({1, 16}), 16, at::scalar_tensor(12.0f)).reshape({-1});
  const float s = 1.2857143878936768f;
  std::vector<float> q = {0, 0, -.5f, .5f, 1, -1, 1.5f, 2, -2, 3, 3, -4, 4, 4, -6, 6};
  for (int i = 0; i < 16; ++i) EXPECT_EQ(y[i].item<float>(), q[i] * s) << i;
}

TEST(Nvfp4FakeQuant, RowsAreIndependentAndPartialBlocksPad) {
  at::manual_seed(3);
  auto x = at::randn({33, 40});  // 40 = 2 full blocks + a partial block of 8
  auto g = at::scalar_tensor(4.0f);
  auto y = nvfp4_fake_quant(x, 16, g);
  for (int64_t r : {0, 17, 32}) expect_equal(y[r], nvfp4_fake_quant(x[r].unsqueeze(0), 16, g)[0]);
  // The partial block equals the block zero-padded to 16.
  auto padded = at::zeros({33, 48});
  padded.narrow(1, 0, 40).copy_(x);
  expect_equal(y, nvfp4_fake_quant(padded, 16, g).narrow(1, 0, 40).contiguous());
}

TEST(Nvfp4StaticFakeQuant, EqualsDynamicWhenAmaxIsBlockMax) {
  at::manual_seed(4);
  auto x = at::randn({6, 32});
  auto blocks = x.reshape({-1, 16});
  auto bamax = at::amax(at::abs(blocks), {1}, true);
  auto g = at::abs(x).max();
  auto ys = nvfp4_static_fake_quant(blocks, 16, bamax, g, false).reshape({6, 32});
  auto yd = nvfp4_fake_quant(x, 16, g);
  EXPECT_TRUE(at::allclose(ys, yd, 1e-3, 1e-6));
  EXPECT_THROW(nvfp4_static_fake_quant(blocks, 16, bamax.narrow(0, 0, 3), g, false), mq::Error);
}

TEST(MxFakeQuant, Examples) {
  auto y = mx_fake_quant(T({0.1f, 0.2f, 0.35f, 0.16f, 0.85f, 0.9f, 0.67f, 0.76f}).reshape({1, 8}),
                         8, mqk::ElemFormat::kE2M1);
  expect_equal(y.reshape({-1}), T({0.125f, 0.25f, 0.375f, 0.125f, 0.75f, 1.0f, 0.75f, 0.75f}));
  auto y8 = mx_fake_quant(
      T({284.205f, 189.103f, 127.758f, 305.991f, 345.731f, 98.383f, 676.081f, 540.471f})
          .reshape({1, 8}),
      8, mqk::ElemFormat::kE4M3);
  expect_equal(y8.reshape({-1}), T({288, 192, 128, 320, 352, 96, 704, 512}));
  EXPECT_THROW(mx_fake_quant(at::zeros({1, 8}), 12, mqk::ElemFormat::kE2M1), mq::Error);
}

TEST(MxElemFormat, Mapping) {
  EXPECT_EQ(mx_elem_format(config::NumBits::floating(2, 1)), mqk::ElemFormat::kE2M1);
  EXPECT_EQ(mx_elem_format(config::NumBits::floating(4, 3)), mqk::ElemFormat::kE4M3);
  EXPECT_EQ(mx_elem_format(config::NumBits::integer(8)), mqk::ElemFormat::kInt8);
  EXPECT_THROW(mx_elem_format(config::NumBits::integer(4)), mq::Error);
}

// ---- static block plan (reference §2.4, §7 cases 19-21) ----

config::BlockSizes blocks(
    std::initializer_list<std::pair<const int, std::optional<int64_t>>> axes) {
  config::BlockSizes b;
  b.axes = config::AxisBlockMap(axes);
  return b;
}

TEST(StaticBlockPlan, LastAxisFlattens) {
  auto p = StaticBlockPlan::make({8, 4}, blocks({{-1, 2}}));
  EXPECT_EQ(p.block_reshape, (std::vector<int64_t>{-1, 2}));
  EXPECT_EQ(p.axis, (std::vector<int>{0}));
  EXPECT_TRUE(p.padding.empty());
  EXPECT_EQ(*p.amax_shape_for_export, (std::vector<int64_t>{8, -1}));
  auto x = at::randn({8, 4});
  EXPECT_EQ(p.apply(x).sizes(), (at::IntArrayRef{16, 2}));
  expect_equal(p.restore(p.apply(x)), x);
}

TEST(StaticBlockPlan, LastAxisPadding) {
  auto p = StaticBlockPlan::make({3, 4, 5}, blocks({{-1, 2}}));
  EXPECT_EQ(p.padding, (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(p.padded_shape, (std::vector<int64_t>{3, 4, 6}));
  auto x = at::randn({3, 4, 5});
  auto xb = p.apply(x);
  EXPECT_EQ(xb.sizes(), (at::IntArrayRef{36, 2}));
  EXPECT_EQ(xb.reshape({3, 4, 6}).select(2, 5).abs().sum().item<float>(), 0.0f);
  expect_equal(p.restore(xb), x);
}

TEST(StaticBlockPlan, TwoAxes) {
  auto p = StaticBlockPlan::make({2, 6, 4}, blocks({{-1, 2}, {1, 3}}));
  EXPECT_EQ(p.block_reshape, (std::vector<int64_t>{2, 2, 3, 2, 2}));
  EXPECT_EQ(p.axis, (std::vector<int>{0, 1, 3}));
  EXPECT_FALSE(p.amax_shape_for_export.has_value());
  auto q = StaticBlockPlan::make({2, 10, 5}, blocks({{-1, 2}, {1, 3}}));
  EXPECT_EQ(q.padding, (std::vector<int64_t>{0, 1, 0, 2}));
  EXPECT_EQ(q.padded_shape, (std::vector<int64_t>{2, 12, 6}));
  auto x = at::randn({2, 10, 5});
  expect_equal(q.restore(q.apply(x)), x);
}

TEST(StaticBlockPlan, FixedShapeError) {
  auto p = StaticBlockPlan::make({3, 4, 5}, blocks({{-1, 2}}));
  try {
    p.apply(at::randn({3, 4, 6}));
    FAIL() << "expected a throw";
  } catch (const mq::Error& e) {
    EXPECT_STREQ(e.what(),
                 "Input shape has changed from torch.Size([3, 4, 6]) to torch.Size([3, 4, 7]). "
                 "Block-quantization requires a fixed input shape.");
  }
}

// ---- Hadamard rotation (reference §2.10) ----

TEST(Hadamard, OrthonormalAndSelfInverse) {
  for (int64_t dim : {1, 2, 8, 64}) {
    auto eye = at::eye(dim);
    auto h = normalized_hadamard_transform(eye, std::nullopt, false);
    EXPECT_TRUE(at::allclose(at::matmul(h, h.t()), eye, 1e-5, 1e-6)) << dim;
    auto x = at::randn({3, dim});
    EXPECT_TRUE(at::allclose(
        normalized_hadamard_transform(normalized_hadamard_transform(x, std::nullopt, false),
                                      std::nullopt, false),
        x, 1e-5, 1e-5));
  }
  // Sylvester order: H_2 = [[1, 1], [1, -1]] / sqrt 2.
  auto h2 = normalized_hadamard_transform(at::eye(2), std::nullopt, false);
  const float r = 1.0f / std::sqrt(2.0f);
  expect_equal(h2, T({r, r, r, -r}).reshape({2, 2}));
}

TEST(Hadamard, BlockSizes) {
  // 24 is not a power of 2: its largest power-of-2 divisor 8 is used per block.
  auto x = at::randn({2, 24});
  auto y = normalized_hadamard_transform(x, std::nullopt, false);
  auto y8 = normalized_hadamard_transform(x.reshape({6, 8}), std::nullopt, false).reshape({2, 24});
  EXPECT_TRUE(at::allclose(y, y8, 1e-6, 1e-6));
  EXPECT_THROW(normalized_hadamard_transform(at::randn({2, 7}), std::nullopt, false), mq::Error);
  EXPECT_THROW(normalized_hadamard_transform(x, 16, false), mq::Error);  // 24 % 16 != 0
  EXPECT_THROW(normalized_hadamard_transform(x, 6, false), mq::Error);   // not a power of 2
  auto xb = x.to(at::kBFloat16);
  EXPECT_EQ(normalized_hadamard_transform(xb, 8, true).scalar_type(), at::kBFloat16);
}

}  // namespace
}  // namespace mq::quant
