#pragma once
// Private helpers shared by the config parsers: strict JSON type checks that fail with a
// "<file>: <path>: <rule>" ConfigError.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "mq/config/json.hpp"

namespace mq::config::detail {

using ojson = nlohmann::ordered_json;

/// Compact JSON text of a value for messages (long values are cut).
std::string show(const ojson& j);

bool get_bool(const ojson& j, const ErrorContext& ctx);
int64_t get_int(const ojson& j, const ErrorContext& ctx);
double get_number(const ojson& j, const ErrorContext& ctx);
std::string get_string(const ojson& j, const ErrorContext& ctx);
/// One of `allowed` (message lists them).
std::string get_enum(const ojson& j, const ErrorContext& ctx, const std::vector<std::string>& allowed);
const ojson& get_object(const ojson& j, const ErrorContext& ctx, std::string_view what);

/// "-1" -> -1 for JSON keys that spell an int; std::nullopt otherwise.
std::optional<int> parse_int_key(std::string_view key);

/// Rejects keys of `j` that are not in `allowed`.
void reject_unknown_keys(const ojson& j, const ErrorContext& ctx,
                         const std::vector<std::string>& allowed, std::string_view what);

/// "a, b, c".
std::string join(const std::vector<std::string>& v);

}  // namespace mq::config::detail
