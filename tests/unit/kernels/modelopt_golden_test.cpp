// The references against golden data produced by ModelOpt 0.47.0's own CPU code paths
// (golden/gen_golden_kernels.py; versions in golden/MANIFEST.txt): INT and FP8 fake quant (eager torch
// path), and the NVFP4 / MXFP4 / MXFP8 / FP8 / INT4-AWQ / NF4 packers.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "mqk/ref.hpp"

namespace {

constexpr int64_t R = 32, C = 256;

std::vector<uint8_t> read_bytes(const std::string& name) {
  const std::string path = std::string(MQ_SOURCE_DIR) + "/tests/unit/kernels/golden/" + name;
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot open golden file " + path);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

std::vector<float> read_f32(const std::string& name) {
  const auto b = read_bytes(name + ".f32");
  std::vector<float> v(b.size() / 4);
  std::memcpy(v.data(), b.data(), v.size() * 4);
  return v;
}

std::vector<uint8_t> read_u8(const std::string& name) { return read_bytes(name + ".u8"); }

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// Bit-exact, except that +0 and -0 compare equal when `zero_sign_free` (INT: ModelOpt's eager path
// gives -0 for negative inputs of a zero-amax channel, its CUDA kernel and ours +0).
void expect_same(const std::vector<float>& got, const std::vector<float>& want, bool zero_sign_free = false) {
  ASSERT_EQ(got.size(), want.size());
  int bad = 0;
  for (size_t i = 0; i < got.size() && bad < 10; ++i) {
    const bool ok = bits(got[i]) == bits(want[i]) || (zero_sign_free && got[i] == 0.0f && want[i] == 0.0f);
    if (!ok) {
      ++bad;
      ADD_FAILURE() << "i=" << i << " got " << got[i] << " want " << want[i];
    }
  }
}

void expect_same_bytes(const std::vector<uint8_t>& got, const std::vector<uint8_t>& want) {
  ASSERT_EQ(got.size(), want.size());
  int bad = 0;
  for (size_t i = 0; i < got.size() && bad < 10; ++i)
    if (got[i] != want[i]) {
      ++bad;
      ADD_FAILURE() << "byte " << i << " got 0x" << std::hex << int(got[i]) << " want 0x" << int(want[i]);
    }
}

TEST(ModelOptGolden, IntFakeQuantEager) {
  const auto x = read_f32("x");
  const auto amax = read_f32("amax_row");
  std::vector<float> y(x.size());
  mqk::int_fake_quant_ref(x.data(), y.data(), R * C, amax.data(), {R, C}, 8, false, false);
  expect_same(y, read_f32("int8_row"), true);
  mqk::int_fake_quant_ref(x.data(), y.data(), R * C, amax.data(), {R, C}, 4, false, false);
  expect_same(y, read_f32("int4_row"), true);
  const float a = 2.5f;
  mqk::int_fake_quant_ref(x.data(), y.data(), R * C, &a, {}, 8, false, true);
  expect_same(y, read_f32("int8_tensor_narrow"));
}

TEST(ModelOptGolden, Fp8FakeQuantEager) {
  const auto x = read_f32("x");
  const auto amax = read_f32("amax_row");
  std::vector<float> y(x.size());
  mqk::fp8_fake_quant_ref(x.data(), y.data(), R * C, amax.data(), {R, C}, mqk::Fp8ScaleMode::kReciprocal);
  expect_same(y, read_f32("fp8_row"));
  const float a = 3.7f;
  mqk::fp8_fake_quant_ref(x.data(), y.data(), R * C, &a, {}, mqk::Fp8ScaleMode::kReciprocal);
  expect_same(y, read_f32("fp8_tensor"));
}

class ModelOptGoldenDtype : public ::testing::TestWithParam<std::string> {};

TEST_P(ModelOptGoldenDtype, Nvfp4Export) {
  const std::string tag = GetParam();
  const auto x = read_f32(tag == "f32" ? "x" : "x_bf16");
  float gamax = mqk::amax_ref(x.data(), R * C);
  std::vector<uint8_t> packed(R * C / 2), scales(R * C / 16);
  const float wsf2 = mqk::nvfp4_quantize_ref(x.data(), R, C, 16, gamax, packed.data(), scales.data());
  EXPECT_EQ(bits(wsf2), bits(read_f32("nvfp4_" + tag + "_wsf2")[0]));
  expect_same_bytes(scales, read_u8("nvfp4_" + tag + "_scales"));
  expect_same_bytes(packed, read_u8("nvfp4_" + tag + "_packed"));
}

TEST_P(ModelOptGoldenDtype, MxExport) {
  const std::string tag = GetParam();
  const auto x = read_f32(tag == "f32" ? "x" : "x_bf16");
  std::vector<uint8_t> packed(R * C / 2), scales(R * C / 32), data(R * C);
  mqk::mxfp4_quantize_ref(x.data(), R, C, 32, packed.data(), scales.data());
  expect_same_bytes(scales, read_u8("mxfp4_" + tag + "_scales"));
  expect_same_bytes(packed, read_u8("mxfp4_" + tag + "_packed"));
  mqk::mxfp8_quantize_ref(x.data(), R, C, 32, data.data(), scales.data());
  expect_same_bytes(scales, read_u8("mxfp8_" + tag + "_scales"));
  expect_same_bytes(data, read_u8("mxfp8_" + tag + "_data"));
}

INSTANTIATE_TEST_SUITE_P(Inputs, ModelOptGoldenDtype, ::testing::Values("f32", "bf16"));

TEST(ModelOptGolden, Fp8Int4Nf4Export) {
  const auto x = read_f32("x");
  {
    const auto scale = read_f32("fp8_export_scale");
    std::vector<uint8_t> out(R * C);
    mqk::fp8_quantize_ref(x.data(), R * C, scale.data(), {}, out.data());
    expect_same_bytes(out, read_u8("fp8_export"));
  }
  {
    const auto ws = read_f32("int4_awq_scales");
    std::vector<uint8_t> packed(R / 2 * C);
    mqk::int4_awq_pack_ref(x.data(), R, C, 128, ws.data(), packed.data());
    expect_same_bytes(packed, read_u8("int4_awq_packed"));
  }
  {
    std::vector<float> xs(x.size());
    for (size_t i = 0; i < x.size(); ++i) xs[i] = x[i] * 0.01f;
    std::vector<uint8_t> packed(R * C / 2);
    std::vector<float> scales(R * C / 64);
    mqk::nf4_quantize_ref(xs.data(), R * C, 64, packed.data(), scales.data());
    expect_same(scales, read_f32("nf4_scales"));
    expect_same_bytes(packed, read_u8("nf4_packed"));
  }
}

}  // namespace
