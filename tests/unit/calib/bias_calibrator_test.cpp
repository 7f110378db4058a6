// Affine bias (reference §2.8): compute_bias and the static BiasCalibrator, against brute-force means.
#include <limits>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "mq/core/error.hpp"
#include "mq/quant/calibrator.hpp"

namespace mq::quant {
namespace {

at::Tensor randn(std::vector<int64_t> shape, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::randn(shape, gen) + 0.3;  // a non-zero mean so that the bias matters
}

// Brute-force per-(h, d) statistics of a (B, H, S, D) tensor over b and s.
struct KvStats {
  std::vector<double> mean, mx, mn;
};
KvStats kv_stats(const at::Tensor& x) {
  const at::Tensor xd = x.to(at::kDouble).contiguous();
  const int64_t B = xd.size(0), H = xd.size(1), S = xd.size(2), D = xd.size(3);
  KvStats st;
  for (int64_t h = 0; h < H; ++h) {
    for (int64_t d = 0; d < D; ++d) {
      double sum = 0, mx = -std::numeric_limits<double>::infinity(), mn = std::numeric_limits<double>::infinity();
      for (int64_t b = 0; b < B; ++b) {
        for (int64_t s = 0; s < S; ++s) {
          const double v = xd[b][h][s][d].item<double>();
          sum += v;
          mx = std::max(mx, v);
          mn = std::min(mn, v);
        }
      }
      st.mean.push_back(sum / static_cast<double>(B * S));
      st.mx.push_back(mx);
      st.mn.push_back(mn);
    }
  }
  return st;
}

TEST(ComputeBias, KvPerHeadPerChannel) {
  // {-2, -4} on (B, H, S, D) reduces S and B: bias (1, H, 1, D).
  const at::Tensor x = randn({2, 3, 5, 4}, 1);
  const std::vector<int64_t> axes{-2, -4};
  const KvStats st = kv_stats(x);
  const at::Tensor mean = compute_bias(x, axes, "mean");
  ASSERT_EQ(mean.sizes(), (at::IntArrayRef{1, 3, 1, 4}));
  const at::Tensor mm = compute_bias(x, axes, "max_min");
  ASSERT_EQ(mm.sizes(), (at::IntArrayRef{1, 3, 1, 4}));
  for (int64_t h = 0; h < 3; ++h) {
    for (int64_t d = 0; d < 4; ++d) {
      const size_t k = static_cast<size_t>(h * 4 + d);
      EXPECT_NEAR(mean[0][h][0][d].item<double>(), st.mean[k], 1e-6);
      // (max + min) / 2 of fp32 values is exact enough in fp32 to compare with a tight bound.
      EXPECT_FLOAT_EQ(mm[0][h][0][d].item<float>(), static_cast<float>((st.mx[k] + st.mn[k]) / 2));
    }
  }
  // Positive and negative spellings are the same axes.
  EXPECT_TRUE(at::equal(compute_bias(x, std::vector<int64_t>{0, 2}, "mean"), mean));
}

TEST(ComputeBias, PerTensorAndDtype) {
  const at::Tensor x = at::tensor({1.0f, 2.0f, 4.0f, -3.0f});
  const at::Tensor m = compute_bias(x, std::nullopt, "mean");
  EXPECT_EQ(m.dim(), 0);
  EXPECT_EQ(m.item<float>(), 1.0f);
  EXPECT_EQ(compute_bias(x, std::nullopt, "max_min").item<float>(), 0.5f);
  const at::Tensor xb = x.to(at::kBFloat16).view({2, 2});
  const at::Tensor b = compute_bias(xb, std::vector<int64_t>{0}, "max_min");
  EXPECT_EQ(b.scalar_type(), at::kBFloat16);
  EXPECT_EQ(b.sizes(), (at::IntArrayRef{1, 2}));
  EXPECT_EQ(b[0][0].item<float>(), 2.5f);   // (4 + 1) / 2
  EXPECT_EQ(b[0][1].item<float>(), -0.5f);  // (2 - 3) / 2
}

TEST(ComputeBias, Errors) {
  const at::Tensor x = at::ones({2, 3});
  EXPECT_THROW(compute_bias(x, std::nullopt, "median"), mq::Error);
  EXPECT_THROW(compute_bias(x, std::vector<int64_t>{2}, "mean"), mq::Error);
  EXPECT_THROW(compute_bias(x, std::vector<int64_t>{-3}, "max_min"), mq::Error);
  EXPECT_THROW(BiasCalibrator("median"), mq::Error);
}

TEST(BiasCalibrator, MeanIsEqualWeightMeanOfBatchMeans) {
  const std::vector<int64_t> axes{-2, -4};
  BiasCalibrator cal("mean", axes);
  EXPECT_FALSE(cal.compute_bias().has_value());
  // Batches of different B and S: each batch weighs the same regardless of its size.
  const std::vector<at::Tensor> xs{randn({1, 2, 3, 4}, 2), randn({3, 2, 7, 4}, 3) * 2, randn({2, 2, 1, 4}, 4) - 1};
  std::vector<double> expect(8, 0.0);
  for (const auto& x : xs) {
    cal.collect(x);
    const KvStats st = kv_stats(x);
    for (size_t k = 0; k < 8; ++k) expect[k] += st.mean[k] / static_cast<double>(xs.size());
  }
  const at::Tensor b = *cal.compute_bias();
  ASSERT_EQ(b.sizes(), (at::IntArrayRef{1, 2, 1, 4}));
  EXPECT_EQ(b.scalar_type(), at::kFloat);
  for (int64_t h = 0; h < 2; ++h)
    for (int64_t d = 0; d < 4; ++d) EXPECT_NEAR(b[0][h][0][d].item<double>(), expect[h * 4 + d], 1e-6);
  EXPECT_TRUE(at::allclose(cal.compute_dynamic_bias(xs[1]), compute_bias(xs[1], axes, "mean")));
  cal.reset();
  EXPECT_FALSE(cal.has_data());
}

TEST(BiasCalibrator, MeanUpdateInFp32KeepsBf16) {
  BiasCalibrator cal("mean");
  // Batch means 1, 2, 4 (exact in bf16): running (1 + 2 + 4) / 3 = 2.333.. rounded once to bf16.
  for (float v : {1.0f, 2.0f, 4.0f}) cal.collect(at::full({3}, v, at::kBFloat16));
  const at::Tensor b = *cal.compute_bias();
  EXPECT_EQ(b.scalar_type(), at::kBFloat16);
  // Step 2: (1*1 + 2)/2 = 1.5 (exact); step 3: (1.5*2 + 4)/3 = 7/3 -> bf16.
  EXPECT_EQ(b.item<float>(), at::scalar_tensor(7.0 / 3.0, at::kFloat).to(at::kBFloat16).item<float>());
}

TEST(BiasCalibrator, MaxMinUsesRunningExtremes) {
  BiasCalibrator cal("max_min", std::vector<int64_t>{0});
  cal.collect(at::tensor({1.0f, -1.0f, 3.0f, 0.0f}).view({2, 2}));   // col0 {1, 3}, col1 {-1, 0}
  cal.collect(at::tensor({-5.0f, 2.0f}).view({1, 2}));               // col0 -5, col1 2
  const at::Tensor b = *cal.compute_bias();
  ASSERT_EQ(b.sizes(), (at::IntArrayRef{1, 2}));
  EXPECT_EQ(b[0][0].item<float>(), -1.0f);  // (3 + -5) / 2
  EXPECT_EQ(b[0][1].item<float>(), 0.5f);   // (2 + -1) / 2
  EXPECT_THROW(cal.collect(at::ones({2, 3})), mq::Error);
  cal.reset();
  cal.collect(at::ones({2, 3}));
  EXPECT_EQ(cal.compute_bias()->sizes(), (at::IntArrayRef{1, 3}));
}

TEST(BiasCalibrator, MeanShapeChangeThrows) {
  BiasCalibrator cal("mean", std::vector<int64_t>{0});
  cal.collect(at::ones({2, 3}));
  EXPECT_THROW(cal.collect(at::ones({2, 4})), mq::Error);
}

}  // namespace
}  // namespace mq::quant
