// Accept/reject parity with ModelOpt: every input of data/validation_corpus.json was run through
// ModelOpt 0.47.0's pydantic models (gen_validation_golden.py -> data/validation_modelopt.json).
// mqdist must accept exactly what ModelOpt accepts, with the same model_dump(exclude_unset) dump,
// except for the inputs marked "deviation" (mqdist rejects them on purpose; ModelOpt accepts them).
#include <fstream>

#include <gtest/gtest.h>

#include "config_test_util.hpp"
#include "mq/config/json.hpp"
#include "mq/config/quantize_config.hpp"

namespace mq::config {
namespace {

using nlohmann::json;
using testing::ojson;

ojson read(const char* rel) {
  std::ifstream in(std::string(MQ_SOURCE_DIR "/tests/unit/config/data/") + rel);
  EXPECT_TRUE(in.good()) << rel;
  return in.good() ? ojson::parse(in) : ojson::object();
}

struct Outcome {
  bool ok = false;
  json dump;
  std::string error;
};

Outcome run(const std::string& kind, const ojson& input) {
  Outcome o;
  try {
    ErrorContext ctx{"corpus.json", kind};
    if (kind == "attribute") {
      o.dump = to_json(parse_quantizer_attribute(input, ctx));
    } else if (kind == "quant_cfg") {
      o.dump = json::array();
      for (const auto& e : normalize_quant_cfg_list(input, ctx)) o.dump.push_back(to_json(e));
    } else {
      parse_algorithm(input, ctx);
    }
    o.ok = true;
  } catch (const mq::ConfigError& e) {
    o.error = e.what();
  }
  return o;
}

class ValidationParity : public ::testing::TestWithParam<std::string> {};

TEST_P(ValidationParity, SameAcceptRejectAndDumpAsModelOpt) {
  const std::string kind = GetParam();
  static const ojson corpus = read("validation_corpus.json");
  static const ojson golden = read("validation_modelopt.json");
  const ojson& items = corpus.at(kind);
  const ojson& results = golden.at(kind);
  ASSERT_EQ(items.size(), results.size()) << "regenerate data/validation_modelopt.json";
  size_t accepted = 0, rejected = 0, deviations = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    const ojson& input = items[i].at("input");
    const ojson& ref = results[i];
    Outcome ours = run(kind, input);
    SCOPED_TRACE(kind + "[" + std::to_string(i) + "] " + input.dump());
    if (items[i].contains("deviation")) {
      ++deviations;
      EXPECT_TRUE(ref.at("ok").get<bool>()) << "ModelOpt now rejects it: drop the deviation mark";
      EXPECT_FALSE(ours.ok);
      continue;
    }
    EXPECT_EQ(ours.ok, ref.at("ok").get<bool>()) << (ours.ok ? std::string("we accept; ModelOpt: ") +
                                                                   ref.value("error", "")
                                                             : "we reject: " + ours.error);
    if (ours.ok && ref.at("ok").get<bool>() && kind != "algorithm") {
      EXPECT_EQ(ours.dump, to_unordered(ref.at("dump")));
    }
    if (!ours.ok) {
      EXPECT_EQ(ours.error.rfind("corpus.json: " + kind, 0), 0u) << ours.error;
    }
    (ours.ok ? accepted : rejected)++;
  }
  // The corpus exercises both sides of every rule.
  EXPECT_GT(accepted, 10u);
  EXPECT_GT(rejected, 10u);
  if (kind == "attribute") {
    EXPECT_EQ(deviations, 6u);
  }
}

INSTANTIATE_TEST_SUITE_P(Kinds, ValidationParity, ::testing::Values("attribute", "quant_cfg", "algorithm"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace mq::config
