#pragma once
/// JSON I/O for QuantizerAttributeConfig: parsing with every validation rule of ModelOpt's pydantic
/// model (reference §1.3) and dumping like `model_dump(exclude_unset=...)`.
///
/// Errors are mq::ConfigError with one line "<file>: <json path>: <rule broken>", e.g.
///   nvfp4.json: quant_cfg[1].cfg.num_bits: [3,3] is not a supported float format (...)
///
/// Example:
///   auto j = nlohmann::json::parse(R"({"num_bits": "e2m1",
///                                       "block_sizes": {"-1": 16, "type": "dynamic", "scale_bits": [4, 3]}})");
///   mq::config::QuantizerAttributeConfig c = mq::config::parse_quantizer_attribute(j, {"my.json", "cfg"});
///   nlohmann::json back = mq::config::to_json(c);  // {"num_bits": [2,1], "block_sizes": {"-1": 16, ...}}
///
/// Differences from ModelOpt, all deliberate (ModelOpt's own intent, or a crash turned into an error):
///   - "ExMy" strings ("e4m3", "E2M1") under num_bits / scale_bits become (E, M) everywhere (ModelOpt's
///     YAML loader does this; JSON is our YAML). Any other num_bits string needs `backend`, because
///     ModelOpt accepts it and then fails at runtime (reference §8.12).
///   - block_sizes / bias keys written as strings ("-1") are axes (JSON keys are always strings).
///   - Block lengths must be positive ints; block_sizes["type"] must be "static" or "dynamic" (ModelOpt
///     documents both but checks neither).
///   - Types are strict: bools are JSON booleans, ints are JSON integers (pydantic's lax coercions of
///     "true"/1 to bool and so on are not replicated, except four_over_six: bool -> int, as pydantic does).
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "mq/config/quantizer_attribute.hpp"

namespace mq::config {

/// Where a JSON value came from, for error messages: the file (or "<inline>") and the JSON path
/// inside it ("quant_cfg[1].cfg.num_bits"; the root is printed as "$").
struct ErrorContext {
  std::string file = "<inline>";
  std::string path;

  /// Child contexts: `.key` (or `["key"]` when the key is not identifier-like) and `[i]`.
  ErrorContext key(std::string_view k) const;
  ErrorContext index(size_t i) const;
  /// "<file>: <path>".
  std::string where() const;
  /// Throws mq::ConfigError("<file>: <path>: <rule>").
  [[noreturn]] void fail(const std::string& rule) const;
};

/// Parses and validates one quantizer attribute dict (ModelOpt's QuantizerAttributeConfig). Records
/// the JSON keys given in `fields_set`. Throws mq::ConfigError naming the file, path and rule.
QuantizerAttributeConfig parse_quantizer_attribute(const nlohmann::ordered_json& j,
                                                   const ErrorContext& ctx = {});
QuantizerAttributeConfig parse_quantizer_attribute(const nlohmann::json& j,
                                                   const ErrorContext& ctx = {});

/// Dumps like pydantic's `model_dump(exclude_unset=...)`: tuples as lists, int dict keys as strings,
/// declaration order. With exclude_unset=false every field is written, defaults included.
nlohmann::json to_json(const QuantizerAttributeConfig& cfg, bool exclude_unset = true);

/// Parses `num_bits`-like values: an int N, an [E, M] list, or an "ExMy" string. Other strings are
/// returned as NumBits::Kind::kCustom only when `allow_custom` (num_bits with a backend).
NumBits parse_num_bits(const nlohmann::ordered_json& j, const ErrorContext& ctx, bool allow_custom);
/// [E, M] for floats, N for ints, the string for custom formats.
nlohmann::json to_json(const NumBits& nb);

/// "e2m1" / "E4M3" -> (E, M); std::nullopt for anything else (ModelOpt's `^[Ee](\d+)[Mm](\d+)$`).
std::optional<NumBits> parse_exmy(std::string_view s);

/// nlohmann::json -> nlohmann::ordered_json (key order of the input is the sorted order).
nlohmann::ordered_json to_ordered(const nlohmann::json& j);
/// nlohmann::ordered_json -> nlohmann::json (key order is lost; values are equal).
nlohmann::json to_unordered(const nlohmann::ordered_json& j);

}  // namespace mq::config
