// Scalar conversions against independent oracles: every E4M3 code, brute-force nearest-even search
// over the enumerated grids, the E2M1 decision table, and the E8M0 exponent against log2 in double.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "mqk/detail/numerics.hpp"
#include "mqk/formats.hpp"
#include "mqk/ref.hpp"

namespace {

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// All non-negative values of a minifloat grid, ascending (from the traits, computed in double).
std::vector<double> grid_values(const mqk::ElemTraits& t) {
  std::vector<double> v;
  if (t.integer) {
    for (int i = 0; i <= static_cast<int>(t.max); ++i) v.push_back(i);
    return v;
  }
  const double sub = std::ldexp(1.0, t.emin - t.mbits);
  for (int m = 0; m < (1 << t.mbits); ++m) v.push_back(m * sub);
  for (int e = t.emin;; ++e)
    for (int m = 0; m < (1 << t.mbits); ++m) {
      const double x = std::ldexp(1.0 + m / double(1 << t.mbits), e);
      if (x > t.max) return v;
      v.push_back(x);
    }
}

// Nearest grid value with ties to the even index; saturates above the max.
double oracle_round(const std::vector<double>& g, double a) {
  if (a >= g.back()) return g.back();
  size_t i = 0;
  while (i + 1 < g.size() && g[i + 1] <= a) ++i;
  if (g[i] == a) return a;
  const double lo = a - g[i], hi = g[i + 1] - a;
  if (lo < hi) return g[i];
  if (hi < lo) return g[i + 1];
  return (i % 2 == 0) ? g[i] : g[i + 1];
}

TEST(E4M3, EveryCodeRoundTrips) {
  int finite = 0;
  for (int b = 0; b < 256; ++b) {
    const float v = mqk::e4m3_from_bits(static_cast<uint8_t>(b));
    if ((b & 0x7f) == 0x7f) {
      EXPECT_TRUE(std::isnan(v)) << b;
      continue;
    }
    ++finite;
    EXPECT_EQ(bits(mqk::e4m3_round(v)), bits(v)) << "code " << b;
    EXPECT_EQ(mqk::e4m3_to_bits(v), b) << "code " << b;
  }
  EXPECT_EQ(finite, 254);
  EXPECT_EQ(mqk::e4m3_from_bits(0x7e), 448.0f);
  EXPECT_EQ(mqk::e4m3_from_bits(0x01), 0.001953125f);
  EXPECT_EQ(mqk::e4m3_from_bits(0x08), 0.015625f);
}

TEST(E4M3, MatchesNearestEvenOracleAndSaturates) {
  const auto g = grid_values(mqk::elem_traits(mqk::ElemFormat::kE4M3));
  ASSERT_EQ(g.size(), 127u);  // 0 and 126 positive finite values
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> e(-14.0f, 10.0f);
  for (int i = 0; i < 200000; ++i) {
    const float a = std::exp2(e(rng));
    ASSERT_EQ(mqk::e4m3_round(a), static_cast<float>(oracle_round(g, a))) << a;
    ASSERT_EQ(mqk::e4m3_round(-a), -static_cast<float>(oracle_round(g, a))) << a;
  }
  // Midpoints between neighbours: ties go to the even code.
  for (size_t i = 0; i + 1 < g.size(); ++i) {
    const float mid = static_cast<float>((g[i] + g[i + 1]) / 2);
    EXPECT_EQ(mqk::e4m3_round(mid), static_cast<float>(i % 2 == 0 ? g[i] : g[i + 1])) << mid;
  }
  EXPECT_EQ(mqk::e4m3_round(500.0f), 448.0f);
  EXPECT_EQ(mqk::e4m3_round(-1e30f), -448.0f);
  EXPECT_EQ(mqk::e4m3_round(std::numeric_limits<float>::infinity()), 448.0f);
  EXPECT_TRUE(std::isnan(mqk::e4m3_round(std::nanf(""))));
  EXPECT_EQ(mqk::e4m3_round(0.0009f), 0.0f);        // below half the smallest subnormal
  EXPECT_EQ(mqk::e4m3_round(0.0009765625f), 0.0f);  // exactly half: tie to even (0)
  EXPECT_EQ(mqk::e4m3_round(0.0009765626f), 0.001953125f);
  EXPECT_EQ(bits(mqk::e4m3_round(-0.0001f)), bits(-0.0f));
  EXPECT_EQ(mqk::e4m3_to_bits(-0.0001f), 0x80);
}

// A host-vectorising "magic" form against its reference, bit for bit, on the fp32 patterns `in`.
// The magic results come from a loop over an array, the form the CPU fake quant compiles to vector
// code; the reference goes element by element.
template <typename Magic, typename Ref>
void expect_magic_equals_reference(const std::vector<uint32_t>& in, Magic magic, Ref ref) {
  std::vector<float> x(in.size()), y(in.size());
  for (size_t i = 0; i < in.size(); ++i) std::memcpy(&x[i], &in[i], 4);
  for (size_t i = 0; i < x.size(); ++i) y[i] = magic(x[i]);
  size_t bad = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const uint32_t want = bits(ref(x[i]));
    if (bits(y[i]) != want && ++bad <= 5)
      ADD_FAILURE() << std::hex << "input 0x" << in[i] << ": magic 0x" << bits(y[i])
                    << ", reference 0x" << want;
  }
  EXPECT_EQ(bad, 0u) << "of " << x.size();
}

// e4m3_round_sat_magic against e4m3_round_sat (all 2^32 patterns were checked once outside the
// suite).
void expect_e4m3_magic_equals_reference(const std::vector<uint32_t>& in) {
  expect_magic_equals_reference(
      in, [](float v) { return mqk::detail::e4m3_round_sat_magic(v); },
      [](float v) { return mqk::detail::e4m3_round_sat(v); });
}

TEST(E4M3, MagicRoundingEqualsReferenceNearGridPointsAndMidpoints) {
  // Every E4M3 grid value and every midpoint between neighbours (also 448/480 and beyond, where the
  // unbounded grid continues), each with the 64 fp32 patterns on either side, both signs.
  std::vector<double> pts;
  for (int m = 0; m < 8; ++m) pts.push_back(std::ldexp(m, -9));
  for (int e = -6; e <= 9; ++e)
    for (int m = 0; m < 8; ++m) pts.push_back(std::ldexp(8 + m, e - 3));
  const size_t ngrid = pts.size();
  for (size_t i = 0; i + 1 < ngrid; ++i) pts.push_back((pts[i] + pts[i + 1]) / 2);
  std::vector<uint32_t> in;
  for (double p : pts) {
    const uint32_t c =
        bits(static_cast<float>(p));  // exact: grid values and midpoints have <= 6 bits
    ASSERT_EQ(static_cast<double>(static_cast<float>(p)), p);
    for (int d = -64; d <= 64; ++d) {
      if (c == 0 && d < 0) continue;
      const uint32_t v = c + static_cast<uint32_t>(d);
      in.push_back(v);
      in.push_back(v | 0x80000000u);
    }
  }
  // Every fp32 binade (subnormals included): its first and last 256 patterns and its midpoint.
  for (uint32_t ef = 0; ef < 255; ++ef)
    for (uint32_t m = 0; m < 256; ++m)
      for (uint32_t v :
           {(ef << 23) | m, (ef << 23) | (0x7fffffu - m), (ef << 23) | (0x400000u + m)}) {
        in.push_back(v);
        in.push_back(v | 0x80000000u);
      }
  // +-0, the fp32 extremes, +-Inf and NaNs (quiet, signalling, payloads, both signs).
  for (uint32_t v :
       {0x00000000u, 0x00000001u, 0x007fffffu, 0x00800000u, 0x7f7fffffu, 0x7f800000u, 0x7f800001u,
        0x7fa00000u, 0x7fc00000u, 0x7fc00001u, 0x7fffffffu, 0x7fbfffffu}) {
    in.push_back(v);
    in.push_back(v | 0x80000000u);
  }
  expect_e4m3_magic_equals_reference(in);
}

TEST(E4M3, MagicRoundingEqualsReferenceOnRandomBits) {
  std::mt19937 rng(20261123);
  std::vector<uint32_t> in(1u << 22);
  for (auto& v : in) v = static_cast<uint32_t>(rng());
  expect_e4m3_magic_equals_reference(in);
  // Magnitudes where E4M3 is finite and not saturated: random patterns in [2^-20, 2^9).
  std::uniform_int_distribution<uint32_t> mid(0x35800000u, 0x44000000u);
  for (auto& v : in) v = mid(rng) | (rng() & 0x80000000u);
  expect_e4m3_magic_equals_reference(in);
}

TEST(E4M3, MagicFakeQuantEqualsReference) {
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> ex(-30.0f, 30.0f);
  std::vector<uint32_t> in(1u << 12);
  for (float amax : {0.0f, 1e-30f, 6e-8f, 1e-3f, 0.37f, 1.0f, 3.0f, 448.0f, 1e5f, 3e38f}) {
    const mqk::detail::Fp8Scales sc = mqk::detail::fp8_scales(amax, /*reciprocal=*/true);
    for (auto& v : in) v = bits(std::exp2(ex(rng)) * amax) ^ (rng() & 0x80000000u);
    for (uint32_t v : in) {
      float x;
      std::memcpy(&x, &v, 4);
      ASSERT_EQ(bits(mqk::detail::fp8_fake_quant_one_magic(x, sc)),
                bits(mqk::detail::fp8_fake_quant_one(x, sc)))
          << "x " << x << " amax " << amax;
    }
  }
}

// rint_rne_magic and int_fake_quant_one_magic (the host's vectorising forms) against rint_rne and
// int_fake_quant_one, bit for bit. (rint_rne_magic was checked once over all 2^32 patterns outside
// the suite.)
TEST(RintMagic, EqualsRintNearIntegersHalvesBinadeEdgesAndRandomBits) {
  std::vector<uint32_t> in;
  // Around every integer and half-integer up to 2^12, and around k * 2^j +- 0.5 for larger binades.
  for (int k = 0; k <= 8192; ++k)
    for (int d = -3; d <= 3; ++d) in.push_back(bits(k * 0.5f) + static_cast<uint32_t>(d));
  for (int e = 12; e <= 25; ++e)
    for (int k = 0; k < 64; ++k) {
      const float base = std::ldexp(1.0f, e) + static_cast<float>(k);
      for (float v : {base, base + 0.5f, base - 0.5f})
        for (int d = -3; d <= 3; ++d) in.push_back(bits(v) + static_cast<uint32_t>(d));
    }
  for (uint32_t ef = 0; ef < 256; ++ef)  // every binade's edges, Inf and NaNs included
    for (uint32_t m = 0; m < 64; ++m)
      in.insert(in.end(), {(ef << 23) | m, (ef << 23) | (0x7fffffu - m)});
  std::mt19937 rng(9);
  for (int i = 0; i < (1 << 22); ++i) in.push_back(static_cast<uint32_t>(rng()));
  const size_t n = in.size();
  for (size_t i = 0; i < n; ++i) in.push_back(in[i] ^ 0x80000000u);
  expect_magic_equals_reference(
      in, [](float v) { return mqk::detail::rint_rne_magic(v); },
      [](float v) { return mqk::detail::rint_rne(v); });
}

TEST(IntFakeQuantMagic, EqualsIntFakeQuantOne) {
  std::mt19937 rng(13);
  std::uniform_real_distribution<float> ex(-30.0f, 30.0f);
  const float eps = 5.9604644775390625e-08f;
  const std::vector<float> amaxes = {0.0f,
                                     std::nextafter(eps, 0.0f),
                                     eps,
                                     std::nextafter(eps, 1.0f),
                                     1e-3f,
                                     0.37f,
                                     1.0f,
                                     7.0f,
                                     448.0f,
                                     3e38f,
                                     std::numeric_limits<float>::infinity()};
  std::vector<float> xs(1 << 12);
  for (int bits_n : {2, 4, 8, 16})
    for (bool uns : {false, true})
      for (bool narrow : {false, true})
        for (auto zero : {mqk::IntZeroAmaxMode::kEager, mqk::IntZeroAmaxMode::kCudaKernel})
          for (float amax : amaxes) {
            const auto b = mqk::detail::int_bounds(bits_n, uns, narrow);
            for (auto& v : xs) {
              const float a = std::isfinite(amax) && amax > 0 ? amax : 1.0f;
              v = std::exp2(ex(rng)) * a;
              if (rng() & 1) v = -v;
            }
            xs[0] = 0.0f, xs[1] = -0.0f, xs[2] = std::nanf(""),
            xs[3] = std::numeric_limits<float>::infinity();
            xs[4] = -xs[3], xs[5] = amax, xs[6] = -amax;
            for (float x : xs)
              ASSERT_EQ(bits(mqk::detail::int_fake_quant_one_magic(x, amax, b, zero)),
                        bits(mqk::detail::int_fake_quant_one(x, amax, b, zero)))
                  << "x " << x << " amax " << amax << " bits " << bits_n << " unsigned " << uns
                  << " narrow " << narrow << " eager " << (zero == mqk::IntZeroAmaxMode::kEager);
          }
}

TEST(E4M3, TorchCastOverflowsToNan) {
  EXPECT_EQ(mqk::e4m3_round_torch(464.0f),
            448.0f);  // tie between 448 and (NaN) 480 goes to even 448
  EXPECT_TRUE(std::isnan(mqk::e4m3_round_torch(464.1f)));
  EXPECT_TRUE(std::isnan(mqk::e4m3_round_torch(-1e6f)));
  EXPECT_EQ(mqk::e4m3_round_torch(17.0f), 16.0f);
  EXPECT_EQ(mqk::e4m3_round_torch(0.3f), 0.3125f);
}

TEST(E2M1, DecisionTableAtEveryBoundary) {
  struct Row {
    float a;
    float q;
  };
  const Row rows[] = {
      {0.0f, 0.0f}, {0.25f, 0.0f}, {0.75f, 1.0f}, {1.25f, 1.0f}, {1.75f, 2.0f},
      {2.5f, 2.0f}, {3.5f, 4.0f},  {5.0f, 4.0f},  {6.0f, 6.0f},  {1e9f, 6.0f},
  };
  for (const auto& r : rows) EXPECT_EQ(mqk::e2m1_round_magnitude(r.a), r.q) << r.a;
  const float bounds[] = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f};
  for (int i = 0; i < 7; ++i) {
    const float below = std::nextafter(bounds[i], 0.0f), above = std::nextafter(bounds[i], 10.0f);
    EXPECT_EQ(mqk::e2m1_index(below), i) << bounds[i];
    EXPECT_EQ(mqk::e2m1_index(above), i + 1) << bounds[i];
    EXPECT_EQ(mqk::e2m1_index(bounds[i]), i % 2 == 0 ? i : i + 1) << bounds[i];  // ties to even
    EXPECT_EQ(mqk::e2m1_round_magnitude(bounds[i] - 0.1f), mqk::kE2M1Values[i]);
    EXPECT_EQ(mqk::e2m1_round_magnitude(bounds[i] + 0.1f), mqk::kE2M1Values[i + 1]);
  }
  for (int i = 0; i < 8; ++i)
    EXPECT_EQ(mqk::e2m1_round_magnitude(mqk::kE2M1Values[i]), mqk::kE2M1Values[i]);
  EXPECT_EQ(mqk::e2m1_index(std::nanf("")), 7);
}

TEST(E2M1, ArithmeticRoundingEqualsThresholdTable) {
  // e2m1_round_magnitude (grid arithmetic, used by the fake quant) against e2m1_index (ModelOpt's
  // threshold chain, used by the export): at and around every bound and on a dense random sweep.
  std::vector<float> probes = {
      0.0f, 6.0f, 7.0f, 1e30f, std::numeric_limits<float>::infinity(), std::nanf("")};
  for (float b :
       {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f}) {
    float lo = b, hi = b;
    for (int k = 0; k < 4; ++k) {
      probes.push_back(lo);
      probes.push_back(hi);
      lo = std::nextafter(lo, 0.0f);
      hi = std::nextafter(hi, 100.0f);
    }
  }
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(0.0f, 8.0f);
  for (int i = 0; i < 200000; ++i) probes.push_back(u(rng));
  for (float a : probes)
    ASSERT_EQ(mqk::e2m1_round_magnitude(a), mqk::kE2M1Values[mqk::e2m1_index(a)]) << a;
}

class MxElem : public ::testing::TestWithParam<mqk::ElemFormat> {};

TEST_P(MxElem, GridRoundingMatchesOracle) {
  const mqk::ElemTraits t = mqk::elem_traits(GetParam());
  const auto g = grid_values(t);
  EXPECT_EQ(static_cast<float>(g.back()), t.max);
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> e(t.emin - t.mbits - 3.0f, std::log2(t.max) + 2.0f);
  for (int i = 0; i < 100000; ++i) {
    const float a = std::exp2(e(rng));
    ASSERT_EQ(mqk::mx_elem_round_magnitude(a, GetParam()), static_cast<float>(oracle_round(g, a)))
        << a;
  }
  for (size_t i = 0; i + 1 < g.size(); ++i) {
    const float mid = static_cast<float>((g[i] + g[i + 1]) / 2);
    EXPECT_EQ(mqk::mx_elem_round_magnitude(mid, GetParam()),
              static_cast<float>(oracle_round(g, mid)));
    EXPECT_EQ(mqk::mx_elem_round_magnitude(static_cast<float>(g[i]), GetParam()),
              static_cast<float>(g[i]));
  }
  EXPECT_EQ(mqk::mx_elem_round_magnitude(std::numeric_limits<float>::infinity(), GetParam()),
            t.max);
}

INSTANTIATE_TEST_SUITE_P(AllElems, MxElem,
                         ::testing::Values(mqk::ElemFormat::kE4M3, mqk::ElemFormat::kE5M2,
                                           mqk::ElemFormat::kE3M2, mqk::ElemFormat::kE2M3,
                                           mqk::ElemFormat::kE2M1, mqk::ElemFormat::kInt8),
                         [](const auto& info) {
                           return std::string(mqk::elem_traits(info.param).name);
                         });

TEST(MxElem, GridSizes) {
  EXPECT_EQ(grid_values(mqk::elem_traits(mqk::ElemFormat::kE2M1)).size(), 8u);
  EXPECT_EQ(grid_values(mqk::elem_traits(mqk::ElemFormat::kE3M2)).size(), 32u);
  EXPECT_EQ(grid_values(mqk::elem_traits(mqk::ElemFormat::kE2M3)).size(), 32u);
  EXPECT_EQ(grid_values(mqk::elem_traits(mqk::ElemFormat::kE5M2)).size(), 124u);
}

TEST(E8M0, CeilExponentMatchesDoubleLog2) {
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> e(-126.0f, 126.0f);
  for (int i = 0; i < 100000; ++i) {
    const float r = std::exp2(e(rng));
    ASSERT_EQ(mqk::e8m0_ceil_exponent(r),
              static_cast<int>(std::ceil(std::log2(static_cast<double>(r)))))
        << r;
  }
  EXPECT_EQ(mqk::e8m0_ceil_exponent(1.0f), 0);
  EXPECT_EQ(mqk::e8m0_ceil_exponent(0.15f), -2);
  EXPECT_EQ(mqk::e8m0_ceil_exponent(std::nextafter(1.0f, 2.0f)), 1);
  EXPECT_EQ(mqk::e8m0_ceil_exponent(std::numeric_limits<float>::max()),
            127);                                                    // exponent field 0xFE
  EXPECT_EQ(mqk::e8m0_ceil_exponent(std::ldexp(1.0f, -127)), -127);  // subnormal <= 2^-127
  EXPECT_EQ(mqk::e8m0_ceil_exponent(std::ldexp(1.5f, -127)), -126);
}

TEST(Bf16, RoundsToNearestEven) {
  EXPECT_EQ(mqk::bf16_round(1.0f), 1.0f);
  EXPECT_EQ(mqk::bf16_round(1.0f + std::ldexp(1.0f, -8)), 1.0f);  // tie -> even
  EXPECT_EQ(mqk::bf16_round(1.0f + 3 * std::ldexp(1.0f, -8)), 1.0f + std::ldexp(1.0f, -6));
  EXPECT_EQ(mqk::nf4_lut(0), -1.0f);
  EXPECT_EQ(mqk::nf4_lut(7), 0.0f);
  EXPECT_EQ(mqk::nf4_lut(14), 0.72265625f);  // bf16(0.7230)
}

TEST(Formats, TraitsTable) {
  const auto* nv = mqk::find_format("nvfp4");
  ASSERT_NE(nv, nullptr);
  EXPECT_EQ(nv->block, 16);
  EXPECT_EQ(nv->scale, mqk::ScaleFormat::kE4M3);
  EXPECT_EQ(nv->elem_max, 6.0f);
  EXPECT_EQ(mqk::format_traits(mqk::Format::kMxfp8).scale, mqk::ScaleFormat::kE8M0);
  EXPECT_EQ(mqk::find_format("nope"), nullptr);
  for (int i = 0; i < 10; ++i)
    EXPECT_EQ(static_cast<int>(mqk::kFormatTraits[i].format), i) << mqk::kFormatTraits[i].name;
  for (int i = 0; i < 6; ++i) EXPECT_EQ(static_cast<int>(mqk::kElemTraits[i].format), i);
}

}  // namespace
