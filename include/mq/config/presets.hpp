#pragma once
/// Preset configs shipped in configs/ (translated from ModelOpt's modelopt_recipes YAML, reference §3).
///
/// configs/presets.json indexes them:
///   "constants": {"NVFP4_DEFAULT_CFG": "ptq/presets/model/nvfp4.json", ...}   the 39 mtq.*_CFG names
///   "extra":     {"FP8_KV_CAST_CFG": ..., "NVFP4_KV_CAST_CFG": ...}          recipe-only KV presets
///   "model":     {"nvfp4": "ptq/presets/model/nvfp4.json", ...}              hf_ptq --qformat names
///   "kv":        {"fp8_cast": "ptq/presets/kv/fp8_cast.json", ...}           --kv_cache_qformat names
///   "diffusers": {"nvfp4": "ptq/presets/diffusers/nvfp4.json", ...}          diffusers example presets
///
/// Example:
///   QuantizeConfig main = load_quantize_config("NVFP4_DEFAULT_CFG");
///   QuantizeConfig kv = load_quantize_config("kv/fp8_cast");
///   QuantizeConfig both = update_quant_cfg_with_kv_cache_quant(main, kv.quant_cfg);
///   QuantizeConfig mine = load_quantize_config("/path/to/my_recipe.json");
#include <filesystem>
#include <string>
#include <vector>

#include "mq/config/quantize_config.hpp"
#include "mq/config/quantizer_attribute.hpp"

namespace mq::config {

/// $MQ_CONFIGS_DIR if set, else <source dir>/configs.
std::filesystem::path configs_dir();

/// The 39 ModelOpt constant names (sorted), as in configs/presets.json "constants".
std::vector<std::string> preset_names();
/// hf_ptq vocabularies: basenames of configs/ptq/presets/model and .../kv (sorted).
std::vector<std::string> model_qformats();
std::vector<std::string> kv_qformats();

/// Resolves a constant or extra name ("FP8_DEFAULT_CFG", "FP8_KV_CAST_CFG"), "model/<qformat>" or "kv/<qformat>", or a file
/// path (absolute, relative to the working directory, or relative to the configs dir; ".json"
/// optional), loads it with imports resolved, and parses it as a QuantizeConfig.
/// Throws mq::ConfigError naming the file and the JSON path of the first broken rule.
QuantizeConfig load_quantize_config(const std::string& name_or_path);

/// Loads one quantizer attribute snippet, e.g. "numerics/nvfp4" (same path rules).
QuantizerAttributeConfig load_quantizer_attribute(const std::string& path);

}  // namespace mq::config
