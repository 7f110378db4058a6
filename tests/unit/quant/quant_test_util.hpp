#pragma once
// Helpers shared by the quant tests: tensors from literals, NaN-aware equality, and the quantizer
// configs of the common formats.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "mq/config/quantizer_attribute.hpp"

namespace mq::quant::testing {

/// A 1-D float32 tensor of `v`.
inline at::Tensor T(std::vector<float> v) { return at::tensor(v, at::kFloat); }

/// Same sizes, same dtype and the same values, NaN equal to NaN; names the first difference.
inline void expect_equal(const at::Tensor& a, const at::Tensor& b) {
  ASSERT_EQ(a.sizes(), b.sizes());
  ASSERT_EQ(a.scalar_type(), b.scalar_type());
  at::Tensor af = a.to(at::kFloat).reshape({-1}), bf = b.to(at::kFloat).reshape({-1});
  at::Tensor same = (af == bf) | (at::isnan(af) & at::isnan(bf));
  if (at::all(same).item<bool>()) return;
  const int64_t i = at::argmin(same.to(at::kInt)).item<int64_t>();
  FAIL() << "first difference at flat index " << i << ": " << af[i].item<float>() << " vs "
         << bf[i].item<float>();
}

/// FP8 E4M3 per tensor.
inline config::QuantizerAttributeConfig fp8_cfg() {
  config::QuantizerAttributeConfig c;
  c.num_bits = config::NumBits::floating(4, 3);
  return c;
}

/// `elem` values in blocks of `block` along the last dim, of `type` ("dynamic" / "static"), with
/// block scales in `scale_bits` (E4M3 for NVFP4, E8M0 for MX).
inline config::QuantizerAttributeConfig last_dim_block_cfg(config::NumBits elem, int64_t block,
                                                           const char* type,
                                                           config::NumBits scale_bits) {
  config::QuantizerAttributeConfig c;
  c.num_bits = elem;
  config::BlockSizes b;
  b.axes[-1] = block;
  b.type = type;
  b.scale_bits = scale_bits;
  c.block_sizes = b;
  return c;
}

/// NVFP4: E2M1 in blocks of `block` with E4M3 scales.
inline config::QuantizerAttributeConfig nvfp4_cfg(bool dynamic = true, int block = 16) {
  return last_dim_block_cfg(config::NumBits::floating(2, 1), block, dynamic ? "dynamic" : "static",
                            config::NumBits::floating(4, 3));
}

/// MX: `elem` in dynamic blocks of `block` with E8M0 scales.
inline config::QuantizerAttributeConfig mx_cfg(config::NumBits elem, int block = 32) {
  return last_dim_block_cfg(elem, block, "dynamic", config::NumBits::floating(8, 0));
}

}  // namespace mq::quant::testing
