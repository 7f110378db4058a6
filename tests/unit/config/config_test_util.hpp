#pragma once
// Helpers for the config tests: run a parse and return the ConfigError message.
#include <functional>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

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
inline ::testing::AssertionResult has_all(const std::string& msg, std::initializer_list<std::string> parts) {
  if (msg.find('\n') != std::string::npos) return ::testing::AssertionFailure() << "multi-line message: " << msg;
  for (const auto& p : parts)
    if (msg.find(p) == std::string::npos)
      return ::testing::AssertionFailure() << "message \"" << msg << "\" lacks \"" << p << "\"";
  return ::testing::AssertionSuccess();
}

}  // namespace mq::config::testing
