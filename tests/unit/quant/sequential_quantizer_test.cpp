// SequentialQuantizer (reference §2.11, §7 case 22).
#include "mq/quant/sequential_quantizer.hpp"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "mq/core/error.hpp"
#include "mq/quant/fake_quant.hpp"
#include "quant_test_util.hpp"

namespace mq::quant {
namespace {

using config::BlockSizes;
using config::NumBits;
using config::QuantizerAttributeConfig;

void expect_equal(const at::Tensor& a, const at::Tensor& b) {
  ASSERT_EQ(a.sizes(), b.sizes());
  ASSERT_EQ(a.scalar_type(), b.scalar_type());
  EXPECT_TRUE(at::equal(a, b));
}

QuantizerAttributeConfig int4_block(int64_t b) {
  QuantizerAttributeConfig c;
  c.num_bits = NumBits::integer(4);
  BlockSizes bs;
  bs.axes[-1] = b;
  bs.type = "static";
  c.block_sizes = bs;
  return c;
}

QuantizerAttributeConfig fp8() { return testing::fp8_cfg(); }

TEST(SequentialQuantizer, EqualsStagesAppliedInSequence) {
  QuantizerAttributeConfig a;
  a.num_bits = NumBits::integer(4);
  QuantizerAttributeConfig b;
  BlockSizes bs;
  bs.axes[-1] = 4;
  b.block_sizes = bs;
  QuantizerAttributeConfig c;
  c.enable = false;
  SequentialQuantizer sq(3);
  sq.set_from_attribute_config(std::vector<QuantizerAttributeConfig>{a, b, c});
  EXPECT_FALSE(sq[2].is_enabled());
  auto x = at::randn({8, 12});
  TensorQuantizer t0(a), t1(b), t2(c);
  expect_equal(sq.forward(x), t2.forward(t1.forward(t0.forward(x))));
  EXPECT_THROW(sq.set_from_attribute_config(std::vector<QuantizerAttributeConfig>{a, b}),
               mq::Error);
  EXPECT_EQ(sq.get_modelopt_state(),
            (nlohmann::json{{"num_quantizers", 3}, {"is_sequential_quantizer", true}}));
}

TEST(SequentialQuantizer, W4A8CalibratesBothStagesOnRawWeight) {
  at::manual_seed(1);
  auto w = at::randn({4, 256});
  SequentialQuantizer sq(2);
  sq.set_from_attribute_config(std::vector<QuantizerAttributeConfig>{int4_block(128), fp8()});
  auto y = calibrate_and_fake_quant(sq, w);
  // Stage 0: per-block amax (8, 1) of the raw weight; stage 1: max|W| of the raw weight, not of the
  // INT4-dequantized one.
  auto blocks = w.reshape({-1, 128});
  expect_equal(*sq[0].amax(), at::amax(at::abs(blocks), {1}, true));
  EXPECT_EQ(sq[1].amax()->item<float>(), at::abs(w).max().item<float>());
  auto w4 = int_fake_quant(blocks, at::amax(at::abs(blocks), {1}, true), 4, false, false)
                .reshape({4, 256});
  expect_equal(y, fp8_fake_quant(w4, at::abs(w).max()));
  EXPECT_TRUE(sq[0].quant_enabled() && sq[1].quant_enabled());
  EXPECT_FALSE(sq[0].calib_enabled() || sq[1].calib_enabled());
  // Delegation: amax and fake_quant come from stage 0; disable/enable broadcast.
  expect_equal(*sq.amax(), *sq[0].amax());
  sq.disable();
  EXPECT_FALSE(sq[0].is_enabled() || sq[1].is_enabled());
  expect_equal(sq.forward(w), w);
  sq.enable();
  sq.reset_amax();
  EXPECT_FALSE(sq[0].has_amax_buffer() || sq[1].has_amax_buffer());
}

}  // namespace
}  // namespace mq::quant
