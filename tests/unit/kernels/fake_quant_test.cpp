// Fake-quant references: the worked examples of reference §2.12 / §7 exactly, the zero-amax rules,
// per-channel layouts, idempotence, and zero padding of partial blocks on odd shapes.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "kernels_test_util.hpp"
#include "mqk/detail/numerics.hpp"
#include "mqk/ref.hpp"

namespace {

using mqk::testing::bits;
using mqk::testing::random_vec;
using mqk::testing::Vec;

void expect_bits_eq(const Vec& got, const Vec& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_EQ(bits(got[i]), bits(want[i])) << "i=" << i << " got " << got[i] << " want " << want[i];
}

// Equal as numbers (+0 == -0): for properties that do not pin the sign of a zero.
void expect_values_eq(const Vec& got, const Vec& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i], want[i]) << "i=" << i;
}

Vec int_fq(const Vec& x, float amax, int nb = 8, bool narrow = false, bool uns = false) {
  Vec y(x.size());
  mqk::int_fake_quant_ref(x.data(), y.data(), static_cast<int64_t>(x.size()), &amax, {}, nb, uns,
                          narrow);
  return y;
}

Vec fp8_fq(const Vec& x, float amax) {
  Vec y(x.size());
  mqk::fp8_fake_quant_ref(x.data(), y.data(), static_cast<int64_t>(x.size()), &amax, {});
  return y;
}

Vec mx_fq(const Vec& x, int block, mqk::ElemFormat f, int64_t rows = 1) {
  Vec y(x.size());
  mqk::mx_fake_quant_ref(x.data(), y.data(), rows, static_cast<int64_t>(x.size()) / rows, block, f);
  return y;
}

TEST(IntFakeQuant, Int8WorkedExample) {
  const Vec x = {0.1f, -0.5f, 1.27f, 2.0f, -2.0f};
  // scale = fp32(127/1.27) = 100; q = [10, -50, 127, 127, -128]; out = q / 100.
  expect_bits_eq(int_fq(x, 1.27f), {10.0f / 100.0f, -50.0f / 100.0f, 127.0f / 100.0f,
                                    127.0f / 100.0f, -128.0f / 100.0f});
  EXPECT_FLOAT_EQ(int_fq(x, 1.27f)[4], -1.28f);
  EXPECT_FLOAT_EQ(int_fq(x, 1.27f, 8, true)[4], -1.27f);
}

TEST(IntFakeQuant, RoundHalfToEven) {
  expect_bits_eq(int_fq({0.5f, 1.5f, 2.5f, -0.5f, -1.5f}, 127.0f),
                 {0.0f, 2.0f, 2.0f, -0.0f, -2.0f});
  expect_bits_eq(int_fq({0.0f, 0.4f, 1.1f, 2.0f}, 127.0f), {0.0f, 0.0f, 1.0f, 2.0f});
  // pre_quant_scale applied by the caller (§7 item 16)
  expect_bits_eq(int_fq({0.0f, 0.8f, 2.2f, 4.0f}, 127.0f), {0.0f, 1.0f, 2.0f, 4.0f});
  expect_bits_eq(int_fq({0.0f, 0.8f, 3.3000002f, 8.0f}, 127.0f), {0.0f, 1.0f, 3.0f, 8.0f});
}

TEST(IntFakeQuant, ZeroAndTinyAmaxGiveZero) {
  expect_bits_eq(int_fq({1.0f, -3.0f}, 0.0f), {0.0f, 0.0f});
  expect_bits_eq(int_fq({1.0f, -3.0f}, 1e-26f), {0.0f, 0.0f});
  // ModelOpt's CUDA kernel zeroes amax < 2^-24 (always +0); exactly 2^-24 still quantizes.
  expect_bits_eq(int_fq({1.0f, -3.0f}, std::nextafter(std::ldexp(1.0f, -24), 0.0f)), {0.0f, 0.0f});
  EXPECT_GT(int_fq({1.0f}, std::ldexp(1.0f, -24))[0], 0.0f);
}

TEST(IntFakeQuant, ZeroAmaxModesFollowModelOptPaths) {
  auto run = [](const Vec& x, float amax, mqk::IntZeroAmaxMode zero) {
    Vec y(x.size());
    mqk::int_fake_quant_ref(x.data(), y.data(), static_cast<int64_t>(x.size()), &amax, {}, 8, false,
                            false, zero);
    return y;
  };
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float eps = std::ldexp(1.0f, -24);
  // CUDA kernel: +0 whatever x; eager path (_tensor_quant): scale 0, so x * 0 keeps the sign and
  // NaN.
  const Vec x = {1.0f, -3.0f, -0.0f, nan};
  const Vec cuda = run(x, 0.0f, mqk::IntZeroAmaxMode::kCudaKernel);
  for (float v : cuda) EXPECT_EQ(bits(v), 0u);
  const Vec eager = run(x, 0.0f, mqk::IntZeroAmaxMode::kEager);
  EXPECT_EQ(bits(eager[0]), 0u);
  EXPECT_EQ(bits(eager[1]), 0x80000000u);
  EXPECT_EQ(bits(eager[2]), 0x80000000u);
  EXPECT_TRUE(std::isnan(eager[3]));
  // The thresholds differ: amax == 2^-24 is zeroed by the eager path (<=), quantized by the kernel
  // (<).
  EXPECT_EQ(bits(run({1.0f}, eps, mqk::IntZeroAmaxMode::kEager)[0]), 0u);
  EXPECT_GT(run({1.0f}, eps, mqk::IntZeroAmaxMode::kCudaKernel)[0], 0.0f);
  // Above the threshold both modes are the same arithmetic.
  const Vec r = random_vec(64, 9, 2.0f);
  expect_bits_eq(run(r, 1.7f, mqk::IntZeroAmaxMode::kEager),
                 run(r, 1.7f, mqk::IntZeroAmaxMode::kCudaKernel));
}

TEST(IntFakeQuant, Int4AndUnsignedBounds) {
  // int4, narrow False: [-8, 7], scale 7/amax
  expect_bits_eq(int_fq({7.0f, -7.0f, -9.0f, 100.0f}, 7.0f, 4), {7.0f, -7.0f, -8.0f, 7.0f});
  expect_bits_eq(int_fq({0.0f, 300.0f, 254.6f}, 255.0f, 8, false, true), {0.0f, 255.0f, 255.0f});
  Vec y(1);
  const float x = -1.0f, amax = 1.0f;
  EXPECT_THROW(mqk::int_fake_quant_ref(&x, y.data(), 1, &amax, {}, 8, true, false),
               std::invalid_argument);
}

TEST(IntFakeQuant, PerChannelLayout) {
  // (2, 3) with amax per row (axis 0): index = (i / 3) % 2.
  const Vec x = {0.5f, 1.0f, -1.0f, 0.5f, 1.0f, -1.0f};
  const float amax[2] = {1.0f, 0.0f};
  Vec y(6);
  mqk::int_fake_quant_ref(x.data(), y.data(), 6, amax, {2, 3}, 8, false, false);
  expect_bits_eq(y, {64.0f / 127.0f, 1.0f, -1.0f, 0.0f, 0.0f, 0.0f});
  // per column (axis -1): inner 1
  const float amax_c[3] = {127.0f, 1.0f, 2.0f};
  mqk::int_fake_quant_ref(x.data(), y.data(), 6, amax_c, {3, 1}, 8, false, false);
  const float s2 = 127.0f / 2.0f;
  expect_bits_eq(y,
                 {0.0f, 1.0f, std::rint(-1.0f * s2) / s2, 0.0f, 1.0f, std::rint(-1.0f * s2) / s2});
}

TEST(Fp8FakeQuant, WorkedExamples) {
  expect_bits_eq(fp8_fq({0.3f, 1.1f, 17.0f, 500.0f, -0.001f, 0.0009f}, 448.0f),
                 {0.3125f, 1.125f, 16.0f, 448.0f, -0.001953125f, 0.0f});
  const Vec y = fp8_fq({0.3f}, 2.0f);
  EXPECT_EQ(bits(y[0]), bits(0.2857142984867096f));
  EXPECT_EQ(bits(1.0f / 224.0f), bits(0.004464285913854837f));
}

TEST(Fp8FakeQuant, ReciprocalScaleModeMatchesEagerTorch) {
  // Golden from ModelOpt 0.47.0 `_fp8_eager` on CPU (scale = amax.reciprocal() * 448), for an amax
  // where that differs by one ulp from the CUDA extension's 448 / amax.
  const float amax = 0x1.5617fcp+7f;
  const Vec x = {0x1.04ca22p-11f, 1.0f, -50.0f, 100.0f, 0x1.333334p-2f};
  Vec y(x.size());
  mqk::fp8_fake_quant_ref(x.data(), y.data(), 5, &amax, {}, mqk::Fp8ScaleMode::kReciprocal);
  expect_bits_eq(
      y, {0x1.86f6d6p-11f, 0x1.e8b48cp-1f, -0x1.86f6d6p+5f, 0x1.86f6d6p+6f, 0x1.3da88ep-2f});
  Vec d(x.size());
  mqk::fp8_fake_quant_ref(x.data(), d.data(), 5, &amax, {}, mqk::Fp8ScaleMode::kDivide);
  EXPECT_NE(bits(d[1]), bits(y[1]));
  EXPECT_EQ(bits(d[1]), bits(mqk::e4m3_round(448.0f / amax) * (1.0f / (448.0f / amax))));
}

TEST(Fp8FakeQuant, ZeroAmaxIsOneNotZero) {
  // amax 0 -> 1.0 (scale 448): output finite and non-zero.
  const Vec y = fp8_fq({0.5f, -2.0f, 0.001f}, 0.0f);
  const float inv = 1.0f / 448.0f;
  expect_bits_eq(y, {224.0f * inv, -448.0f * inv, 0.4375f * inv});
  expect_bits_eq(fp8_fq({0.5f, -2.0f, 0.001f}, std::ldexp(1.0f, -25)), y);
}

TEST(Nvfp4FakeQuant, WorkedBlockExample) {
  const Vec x = {0.0f,  0.3f, -0.6f, 0.9f,  1.2f, -1.6f, 2.0f,  2.4f,
                 -3.1f, 3.3f, 4.0f,  -4.6f, 5.2f, 6.1f,  -7.0f, 7.5f};
  Vec y(16);
  mqk::nvfp4_fake_quant_ref(x.data(), y.data(), 1, 16, 16, 12.0f);
  const float bs = 1.2857143878936768f;
  EXPECT_EQ(bits(288.0f * (12.0f / 2688.0f)), bits(bs));
  const float q[16] = {0, 0, .5f, .5f, 1, 1, 1.5f, 2, 2, 3, 3, 4, 4, 4, 6, 6};
  for (int i = 0; i < 16; ++i) EXPECT_EQ(bits(y[i]), bits((x[i] >= 0 ? q[i] : -q[i]) * bs)) << i;
}

TEST(Nvfp4FakeQuant, GlobalScaleIsTimesReciprocalOf2688) {
  // torch on CUDA computes global_amax / 2688 as global_amax * fp32(1/2688). For amax 0.7 that is
  // one ulp away from the division and moves the whole block: ModelOpt's H100 output for a constant
  // 0.7 tensor is 0x3f333334 (tests/conformance nvfp4_b16/const), the divided scale gives
  // 0x3f333332.
  const float r2688 = 1.0f / 2688.0f;
  EXPECT_EQ(bits(mqk::detail::nvfp4_global_scale(0.7f)), bits(0.7f * r2688));
  EXPECT_NE(bits(mqk::detail::nvfp4_global_scale(0.7f, mqk::ScalarDivMode::kDivide)),
            bits(0.7f * r2688));
  EXPECT_EQ(bits(mqk::detail::nvfp4_global_scale(0.7f, mqk::ScalarDivMode::kDivide)),
            bits(0.7f / 2688.0f));
  const Vec x(16, 0.7f);
  Vec y(16);
  mqk::nvfp4_fake_quant_ref(x.data(), y.data(), 1, 16, 16, 0.7f);
  for (float v : y) EXPECT_EQ(bits(v), 0x3f333334u);
}

TEST(Nvfp4FakeQuant, NeverNegativeZero) {
  // Triton's `tl.where(x >= 0, q, -q)` negates as 0 - q: values that round to zero are +0 for
  // either sign.
  Vec x(16, 0.0f);
  x[0] = 6.0f;
  x[1] = -0.1f;
  x[2] = -0.0f;
  x[3] = -1e-30f;
  x[4] = 0.1f;
  Vec y(16);
  mqk::nvfp4_fake_quant_ref(x.data(), y.data(), 1, 16, 16, 6.0f);
  EXPECT_EQ(bits(y[0]), bits(6.0f));
  for (int i = 1; i < 16; ++i) EXPECT_EQ(bits(y[i]), 0u) << i;
}

TEST(Nvfp4FakeQuant, TableValuesAndBoundsPlusMinus) {
  // Global amax = block amax = 6: gs = 6/2688, s8 = e4m3(6/(6 gs)) = 448, block scale = 448 gs = 1.
  auto run = [](Vec x) {
    Vec y(x.size());
    mqk::nvfp4_fake_quant_ref(x.data(), y.data(), 1, static_cast<int64_t>(x.size()), 16, 6.0f);
    return y;
  };
  const Vec table = {0, .5f, 1, 1.5f, 2, 3, 4, 6, 0, -.5f, -1, -1.5f, -2, -3, -4, -6};
  expect_bits_eq(run(table), table);
  // Bounds -0.1 and +0.1 (§7 item 27); 6 keeps the block scale at 1.
  const Vec minus = {0.15f, 0.65f, 1.15f, 1.65f, 2.4f, 3.4f, 4.9f, 6.0f};
  const Vec plus = {0.35f, 0.85f, 1.35f, 1.85f, 2.6f, 3.6f, 5.1f, 6.0f};
  expect_bits_eq(run(minus), {0, .5f, 1, 1.5f, 2, 3, 4, 6});
  expect_bits_eq(run(plus), {.5f, 1, 1.5f, 2, 3, 4, 6, 6});
  // Exact bounds with IEEE division: RNE on the E2M1 grid.
  expect_bits_eq(run({0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f, 6.0f}),
                 {0, 1, 1, 2, 2, 4, 4, 6});
}

TEST(Nvfp4FakeQuant, Fp8ScaleUnderflowGivesZeroBlock) {
  // §7 item 28: block amax 6*2^-11 with gs = 1 (global amax 2688): s8 = e4m3(2^-11) = 0 ->
  // guard 1.0.
  Vec x(16, 0.0f);
  x[0] = 6.0f * std::ldexp(1.0f, -11);
  x[1] = -x[0];
  Vec y(16);
  mqk::nvfp4_fake_quant_ref(x.data(), y.data(), 1, 16, 16, 2688.0f);
  for (float v : y) EXPECT_EQ(v, 0.0f);
  // Zero global amax uses gs = 1e-12 and does not produce NaN.
  Vec z(16, 0.0f), w(16);
  mqk::nvfp4_fake_quant_ref(z.data(), w.data(), 1, 16, 16, 0.0f);
  for (float v : w) EXPECT_EQ(bits(v), 0u);
}

TEST(Nvfp4StaticFakeQuant, EqualsDynamicWhenAmaxIsBlockMax) {
  const int64_t rows = 5, cols = 64;
  Vec x = random_vec(rows * cols, 21, 2.0f);
  Vec bamax(rows * cols / 16);
  for (size_t b = 0; b < bamax.size(); ++b) bamax[b] = mqk::amax_ref(x.data() + b * 16, 16);
  const float gamax = mqk::amax_ref(x.data(), rows * cols);
  Vec ys(x.size()), yd(x.size());
  mqk::nvfp4_static_fake_quant_ref(x.data(), ys.data(), rows, cols, 16, bamax.data(), gamax, false);
  mqk::nvfp4_fake_quant_ref(x.data(), yd.data(), rows, cols, 16, gamax);
  // Same codes and FP8 scale; the static path rounds s = amax/6 through scaled_e4m3's q * (1/scale)
  // while the dynamic one multiplies s8 * gs, so values agree to fp32 rounding (§7 item 32: rtol
  // 1e-3).
  for (size_t i = 0; i < x.size(); ++i)
    EXPECT_NEAR(ys[i], yd[i], 1e-5f * std::fabs(yd[i]) + 1e-30f) << i;
}

TEST(Nvfp4StaticFakeQuant, FourOverSixAndZeroBlock) {
  // Block amax 6, global 6: A = 6*(448/256)/6 = 1.75, scale 448/1.75 = 256, s = 1 -> fp8(256) *
  // (1/256).
  const Vec x = {6.0f, -3.0f, 1.0f, 0.3f};
  const float bamax = 6.0f;
  Vec y(4);
  mqk::nvfp4_static_fake_quant_ref(x.data(), y.data(), 1, 4, 16, &bamax, 6.0f, true);
  expect_bits_eq(y, {6.0f, -3.0f, 1.0f, 0.5f});
  // Block amax 0: the block scale is 0 and the Triton kernel writes an all +0 block.
  const float zero = 0.0f;
  const Vec z = {0.0f, -0.0f};
  Vec w(2);
  mqk::nvfp4_static_fake_quant_ref(z.data(), w.data(), 1, 2, 16, &zero, 1.0f, false);
  expect_bits_eq(w, {0.0f, 0.0f});
  // A block scale that underflows FP8 (s = 1e-6/6 with A = 448, scale 1): the block is +0 even
  // though x is not zero (with the guard's scale 1.0 instead, -1e-6 would give -0).
  const float tiny = 1e-6f;
  const Vec t = {-1e-6f, 1e-6f, -5e-7f};
  Vec u(3);
  mqk::nvfp4_static_fake_quant_ref(t.data(), u.data(), 1, 3, 16, &tiny, 2688.0f, false);
  expect_bits_eq(u, {0.0f, 0.0f, 0.0f});
}

TEST(Nvfp4StaticFakeQuant, DivisionsBySixAreTimesReciprocal) {
  // compute_fp4_scales runs with torch on CUDA: amax / 6.0 is amax * fp32(1/6), for the block scale
  // and for the FP8 scale-quantizer amax. Some amax values tell the two apart.
  const float r6 = 1.0f / 6.0f;
  int differs = 0;
  for (float a = 0.01f; a < 1000.0f; a *= 1.37f) {
    EXPECT_EQ(bits(mqk::detail::nvfp4_static_scale_amax(a, false)), bits(a * r6)) << a;
    EXPECT_EQ(bits(mqk::detail::nvfp4_static_scale_amax(a, true)), bits(a * 1.75f * r6)) << a;
    EXPECT_EQ(bits(mqk::detail::nvfp4_static_scale_amax(a, false, mqk::ScalarDivMode::kDivide)),
              bits(a / 6.0f))
        << a;
    differs += bits(a * r6) != bits(a / 6.0f);
    const mqk::detail::Fp8Scales fp8 =
        mqk::detail::fp8_scales(mqk::detail::nvfp4_static_scale_amax(1000.0f, false));
    EXPECT_EQ(bits(mqk::detail::nvfp4_static_block_scale(a, fp8)),
              bits(mqk::detail::fp8_fake_quant_one(a * r6, fp8)))
        << a;
  }
  EXPECT_GT(differs, 0);
}

TEST(MxFakeQuant, Mxfp4Vectors) {
  using mqk::ElemFormat;
  for (int block : {8, 16, 32}) {
    // The §7 item 30 rows, tiled to fill the block; the block max (and so k) is the row's.
    auto tiled = [&](const Vec& row) {
      Vec v;
      while (static_cast<int>(v.size()) < block) v.insert(v.end(), row.begin(), row.end());
      return v;
    };
    auto check = [&](const Vec& in, Vec want) {
      // ModelOpt's CUDA MX kernel gives a zero input the negative sign (see mx_quant_one).
      for (size_t i = 0; i < in.size(); ++i)
        if (in[i] == 0.0f) want[i] = -0.0f;
      expect_bits_eq(mx_fq(tiled(in), block, ElemFormat::kE2M1), tiled(want));
      Vec neg = tiled(in), wneg = tiled(want);
      for (auto& v : neg) v = -v;
      for (auto& v : wneg) v = -v;
      expect_values_eq(mx_fq(neg, block, ElemFormat::kE2M1), wneg);
    };
    check({0.1f, 0.2f, 0.35f, 0.16f, 0.85f, 0.9f, 0.67f, 0.76f},
          {0.125f, 0.25f, 0.375f, 0.125f, 0.75f, 1.0f, 0.75f, 0.75f});
    check({0, .5f, 1, 1.5f, 2, 3, 4, 6}, {0, .5f, 1, 1.5f, 2, 3, 4, 6});
    check({0, .25f, .75f, 1.25f, 1.75f, 2.5f, 3.5f, 5}, {0, 0, 1, 1, 2, 2, 4, 4});
    check({0.1f, 2, 10, 16, 39, 49.5f, 30.5f, 98.8f}, {0, 0, 16, 16, 32, 48, 32, 96});
    check({2.3f, 9, .5f, 100.5f, 900.3f, 1e4f, 2000, 360000}, {0, 0, 0, 0, 0, 0, 0, 393216});
  }
}

TEST(MxFakeQuant, Mxfp8Vectors) {
  using mqk::ElemFormat;
  expect_bits_eq(
      mx_fq({284.205f, 189.103f, 127.758f, 305.991f, 345.731f, 98.383f, 676.081f, 540.471f}, 8,
            ElemFormat::kE4M3),
      {288, 192, 128, 320, 352, 96, 704, 512});
  expect_bits_eq(
      mx_fq({0.084f, 0.273f, 0.049f, 0.165f, 0.229f, 0.827f, 0.571f, 0.361f}, 8, ElemFormat::kE4M3),
      {0.0859375f, 0.28125f, 0.05078125f, 0.171875f, 0.234375f, 0.8125f, 0.5625f, 0.375f});
}

TEST(MxFakeQuant, DegenerateBlocksUseScaleOne) {
  using mqk::ElemFormat;
  // An all-zero block: scale 1, and ModelOpt's CUDA MX kernel returns -0 for a zero input.
  expect_bits_eq(mx_fq(Vec(8, 0.0f), 8, ElemFormat::kE2M1), Vec(8, -0.0f));
  // An Inf in the block: scale 1, finite elements are rounded unscaled, Inf saturates to the max.
  Vec x = {0.3f, 7.0f, std::numeric_limits<float>::infinity(), -1.2f};
  expect_bits_eq(mx_fq(x, 4, ElemFormat::kE2M1), {0.5f, 6.0f, 6.0f, -1.0f});
  expect_bits_eq(mx_fq(x, 4, ElemFormat::kE4M3), {0.3125f, 7.0f, 448.0f, -1.25f});
  // MXINT8: fmt max 127, rint and clamp.
  expect_bits_eq(mx_fq({127.0f, 63.5f, -0.4f, 1.5f}, 4, ElemFormat::kInt8),
                 {127.0f, 64.0f, -0.0f, 2.0f});
}

TEST(MxFakeQuant, SignOfZeroFollowsModelOptCudaKernel) {
  // `int sign` of tensor_quant_mx.cu is set only for x < 0 and x > 0: +-0 come out as -0; a
  // positive value that rounds to zero stays +0, a negative one -0.
  using mqk::ElemFormat;
  for (auto f : {ElemFormat::kE2M1, ElemFormat::kE4M3, ElemFormat::kE3M2, ElemFormat::kInt8}) {
    const Vec x = {0.0f, -0.0f, 1e-6f, -1e-6f, 4.0f, -4.0f, 0.0f, 0.0f};
    const Vec y = mx_fq(x, 8, f);
    EXPECT_EQ(bits(y[0]), 0x80000000u);
    EXPECT_EQ(bits(y[1]), 0x80000000u);
    EXPECT_EQ(bits(y[2]), 0u);
    EXPECT_EQ(bits(y[3]), 0x80000000u);
    EXPECT_EQ(y[4], 4.0f);
    EXPECT_EQ(y[5], -4.0f);
  }
}

TEST(Idempotence, QuantizingTwiceChangesNothing) {
  const Vec x = random_vec(33 * 64, 5, 3.0f);
  const float amax = mqk::amax_ref(x.data(), static_cast<int64_t>(x.size()));
  {
    const Vec y = int_fq(x, amax);
    expect_values_eq(int_fq(y, amax), y);
  }
  {
    const Vec y = fp8_fq(x, amax);
    expect_values_eq(fp8_fq(y, amax), y);
  }
  for (auto f : {mqk::ElemFormat::kE2M1, mqk::ElemFormat::kE4M3, mqk::ElemFormat::kE5M2,
                 mqk::ElemFormat::kE3M2, mqk::ElemFormat::kE2M3, mqk::ElemFormat::kInt8}) {
    const Vec y = mx_fq(x, 32, f, 33);
    expect_values_eq(mx_fq(y, 32, f, 33), y);
  }
  {
    Vec bamax(x.size() / 16);
    for (size_t b = 0; b < bamax.size(); ++b) bamax[b] = mqk::amax_ref(x.data() + b * 16, 16);
    Vec y(x.size()), z(x.size());
    mqk::nvfp4_static_fake_quant_ref(x.data(), y.data(), 33, 64, 16, bamax.data(), amax, false);
    mqk::nvfp4_static_fake_quant_ref(y.data(), z.data(), 33, 64, 16, bamax.data(), amax, false);
    expect_values_eq(z, y);
  }
}

// Partial blocks are zero-padded: quantizing (rows, cols) equals quantizing the explicitly padded
// (rows, round_up(cols, block)) matrix and dropping the padding.
struct Shape {
  int64_t rows, cols;
};
class OddShapes : public ::testing::TestWithParam<Shape> {};

TEST_P(OddShapes, PartialBlocksAreZeroPadded) {
  const auto [rows, cols] = GetParam();
  const Vec x = random_vec(rows * cols, static_cast<uint32_t>(rows * 1000 + cols), 1.5f);
  const float gamax = mqk::amax_ref(x.data(), rows * cols);
  for (int block : {16, 32}) {
    const int64_t pc = (cols + block - 1) / block * block;
    Vec xp(rows * pc, 0.0f);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) xp[r * pc + c] = x[r * cols + c];
    auto unpad = [&](const Vec& yp) {
      Vec y(rows * cols);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) y[r * cols + c] = yp[r * pc + c];
      return y;
    };
    Vec y(x.size()), yp(xp.size());
    mqk::nvfp4_fake_quant_ref(x.data(), y.data(), rows, cols, block, gamax);
    mqk::nvfp4_fake_quant_ref(xp.data(), yp.data(), rows, pc, block, gamax);
    expect_bits_eq(y, unpad(yp));
    for (auto f : {mqk::ElemFormat::kE2M1, mqk::ElemFormat::kE4M3}) {
      mqk::mx_fake_quant_ref(x.data(), y.data(), rows, cols, block, f);
      mqk::mx_fake_quant_ref(xp.data(), yp.data(), rows, pc, block, f);
      expect_bits_eq(y, unpad(yp));
    }
    const int64_t nb = pc / block;
    Vec bamax(rows * nb);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t b = 0; b < nb; ++b)
        bamax[r * nb + b] = mqk::amax_ref(xp.data() + r * pc + b * block, block);
    mqk::nvfp4_static_fake_quant_ref(x.data(), y.data(), rows, cols, block, bamax.data(), gamax,
                                     false);
    mqk::nvfp4_static_fake_quant_ref(xp.data(), yp.data(), rows, pc, block, bamax.data(), gamax,
                                     false);
    expect_bits_eq(y, unpad(yp));
  }
}

INSTANTIATE_TEST_SUITE_P(Sweep, OddShapes,
                         ::testing::Values(Shape{1, 1}, Shape{1, 15}, Shape{1, 17}, Shape{33, 33},
                                           Shape{33, 100}, Shape{2, 48}, Shape{7, 255}),
                         [](const auto& info) {
                           return std::to_string(info.param.rows) + "x" +
                                  std::to_string(info.param.cols);
                         });

TEST(Amax, PropagatesNanAndReducesRows) {
  const Vec x = {1.0f, -7.5f, 3.0f, 2.0f, -0.5f, 0.25f};
  EXPECT_EQ(mqk::amax_ref(x.data(), 6), 7.5f);
  float rows[2];
  mqk::amax_rows_ref(x.data(), 2, 3, rows);
  EXPECT_EQ(rows[0], 7.5f);
  EXPECT_EQ(rows[1], 2.0f);
  Vec n = x;
  n[4] = std::nanf("");
  EXPECT_TRUE(std::isnan(mqk::amax_ref(n.data(), 6)));
  n[4] = -std::numeric_limits<float>::infinity();
  EXPECT_EQ(mqk::amax_ref(n.data(), 6), std::numeric_limits<float>::infinity());
  EXPECT_EQ(mqk::amax_ref(n.data(), 0), 0.0f);
}

}  // namespace
