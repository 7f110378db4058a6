// Real quantization / packing references: the export examples of reference §2.12 and §6.4 byte for
// byte, the MXFP4 real-quant rounding rules, and quantize -> dequantize round trips.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernels_test_util.hpp"
#include "mqk/ref.hpp"

namespace {

using mqk::testing::bits;
using mqk::testing::random_vec;
using mqk::testing::Vec;
using Bytes = std::vector<uint8_t>;

const Vec kNvBlock = {0.0f,  0.3f, -0.6f, 0.9f,  1.2f, -1.6f, 2.0f,  2.4f,
                      -3.1f, 3.3f, 4.0f,  -4.6f, 5.2f, 6.1f,  -7.0f, 7.5f};

TEST(Nvfp4Export, WorkedBlockExample) {
  Bytes packed(8), scales(1);
  const float wsf2 =
      mqk::nvfp4_quantize_ref(kNvBlock.data(), 1, 16, 16, 12.0f, packed.data(), scales.data());
  EXPECT_EQ(bits(wsf2), bits(0.004464285913854837f));
  EXPECT_EQ(mqk::e4m3_from_bits(scales[0]), 288.0f);
  EXPECT_EQ(packed, (Bytes{0x00, 0x19, 0xA2, 0x43, 0x5C, 0xE5, 0x66, 0x7F}));
  // Nibbles (sign<<3 | idx) in element order.
  const int nib[16] = {0, 0, 9, 1, 2, 10, 3, 4, 12, 5, 5, 14, 6, 6, 15, 7};
  for (int i = 0; i < 16; ++i) EXPECT_EQ((packed[i / 2] >> (4 * (i % 2))) & 0xf, nib[i]) << i;
}

TEST(Nvfp4Export, ScalarDivisionMode) {
  // weight_scale_2 = global_amax / 2688: divided on a CPU tensor, times fp32(1/2688) on a CUDA
  // tensor.
  const Vec x(16, 0.7f);
  Bytes packed(8), scales(1);
  EXPECT_EQ(bits(mqk::nvfp4_quantize_ref(x.data(), 1, 16, 16, 0.7f, packed.data(), scales.data())),
            bits(0.7f / 2688.0f));
  EXPECT_EQ(bits(mqk::nvfp4_quantize_ref(x.data(), 1, 16, 16, 0.7f, packed.data(), scales.data(),
                                         mqk::ScalarDivMode::kReciprocal)),
            bits(0.7f * (1.0f / 2688.0f)));
  EXPECT_NE(bits(0.7f / 2688.0f), bits(0.7f * (1.0f / 2688.0f)));
  const float bamax = 0.7f;
  EXPECT_EQ(
      bits(mqk::nvfp4_static_quantize_ref(x.data(), 1, 16, 16, &bamax, 0.7f, false, packed.data(),
                                          scales.data(), mqk::ScalarDivMode::kReciprocal)),
      bits(0.7f * (1.0f / 2688.0f)));
}

TEST(Nvfp4Export, NegativeZeroAndScaleClamp) {
  // -0.01 rounds to zero and keeps its sign bit (0x8); an all-zero block gets scale 1.0 -> clamp
  // -> 1.0.
  Vec x(32, 0.0f);
  x[0] = 6.0f;
  x[1] = -0.01f;
  Bytes packed(16), scales(2);
  mqk::nvfp4_quantize_ref(x.data(), 1, 32, 16, 6.0f, packed.data(), scales.data());
  EXPECT_EQ(packed[0], 0x87);
  EXPECT_EQ(mqk::e4m3_from_bits(scales[0]), 448.0f);
  EXPECT_EQ(mqk::e4m3_from_bits(scales[1]), 1.0f);
  // Dequantized, code 0x8 is +0: ModelOpt's E2M1 table holds +0 there.
  Vec back(32);
  mqk::nvfp4_dequantize_ref(packed.data(), scales.data(), 6.0f / 2688.0f, 1, 32, 16, back.data());
  EXPECT_EQ(back[0], 6.0f);
  EXPECT_EQ(bits(back[1]), 0u);
  // Tiny blocks clamp to 2^-9 (§7 item 37), huge to 448.
  Vec t = {1e-10f, 0, 0, 0};
  Bytes p2(2), s2(1);
  mqk::nvfp4_quantize_ref(t.data(), 1, 4, 16, 2688.0f, p2.data(), s2.data());
  EXPECT_EQ(mqk::e4m3_from_bits(s2[0]), 0.001953125f);
  Vec h = {1e6f};
  mqk::nvfp4_quantize_ref(h.data(), 1, 1, 16, 1.0f, p2.data(), s2.data());
  EXPECT_EQ(mqk::e4m3_from_bits(s2[0]), 448.0f);
}

struct Shape {
  int64_t rows, cols;
};
class RoundTrip : public ::testing::TestWithParam<Shape> {};

// dequantize(quantize(x)) equals the fake quant wherever both choose the same block scale, i.e. for
// data whose block scales stay inside the FP8 normal range (no clamp, no 1e-5 guard).
TEST_P(RoundTrip, Nvfp4EqualsFakeQuant) {
  const auto [rows, cols] = GetParam();
  for (int block : {16, 32}) {
    const Vec x = random_vec(rows * cols, 17 + static_cast<uint32_t>(cols), 2.0f);
    const float gamax = mqk::amax_ref(x.data(), rows * cols);
    const int64_t nb = (cols + block - 1) / block;
    Bytes packed(rows * ((cols + 1) / 2)), scales(rows * nb);
    const float s2 =
        mqk::nvfp4_quantize_ref(x.data(), rows, cols, block, gamax, packed.data(), scales.data());
    Vec deq(x.size()), fq(x.size());
    mqk::nvfp4_dequantize_ref(packed.data(), scales.data(), s2, rows, cols, block, deq.data());
    mqk::nvfp4_fake_quant_ref(x.data(), fq.data(), rows, cols, block, gamax);
    for (size_t i = 0; i < x.size(); ++i)
      ASSERT_EQ(deq[i], fq[i]) << "block " << block << " i=" << i;
    if (cols % 2) {
      for (int64_t r = 0; r < rows; ++r)
        EXPECT_EQ(packed[r * ((cols + 1) / 2) + cols / 2] >> 4, 0) << r;
    }
  }
}

TEST_P(RoundTrip, MxEqualsFakeQuant) {
  const auto [rows, cols] = GetParam();
  const Vec x = random_vec(rows * cols, 99 + static_cast<uint32_t>(rows), 5.0f);
  const int64_t nb = (cols + 31) / 32;
  Bytes sc(rows * nb);
  Vec deq(x.size()), fq(x.size());
  {
    Bytes packed(rows * ((cols + 1) / 2));
    mqk::mxfp4_quantize_ref(x.data(), rows, cols, 32, packed.data(), sc.data());
    mqk::mxfp4_dequantize_ref(packed.data(), sc.data(), rows, cols, 32, deq.data());
    mqk::mx_fake_quant_ref(x.data(), fq.data(), rows, cols, 32, mqk::ElemFormat::kE2M1);
    // Random data has no exact ties, where real quant (ties down) and fake quant (ties even)
    // differ.
    for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(deq[i], fq[i]) << i;
  }
  {
    Bytes data(rows * cols);
    mqk::mxfp8_quantize_ref(x.data(), rows, cols, 32, data.data(), sc.data());
    mqk::mxfp8_dequantize_ref(data.data(), sc.data(), rows, cols, 32, deq.data());
    mqk::mx_fake_quant_ref(x.data(), fq.data(), rows, cols, 32, mqk::ElemFormat::kE4M3);
    for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(deq[i], fq[i]) << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Sweep, RoundTrip,
                         ::testing::Values(Shape{1, 16}, Shape{1, 17}, Shape{33, 64}, Shape{33, 45},
                                           Shape{4, 1}),
                         [](const auto& info) {
                           return std::to_string(info.param.rows) + "x" +
                                  std::to_string(info.param.cols);
                         });

TEST(Mxfp4Export, TiesRoundDownAndZeroIsNegative) {
  // Block max 6 -> k = 0; bounds land exactly on the ties.
  const Vec x = {0.0f, 0.25f,  0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f,
                 6.0f, -0.75f, -6.0f, 0.3f,  0,     0,    0,    0};
  Bytes packed(8), sc(2);
  mqk::mxfp4_quantize_ref(x.data(), 1, 16, 8, packed.data(), sc.data());
  EXPECT_EQ(sc[0], 127);
  EXPECT_EQ(sc[1], 127);
  // Ties down: 0.25->0, 0.75->0.5, 1.25->1, 1.75->1.5, 2.5->2, 3.5->3, 5->4. Zero is 0b1000.
  const int nib[16] = {8, 0, 1, 2, 3, 4, 5, 6, 7, 9, 15, 1, 8, 8, 8, 8};
  for (int i = 0; i < 16; ++i) EXPECT_EQ((packed[i / 2] >> (4 * (i % 2))) & 0xf, nib[i]) << i;
  Vec y(16);
  mqk::mxfp4_dequantize_ref(packed.data(), sc.data(), 1, 16, 8, y.data());
  EXPECT_EQ(y[2], 0.5f);
  EXPECT_EQ(bits(y[0]), bits(-0.0f));
  // The test vector of §2.12 (block 8): k = -2 stored as 125.
  const Vec v = {0.1f, 0.2f, 0.35f, 0.16f, 0.85f, 0.9f, 0.67f, 0.76f};
  Bytes p(4), s(1);
  mqk::mxfp4_quantize_ref(v.data(), 1, 8, 8, p.data(), s.data());
  EXPECT_EQ(s[0], 125);
  mqk::mxfp4_dequantize_ref(p.data(), s.data(), 1, 8, 8, y.data());
  const Vec want = {0.125f, 0.25f, 0.375f, 0.125f, 0.75f, 1.0f, 0.75f, 0.75f};
  for (int i = 0; i < 8; ++i) EXPECT_EQ(y[i], want[i]) << i;
  EXPECT_THROW(mqk::mxfp4_quantize_ref(v.data(), 1, 8, 12, p.data(), s.data()),
               std::invalid_argument);
}

TEST(Mxfp8Export, ScalesAndZeroBlock) {
  const Vec x = {284.205f, 189.103f, 127.758f, 305.991f, 345.731f, 98.383f, 676.081f, 540.471f};
  Bytes data(8), sc(1);
  mqk::mxfp8_quantize_ref(x.data(), 1, 8, 8, data.data(), sc.data());
  EXPECT_EQ(sc[0], 128);  // k = 1
  const Vec want = {288, 192, 128, 320, 352, 96, 704, 512};
  for (int i = 0; i < 8; ++i) EXPECT_EQ(mqk::e4m3_from_bits(data[i]) * 2.0f, want[i]) << i;
  const Vec z(8, 0.0f);
  mqk::mxfp8_quantize_ref(z.data(), 1, 8, 8, data.data(), sc.data());
  EXPECT_EQ(sc[0], 0);  // -127 + 127
  for (auto b : data) EXPECT_EQ(b, 0);
}

TEST(Fp8Export, BytesAndNoClampOverflow) {
  const Vec x = {0.3f, 1.1f, 17.0f, -0.001f, 500.0f};
  const float scale = 1.0f;
  Bytes out(5);
  mqk::fp8_quantize_ref(x.data(), 5, &scale, {}, out.data());
  EXPECT_EQ(out[0], 0x2a);  // 0.3125 = 2^-2 * 1.25
  EXPECT_EQ(mqk::e4m3_from_bits(out[1]), 1.125f);
  EXPECT_EQ(mqk::e4m3_from_bits(out[2]), 16.0f);
  EXPECT_EQ(out[3], 0x81);  // -2^-9
  EXPECT_EQ(out[4], 0x7f);  // torch cast without clamp: NaN
  // Per-channel scale.
  const float sc[2] = {1.0f, 2.0f};
  const Vec y = {448.0f, 448.0f};
  mqk::fp8_quantize_ref(y.data(), 2, sc, {2, 1}, out.data());
  EXPECT_EQ(out[0], 0x7e);
  EXPECT_EQ(mqk::e4m3_from_bits(out[1]), 224.0f);
}

TEST(Int8Export, RoundClamp) {
  const Vec x = {0.1f, -0.5f, 1.27f, 2.0f, -2.0f, 0.005f, 0.015f};
  const float scale = 0.01f;
  std::vector<int8_t> q(x.size());
  mqk::int8_quantize_ref(x.data(), static_cast<int64_t>(x.size()), &scale, {}, q.data());
  EXPECT_EQ(q, (std::vector<int8_t>{10, -50, 127, 127, -128,
                                    static_cast<int8_t>(std::rint(0.005f / 0.01f)),
                                    static_cast<int8_t>(std::rint(0.015f / 0.01f))}));
}

TEST(Int4AwqPack, WorkedExample) {
  const Vec w = {0.7f, -0.3f, 0.1f, 0.0f, -0.7f, 0.5f, 0.2f, -0.04f};
  const float scale[2] = {0.7f / 7.0f, 0.7f / 7.0f};
  Bytes packed(4);
  mqk::int4_awq_pack_ref(w.data(), 2, 4, 4, scale, packed.data());
  EXPECT_EQ(packed, (Bytes{0x97, 0x5D, 0x21, 0x00}));
  EXPECT_THROW(mqk::int4_awq_pack_ref(w.data(), 1, 8, 4, scale, packed.data()),
               std::invalid_argument);
}

TEST(Int4AwqPack, GroupsAndClampOnOddIn) {
  // (4, 5) with group 2 (3 groups, last partial): scale 1 everywhere, values straddle the clamp.
  const Vec w = {-9, -8, 7,    8,     0.5f,  //
                 1,  2,  3,    4,     5,     //
                 -1, -2, -3,   -4,    1.5f,  //
                 6,  -6, 2.5f, -2.5f, 0};
  const Vec scale(12, 1.0f);
  Bytes p(10);
  mqk::int4_awq_pack_ref(w.data(), 4, 5, 2, scale.data(), p.data());
  auto nib = [](int v) { return v & 0xf; };
  EXPECT_EQ(p[0], nib(-8) | nib(1) << 4);
  EXPECT_EQ(p[2], nib(7) | nib(3) << 4);
  EXPECT_EQ(p[3], nib(7) | nib(4) << 4);
  EXPECT_EQ(p[4], nib(0) | nib(5) << 4);
  EXPECT_EQ(p[5], nib(-1) | nib(6) << 4);
  EXPECT_EQ(p[7], nib(-3) | nib(2) << 4);
  EXPECT_EQ(p[8], nib(-4) | nib(-2) << 4);
  EXPECT_EQ(p[9], nib(2) | nib(0) << 4);
}

TEST(Nf4, QuantizeDequantize) {
  const Vec x = {1.0f, -1.0f, 0.0f, 0.5f, -0.2f, 0.1f, 0.3f};  // block 16, one partial block
  Bytes packed(4);
  float scale = 0;
  mqk::nf4_quantize_ref(x.data(), 7, 16, packed.data(), &scale);
  EXPECT_EQ(scale, 1.0f);
  // 0.5 -> 0.4407 (index 12); -0.2 -> -0.1848 (5); 0.1 -> 0.0796 (8); 0.3 -> 0.3379 (11); pad 0 ->
  // 7
  EXPECT_EQ(packed, (Bytes{0xF0, 0x7C, 0x58, 0xB7}));
  Vec y(7);
  mqk::nf4_dequantize_ref(packed.data(), &scale, 7, 16, y.data());
  EXPECT_EQ(y[0], 1.0f);
  EXPECT_EQ(y[3], mqk::nf4_lut(12));
  EXPECT_EQ(y[6], mqk::nf4_lut(11));
  // Zero block: index of 0.0 everywhere.
  const Vec z(4, 0.0f);
  Bytes pz(2);
  mqk::nf4_quantize_ref(z.data(), 4, 16, pz.data(), &scale);
  EXPECT_EQ(pz, (Bytes{0x77, 0x77}));
}

TEST(Nvfp4StaticExport, ScaleFromBlockAmax) {
  // Static: pbs = (amax/6) * 448 / (global/6); global 12, block amax 7.5 -> 280 -> fp8 288.
  Bytes packed(8), scales(1);
  const float amax = 7.5f;
  const float s2 = mqk::nvfp4_static_quantize_ref(kNvBlock.data(), 1, 16, 16, &amax, 12.0f, false,
                                                  packed.data(), scales.data());
  EXPECT_EQ(bits(s2), bits(12.0f / 2688.0f));
  EXPECT_EQ(mqk::e4m3_from_bits(scales[0]), 288.0f);
  EXPECT_EQ(packed, (Bytes{0x00, 0x19, 0xA2, 0x43, 0x5C, 0xE5, 0x66, 0x7F}));
  // four_over_six: weight_scale_2 = global / (6 * 256).
  const float s46 = mqk::nvfp4_static_quantize_ref(kNvBlock.data(), 1, 16, 16, &amax, 12.0f, true,
                                                   packed.data(), scales.data());
  EXPECT_EQ(bits(s46), bits(12.0f / 1536.0f));
  EXPECT_EQ(mqk::e4m3_from_bits(scales[0]), 160.0f);  // 7.5/6 * 256 / 2 = 160
}

}  // namespace
