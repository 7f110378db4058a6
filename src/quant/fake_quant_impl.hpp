#pragma once
// Private helpers shared by the src/quant translation units.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "mq/config/quantizer_attribute.hpp"

namespace mq::quant::detail {

/// The quantization axis in the calibrator/utils spelling (nullopt: per-tensor).
std::optional<std::vector<int64_t>> axis_dims(const std::optional<config::Axis>& axis);

/// Python rendering of a float with printf format `fmt` (e.g. "%.2e"), as f"{v:.2e}" prints it.
std::string py_format(double v, const char* fmt);

}  // namespace mq::quant::detail
