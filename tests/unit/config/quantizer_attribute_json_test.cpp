// QuantizerAttributeConfig parsing: every validation rule of reference §1.3 (accepted and rejected
// forms; the error names file, JSON path and rule), and model_dump(exclude_unset) round trips.
#include <gtest/gtest.h>

#include "config_test_util.hpp"
#include "mq/config/json.hpp"

namespace mq::config {
namespace {

using testing::config_error;
using testing::has_all;
using testing::ojson;

QuantizerAttributeConfig parse(const std::string& text) {
  return parse_quantizer_attribute(ojson::parse(text), ErrorContext{"t.json", "cfg"});
}

std::string err(const std::string& text) {
  return config_error([&] { parse(text); });
}

TEST(QuantizerAttributeJson, EmptyDictGivesModelOptDefaults) {
  QuantizerAttributeConfig c = parse("{}");
  EXPECT_TRUE(c.enable);
  EXPECT_EQ(c.num_bits, NumBits::integer(8));
  EXPECT_FALSE(c.effective_bits);
  EXPECT_FALSE(c.axis);
  EXPECT_TRUE(c.fake_quant);
  EXPECT_FALSE(c.is_unsigned);
  EXPECT_FALSE(c.narrow_range);
  EXPECT_FALSE(c.learn_amax);
  EXPECT_EQ(c.type, "static");
  EXPECT_FALSE(c.block_sizes);
  EXPECT_FALSE(c.bias);
  EXPECT_EQ(c.trt_high_precision_dtype, "Float");
  EXPECT_EQ(c.calibrator, "max");
  EXPECT_FALSE(c.rotate.enable);
  EXPECT_TRUE(c.pass_through_bwd);
  EXPECT_FALSE(c.backend);
  EXPECT_TRUE(c.backend_extra_args.is_null());
  EXPECT_FALSE(c.use_constant_amax);
  EXPECT_FALSE(c.constant_amax);
  EXPECT_TRUE(c.fields_set.empty());
  EXPECT_EQ(c, QuantizerAttributeConfig{});
}

TEST(QuantizerAttributeJson, RecordsFieldsSet) {
  QuantizerAttributeConfig c = parse(R"({"num_bits": 4, "axis": null, "unsigned": true})");
  EXPECT_EQ(c.fields_set, (std::set<std::string>{"num_bits", "axis", "unsigned"}));
  EXPECT_TRUE(c.is_unsigned);
  EXPECT_FALSE(c.axis);
}

TEST(QuantizerAttributeJson, ErrorMessageIsFilePathRuleOnOneLine) {
  std::string m = config_error([] {
    parse_quantizer_attribute(ojson::parse(R"({"num_bits": [3, 3]})"), ErrorContext{"nvfp4.json", "quant_cfg[1].cfg"});
  });
  EXPECT_EQ(m.rfind("nvfp4.json: quant_cfg[1].cfg.num_bits: [3,3] is not a supported float format", 0), 0u) << m;
  EXPECT_TRUE(has_all(m, {}));
  // The default context names no file; the root is "$".
  EXPECT_EQ(config_error([] { parse_quantizer_attribute(nlohmann::json(42)); }).rfind("<inline>: $: ", 0), 0u);
}

TEST(QuantizerAttributeJson, ErrorContextPaths) {
  ErrorContext c{"f.json", ""};
  EXPECT_EQ(c.where(), "f.json: $");
  EXPECT_EQ(c.key("quant_cfg").index(3).key("cfg").where(), "f.json: quant_cfg[3].cfg");
  EXPECT_EQ(c.key("block_sizes").key("-1").where(), "f.json: block_sizes[\"-1\"]");
  EXPECT_EQ(c.key("quant_cfg").index(0).key("*weight_quantizer").where(), "f.json: quant_cfg[0][\"*weight_quantizer\"]");
}

// --- rule 1: {"enable": true}-only dicts, recursively, except under rotate ---

TEST(QuantizerAttributeJson, EnableTrueOnlyIsRejected) {
  EXPECT_TRUE(has_all(err(R"({"enable": true})"), {"t.json: cfg: ", "cannot specify only {\"enable\": true}"}));
  EXPECT_TRUE(has_all(err(R"({"num_bits": 8, "bias": {"enable": true}})"),
                      {"t.json: cfg.bias: ", "cannot specify only"}));
  EXPECT_TRUE(has_all(err(R"({"backend": "x", "backend_extra_args": {"a": {"enable": true}}})"),
                      {"cfg.backend_extra_args.a: ", "cannot specify only"}));
  EXPECT_TRUE(has_all(err(R"({"backend": "x", "backend_extra_args": {"l": [{"enable": true}]}})"),
                      {"cfg.backend_extra_args.l[0]: ", "cannot specify only"}));
}

TEST(QuantizerAttributeJson, EnableOnlyAllowedForFalseOrWithOtherKeysOrUnderRotate) {
  EXPECT_FALSE(parse(R"({"enable": false})").enable);
  EXPECT_EQ(parse(R"({"enable": true, "num_bits": 4})").num_bits, NumBits::integer(4));
  QuantizerAttributeConfig r = parse(R"({"num_bits": [4, 3], "rotate": {"enable": true}})");
  EXPECT_TRUE(r.rotate.enable);
  EXPECT_FALSE(r.rotate.given_as_bool);
  EXPECT_EQ(r.rotate.fields_set, (std::set<std::string>{"enable"}));
}

TEST(QuantizerAttributeJson, UnknownKeysAreRejected) {
  EXPECT_TRUE(has_all(err(R"({"num_bit": 8})"), {"t.json: cfg.num_bit: ", "unknown quantizer attribute key"}));
  EXPECT_TRUE(has_all(err(R"({"num_bits": 8, "rotate": {"enable": true, "size": 4}})"),
                      {"cfg.rotate.size: ", "unknown rotate key"}));
  EXPECT_TRUE(has_all(err("[1]"), {"t.json: cfg: ", "expected a dict of quantizer attributes"}));
}

// --- rule 2: num_bits ---

TEST(QuantizerAttributeJson, NumBitsIntegers) {
  EXPECT_EQ(parse(R"({"num_bits": 4})").num_bits, NumBits::integer(4));
  EXPECT_EQ(parse(R"({"num_bits": 1})").num_bits, NumBits::integer(1));
  EXPECT_TRUE(has_all(err(R"({"num_bits": 0})"), {"cfg.num_bits: ", "0 must be a positive integer"}));
  EXPECT_TRUE(has_all(err(R"({"num_bits": -1})"), {"cfg.num_bits: ", "must be a positive integer"}));
  EXPECT_TRUE(has_all(err(R"({"num_bits": 8.5})"), {"cfg.num_bits: ", "8.5 is not an int"}));
  EXPECT_TRUE(has_all(err(R"({"num_bits": true})"), {"cfg.num_bits: "}));
  EXPECT_TRUE(has_all(err(R"({"num_bits": [4, 3, 1]})"), {"cfg.num_bits: ", "not an [E, M] pair"}));
}

TEST(QuantizerAttributeJson, NumBitsExMyStringsBecomeTuples) {
  EXPECT_EQ(parse(R"({"num_bits": "e4m3"})").num_bits, NumBits::floating(4, 3));
  EXPECT_EQ(parse(R"({"num_bits": "E2M1"})").num_bits, NumBits::floating(2, 1));
  EXPECT_EQ(parse(R"({"num_bits": "e3m2", "block_sizes": {"-1": 32, "type": "dynamic"}})").num_bits,
            NumBits::floating(3, 2));
  EXPECT_EQ(parse_exmy("e10m21"), NumBits::floating(10, 21));
  EXPECT_FALSE(parse_exmy("e4"));
  EXPECT_FALSE(parse_exmy("em3"));
  EXPECT_FALSE(parse_exmy("x4m3"));
  EXPECT_FALSE(parse_exmy("e4m3x"));
  // Other strings are only for custom backends (ModelOpt accepts them and then fails at runtime).
  EXPECT_TRUE(has_all(err(R"({"num_bits": "int4"})"), {"cfg.num_bits: ", "custom `backend`"}));
  QuantizerAttributeConfig c = parse(R"({"num_bits": "int4", "backend": "mine"})");
  EXPECT_EQ(c.num_bits.kind, NumBits::Kind::kCustom);
  EXPECT_EQ(c.num_bits.custom, "int4");
  // A backend skips num_bits validation entirely.
  EXPECT_EQ(parse(R"({"num_bits": 0, "backend": "mine"})").num_bits, NumBits::integer(0));
}

TEST(QuantizerAttributeJson, NumBitsTuplesMustBePositive) {
  for (const char* t : {"[0, 3]", "[3, 0]", "[-1, 2]", "[2, -1]"})
    EXPECT_TRUE(has_all(err(std::string(R"({"num_bits": )") + t + "}"),
                        {"cfg.num_bits: ", "exponent and mantissa bits must be positive"}))
        << t;
}

struct FloatCase {
  int e, m;
  bool supported;
  bool needs_dynamic_block;
};

class NumBitsFloatSweep : public ::testing::TestWithParam<FloatCase> {};

TEST_P(NumBitsFloatSweep, SupportedFormatsAndDynamicBlockRequirement) {
  const FloatCase& fc = GetParam();
  std::string nb = nlohmann::json::array({fc.e, fc.m}).dump();
  std::string plain = R"({"num_bits": )" + nb + "}";
  std::string dyn = R"({"num_bits": )" + nb + R"(, "block_sizes": {"-1": 32, "type": "dynamic"}})";
  std::string stat = R"({"num_bits": )" + nb + R"(, "block_sizes": {"-1": 32, "type": "static"}})";
  if (!fc.supported) {
    EXPECT_TRUE(has_all(err(plain), {"cfg.num_bits: ", "is not a supported float format"}));
    EXPECT_TRUE(has_all(err(dyn), {"is not a supported float format"}));
    return;
  }
  EXPECT_EQ(parse(dyn).num_bits, NumBits::floating(fc.e, fc.m));
  if (fc.needs_dynamic_block) {
    EXPECT_TRUE(has_all(err(plain), {"cfg.num_bits: ", "only supported with dynamic block quantization"}));
    EXPECT_TRUE(has_all(err(stat), {"only supported with dynamic block quantization"}));
  } else {
    EXPECT_EQ(parse(plain).num_bits, NumBits::floating(fc.e, fc.m));
    EXPECT_EQ(parse(stat).num_bits, NumBits::floating(fc.e, fc.m));
  }
}

INSTANTIATE_TEST_SUITE_P(
    AllPairs, NumBitsFloatSweep,
    ::testing::Values(FloatCase{4, 3, true, false}, FloatCase{2, 1, true, false}, FloatCase{5, 2, true, true},
                      FloatCase{1, 2, true, true}, FloatCase{3, 2, true, true}, FloatCase{2, 3, true, true},
                      FloatCase{3, 3, false, false}, FloatCase{4, 4, false, false}, FloatCase{8, 1, false, false},
                      FloatCase{5, 10, false, false}, FloatCase{1, 1, false, false}));

// --- rule 3: block_sizes ---

TEST(QuantizerAttributeJson, BlockSizesNvfp4) {
  QuantizerAttributeConfig c =
      parse(R"({"num_bits": [2, 1], "block_sizes": {"-1": 16, "type": "dynamic", "scale_bits": [4, 3]}})");
  ASSERT_TRUE(c.block_sizes);
  EXPECT_EQ(c.block_sizes->axes, (AxisBlockMap{{-1, 16}}));
  EXPECT_TRUE(c.block_sizes->is_dynamic());
  EXPECT_EQ(c.block_sizes->scale_bits, NumBits::floating(4, 3));
  EXPECT_TRUE(c.is_nvfp4());
  EXPECT_TRUE(c.is_dynamic_block());
  EXPECT_FALSE(c.is_mx());
}

TEST(QuantizerAttributeJson, BlockSizesKeysAndValues) {
  auto c = parse(R"({"num_bits": [4, 3], "axis": null, "block_sizes": {"-1": 128, "-2": 128}})");
  EXPECT_EQ(c.block_sizes->axes, (AxisBlockMap{{-1, 128}, {-2, 128}}));
  EXPECT_FALSE(c.block_sizes->type);
  EXPECT_TRUE(c.is_static_block());
  EXPECT_EQ(parse(R"({"block_sizes": {"-1": null}})").block_sizes->axes, (AxisBlockMap{{-1, std::nullopt}}));
  EXPECT_EQ(parse(R"({"block_sizes": {"0": 4}})").block_sizes->axes, (AxisBlockMap{{0, 4}}));
  auto mx = parse(R"({"num_bits": "e2m1", "block_sizes": {"-1": 32, "type": "dynamic", "scale_bits": "e8m0"}})");
  EXPECT_EQ(mx.block_sizes->scale_bits, NumBits::floating(8, 0));
  EXPECT_TRUE(mx.is_mx());
  auto nf4 = parse(R"({"num_bits": 4, "block_sizes": {"-1": 64, "scale_bits": 8, "scale_block_sizes": {"-1": 256}}})");
  EXPECT_EQ(nf4.block_sizes->scale_bits, NumBits::integer(8));
  EXPECT_EQ(nf4.block_sizes->scale_block_sizes, (AxisBlockMap{{-1, 256}}));
  auto fos = parse(R"({"num_bits": [2, 1], "block_sizes": {"-1": 16, "type": "static", "four_over_six": true}})");
  EXPECT_EQ(fos.block_sizes->four_over_six, 1);  // pydantic stores the bool as 1
  EXPECT_EQ(parse(R"({"block_sizes": {"-1": 16, "four_over_six": false}})").block_sizes->four_over_six, 0);
}

TEST(QuantizerAttributeJson, BlockSizesRejections) {
  EXPECT_TRUE(has_all(err(R"({"axis": 0, "block_sizes": {"-1": 16}})"),
                      {"cfg.block_sizes: ", "axis must be null when block_sizes is set"}));
  EXPECT_TRUE(has_all(err(R"({"block_sizes": {"-1": 16, "-2": 16, "type": "dynamic"}})"),
                      {"cfg.block_sizes: ", "exactly one block axis, got 2"}));
  EXPECT_TRUE(has_all(err(R"({"block_sizes": {"type": "dynamic"}})"), {"exactly one block axis, got 0"}));
  EXPECT_TRUE(has_all(err(R"({"block_sizes": {"-1": 16, "blocks": 2}})"),
                      {"cfg.block_sizes.blocks: ", "unknown block_sizes key"}));
  EXPECT_TRUE(has_all(err(R"({"block_sizes": {"-1": 0}})"), {"cfg.block_sizes[\"-1\"]: ", "not a block length"}));
  EXPECT_TRUE(has_all(err(R"({"block_sizes": {"-1": -16}})"), {"not a block length"}));
  EXPECT_TRUE(has_all(err(R"({"block_sizes": {"-1": true}})"), {"not a block length"}));
  EXPECT_TRUE(has_all(err(R"({"block_sizes": {"-1": [1, 2]}})"), {"not a block length"}));
  EXPECT_TRUE(has_all(err(R"({"block_sizes": {"-1": 16, "type": "Dynamic"}})"),
                      {"cfg.block_sizes.type: ", "is not one of \"static\", \"dynamic\""}));
  EXPECT_TRUE(has_all(err(R"({"block_sizes": {"-1": 16, "-01": 16}})"), {"axis -1 is given twice"}));
  EXPECT_TRUE(has_all(err(R"({"block_sizes": {"-1": 16, "scale_bits": "fp8"}})"), {"cfg.block_sizes.scale_bits: "}));
  EXPECT_TRUE(has_all(err(R"({"block_sizes": {"-1": 16, "scale_block_sizes": {"x": 2}}})"),
                      {"cfg.block_sizes.scale_block_sizes.x: ", "not a valid"}));
  EXPECT_TRUE(has_all(err(R"({"block_sizes": {"-1": 16, "four_over_six": "yes"}})"), {"not a boolean"}));
  EXPECT_TRUE(has_all(err(R"({"block_sizes": [16]})"), {"cfg.block_sizes: ", "block_sizes dict"}));
}

// --- rule 4: bias ---

TEST(QuantizerAttributeJson, Bias) {
  auto c = parse(R"({"num_bits": [4, 3], "bias": {"-2": null, "-4": null, "type": "static"}})");
  ASSERT_TRUE(c.bias);
  EXPECT_EQ(c.bias->axes, (AxisBlockMap{{-2, std::nullopt}, {-4, std::nullopt}}));
  EXPECT_EQ(c.bias->type, "static");
  EXPECT_FALSE(c.bias->method);
  EXPECT_EQ(parse(R"({"bias": {"-1": null, "method": "max_min", "type": "dynamic"}})").bias->method, "max_min");
  EXPECT_TRUE(has_all(err(R"({"bias": {"type": "static"}})"), {"cfg.bias: ", "axis for bias computation is not specified"}));
  EXPECT_TRUE(has_all(err(R"({"bias": {"enable": true, "-1": null}})"),
                      {"cfg.bias.enable: ", "\"enable\" is none of them"}));
  EXPECT_TRUE(has_all(err(R"({"bias": {"-1": null, "type": "calibrated"}})"), {"cfg.bias.type: ", "not one of"}));
  EXPECT_TRUE(has_all(err(R"({"bias": {"-1": null, "method": "median"}})"), {"cfg.bias.method: ", "\"max_min\""}));
  EXPECT_TRUE(has_all(err(R"({"bias": {"-1": "x"}})"), {"cfg.bias[\"-1\"]: "}));
}

// --- rule 5: ranges, enums, exclusivity ---

TEST(QuantizerAttributeJson, EffectiveBitsRange) {
  EXPECT_DOUBLE_EQ(*parse(R"({"effective_bits": 4.5})").effective_bits, 4.5);
  EXPECT_DOUBLE_EQ(*parse(R"({"effective_bits": 16})").effective_bits, 16.0);
  EXPECT_FALSE(parse(R"({"effective_bits": null})").effective_bits);
  for (const char* v : {"0", "-1", "16.5", "1e9"})
    EXPECT_TRUE(has_all(err(std::string(R"({"effective_bits": )") + v + "}"),
                        {"cfg.effective_bits: ", "must be in (0, 16]"}))
        << v;
  EXPECT_TRUE(has_all(err(R"({"effective_bits": "4.5"})"), {"not a number"}));
}

TEST(QuantizerAttributeJson, ConstantAmax) {
  EXPECT_DOUBLE_EQ(*parse(R"({"constant_amax": 2688})").constant_amax, 2688.0);
  EXPECT_TRUE(parse(R"({"use_constant_amax": true})").use_constant_amax);
  EXPECT_TRUE(has_all(err(R"({"constant_amax": 0})"), {"cfg.constant_amax: ", "must be a positive value"}));
  EXPECT_TRUE(has_all(err(R"({"constant_amax": -3.5})"), {"must be a positive value"}));
  EXPECT_TRUE(has_all(err(R"({"use_constant_amax": true, "constant_amax": 448})"), {"mutually exclusive"}));
  EXPECT_FALSE(parse(R"({"use_constant_amax": false, "constant_amax": 448})").use_constant_amax);
}

TEST(QuantizerAttributeJson, CalibratorTypeDtypeLearnAmax) {
  EXPECT_EQ(parse(R"({"calibrator": "histogram"})").calibrator, "histogram");
  EXPECT_TRUE(has_all(err(R"({"calibrator": "mse"})"), {"cfg.calibrator: ", "\"max\", \"histogram\""}));
  EXPECT_TRUE(has_all(err(R"({"calibrator": ["mod.Cls", {}]})"), {"cfg.calibrator: "}));
  EXPECT_EQ(parse(R"({"type": "dynamic"})").type, "dynamic");
  EXPECT_TRUE(parse(R"({"type": "dynamic"})").is_dynamic());
  EXPECT_TRUE(has_all(err(R"({"type": "Dynamic"})"), {"cfg.type: "}));
  EXPECT_EQ(parse(R"({"trt_high_precision_dtype": "BFloat16"})").trt_high_precision_dtype, "BFloat16");
  EXPECT_TRUE(has_all(err(R"({"trt_high_precision_dtype": "half"})"), {"cfg.trt_high_precision_dtype: "}));
  EXPECT_FALSE(parse(R"({"learn_amax": false})").learn_amax);
  EXPECT_TRUE(has_all(err(R"({"learn_amax": true})"), {"cfg.learn_amax: ", "deprecated"}));
}

TEST(QuantizerAttributeJson, BoolsAreStrict) {
  for (const char* k : {"enable", "fake_quant", "unsigned", "narrow_range", "pass_through_bwd", "use_constant_amax"})
    EXPECT_TRUE(has_all(err(std::string(R"({"num_bits": 8, ")") + k + R"(": "true"})"),
                        {std::string("cfg.") + k + ": ", "not a boolean"}))
        << k;
  auto c = parse(R"({"fake_quant": false, "unsigned": true, "narrow_range": true, "pass_through_bwd": false})");
  EXPECT_FALSE(c.fake_quant);
  EXPECT_TRUE(c.is_unsigned);
  EXPECT_TRUE(c.narrow_range);
  EXPECT_FALSE(c.pass_through_bwd);
}

TEST(QuantizerAttributeJson, Axis) {
  auto a0 = parse(R"({"axis": 0})").axis;
  ASSERT_TRUE(a0);
  EXPECT_EQ(a0->dims, std::vector<int>{0});
  EXPECT_FALSE(a0->is_tuple);
  auto a2 = parse(R"({"axis": [-2, -1]})").axis;
  EXPECT_EQ(a2->dims, (std::vector<int>{-2, -1}));
  EXPECT_TRUE(a2->is_tuple);
  EXPECT_TRUE(has_all(err(R"({"axis": "0"})"), {"cfg.axis: "}));
  EXPECT_TRUE(has_all(err(R"({"axis": [0, "a"]})"), {"cfg.axis[1]: ", "not an integer"}));
}

TEST(QuantizerAttributeJson, Rotate) {
  auto b = parse(R"({"num_bits": 8, "rotate": true})").rotate;
  EXPECT_TRUE(b.enable);
  EXPECT_TRUE(b.given_as_bool);
  auto d = parse(R"({"rotate": {"enable": true, "mode": "rotate_back", "rotate_fp32": true, "block_size": 64}})").rotate;
  EXPECT_TRUE(d.enable);
  EXPECT_EQ(d.mode, "rotate_back");
  EXPECT_TRUE(d.rotate_fp32);
  EXPECT_EQ(d.block_size, 64);
  EXPECT_TRUE(has_all(err(R"({"rotate": {"block_size": 0}})"), {"cfg.rotate.block_size: ", "positive int"}));
  EXPECT_TRUE(has_all(err(R"({"rotate": {"block_size": true}})"), {"cfg.rotate.block_size: "}));
  EXPECT_TRUE(has_all(err(R"({"rotate": {"mode": "back"}})"), {"cfg.rotate.mode: "}));
  EXPECT_TRUE(has_all(err(R"({"rotate": 1})"), {"cfg.rotate: "}));
}

TEST(QuantizerAttributeJson, Backend) {
  auto c = parse(R"({"num_bits": 4, "backend": "my_fn", "backend_extra_args": {"k": [1, 2]}})");
  EXPECT_EQ(c.backend, "my_fn");
  EXPECT_EQ(c.backend_extra_args, nlohmann::json::parse(R"({"k": [1, 2]})"));
  EXPECT_TRUE(has_all(err(R"({"backend": 3})"), {"cfg.backend: ", "not a string"}));
  EXPECT_TRUE(has_all(err(R"({"backend_extra_args": [1]})"), {"cfg.backend_extra_args: "}));
}

// --- dumps ---

class DumpRoundTrip : public ::testing::TestWithParam<std::pair<const char*, const char*>> {};

TEST_P(DumpRoundTrip, ExcludeUnsetMatchesModelDump) {
  auto [in, expected] = GetParam();
  QuantizerAttributeConfig c = parse(in);
  nlohmann::json dumped = to_json(c);
  EXPECT_EQ(dumped, nlohmann::json::parse(expected)) << dumped.dump();
  // Parsing the dump gives the same config back.
  EXPECT_EQ(parse_quantizer_attribute(dumped), c);
}

INSTANTIATE_TEST_SUITE_P(
    Cases, DumpRoundTrip,
    ::testing::Values(
        std::pair{R"({"num_bits": "e4m3", "axis": null})", R"({"num_bits": [4, 3], "axis": null})"},
        std::pair{R"({"num_bits": "e2m1", "block_sizes": {"-1": 16, "type": "dynamic", "scale_bits": "e4m3"},
                      "effective_bits": 4.5})",
                  R"({"num_bits": [2, 1], "block_sizes": {"-1": 16, "type": "dynamic", "scale_bits": [4, 3]},
                      "effective_bits": 4.5})"},
        std::pair{R"({"num_bits": [2, 1], "block_sizes": {"-1": 16, "type": "static", "scale_bits": [4, 3],
                      "four_over_six": true}})",
                  R"({"num_bits": [2, 1], "block_sizes": {"-1": 16, "type": "static", "scale_bits": [4, 3],
                      "four_over_six": 1}})"},
        std::pair{R"({"num_bits": [4, 3], "axis": null, "bias": {"-2": null, "-4": null, "type": "static"}})",
                  R"({"num_bits": [4, 3], "axis": null, "bias": {"-2": null, "-4": null, "type": "static"}})"},
        std::pair{R"({"num_bits": 8, "axis": [0, 1], "rotate": {"enable": true, "block_size": 32}})",
                  R"({"num_bits": 8, "axis": [0, 1], "rotate": {"enable": true, "block_size": 32}})"},
        std::pair{R"({"rotate": true, "num_bits": 4, "enable": false})",
                  R"({"rotate": true, "num_bits": 4, "enable": false})"},
        std::pair{R"({"num_bits": 4, "block_sizes": {"-1": 128, "type": "static"}})",
                  R"({"num_bits": 4, "block_sizes": {"-1": 128, "type": "static"}})"},
        std::pair{R"({"use_constant_amax": true, "num_bits": [4, 3]})",
                  R"({"use_constant_amax": true, "num_bits": [4, 3]})"},
        std::pair{R"({"constant_amax": 2688.0, "type": "dynamic", "block_sizes": {"-1": null}})",
                  R"({"constant_amax": 2688.0, "type": "dynamic", "block_sizes": {"-1": null}})"}));

TEST(QuantizerAttributeJson, FullDumpHasEveryFieldWithDefaults) {
  nlohmann::json full = to_json(parse(R"({"num_bits": [4, 3]})"), /*exclude_unset=*/false);
  nlohmann::json expected = nlohmann::json::parse(R"({
    "enable": true, "num_bits": [4, 3], "effective_bits": null, "axis": null, "fake_quant": true,
    "unsigned": false, "narrow_range": false, "learn_amax": false, "type": "static", "block_sizes": null,
    "bias": null, "trt_high_precision_dtype": "Float", "calibrator": "max", "rotate": false,
    "pass_through_bwd": true, "backend": null, "backend_extra_args": null, "use_constant_amax": false,
    "constant_amax": null})");
  EXPECT_EQ(full, expected) << full.dump();
  nlohmann::json rot = to_json(parse(R"({"rotate": {"mode": "rotate_back"}})"), false)["rotate"];
  EXPECT_EQ(rot, nlohmann::json::parse(R"({"enable": false, "mode": "rotate_back", "rotate_fp32": false,
                                            "block_size": null})"));
  EXPECT_EQ(to_json(parse(R"({"rotate": {"mode": "rotate_back"}})"))["rotate"],
            nlohmann::json::parse(R"({"mode": "rotate_back"})"));
}

}  // namespace
}  // namespace mq::config
