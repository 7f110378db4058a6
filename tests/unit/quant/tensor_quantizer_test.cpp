// TensorQuantizer behaviour (reference §5, §7 cases 16-25 and §2.12 through the quantizer).
#include "mq/quant/tensor_quantizer.hpp"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "mq/core/error.hpp"
#include "mq/quant/fake_quant.hpp"
#include "quant_test_util.hpp"

namespace mq::quant {
namespace {

using config::Axis;
using config::BlockSizes;
using config::NumBits;
using config::QuantizerAttributeConfig;
using testing::expect_equal;
using testing::fp8_cfg;
using testing::mx_cfg;
using testing::nvfp4_cfg;
using testing::T;

Axis axis(std::vector<int> d, bool tuple = false) { return Axis{std::move(d), tuple}; }

QuantizerAttributeConfig int_cfg(int bits, std::optional<Axis> ax = std::nullopt) {
  QuantizerAttributeConfig c;
  c.num_bits = NumBits::integer(bits);
  c.axis = ax;
  return c;
}

QuantizerAttributeConfig block_cfg(int bits, config::AxisBlockMap axes) {
  QuantizerAttributeConfig c;
  c.num_bits = NumBits::integer(bits);
  BlockSizes b;
  b.axes = std::move(axes);
  c.block_sizes = b;
  return c;
}

// ---- defaults and config application ----

TEST(TensorQuantizer, DefaultIsInt8PerTensorDynamicAmax) {
  TensorQuantizer q;
  EXPECT_EQ(q.num_bits(), NumBits::integer(8));
  EXPECT_FALSE(q.axis().has_value());
  EXPECT_FALSE(q.narrow_range());
  EXPECT_FALSE(q.has_amax_buffer());
  EXPECT_EQ(q.repr(),
            "TensorQuantizer(8 bit fake per-tensor amax=dynamic calibrator=MaxCalibrator quant)");
  at::manual_seed(0);
  auto x = at::randn({5, 7});
  expect_equal(q.forward(x), int_fake_quant(x, at::abs(x).max(), 8, false, false));
  EXPECT_EQ(q.maxbound(), 127.0);
}

TEST(TensorQuantizer, BlockSizesClearAxisAndMxForcesPassThrough) {
  auto c = mx_cfg(NumBits::floating(2, 1));
  c.pass_through_bwd = false;
  TensorQuantizer q(c);
  EXPECT_TRUE(q.is_mx_format());
  EXPECT_TRUE(q.is_mxfp(4));
  EXPECT_FALSE(q.is_mxfp(8));
  EXPECT_TRUE(q.pass_through_bwd());
  EXPECT_FALSE(q.axis().has_value());
}

TEST(TensorQuantizer, PartialEnableFalseDisablesRotationForGood) {
  QuantizerAttributeConfig c = int_cfg(8);
  c.rotate.enable = true;
  TensorQuantizer q(c);
  EXPECT_TRUE(q.rotate_is_enabled());
  QuantizerAttributeConfig off;
  off.enable = false;
  off.fields_set = {"enable"};
  q.set_from_partial_attribute_config(off);
  EXPECT_FALSE(q.is_enabled());
  EXPECT_FALSE(q.rotate_is_enabled());
  QuantizerAttributeConfig on;
  on.enable = true;
  on.fields_set = {"enable"};
  q.set_from_partial_attribute_config(on);
  EXPECT_TRUE(q.is_enabled());
  EXPECT_FALSE(q.rotate_is_enabled());
  EXPECT_EQ(q.num_bits(), NumBits::integer(8));
}

TEST(TensorQuantizer, FullConfigReplacesEverything) {
  TensorQuantizer q(int_cfg(4, axis({0})));
  q.set_from_attribute_config(int_cfg(8));
  EXPECT_FALSE(q.axis().has_value());
  EXPECT_EQ(q.num_bits(), NumBits::integer(8));
}

// ---- §7 case 16: pre_quant_scale ----

TEST(TensorQuantizer, PreQuantScale) {
  auto x = T({0.f, 0.4f, 1.1f, 2.f}).reshape({1, 4});
  TensorQuantizer q(int_cfg(8, axis({1})));
  q.set_amax(127.0);
  expect_equal(q.forward(x), T({0.f, 0.f, 1.f, 2.f}).reshape({1, 4}));
  q.set_pre_quant_scale(at::scalar_tensor(2.0f));
  expect_equal(q.forward(x), T({0.f, 1.f, 2.f, 4.f}).reshape({1, 4}));
  TensorQuantizer q2(int_cfg(8, axis({1})));
  q2.set_amax(127.0);
  q2.set_pre_quant_scale(T({1.f, 2.f, 3.f, 4.f}).reshape({1, 4}));
  expect_equal(q2.forward(x), T({0.f, 1.f, 3.f, 8.f}).reshape({1, 4}));
  EXPECT_THROW(q2.set_pre_quant_scale(T({1.f, 2.f})), mq::Error);
}

TEST(TensorQuantizer, PreQuantScaleAppliedWhenDisabled) {
  TensorQuantizer q(int_cfg(8));
  q.disable();
  q.set_pre_quant_scale(T({1.f, 2.f}));
  auto x = T({0.3f, 0.7f});
  expect_equal(q.forward(x), x * T({1.f, 2.f}));
  EXPECT_EQ(q.extra_repr(), "disabled pre_quant_scale=[1.00e+00, 2.00e+00](2)");
  q.set_enable_pre_quant_scale(false);
  expect_equal(q.forward(x), x);
}

// ---- §7 case 17 ----

TEST(TensorQuantizer, StepSize) {
  TensorQuantizer q(int_cfg(8));
  EXPECT_FALSE(q.step_size().has_value());
  q.set_amax(0.577);
  EXPECT_FLOAT_EQ(q.step_size()->item<float>(), 0.577f / 127.0f);
  TensorQuantizer f(fp8_cfg());
  f.set_amax(1.0);
  EXPECT_THROW(f.step_size(), mq::Error);
}

// ---- §2.12 through the quantizer ----

TEST(TensorQuantizer, Int8WorkedExample) {
  auto x = T({0.1f, -0.5f, 1.27f, 2.0f, -2.0f});
  TensorQuantizer q(int_cfg(8));
  q.set_amax(1.27);
  expect_equal(q.forward(x), T({0.1f, -0.5f, 1.27f, 1.27f, -1.28f}));
  auto c = int_cfg(8);
  c.narrow_range = true;
  TensorQuantizer n(c);
  n.set_amax(1.27);
  expect_equal(n.forward(x), T({0.1f, -0.5f, 1.27f, 1.27f, -1.27f}));
  EXPECT_EQ(n.extra_repr(),
            "8 bit narrow fake per-tensor amax=1.27e+00 calibrator=MaxCalibrator quant");
}

TEST(TensorQuantizer, Fp8WorkedExamples) {
  TensorQuantizer q(fp8_cfg());
  q.set_amax(448.0);
  expect_equal(q.forward(T({0.3f, 1.1f, 17.0f, 500.0f, -0.001f, 0.0009f})),
               T({0.3125f, 1.125f, 16.0f, 448.0f, -0.001953125f, 0.0f}));
  TensorQuantizer q2(fp8_cfg());
  q2.set_amax(2.0);
  EXPECT_EQ(q2.forward(T({0.3f}))[0].item<float>(), 0.2857142984867096f);
  EXPECT_EQ(q2.maxbound(), 448.0);
}

TEST(TensorQuantizer, Nvfp4WorkedExampleAndRepr) {
  auto x = T({0.0f, 0.3f, -0.6f, 0.9f, 1.2f, -1.6f, 2.0f, 2.4f, -3.1f, 3.3f, 4.0f, -4.6f, 5.2f,
              6.1f, -7.0f, 7.5f})
               .reshape({1, 16});
  TensorQuantizer q(nvfp4_cfg());
  q.set_amax(12.0);
  auto y = q.forward(x).reshape({-1});
  std::vector<float> codes = {0, 0, -.5f, .5f, 1, -1, 1.5f, 2, -2, 3, 3, -4, 4, 4, -6, 6};
  for (int i = 0; i < 16; ++i) EXPECT_EQ(y[i].item<float>(), codes[i] * 1.2857143878936768f) << i;
  EXPECT_EQ(q.maxbound(), 6.0);
  TensorQuantizer r(nvfp4_cfg());
  r.set_amax(0.25);
  EXPECT_EQ(r.repr(),
            "TensorQuantizer((2, 1) bit fake block_sizes={-1: 16, 'type': 'dynamic', 'scale_bits': "
            "(4, 3)}, "
            "amax=2.50e-01 calibrator=MaxCalibrator quant)");
}

TEST(TensorQuantizer, MxWorkedExamples) {
  TensorQuantizer q(mx_cfg(NumBits::floating(2, 1), 8));
  expect_equal(q.forward(T({0.1f, 2, 10, 16, 39, 49.5f, 30.5f, 98.8f}).reshape({1, 8})),
               T({0, 0, 16, 16, 32, 48, 32, 96}).reshape({1, 8}));
  expect_equal(q.forward(T({0, .25f, .75f, 1.25f, 1.75f, 2.5f, 3.5f, 5}).reshape({1, 8})),
               T({0, 0, 1, 1, 2, 2, 4, 4}).reshape({1, 8}));
  expect_equal(q.forward(T({2.3f, 9, .5f, 100.5f, 900.3f, 1e4f, 2000, 360000}).reshape({1, 8})),
               T({0, 0, 0, 0, 0, 0, 0, 393216}).reshape({1, 8}));
  TensorQuantizer m(mx_cfg(NumBits::floating(4, 3), 8));
  expect_equal(
      m.forward(
          T({0.084f, 0.273f, 0.049f, 0.165f, 0.229f, 0.827f, 0.571f, 0.361f}).reshape({1, 8})),
      T({0.0859375f, 0.28125f, 0.05078125f, 0.171875f, 0.234375f, 0.8125f, 0.5625f, 0.375f})
          .reshape({1, 8}));
  EXPECT_FALSE(m.amax().has_value());
  EXPECT_NE(m.extra_repr().find("amax=None"), std::string::npos);
}

TEST(TensorQuantizer, MxUnsupportedElementFormatThrows) {
  TensorQuantizer q(mx_cfg(NumBits::integer(4), 32));
  EXPECT_THROW(q.forward(at::randn({2, 32})), mq::Error);
}

// ---- narrow / unsigned / zero amax ----

TEST(TensorQuantizer, UnsignedNegativeInputThrows) {
  auto c = int_cfg(8);
  c.is_unsigned = true;
  TensorQuantizer q(c);
  q.set_amax(2.0);
  EXPECT_THROW(q.forward(T({-1.f, 1.f})), mq::Error);
  EXPECT_EQ(q.maxbound(), 255.0);
  auto y = q.forward(T({0.f, 1.f, 2.f}));
  EXPECT_EQ(y[2].item<float>(), 2.0f);
  EXPECT_EQ(q.extra_repr(),
            "unsigned 8 bit fake per-tensor amax=2.00e+00 calibrator=MaxCalibrator quant");
}

TEST(TensorQuantizer, ZeroAmax) {
  auto x = T({0.5f, -1.0f, 3.0f});
  TensorQuantizer i8(int_cfg(8));
  i8.set_amax(0.0);
  expect_equal(i8.forward(x), T({0.f, 0.f, 0.f}));
  TensorQuantizer f8(fp8_cfg());
  f8.set_amax(0.0);
  auto y = f8.forward(x);
  EXPECT_TRUE(at::all(at::isfinite(y)).item<bool>());
  expect_equal(y, fp8_fake_quant(x, at::scalar_tensor(1.0f)));
  // Per-channel FP8 with one zero channel stays finite too.
  TensorQuantizer pc(fp8_cfg());
  pc.set_from_attribute_config([] {
    auto c = fp8_cfg();
    c.axis = axis({0});
    return c;
  }());
  pc.set_amax(T({0.f, 2.f}).reshape({2, 1}));
  EXPECT_TRUE(at::all(at::isfinite(pc.forward(at::randn({2, 5})))).item<bool>());
  // export_amax replaces zero by maxbound, so the exported scale is exactly 1.
  EXPECT_EQ(i8.export_amax()->item<float>(), 127.0f);
  EXPECT_EQ(f8.export_amax()->item<float>(), 448.0f);
}

// ---- calibration, amax shapes (§5.3) ----

TEST(TensorQuantizer, PerChannelAmaxShapes) {
  at::manual_seed(5);
  auto w = at::randn({6, 10});
  TensorQuantizer q0(int_cfg(8, axis({0})));
  calibrate_and_fake_quant(q0, w);
  EXPECT_EQ(q0.amax()->sizes(), (at::IntArrayRef{6, 1}));
  expect_equal(*q0.amax(), at::amax(at::abs(w), {1}, true));
  EXPECT_EQ(q0.export_amax()->sizes(), (at::IntArrayRef{6}));

  auto conv = at::randn({4, 3, 2, 2});
  TensorQuantizer qc(int_cfg(8, axis({0})));
  calibrate_and_fake_quant(qc, conv);
  EXPECT_EQ(qc.amax()->sizes(), (at::IntArrayRef{4, 1, 1, 1}));

  auto act = at::randn({2, 3, 5});
  TensorQuantizer qa(int_cfg(8, axis({-1})));
  auto y = calibrate_and_fake_quant(qa, act);
  EXPECT_EQ(qa.amax()->sizes(), (at::IntArrayRef{1, 1, 5}));
  expect_equal(y, int_fake_quant(act, at::amax(at::abs(act), {0, 1}, true), 8, false, false));

  TensorQuantizer pt(int_cfg(8));
  calibrate_and_fake_quant(pt, w);
  EXPECT_EQ(pt.amax()->dim(), 0);
  EXPECT_EQ(pt.export_amax()->sizes(), (at::IntArrayRef{1}));
}

TEST(TensorQuantizer, AmaxKeepsInputDtype) {
  auto x = at::randn({4, 8}).to(at::kBFloat16);
  TensorQuantizer q(fp8_cfg());
  auto y = calibrate_and_fake_quant(q, x);
  EXPECT_EQ(q.amax()->scalar_type(), at::kBFloat16);
  EXPECT_EQ(y.scalar_type(), at::kBFloat16);
  expect_equal(y, fp8_fake_quant(x, at::abs(x).max()));
}

TEST(TensorQuantizer, CalibrationModeReturnsInputAndStateMachine) {
  TensorQuantizer q(int_cfg(8));
  q.disable_quant();
  q.enable_calib();
  auto x = at::randn({3, 3});
  expect_equal(q.forward(x), x);
  EXPECT_NE(q.extra_repr().find("amax=dynamic calibrator=MaxCalibrator calib"), std::string::npos);
  q.load_calib_amax();
  q.enable_quant();
  q.disable_calib();
  EXPECT_EQ(q.amax()->item<float>(), at::abs(x).max().item<float>());
  TensorQuantizer empty(int_cfg(8));
  try {
    empty.load_calib_amax();
    FAIL();
  } catch (const mq::Error& e) {
    EXPECT_NE(std::string(e.what()).find("Calibrator returned None"), std::string::npos);
  }
  empty.load_calib_amax({}, /*strict=*/false);
  EXPECT_TRUE(std::isnan(empty.amax()->item<float>()));
}

TEST(TensorQuantizer, DynamicTypeNeverCalibrates) {
  auto c = fp8_cfg();
  c.type = "dynamic";
  TensorQuantizer q(c);
  q.enable_calib();
  EXPECT_FALSE(q.calib_enabled());
  auto x = at::randn({4, 4});
  calibrate_and_fake_quant(q, x);
  EXPECT_FALSE(q.has_amax_buffer());
  EXPECT_THROW(q.load_calib_amax(), mq::Error);
}

// Dynamic per-token FP8 via block_sizes {-1: None} (FP8_PER_CHANNEL_PER_TOKEN input quantizer).
TEST(TensorQuantizer, DynamicPerTokenFp8) {
  auto c = fp8_cfg();
  c.type = "dynamic";
  BlockSizes b;
  b.axes[-1] = std::nullopt;
  c.block_sizes = b;
  TensorQuantizer q(c);
  at::manual_seed(6);
  auto x = at::randn({2, 3, 8});
  auto y = calibrate_and_fake_quant(q, x);
  EXPECT_FALSE(q.block_sizes().has_value());
  ASSERT_TRUE(q.axis().has_value());
  EXPECT_EQ(q.axis()->dims, (std::vector<int>{0, 1}));
  EXPECT_FALSE(q.has_amax_buffer());
  expect_equal(y, fp8_fake_quant(x, at::amax(at::abs(x), {2}, true)));
  EXPECT_EQ(q.extra_repr(),
            "(4, 3) bit fake axis=(0, 1) amax=dynamic calibrator=MaxCalibrator quant");
  // The axis stays fixed for later inputs of another shape.
  auto x2 = at::randn({1, 5, 8});
  expect_equal(q.forward(x2), fp8_fake_quant(x2, at::amax(at::abs(x2), {2}, true)));
}

TEST(TensorQuantizer, AllNoneBlockSizesOnWeightIsAxis0) {
  auto c = int_cfg(8);
  BlockSizes b;
  b.axes[1] = std::nullopt;
  c.block_sizes = b;
  TensorQuantizer q(c);
  auto w = at::randn({4, 6});
  auto y = calibrate_and_fake_quant(q, w);
  EXPECT_EQ(q.axis()->dims, (std::vector<int>{0}));
  TensorQuantizer ref(int_cfg(8, axis({0})));
  expect_equal(y, calibrate_and_fake_quant(ref, w));
}

// ---- static block quantization (§7 cases 18-21) ----

TEST(TensorQuantizer, StaticBlockInt8EqualsPerBlockFakeQuant) {
  at::manual_seed(7);
  auto x = at::randn({8, 4});
  TensorQuantizer q(block_cfg(8, {{-1, 2}}));
  auto y = calibrate_and_fake_quant(q, x);
  auto xb = x.reshape({-1, 2});
  auto amax = at::amax(at::abs(xb), {1}, true);
  expect_equal(y, int_fake_quant(xb, amax, 8, false, false).reshape({8, 4}));
  EXPECT_EQ(q.amax()->sizes(), (at::IntArrayRef{16, 1}));
  EXPECT_EQ(q.axis()->dims, (std::vector<int>{0}));
}

TEST(TensorQuantizer, StaticTwoAxisBlocks) {
  at::manual_seed(8);
  auto x = at::randn({2, 6, 4});
  TensorQuantizer q(block_cfg(8, {{-1, 2}, {1, 3}}));
  auto y = calibrate_and_fake_quant(q, x);
  auto xr = x.reshape({2, 2, 3, 2, 2});
  auto amax = at::amax(at::abs(xr), {2, 4}, true);
  EXPECT_EQ(q.amax()->sizes(), amax.sizes());
  expect_equal(y, int_fake_quant(xr, amax, 8, false, false).reshape({2, 6, 4}));
}

TEST(TensorQuantizer, StaticBlockPadding) {
  at::manual_seed(9);
  auto x = at::randn({3, 4, 5});
  TensorQuantizer q(block_cfg(8, {{-1, 2}}));
  auto y = calibrate_and_fake_quant(q, x);
  auto xp = at::constant_pad_nd(x, {0, 1}, 0).reshape({-1, 2});
  auto ref =
      int_fake_quant(xp, at::amax(at::abs(xp), {1}, true), 8, false, false).reshape({3, 4, 6});
  expect_equal(y, ref.narrow(2, 0, 5).contiguous());
  EXPECT_THROW(q.forward(at::randn({3, 4, 6})), mq::Error);

  auto x2 = at::randn({2, 10, 5});
  TensorQuantizer q2(block_cfg(8, {{-1, 2}, {1, 3}}));
  auto y2 = calibrate_and_fake_quant(q2, x2);
  auto xp2 = at::constant_pad_nd(x2, {0, 1, 0, 2}, 0).reshape({2, 4, 3, 3, 2});
  auto ref2 = int_fake_quant(xp2, at::amax(at::abs(xp2), {2, 4}, true), 8, false, false)
                  .reshape({2, 12, 6});
  expect_equal(y2, ref2.narrow(1, 0, 10).narrow(2, 0, 5).contiguous());
}

TEST(TensorQuantizer, ExportAmaxShapes) {
  auto x = at::randn({4, 6, 8});
  TensorQuantizer b4(block_cfg(4, {{-1, 4}}));
  calibrate_and_fake_quant(b4, x);
  EXPECT_EQ(b4.export_amax()->sizes(), (at::IntArrayRef{4, 6, 2}));
  EXPECT_EQ(*b4.amax_shape_for_export(), (std::vector<int64_t>{4, 6, -1}));
  TensorQuantizer b8(block_cfg(4, {{-1, 8}}));
  calibrate_and_fake_quant(b8, x);
  EXPECT_EQ(b8.export_amax()->sizes(), (at::IntArrayRef{4, 6, 1}));
  TensorQuantizer a0(int_cfg(8, axis({0})));
  calibrate_and_fake_quant(a0, x);
  EXPECT_EQ(a0.export_amax()->sizes(), (at::IntArrayRef{4}));
  TensorQuantizer pt(int_cfg(8));
  calibrate_and_fake_quant(pt, x);
  EXPECT_EQ(pt.export_amax()->sizes(), (at::IntArrayRef{1}));
}

TEST(TensorQuantizer, Int4BlockOddShapesAndZeroBlocks) {
  for (std::vector<int64_t> shape : {std::vector<int64_t>{1, 33}, std::vector<int64_t>{33, 20}}) {
    auto x = at::randn(shape);
    x.narrow(1, 0, 8).zero_();
    TensorQuantizer q(block_cfg(4, {{-1, 8}}));
    auto y = calibrate_and_fake_quant(q, x);
    EXPECT_EQ(y.sizes(), x.sizes());
    EXPECT_TRUE(at::all(y.narrow(1, 0, 8) == 0).item<bool>());
    // Every block has at most 16 distinct codes: q * amax / 7 with q in [-8, 7].
    auto err = (y - x).abs().max().item<float>();
    EXPECT_LE(err, x.abs().max().item<float>() / 7.0f / 2.0f + 1e-6f);
  }
}

// ---- static NVFP4 and promotion ----

TEST(TensorQuantizer, StaticNvfp4NeedsPromotionThenMatchesDynamic) {
  at::manual_seed(10);
  auto w = at::randn({8, 64});
  TensorQuantizer unpromoted(nvfp4_cfg(false));
  unpromoted.set_amax(at::ones({32, 1}));
  EXPECT_THROW(unpromoted.forward(w), mq::Error);

  TensorQuantizer q(nvfp4_cfg(false));
  auto y = calibrate_and_fake_quant(q, w);
  EXPECT_TRUE(q.is_static_block_scale_quantizer());
  EXPECT_EQ(q.class_name(), "StaticBlockScaleQuantizer");
  EXPECT_EQ(q.amax()->sizes(), (at::IntArrayRef{32, 1}));
  EXPECT_EQ(q.amax()->scalar_type(), at::kFloat);
  EXPECT_EQ(q.global_amax()->dim(), 0);
  EXPECT_EQ(q.global_amax()->item<float>(), at::abs(w).max().item<float>());
  EXPECT_TRUE(at::allclose(y, nvfp4_fake_quant(w, 16, at::abs(w).max()), 1e-3, 1e-6));
  EXPECT_NE(q.extra_repr().find("amax=["), std::string::npos);
  // .4f formatting for the static block scale quantizer.
  char buf[64];
  std::snprintf(buf, sizeof(buf), "amax=[%.4f, %.4f](32)", q.amax()->min().item<float>(),
                q.amax()->max().item<float>());
  EXPECT_NE(q.extra_repr().find(buf), std::string::npos) << q.extra_repr();
}

TEST(TensorQuantizer, Nvfp4BfloatRowsOddCols) {
  auto x = at::randn({33, 40}).to(at::kBFloat16);
  TensorQuantizer q(nvfp4_cfg());
  auto y = calibrate_and_fake_quant(q, x);
  EXPECT_EQ(y.scalar_type(), at::kBFloat16);
  expect_equal(y, nvfp4_fake_quant(x, 16, at::abs(x).max()));
}

// ---- constant amax (§7 cases 23-24) ----

TEST(TensorQuantizer, ConstantAmax) {
  auto c = nvfp4_cfg();
  c.constant_amax = 2688.0;
  TensorQuantizer q(c);
  ASSERT_TRUE(q.has_amax_buffer());
  EXPECT_EQ(q.amax()->dim(), 0);
  EXPECT_EQ(q.amax()->scalar_type(), at::kFloat);
  EXPECT_EQ(q.amax()->item<float>(), 2688.0f);
  calibrate_and_fake_quant(q, at::randn({2, 16}) * 100);
  EXPECT_EQ(q.amax()->item<float>(), 2688.0f);
  TensorQuantizer d;
  EXPECT_FALSE(d.has_amax_buffer());
}

TEST(TensorQuantizer, UseConstantAmax) {
  auto c = fp8_cfg();
  c.use_constant_amax = true;
  TensorQuantizer q(c);
  auto x = at::randn({3, 5});
  EXPECT_EQ(q.get_amax(x).item<float>(), 448.0f);
  auto y = calibrate_and_fake_quant(q, x);
  EXPECT_FALSE(q.has_amax_buffer());
  EXPECT_TRUE(q.quant_enabled());
  EXPECT_FALSE(q.calib_enabled());
  expect_equal(y, fp8_fake_quant(x, at::scalar_tensor(448.0f)));
  EXPECT_EQ(q.extra_repr(),
            "(4, 3) bit fake per-tensor amax=4.48e+02(const) calibrator=MaxCalibrator quant");
}

// ---- rotation (§7 case 25, with the real Hadamard instead of ModelOpt's +10 stub) ----

TEST(TensorQuantizer, RotationWithBackend) {
  register_quant_backend("times_two", [](const at::Tensor& x, TensorQuantizer&) { return x * 2; });
  auto c = int_cfg(8);
  c.backend = "times_two";
  c.rotate.enable = true;
  auto x = at::randn({3, 8});
  auto hx = normalized_hadamard_transform(x, std::nullopt, false);
  TensorQuantizer q(c);
  EXPECT_TRUE(at::allclose(q.forward(x), hx * 2));
  c.rotate.mode = "rotate_back";
  TensorQuantizer rb(c);
  EXPECT_TRUE(at::allclose(rb.forward(x), x * 2, 1e-5, 1e-5));
  TensorQuantizer dis(c);
  dis.disable();
  EXPECT_TRUE(at::allclose(dis.forward(x), x, 1e-5, 1e-5));
  c.fake_quant = false;
  TensorQuantizer rq(c);
  try {
    rq.forward(x);
    FAIL();
  } catch (const mq::Error& e) {
    EXPECT_STREQ(e.what(), "rotate_back mode is only supported with fake_quant=True.");
  }
  EXPECT_NE(q.extra_repr().find("backend=times_two, extra_args={}"), std::string::npos);
  unregister_quant_backend("times_two");
  EXPECT_THROW(q.forward(x), mq::Error);
}

TEST(TensorQuantizer, DisabledReprWithRotation) {
  auto c = int_cfg(8);
  c.enable = false;
  c.rotate.enable = true;
  c.rotate.mode = "rotate_back";
  c.rotate.rotate_fp32 = true;
  c.rotate.block_size = 8;
  TensorQuantizer q(c);
  q.set_pre_quant_scale(T({1.f, 2.f}));
  EXPECT_EQ(
      q.extra_repr(),
      "disabled pre_quant_scale=[1.00e+00, 2.00e+00](2) rotated (rotate_back) (fp32) (block=8)");
}

TEST(TensorQuantizer, AxisRepr) {
  TensorQuantizer q(int_cfg(8, axis({0})));
  auto a = at::linspace(0.01, 0.5, 4096).reshape({4096, 1});
  q.set_amax(a);
  EXPECT_EQ(q.repr(),
            "TensorQuantizer(8 bit fake axis=0 amax=[1.00e-02, 5.00e-01](4096) "
            "calibrator=MaxCalibrator quant)");
}

// ---- affine bias (§2.8) ----

TEST(TensorQuantizer, AffineBiasFp8AndIgnoredByNvfp4) {
  at::manual_seed(11);
  auto x = at::randn({2, 3, 4, 16}) + 1.5;  // (B, H, S, D)
  config::BiasConfig bias;
  bias.axes[-2] = std::nullopt;
  bias.axes[-4] = std::nullopt;
  bias.type = "static";
  auto c = fp8_cfg();
  c.bias = bias;
  TensorQuantizer q(c);
  auto y = calibrate_and_fake_quant(q, x);
  auto b = x.mean(at::IntArrayRef{0, 2}, true);
  ASSERT_TRUE(q.bias_value().has_value());
  EXPECT_EQ(q.bias_value()->sizes(), (at::IntArrayRef{1, 3, 1, 16}));
  EXPECT_TRUE(at::allclose(*q.bias_value(), b, 1e-6, 1e-6));
  auto amax = at::abs(x - *q.bias_value()).max();
  EXPECT_EQ(q.amax()->item<float>(), amax.item<float>());
  expect_equal(y, fp8_fake_quant(x - *q.bias_value(), amax) + *q.bias_value());
  EXPECT_NE(q.extra_repr().find("bias={-2: None, -4: None, 'type': 'static'}"), std::string::npos);

  auto cn = nvfp4_cfg();
  cn.bias = bias;
  TensorQuantizer n(cn);
  auto yn = calibrate_and_fake_quant(n, x);
  expect_equal(yn, nvfp4_fake_quant(x, 16, *n.amax()));
}

// ---- dtypes sweep ----

class DtypeSweep : public ::testing::TestWithParam<at::ScalarType> {};

TEST_P(DtypeSweep, EveryFormatKeepsShapeAndDtype) {
  const at::ScalarType dt = GetParam();
  at::manual_seed(12);
  auto x = (at::randn({3, 64}) * 2).to(dt);
  std::vector<QuantizerAttributeConfig> cfgs = {int_cfg(8),
                                                int_cfg(4, axis({0})),
                                                fp8_cfg(),
                                                nvfp4_cfg(),
                                                mx_cfg(NumBits::floating(2, 1)),
                                                mx_cfg(NumBits::floating(4, 3)),
                                                mx_cfg(NumBits::integer(8)),
                                                block_cfg(4, {{-1, 16}})};
  for (auto& c : cfgs) {
    TensorQuantizer q(c);
    auto y = calibrate_and_fake_quant(q, x);
    EXPECT_EQ(y.scalar_type(), dt) << q.repr();
    EXPECT_EQ(y.sizes(), x.sizes()) << q.repr();
    EXPECT_TRUE(at::all(at::isfinite(y)).item<bool>()) << q.repr();
    // Fake quant is idempotent with a fixed amax: quantizing the output again changes nothing.
    if (!q.is_mx_format() && !q.is_nvfp4_dynamic()) expect_equal(q.forward(y), y);
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, DtypeSweep,
                         ::testing::Values(at::kFloat, at::kBFloat16, at::kHalf));

// ---- real quantization through the quantizer ----

TEST(TensorQuantizer, RealQuantInt8) {
  auto c = int_cfg(8);
  c.fake_quant = false;
  TensorQuantizer q(c);
  auto x = T({1.f, -2.f, 127.f, 0.4f});
  auto y = q.forward(x);
  ASSERT_TRUE(q.last_qtensor().has_value());
  EXPECT_EQ(q.last_qtensor()->format, QFormat::kInt8);
  expect_equal(y, T({1.f, -2.f, 127.f, 0.f}));
  EXPECT_EQ(q.named_buffers().count("_scale"), 1u);
  EXPECT_EQ(q.named_buffers().at("_scale").item<float>(), 1.0f);
}

// ---- state save / restore ----

TEST(TensorQuantizer, StateRoundTrip) {
  at::manual_seed(13);
  auto w = at::randn({8, 48});
  auto x = at::randn({2, 3, 48});
  config::BiasConfig bias;
  bias.axes[-2] = std::nullopt;
  auto fp8b = fp8_cfg();
  fp8b.bias = bias;
  std::vector<std::pair<QuantizerAttributeConfig, at::Tensor>> cases = {
      {int_cfg(8, axis({0})), w},
      {block_cfg(4, {{-1, 16}}), w},
      {nvfp4_cfg(), w},
      {nvfp4_cfg(false), w},
      {fp8b, x},
      {mx_cfg(NumBits::floating(2, 1)), w}};
  for (auto& [cfg, t] : cases) {
    TensorQuantizer q(cfg);
    if (cfg.num_bits.is_float(4, 3)) q.set_pre_quant_scale(at::rand({48}) + 0.5);
    auto y = calibrate_and_fake_quant(q, t);
    TensorQuantizerState st = q.get_state();
    // Through text, as a checkpoint would store it.
    TensorQuantizerState st2{nlohmann::json::parse(st.properties.dump()), st.buffers};
    TensorQuantizer r;
    r.set_state(st2);
    EXPECT_EQ(r.repr(), q.repr());
    expect_equal(r.forward(t), y);
    if (q.export_amax()) expect_equal(*r.export_amax(), *q.export_amax());
    EXPECT_EQ(r.named_buffers().size(), q.named_buffers().size());
  }
}

TEST(TensorQuantizer, StateRejectsMissingOrReshapedBuffers) {
  TensorQuantizer q(int_cfg(8, axis({0})));
  calibrate_and_fake_quant(q, at::randn({4, 4}));
  auto st = q.get_state();
  TensorQuantizer r;
  auto missing = st;
  missing.buffers.erase("_amax");
  EXPECT_THROW(r.set_state(missing), mq::Error);
  auto reshaped = st;
  reshaped.buffers["_amax"] = at::ones({2, 1});
  EXPECT_THROW(r.set_state(reshaped), mq::Error);
  auto extra = st;
  extra.buffers["_bias_value"] = at::ones({1});
  EXPECT_THROW(r.set_state(extra), mq::Error);
}

TEST(TensorQuantizer, SetAmaxShapeChangeThrows) {
  TensorQuantizer q;
  q.set_amax(at::ones({2, 1}));
  try {
    q.set_amax(at::ones({3, 1}));
    FAIL();
  } catch (const mq::Error& e) {
    EXPECT_STREQ(e.what(), "Changing shape when setting amax is not allowed.");
  }
  q.reset_amax();
  EXPECT_FALSE(q.has_amax_buffer());
}

TEST(TensorQuantizer, EmptyInputPassesThrough) {
  TensorQuantizer q(fp8_cfg());
  auto e = at::empty({0, 4});
  EXPECT_EQ(q.forward(e).numel(), 0);
}

}  // namespace
}  // namespace mq::quant
