#pragma once
/// JSON config files with `$import` composition (ModelOpt's recipe loader, reference §1.4, in
/// JSON).
/// ".yaml" / ".yml" files are read as ModelOpt's own YAML (PyYAML safe_load types, the
/// `# modelopt-schema:` preamble, the imports + list two-document form) and then resolved alike.
///
/// A file is a JSON value. An object may carry these directives, which are removed from the body:
///   "$schema": "QuantizeConfig" | "QuantizerCfgListConfig" | "QuantizerCfgEntry" |
///              "QuantizerAttributeConfig"   (ModelOpt's `# modelopt-schema:` preamble; when given,
///                                            the resolved body is validated against it)
///   "imports": {"alias": "path", ...}       (paths resolve relative to the importing file, then to
///                                            the configs dir, then to its parent, so ModelOpt's
///                                            "configs/numerics/fp8" spelling works; ".json"
///                                            optional)
///   "$list":   [...]                        (the body of a list-valued file: YAML's second
///   document)
///   "$comment": "..."                       (the YAML file's description comment; ignored)
/// A file may also be a bare JSON list (a list body without imports).
/// Inside the body:
///   {"$import": "alias", "k": v}   shallow merge: the imported dict, then the inline keys on top
///                                  ("$import" may also be a list of aliases, merged in order);
///   a list element exactly {"$import": "alias"} splices an imported list, or appends an imported
///                                  dict (ModelOpt decides by the snippet's schema; the two agree).
///
/// Example (configs/ptq/presets/model/fp8.json):
///   {"$schema": "QuantizeConfig",
///    "imports": {"base_disable_all": "ptq/units/base_disable_all.json",
///                "w8a8_fp8_fp8": "ptq/units/w8a8_fp8_fp8.json"},
///    "algorithm": "max",
///    "quant_cfg": [{"$import": "base_disable_all"}, {"$import": "w8a8_fp8_fp8"}]}
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace mq::config {

/// A loaded, fully resolved config document.
struct ConfigDocument {
  nlohmann::ordered_json body;  ///< directives removed, every $import resolved
  std::optional<std::string> schema;
  std::filesystem::path path;  ///< the file it came from
  std::string label;           ///< how errors name the file ("configs/ptq/presets/model/fp8.json")
};

/// Reads `file`, resolves its imports recursively (cycles are errors) and validates imported
/// snippets against their "$schema". Throws mq::ConfigError (bad content) or mq::IoError
/// (unreadable).
ConfigDocument load_config_document(const std::filesystem::path& file);

/// Finds a config file as ModelOpt's loader does: `ref` as given (absolute, or relative to
/// `base_dir`), then under the configs dir, then under ModelOpt's recipe root
/// (modelopt_recipes_dir()), then under the configs dir's parent; each as given and, without an
/// extension, with ".json", ".yml", ".yaml". std::nullopt when none exists.
std::optional<std::filesystem::path> find_config_file(const std::string& ref,
                                                      const std::filesystem::path& base_dir);

/// True when this build reads YAML config files (libyaml was found at build time).
bool yaml_supported();

/// `<configs>/modelopt_recipes`: ModelOpt 0.47.0's recipe YAML, vendored verbatim (the built-in
/// recipe library ModelOpt resolves "configs/..." and "general/ptq/..." against).
std::filesystem::path modelopt_recipes_dir();

}  // namespace mq::config
