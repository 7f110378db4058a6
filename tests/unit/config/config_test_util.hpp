#pragma once
// Helpers for the config tests: run a parse and return the ConfigError message.
#include <gtest/gtest.h>

#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "mq/config/quantize_config.hpp"
#include "mq/core/error.hpp"

namespace mq::config::testing {

using ojson = nlohmann::ordered_json;

/// The ConfigError message thrown by `f`, or "<no error>" when it does not throw.
inline std::string config_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const mq::ConfigError& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("<other exception> ") + e.what();
  }
  return "<no error>";
}

/// `msg` contains every one of `parts`, and is one line.
inline ::testing::AssertionResult has_all(const std::string& msg,
                                          std::initializer_list<std::string> parts) {
  if (msg.find('\n') != std::string::npos)
    return ::testing::AssertionFailure() << "multi-line message: " << msg;
  for (const auto& p : parts)
    if (msg.find(p) == std::string::npos)
      return ::testing::AssertionFailure() << "message \"" << msg << "\" lacks \"" << p << "\"";
  return ::testing::AssertionSuccess();
}

/// ModelOpt's own dump of its presets and PTQ recipes (tests/conformance/gen_presets.py).
inline const nlohmann::json& modelopt_presets_golden() {
  static const nlohmann::json g = [] {
    std::ifstream in(MQ_SOURCE_DIR "/tests/conformance/golden/presets_modelopt.json");
    EXPECT_TRUE(in.good()) << "missing golden presets_modelopt.json";
    return in.good() ? nlohmann::json::parse(in) : nlohmann::json::object();
  }();
  return g;
}

/// `q` equals one entry of that dump (model_dump(exclude_unset) of every quant_cfg entry, the
/// algorithm, need_calibration); `what` names it in failures.
inline void expect_matches_modelopt_dump(const QuantizeConfig& q, const nlohmann::json& g,
                                         const std::string& what) {
  const nlohmann::json& theirs = g.at("quant_cfg");
  ASSERT_EQ(q.quant_cfg.size(), theirs.size()) << what;
  for (size_t i = 0; i < theirs.size(); ++i)
    EXPECT_EQ(to_json(q.quant_cfg[i]), theirs[i]) << what << " entry " << i;
  EXPECT_EQ(q.has_algorithm(), g.at("has_algorithm").get<bool>()) << what;
  if (q.has_algorithm()) {
    EXPECT_EQ(to_json(q).at("algorithm"), g.at("algorithm")) << what;
  }
  EXPECT_EQ(need_calibration(q), g.at("need_calibration").get<bool>()) << what;
}

}  // namespace mq::config::testing
