#pragma once
// Helpers shared by the export tests.
#include <functional>
#include <string>

#include "mq/core/error.hpp"

namespace mq::hf_export::testing {

/// The mq::Error message thrown by `fn`, or "<no error>" when it does not throw.
inline std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const mq::Error& e) {
    return e.what();
  }
  return "<no error>";
}

}  // namespace mq::hf_export::testing
