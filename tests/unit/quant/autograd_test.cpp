// Straight-through estimator and a tiny quantization-aware training run.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>

#include "mq/quant/tensor_quantizer.hpp"
#include "quant_test_util.hpp"

namespace mq::quant {
namespace {

using config::NumBits;
using config::QuantizerAttributeConfig;

QuantizerAttributeConfig int8(bool pass_through) {
  QuantizerAttributeConfig c;
  c.pass_through_bwd = pass_through;
  return c;
}

TEST(Autograd, PassThroughGradient) {
  TensorQuantizer q(int8(true));
  q.set_amax(1.0);
  auto x = (at::randn({4, 5}) * 2).set_requires_grad(true);
  auto y = q.forward(x);
  ASSERT_TRUE(y.requires_grad());
  (y * 3).sum().backward();
  EXPECT_TRUE(at::equal(x.grad(), at::full({4, 5}, 3.0f)));
}

TEST(Autograd, ClippedGradientZeroOutsideAmax) {
  TensorQuantizer q(int8(false));
  q.set_amax(1.0);
  auto x = at::tensor({-2.0f, -1.0f, -0.5f, 0.0f, 0.9f, 1.0f, 1.5f}).set_requires_grad(true);
  q.forward(x).sum().backward();
  EXPECT_TRUE(at::equal(x.grad(), at::tensor({0.f, 1.f, 1.f, 1.f, 1.f, 1.f, 0.f})));
}

TEST(Autograd, ClippedGradientPerChannelAndBf16) {
  QuantizerAttributeConfig c = int8(false);
  c.axis = config::Axis{{0}, false};
  TensorQuantizer q(c);
  q.set_amax(at::tensor({1.0f, 3.0f}).reshape({2, 1}));
  auto x = at::tensor({2.0f, 0.5f, 2.0f, 4.0f})
               .reshape({2, 2})
               .to(at::kBFloat16)
               .set_requires_grad(true);
  q.forward(x).sum().backward();
  EXPECT_TRUE(at::equal(x.grad().to(at::kFloat), at::tensor({0.f, 1.f, 1.f, 0.f}).reshape({2, 2})));
}

TEST(Autograd, MxForcesPassThroughAndPreQuantScaleGetsChainRule) {
  QuantizerAttributeConfig c = testing::mx_cfg(NumBits::floating(2, 1), 32);
  c.pass_through_bwd = false;
  TensorQuantizer q(c);
  q.set_pre_quant_scale(at::full({32}, 0.5f));
  auto x = (at::randn({2, 32}) * 100).set_requires_grad(true);
  q.forward(x).sum().backward();
  EXPECT_TRUE(at::equal(x.grad(), at::full({2, 32}, 0.5f)));
}

TEST(Autograd, NoGraphWithoutRequiresGrad) {
  TensorQuantizer q;
  auto y = q.forward(at::randn({3}));
  EXPECT_FALSE(y.requires_grad());
}

// A linear layer y = x W^T with fake-quantized weight (INT8 per-channel) and input (FP8
// per-tensor), trained with SGD on a regression target: the loss must fall.
class TinyQat : public ::testing::TestWithParam<bool> {};

TEST_P(TinyQat, LossFalls) {
  at::manual_seed(0);
  const bool fp8_weight = GetParam();
  auto w_true = at::randn({4, 16});
  auto x = at::randn({128, 16});
  auto target = at::matmul(x, w_true.t());
  auto w = (at::randn({4, 16}) * 0.1).set_requires_grad(true);

  QuantizerAttributeConfig wc;
  if (fp8_weight) {
    wc.num_bits = NumBits::floating(4, 3);
  } else {
    wc.axis = config::Axis{{0}, false};
  }
  QuantizerAttributeConfig ic;
  ic.num_bits = NumBits::floating(4, 3);
  TensorQuantizer wq(wc), iq(ic);
  calibrate_and_fake_quant(iq,
                           x);  // static input amax; the weight amax stays dynamic (uncalibrated)

  auto loss_of = [&]() {
    auto y = at::matmul(iq.forward(x), wq.forward(w).t());
    return (y - target).pow(2).mean();
  };
  const float first = loss_of().item<float>();
  float last = first;
  for (int step = 0; step < 60; ++step) {
    auto loss = loss_of();
    if (w.grad().defined()) w.grad().zero_();
    loss.backward();
    {
      c10::NoGradGuard ng;
      w.sub_(w.grad() * 0.2);
    }
    last = loss.item<float>();
  }
  EXPECT_LT(last, first * 0.05f) << "first " << first << " last " << last;
}

INSTANTIATE_TEST_SUITE_P(Formats, TinyQat, ::testing::Values(false, true));

}  // namespace
}  // namespace mq::quant
