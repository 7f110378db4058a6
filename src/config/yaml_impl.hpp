#pragma once
// YAML front end of the config loader: ModelOpt's recipe YAML read as PyYAML's safe_load reads it
// (YAML 1.1 plain-scalar types), turned into the JSON trees the loader resolves.
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace mq::config::detail {

/// True when this build can read YAML (libyaml was found).
bool yaml_supported();

/// The documents of a YAML stream, as JSON. Plain scalars get PyYAML's SafeLoader types: null
/// (~, null, empty), bool (true/false/yes/no/on/off in its three spellings), int (decimal, 0x, 0b,
/// 0o-style leading 0, '_' separators), float (a '.' is required: 1.0e-5, .5, .inf, .nan), else
/// string; quoted and block scalars are strings; explicit !!str/!!int/!!float/!!bool/!!null tags
/// are honoured. Anchors, aliases and "<<" merge keys work. Mapping keys become JSON strings (-1 ->
/// "-1"). Throws mq::ConfigError "<label>: line L column C: <problem>" on invalid YAML.
std::vector<nlohmann::ordered_json> parse_yaml_documents(const std::string& text,
                                                         const std::string& label);

/// ModelOpt's config-file shape (config_loader._load_raw_config_with_schema): one document is the
/// body; two documents are a header mapping (imports) and a body, merged when the body is a
/// mapping, or {"imports": ..., "$list": body} when it is a list; the leading `# modelopt-schema:
/// a.b.Name` comment becomes "$schema": "Name" for the schemas the loader validates
/// (QuantizeConfig, QuantizerCfgListConfig, QuantizerCfgEntry, QuantizerAttributeConfig; others are
/// dropped).
nlohmann::ordered_json read_yaml_config(const std::string& text, const std::string& label);

}  // namespace mq::config::detail
