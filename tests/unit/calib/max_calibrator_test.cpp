// reduce_amax / convert_quantization_axis_to_reduce_axis / MaxCalibrator: closed forms (reference §2.1).
#include <cmath>
#include <limits>
#include <tuple>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "mq/core/error.hpp"
#include "mq/quant/calibrator.hpp"
#include "mq/quant/utils.hpp"

namespace mq::quant {
namespace {

using Axis = std::optional<std::vector<int64_t>>;

at::Tensor randn(std::vector<int64_t> shape, uint64_t seed, at::ScalarType dtype = at::kFloat) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::randn(shape, gen, at::TensorOptions().dtype(at::kFloat)).to(dtype);
}

// Brute-force amax: the max |x| over every element whose index agrees with `idx` on the kept dims.
float brute_amax(const at::Tensor& x, const std::vector<int64_t>& kept, const std::vector<int64_t>& idx) {
  const at::Tensor xf = x.to(at::kFloat).contiguous();
  const int64_t nd = xf.dim();
  float best = 0.0f;
  std::vector<int64_t> pos(nd, 0);
  for (int64_t flat = 0; flat < xf.numel(); ++flat) {
    int64_t rem = flat;
    for (int64_t d = nd - 1; d >= 0; --d) {
      pos[d] = rem % xf.size(d);
      rem /= xf.size(d);
    }
    bool match = true;
    for (int64_t d : kept) match = match && pos[d] == idx[d];
    if (match) best = std::max(best, std::fabs(xf.data_ptr<float>()[flat]));
  }
  return best;
}

TEST(ReduceAxis, ReferenceExamples) {
  const at::Tensor x3 = at::zeros({2, 3, 4});
  EXPECT_EQ(*convert_quantization_axis_to_reduce_axis(x3, std::vector<int64_t>{0}), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(*convert_quantization_axis_to_reduce_axis(x3, std::vector<int64_t>{-2}), (std::vector<int64_t>{0, 2}));
  const at::Tensor x4 = at::zeros({2, 3, 4, 5});
  EXPECT_EQ(*convert_quantization_axis_to_reduce_axis(x4, std::vector<int64_t>{0, -1}),
            (std::vector<int64_t>{1, 2}));
  EXPECT_FALSE(convert_quantization_axis_to_reduce_axis(x4, std::nullopt).has_value());
  EXPECT_TRUE(convert_quantization_axis_to_reduce_axis(x3, std::vector<int64_t>{0, 1, 2})->empty());
  EXPECT_THROW(convert_quantization_axis_to_reduce_axis(x3, std::vector<int64_t>{3}), mq::Error);
  EXPECT_THROW(convert_quantization_axis_to_reduce_axis(x3, std::vector<int64_t>{-4}), mq::Error);
}

TEST(ReduceAmax, PerTensorIsScalarAndKeepsDtype) {
  for (auto dt : {at::kFloat, at::kBFloat16, at::kHalf, at::kDouble}) {
    const at::Tensor x = randn({5, 7}, 1, dt);
    const at::Tensor a = reduce_amax(x, std::nullopt);
    EXPECT_EQ(a.dim(), 0);
    EXPECT_EQ(a.scalar_type(), dt);
    EXPECT_EQ(a.item<double>(), x.abs().max().item<double>());
  }
  // keepdims does not apply to a full reduction.
  EXPECT_EQ(reduce_amax(randn({3, 4}, 2), std::nullopt, /*keepdims=*/true).dim(), 0);
}

TEST(ReduceAmax, NegativeDominatesAndNanPropagates) {
  const at::Tensor x = at::tensor({1.0f, -3.5f, 2.0f});
  EXPECT_EQ(reduce_amax(x, std::nullopt).item<float>(), 3.5f);
  const at::Tensor y = at::tensor({1.0f, std::numeric_limits<float>::quiet_NaN(), 2.0f});
  EXPECT_TRUE(std::isnan(reduce_amax(y, std::nullopt).item<float>()));
  EXPECT_TRUE(std::isnan(reduce_amax(y.view({1, 3}), std::vector<int64_t>{0})[0][1].item<float>()));
}

TEST(ReduceAmax, Fp8IsUpcast) {
  const at::Tensor x = at::tensor({0.5f, -448.0f, 3.0f}).to(at::kFloat8_e4m3fn);
  const at::Tensor a = reduce_amax(x, std::nullopt);
  EXPECT_EQ(a.scalar_type(), at::kFloat);
  EXPECT_EQ(a.item<float>(), 448.0f);
  const at::Tensor b = reduce_amax(x.view({3, 1}), std::vector<int64_t>{1});
  EXPECT_EQ(b.sizes(), (at::IntArrayRef{3, 1}));
  EXPECT_EQ(b[1][0].item<float>(), 448.0f);
}

TEST(ReduceAmax, KeepdimsSqueezeScalarAndEmptyAxis) {
  const at::Tensor x = randn({1, 4}, 3);
  // One element left: squeezed to 0-d unless squeeze_scalar is off.
  EXPECT_EQ(reduce_amax(x, std::vector<int64_t>{0, 1}).dim(), 0);
  EXPECT_EQ(reduce_amax(x, std::vector<int64_t>{0, 1}, true, false).sizes(), (at::IntArrayRef{1, 1}));
  EXPECT_EQ(reduce_amax(x, std::vector<int64_t>{0}).sizes(), (at::IntArrayRef{1, 4}));
  EXPECT_EQ(reduce_amax(x, std::vector<int64_t>{0}, false).sizes(), (at::IntArrayRef{4}));
  // An empty axis list reduces everything (torch.amax with dim=()).
  const at::Tensor y = randn({3, 5}, 4);
  EXPECT_EQ(reduce_amax(y, std::vector<int64_t>{}).item<float>(), y.abs().max().item<float>());
}

TEST(ReduceSum, Basics) {
  const at::Tensor x = at::arange(24, at::kFloat).view({2, 3, 4});
  EXPECT_EQ(reduce_sum(x, std::nullopt).item<float>(), 276.0f);
  const at::Tensor s = reduce_sum(x, std::vector<int64_t>{0, -1});
  EXPECT_EQ(s.sizes(), (at::IntArrayRef{1, 3, 1}));
  // dim1 = j: sum over i, k of (12 i + 4 j + k) = 2*4*4j + 4*12 + 2*6 = 32 j + 60
  for (int j = 0; j < 3; ++j) EXPECT_EQ(s[0][j][0].item<float>(), 32.0f * j + 60.0f);
  EXPECT_EQ(reduce_sum(x, std::vector<int64_t>{1}, false).sizes(), (at::IntArrayRef{2, 4}));
}

// Sweep: shape x kept axis x dtype; the amax after several batches is the elementwise max of brute-force
// per-batch amaxes, with the expected keepdims shape and the input dtype.
using SweepParam = std::tuple<std::vector<int64_t>, Axis, at::ScalarType>;
class MaxCalibratorSweep : public ::testing::TestWithParam<SweepParam> {};

TEST_P(MaxCalibratorSweep, RunningMaxMatchesBruteForce) {
  const auto& [shape, axis, dtype] = GetParam();
  MaxCalibrator cal(8, axis);
  EXPECT_FALSE(cal.has_data());
  EXPECT_FALSE(cal.compute_amax().has_value());
  std::vector<at::Tensor> batches;
  for (uint64_t s = 0; s < 3; ++s) {
    // Scale each batch differently so the running max picks values from different batches.
    batches.push_back((randn(shape, 10 + s) * (1.0 + 0.5 * static_cast<double>(s % 2))).to(dtype));
    cal.collect(batches.back());
  }
  ASSERT_TRUE(cal.has_data());
  const at::Tensor amax = *cal.compute_amax();
  EXPECT_EQ(amax.scalar_type(), dtype);

  std::vector<int64_t> kept;
  const int64_t nd = static_cast<int64_t>(shape.size());
  if (axis) {
    for (int64_t a : *axis) kept.push_back(a < 0 ? a + nd : a);
  }
  std::vector<int64_t> expect_shape;
  int64_t numel = 1;
  for (int64_t d = 0; d < nd; ++d) {
    const bool k = std::find(kept.begin(), kept.end(), d) != kept.end();
    expect_shape.push_back(k ? shape[d] : 1);
    numel *= k ? shape[d] : 1;
  }
  if (!axis || numel == 1) {
    EXPECT_EQ(amax.dim(), 0);
  } else {
    EXPECT_EQ(amax.sizes(), at::IntArrayRef(expect_shape));
  }
  const at::Tensor flat = amax.to(at::kFloat).reshape({-1}).contiguous();
  ASSERT_EQ(flat.numel(), numel);
  for (int64_t e = 0; e < numel; ++e) {
    std::vector<int64_t> idx(nd, 0);
    int64_t rem = e;
    for (int64_t d = nd - 1; d >= 0; --d) {
      idx[d] = rem % expect_shape[d];
      rem /= expect_shape[d];
    }
    float expect = 0.0f;
    for (const auto& b : batches) expect = std::max(expect, brute_amax(b, kept, idx));
    EXPECT_EQ(flat[e].item<float>(), expect) << "element " << e;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, MaxCalibratorSweep,
    ::testing::Values(SweepParam{{7}, std::nullopt, at::kFloat}, SweepParam{{1, 33}, std::nullopt, at::kBFloat16},
                      SweepParam{{33, 17}, Axis{{0}}, at::kFloat}, SweepParam{{33, 17}, Axis{{-1}}, at::kBFloat16},
                      SweepParam{{1, 5}, Axis{{0}}, at::kFloat},  // one channel: squeezed to 0-d
                      SweepParam{{2, 3, 5}, Axis{{-1}}, at::kHalf}, SweepParam{{2, 3, 5}, Axis{{0, 2}}, at::kFloat},
                      SweepParam{{4, 3, 2, 5}, Axis{{1, -1}}, at::kBFloat16},
                      SweepParam{{3, 1, 1, 1}, Axis{{0}}, at::kFloat}));

TEST(MaxCalibrator, PerChannelWeightShape) {
  // axis 0 on W (out, in) gives (out, 1); on a conv weight (K, C, R, S) gives (K, 1, 1, 1).
  MaxCalibrator w(8, std::vector<int64_t>{0});
  w.collect(randn({6, 10}, 5, at::kBFloat16));
  EXPECT_EQ(w.compute_amax()->sizes(), (at::IntArrayRef{6, 1}));
  EXPECT_EQ(w.compute_amax()->scalar_type(), at::kBFloat16);
  MaxCalibrator c(8, std::vector<int64_t>{0});
  c.collect(randn({4, 3, 2, 2}, 6));
  EXPECT_EQ(c.compute_amax()->sizes(), (at::IntArrayRef{4, 1, 1, 1}));
  // axis -1 on an activation (B, T, H) gives (1, 1, H).
  MaxCalibrator a(8, std::vector<int64_t>{-1});
  a.collect(randn({2, 3, 8}, 7));
  EXPECT_EQ(a.compute_amax()->sizes(), (at::IntArrayRef{1, 1, 8}));
}

TEST(MaxCalibrator, ErrorsAndReset) {
  MaxCalibrator cal;
  EXPECT_THROW(cal.collect(at::tensor({1.0f, std::numeric_limits<float>::quiet_NaN()})), mq::Error);
  EXPECT_THROW(cal.collect(at::tensor({1.0f, -std::numeric_limits<float>::infinity()})), mq::Error);
  EXPECT_FALSE(cal.has_data());

  MaxCalibrator pc(8, std::vector<int64_t>{-1});
  pc.collect(randn({4, 8}, 8));
  try {
    pc.collect(randn({4, 9}, 9));
    FAIL() << "shape change accepted";
  } catch (const mq::Error& e) {
    EXPECT_NE(std::string(e.what()).find("amax shape changed!"), std::string::npos) << e.what();
  }
  pc.reset();
  EXPECT_FALSE(pc.has_data());
  pc.collect(at::full({2, 9}, -2.5f));
  EXPECT_EQ(pc.compute_amax()->sizes(), (at::IntArrayRef{1, 9}));
  EXPECT_EQ(pc.compute_amax()->max().item<float>(), 2.5f);
}

TEST(MaxCalibrator, ContinuesAfterComputeAndSetAxis) {
  MaxCalibrator cal;
  cal.collect(at::tensor({1.0f, -2.0f}));
  EXPECT_EQ(cal.compute_amax()->item<float>(), 2.0f);
  cal.collect(at::tensor({0.5f}));
  EXPECT_EQ(cal.compute_amax()->item<float>(), 2.0f);
  cal.collect(at::tensor({-3.0f}));
  EXPECT_EQ(cal.compute_amax()->item<float>(), 3.0f);
  cal.reset();
  cal.set_axis(std::vector<int64_t>{0});
  cal.collect(at::tensor({1.0f, -4.0f, 2.0f, 0.5f}).view({2, 2}));
  const at::Tensor a = *cal.compute_amax();
  EXPECT_EQ(a.sizes(), (at::IntArrayRef{2, 1}));
  EXPECT_EQ(a[0][0].item<float>(), 4.0f);
  EXPECT_EQ(a[1][0].item<float>(), 2.0f);
}

TEST(MaxCalibrator, DtypePromotesLikeTorchMax) {
  MaxCalibrator cal;
  cal.collect(at::tensor({1.5f}).to(at::kBFloat16));
  EXPECT_EQ(cal.compute_amax()->scalar_type(), at::kBFloat16);
  cal.collect(at::tensor({1.25f}));
  EXPECT_EQ(cal.compute_amax()->scalar_type(), at::kFloat);
  EXPECT_EQ(cal.compute_amax()->item<float>(), 1.5f);
}

TEST(MakeCalibrator, Kinds) {
  auto m = make_calibrator("max", 8, std::vector<int64_t>{0}, false);
  EXPECT_EQ(m->class_name(), "MaxCalibrator");
  auto h = make_calibrator("histogram", 8, std::nullopt, false);
  EXPECT_EQ(h->class_name(), "HistogramCalibrator");
  auto f = make_calibrator("histogram", std::pair<int, int>{4, 3}, std::nullopt, false);
  EXPECT_EQ(f->class_name(), "HistogramCalibrator");
  EXPECT_THROW(make_calibrator("histogram", 8, std::vector<int64_t>{0}, false), mq::Error);
  EXPECT_THROW(make_calibrator("mse", 8, std::nullopt, false), mq::Error);
  EXPECT_THROW(h->set_axis(std::vector<int64_t>{-1}), mq::Error);
}

}  // namespace
}  // namespace mq::quant
