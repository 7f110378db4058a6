// Real quantization (reference §2.9): packed layouts, scales and round trips against fake quant.
#include "mq/quant/qtensor.hpp"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <vector>

#include "mq/core/error.hpp"
#include "mq/quant/fake_quant.hpp"
#include "mq/quant/tensor_quantizer.hpp"
#include "quant_test_util.hpp"

namespace mq::quant {
namespace {

using config::NumBits;
using config::QuantizerAttributeConfig;
using testing::T;

std::vector<int> bytes(const at::Tensor& t) {
  at::Tensor u = t.contiguous().view(at::kByte).reshape({-1});
  std::vector<int> v;
  for (int64_t i = 0; i < u.numel(); ++i) v.push_back(u[i].item<uint8_t>());
  return v;
}

void expect_scale_is_rtruediv(const at::Tensor& scale, const at::Tensor& amax) {
  EXPECT_TRUE(at::equal(scale, amax.reciprocal() * 7.0));
}

TEST(QTensor, Int8RoundTripMatchesFakeQuantAtUnitScale) {
  auto x = T({0.4f, -3.6f, 100.5f, 127.f, -128.f, 2.5f});
  QTensor q = int8_quantize(x, std::nullopt, std::nullopt);
  EXPECT_EQ(q.data.scalar_type(), at::kChar);
  EXPECT_EQ(q.scale.item<float>(), 128.0f / 127.0f);
  auto x127 = T({0.4f, -3.6f, 100.5f, 127.f, 2.5f});
  QTensor q1 = int8_quantize(x127, std::nullopt, std::nullopt);
  EXPECT_TRUE(
      at::equal(q1.dequantize(), int_fake_quant(x127, at::scalar_tensor(127.0f), 8, false, false)));
}

TEST(QTensor, Int8PerChannelCloseToFakeQuant) {
  at::manual_seed(1);
  auto w = at::randn({6, 32});
  QTensor q = int8_quantize(w, config::Axis{{0}, false}, std::nullopt);
  EXPECT_EQ(q.scale.sizes(), (at::IntArrayRef{6, 1}));
  auto fake = int_fake_quant(w, at::amax(at::abs(w), {1}, true), 8, false, false);
  EXPECT_TRUE(at::allclose(q.dequantize(), fake, 0, 1e-6));
}

TEST(QTensor, Fp8NoClampAndRoundTrip) {
  auto x = T({0.3f, 1.1f, 17.0f, -0.001f, 500.0f});
  QTensor q = fp8_quantize(x, at::scalar_tensor(1.0f), std::nullopt, std::nullopt);
  EXPECT_EQ(q.data.scalar_type(), at::ScalarType::Float8_e4m3fn);
  auto d = q.dequantize();
  // No clamp before the cast: 500 is outside the e4m3 range and becomes NaN (fake quant saturates).
  EXPECT_TRUE(std::isnan(d[4].item<float>()));
  EXPECT_TRUE(
      at::equal(d.narrow(0, 0, 4), fp8_fake_quant(x, at::scalar_tensor(448.0f)).narrow(0, 0, 4)));
}

TEST(QTensor, Fp8BlockScalesWithPadding) {
  at::manual_seed(2);
  auto w = at::randn({5, 12});
  config::BlockSizes bs;
  bs.axes[-1] = 8;
  bs.axes[-2] = 4;
  QTensor q = fp8_quantize(w, std::nullopt, std::nullopt, bs);
  EXPECT_EQ(q.scale.sizes(), (at::IntArrayRef{2, 2}));
  EXPECT_EQ(q.data.sizes(), w.sizes());
  auto d = q.dequantize();
  EXPECT_EQ(d.sizes(), w.sizes());
  // Block (0, 0) covers rows 0..3, cols 0..7.
  EXPECT_FLOAT_EQ(q.scale[0][0].item<float>(),
                  at::abs(w.narrow(0, 0, 4).narrow(1, 0, 8)).max().item<float>() / 448.0f);
  EXPECT_TRUE(at::allclose(d, w, 0.07, 1e-6));
}

TEST(QTensor, Int4PackingAndRoundTrip) {
  auto x = T({0.7f, -0.3f, 0.1f, 0.0f}).reshape({1, 4});
  QTensor q = int4_quantize(x, 4);
  EXPECT_EQ(q.data.sizes(), (at::IntArrayRef{1, 2}));
  // u = 8 + q: [15, 5, 9, 8], first element in the high nibble.
  EXPECT_EQ(bytes(q.data), (std::vector<int>{0xF5, 0x98}));
  EXPECT_FLOAT_EQ(q.scale.item<float>(), 7.0f / 0.7f);
  at::manual_seed(3);
  auto w = at::randn({3, 40});
  QTensor qw = int4_quantize(w, 8);
  auto blocks = w.reshape({-1, 8});
  auto fake = int_fake_quant(blocks, at::amax(at::abs(blocks), {1}, true), 4, false, false)
                  .reshape({3, 40});
  // ModelOpt's scale is Python `7 / amax`, i.e. fp32(fp32(1/amax) * 7): within an ulp of fake
  // quant's 7/amax, so the round trip matches fake quant up to that ulp.
  expect_scale_is_rtruediv(qw.scale, at::amax(at::abs(blocks), {1}, true));
  EXPECT_TRUE(at::allclose(qw.dequantize(), fake, 1e-6, 0));
  EXPECT_THROW(int4_quantize(at::randn({2, 3}), 4), mq::Error);
}

TEST(QTensor, Nvfp4WorkedExampleBytes) {
  auto x = T({0.0f, 0.3f, -0.6f, 0.9f, 1.2f, -1.6f, 2.0f, 2.4f, -3.1f, 3.3f, 4.0f, -4.6f, 5.2f,
              6.1f, -7.0f, 7.5f})
               .reshape({1, 16});
  QTensor q = nvfp4_quantize(x, 16, at::scalar_tensor(12.0f));
  EXPECT_EQ(bytes(q.data), (std::vector<int>{0x00, 0x19, 0xA2, 0x43, 0x5C, 0xE5, 0x66, 0x7F}));
  EXPECT_EQ(q.scale.to(at::kFloat).item<float>(), 288.0f);
  EXPECT_EQ(q.double_scale.item<float>(), 0.004464285913854837f);
  EXPECT_TRUE(at::equal(q.dequantize(), nvfp4_fake_quant(x, 16, at::scalar_tensor(12.0f))));
}

TEST(QTensor, Nvfp4RoundTripCloseToFakeQuant) {
  at::manual_seed(4);
  auto w = at::randn({7, 64}).to(at::kBFloat16);
  auto g = at::abs(w).max();
  QTensor q = nvfp4_quantize(w, 16, g);
  EXPECT_EQ(q.scale.sizes(), (at::IntArrayRef{7, 4}));
  EXPECT_EQ(q.data.sizes(), (at::IntArrayRef{7, 32}));
  auto d = q.dequantize();
  EXPECT_EQ(d.scalar_type(), at::kBFloat16);
  EXPECT_TRUE(
      at::allclose(d.to(at::kFloat), nvfp4_fake_quant(w, 16, g).to(at::kFloat), 1e-2, 1e-6));
}

TEST(QTensor, Mxfp4TiesRoundDownAndZeroIsNegative) {
  auto ties = T({0, .25f, .75f, 1.25f, 1.75f, 2.5f, 3.5f, 5}).reshape({1, 8});
  QTensor q = mxfp4_quantize(ties, 8);
  EXPECT_TRUE(at::equal(q.dequantize(), T({0, 0, .5f, 1, 1.5f, 2, 3, 4}).reshape({1, 8})));
  EXPECT_EQ(bytes(q.data)[0] & 0x0F, 0x8);  // exact zero encodes as -0
  EXPECT_EQ(bytes(q.scale)[0], 127);        // k = 0
  auto plain = T({0.1f, 0.2f, 0.35f, 0.16f, 0.85f, 0.9f, 0.67f, 0.76f}).reshape({1, 8});
  EXPECT_TRUE(at::equal(mxfp4_quantize(plain, 8).dequantize(),
                        mx_fake_quant(plain, 8, mqk::ElemFormat::kE2M1)));
}

TEST(QTensor, Mxfp8RoundTrip) {
  auto x = T({284.205f, 189.103f, 127.758f, 305.991f, 345.731f, 98.383f, 676.081f, 540.471f})
               .reshape({1, 8});
  QTensor q = mxfp8_quantize(x, 8);
  EXPECT_EQ(bytes(q.scale)[0], 128);  // k = 1
  EXPECT_TRUE(at::equal(q.dequantize(), mx_fake_quant(x, 8, mqk::ElemFormat::kE4M3)));
}

TEST(QTensor, Nf4PackingAndDoubleQuant) {
  auto x = T({1.0f, -1.0f, 0.0f, 0.5f, 0.5f, -0.25f, 0.0f, 0.1f});
  QTensor q = nf4_quantize(x, 4, 2);
  // Block 0: indices [15, 0, 7, 12 (0.4407 is nearer 0.5 than 0.5626)], high nibble first.
  EXPECT_EQ(bytes(q.data)[0], 0xF0);
  EXPECT_EQ(bytes(q.data)[1], 0x7C);
  // Scales [1.0, 0.5]: zero point 0.75, double scale 127/0.25 = 508, codes [127, -127].
  EXPECT_EQ(q.scale_zeros.item<float>(), 0.75f);
  EXPECT_EQ(q.double_scale.item<float>(), 508.0f);
  EXPECT_EQ(q.scale.sizes(), (at::IntArrayRef{1, 2}));
  EXPECT_EQ(q.scale[0][0].item<int8_t>(), 127);
  EXPECT_EQ(q.scale[0][1].item<int8_t>(), -127);
  auto d = q.dequantize();
  const float lut12 = at::scalar_tensor(0.4407f).to(at::kBFloat16).item<float>();
  EXPECT_EQ(d[3].item<float>(), lut12);
  EXPECT_EQ(d[0].item<float>(), 1.0f);
  EXPECT_EQ(d[1].item<float>(), -1.0f);
}

TEST(QTensor, Nf4SeveralScaleBlocks) {
  at::manual_seed(5);
  auto w = at::randn({4, 64});
  QTensor q = nf4_quantize(w, 16, 4);
  EXPECT_EQ(q.double_scale.numel(), 4);
  auto d = q.dequantize();
  EXPECT_EQ(d.sizes(), w.sizes());
  // NF4 step is at most ~0.28 of the block amax; double quantization adds a small scale error.
  EXPECT_LT((d - w).abs().max().item<float>(), 0.3f * at::abs(w).max().item<float>());
}

TEST(QTensor, ThroughTensorQuantizer) {
  at::manual_seed(6);
  auto w = at::randn({4, 64});
  QuantizerAttributeConfig c;
  c.num_bits = NumBits::integer(4);
  config::BlockSizes b;
  b.axes[-1] = 16;
  c.block_sizes = b;
  c.fake_quant = false;
  TensorQuantizer q(c);
  auto y = q.forward(w);
  ASSERT_TRUE(q.last_qtensor().has_value());
  EXPECT_EQ(q.last_qtensor()->format, QFormat::kInt4);
  EXPECT_EQ(q.named_buffers().at("_scale").sizes(), (at::IntArrayRef{16, 1}));
  auto blocks = w.reshape({-1, 16});
  auto fake = int_fake_quant(blocks, at::amax(at::abs(blocks), {1}, true), 4, false, false)
                  .reshape({4, 64});
  EXPECT_TRUE(at::allclose(y, fake, 1e-6, 0));
  expect_scale_is_rtruediv(q.named_buffers().at("_scale"), at::amax(at::abs(blocks), {1}, true));

  QuantizerAttributeConfig n = testing::nvfp4_cfg(/*dynamic=*/true, 16);
  n.fake_quant = false;
  TensorQuantizer nq(n);
  nq.set_amax(at::abs(w).max());
  auto yn = nq.forward(w);
  EXPECT_EQ(nq.last_qtensor()->format, QFormat::kNvfp4);
  EXPECT_EQ(nq.named_buffers().count("_double_scale"), 1u);
  EXPECT_TRUE(at::allclose(yn, nvfp4_fake_quant(w, 16, at::abs(w).max()), 1e-5, 1e-6));
}

}  // namespace
}  // namespace mq::quant
