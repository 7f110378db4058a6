#pragma once
// Reads a whole JSON file: mq::IoError when it cannot be opened, ParseError ("<path>: invalid JSON:
// ...") when it is not JSON. config.json and the safetensors index share it.
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "mq/core/error.hpp"

namespace mq::models::detail {

template <typename ParseError>
nlohmann::json read_json_file(const std::string& path) {
  std::ifstream in(path);
  MQ_CHECK_T(IoError, in.good(), path, ": cannot open");
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    return nlohmann::json::parse(ss.str());
  } catch (const nlohmann::json::parse_error& e) {
    MQ_THROW(ParseError, path, ": invalid JSON: ", e.what());
  }
}

}  // namespace mq::models::detail
