#include "mq/config/presets.hpp"

#include <algorithm>
#include <cstdlib>
#include <fstream>

#include "config/json_impl.hpp"
#include "mq/config/json.hpp"
#include "mq/config/loader.hpp"
#include "mq/core/error.hpp"

#ifndef MQ_SOURCE_DIR
#error "MQ_SOURCE_DIR must be defined (the source tree holding configs/)"
#endif

namespace fs = std::filesystem;

namespace mq::config {

using detail::ojson;

fs::path configs_dir() {
  if (const char* env = std::getenv("MQ_CONFIGS_DIR"); env != nullptr && *env != '\0')
    return fs::path(env);
  return fs::path(MQ_SOURCE_DIR) / "configs";
}

namespace {

// `required` false: a configs dir without an index simply has no preset names.
ojson read_index(bool required) {
  fs::path p = configs_dir() / "presets.json";
  std::error_code ec;
  if (!required && !fs::exists(p, ec)) return ojson::object();
  std::ifstream in(p);
  if (!in)
    MQ_THROW(IoError, p.generic_string(), ": cannot open the preset index (set MQ_CONFIGS_DIR?)");
  try {
    return ojson::parse(in);
  } catch (const nlohmann::json::parse_error& e) {
    MQ_THROW(ConfigError, p.generic_string(), ": $: invalid JSON: ", e.what());
  }
}

std::vector<std::string> section_names(const char* section) {
  ojson idx = read_index(true);
  std::vector<std::string> out;
  if (auto s = idx.find(section); s != idx.end() && s->is_object())
    for (const auto& [k, v] : s->items()) out.push_back(k);
  std::sort(out.begin(), out.end());
  return out;
}

std::optional<fs::path> index_lookup(const std::string& name) {
  ojson idx = read_index(false);
  auto in_section = [&](const char* section, const std::string& key) -> std::optional<fs::path> {
    auto s = idx.find(section);
    if (s == idx.end() || !s->is_object()) return std::nullopt;
    auto it = s->find(key);
    if (it == s->end() || !it->is_string()) return std::nullopt;
    return configs_dir() / it->get<std::string>();
  };
  if (auto p = in_section("constants", name)) return p;
  if (auto p = in_section("extra", name)) return p;
  if (name.rfind("model/", 0) == 0) return in_section("model", name.substr(6));
  if (name.rfind("kv/", 0) == 0) return in_section("kv", name.substr(3));
  return std::nullopt;
}

fs::path resolve_name_or_path(const std::string& name_or_path) {
  if (auto p = index_lookup(name_or_path)) return *p;
  if (auto p = find_config_file(name_or_path, fs::current_path())) return *p;
  MQ_THROW(ConfigError, name_or_path, ": neither a preset name (see ",
           (configs_dir() / "presets.json").generic_string(),
           ": e.g. NVFP4_DEFAULT_CFG, model/nvfp4, kv/fp8_cast) nor a config file");
}

}  // namespace

std::vector<std::string> preset_names() { return section_names("constants"); }
std::vector<std::string> model_qformats() { return section_names("model"); }
std::vector<std::string> kv_qformats() { return section_names("kv"); }

QuantizeConfig load_quantize_config(const std::string& name_or_path) {
  fs::path file;
  // A ModelOpt recipe directory (metadata.yml + quantize.yml): its quantize section.
  std::error_code ec;
  if (fs::is_directory(name_or_path, ec)) {
    for (const char* n : {"quantize.yml", "quantize.yaml"})
      if (fs::is_regular_file(fs::path(name_or_path) / n, ec)) file = fs::path(name_or_path) / n;
    if (file.empty())
      MQ_THROW(ConfigError, name_or_path,
               ": a recipe directory needs quantize.yml (or quantize.yaml)");
  } else {
    file = resolve_name_or_path(name_or_path);
  }
  ConfigDocument doc = load_config_document(file);
  // A ModelOpt recipe file (metadata + one section): a PTQ recipe's quantize section is the config.
  if (doc.body.is_object() && doc.body.contains("metadata")) {
    ErrorContext ctx{doc.label, ""};
    const auto& md = doc.body.at("metadata");
    const auto rt = md.is_object() ? md.find("recipe_type") : md.end();
    const std::string type =
        (md.is_object() && rt != md.end() && rt->is_string()) ? rt->get<std::string>() : "";
    if (type != "ptq")
      ctx.key("metadata")
          .key("recipe_type")
          .fail((type.empty() ? std::string("missing") : "\"" + type + "\"") +
                ": only PTQ recipes (recipe_type: ptq) hold a QuantizeConfig");
    if (!doc.body.contains("quantize")) ctx.key("quantize").fail("is required in a PTQ recipe");
    return parse_quantize_config(doc.body.at("quantize"), ctx.key("quantize"));
  }
  return parse_quantize_config(doc.body, ErrorContext{doc.label, ""});
}

QuantizerAttributeConfig load_quantizer_attribute(const std::string& path) {
  auto p = find_config_file(path, fs::current_path());
  if (!p) MQ_THROW(ConfigError, path, ": cannot find the quantizer attribute config file");
  ConfigDocument doc = load_config_document(*p);
  return parse_quantizer_attribute(doc.body, ErrorContext{doc.label, ""});
}

}  // namespace mq::config
