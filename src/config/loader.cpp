#include "mq/config/loader.hpp"

#include <fstream>
#include <set>
#include <sstream>

#include "config/json_impl.hpp"
#include "config/yaml_impl.hpp"
#include "mq/config/json.hpp"
#include "mq/config/presets.hpp"
#include "mq/config/quantize_config.hpp"
#include "mq/core/error.hpp"

namespace fs = std::filesystem;

namespace mq::config {

using detail::ojson;
using detail::show;

namespace {

constexpr const char* kImport = "$import";

std::string label_for(const fs::path& p) {
  std::error_code ec;
  fs::path root = fs::weakly_canonical(configs_dir(), ec);
  fs::path abs = fs::weakly_canonical(p, ec);
  auto rel = abs.lexically_relative(root);
  if (!rel.empty() && *rel.begin() != "..") return (fs::path("configs") / rel).generic_string();
  return p.generic_string();
}

bool is_yaml_path(const fs::path& p) {
  const std::string e = p.extension().string();
  return e == ".yaml" || e == ".yml";
}

// A JSON file, or a YAML file in ModelOpt's recipe form (detail::read_yaml_config).
ojson read_config_file(const fs::path& p, const std::string& label) {
  std::ifstream in(p);
  if (!in) MQ_THROW(IoError, label, ": cannot open config file");
  std::stringstream ss;
  ss << in.rdbuf();
  if (is_yaml_path(p)) return detail::read_yaml_config(ss.str(), label);
  try {
    return ojson::parse(ss.str());
  } catch (const nlohmann::json::parse_error& e) {
    // nlohmann's message names byte offsets; keep it on one line.
    std::string what = e.what();
    for (char& ch : what)
      if (ch == '\n') ch = ' ';
    MQ_THROW(ConfigError, label, ": $: invalid JSON: ", what);
  }
}

void validate_schema(const ConfigDocument& doc) {
  if (!doc.schema) return;
  ErrorContext ctx{doc.label, ""};
  const std::string& s = *doc.schema;
  if (s == "QuantizeConfig") {
    parse_quantize_config(doc.body, ctx);
  } else if (s == "QuantizerCfgListConfig") {
    if (!doc.body.is_array())
      ctx.fail("schema QuantizerCfgListConfig needs a list body (\"$list\")");
    normalize_quant_cfg_list(doc.body, ctx);
  } else if (s == "QuantizerCfgEntry") {
    parse_quantizer_cfg_entry(doc.body, ctx);
  } else if (s == "QuantizerAttributeConfig") {
    parse_quantizer_attribute(doc.body, ctx);
  } else {
    ErrorContext{doc.label, "$schema"}.fail("unknown schema \"" + s +
                                            "\" (allowed: QuantizeConfig, QuantizerCfgListConfig, "
                                            "QuantizerCfgEntry, QuantizerAttributeConfig)");
  }
}

class Resolver {
 public:
  ConfigDocument load(const fs::path& file, std::set<std::string> loading) {
    ConfigDocument doc;
    doc.path = file;
    doc.label = label_for(file);
    std::error_code ec;
    std::string key = fs::weakly_canonical(file, ec).string();
    if (loading.count(key))
      MQ_THROW(ConfigError, doc.label, ": $: circular import (the file imports itself)");
    loading.insert(key);

    ojson raw = read_config_file(file, doc.label);
    ErrorContext root{doc.label, ""};
    ojson imports;
    if (raw.is_object()) {
      if (auto s = raw.find("$schema"); s != raw.end())
        doc.schema = detail::get_string(*s, root.key("$schema"));
      if (auto im = raw.find("imports"); im != raw.end()) imports = *im;
      if (auto l = raw.find("$list"); l != raw.end()) {
        for (const auto& [k, v] : raw.items())
          if (k != "$list" && k != "$schema" && k != "$comment" && k != "imports")
            root.key(k).fail(
                "a file with a \"$list\" body may only have \"$schema\", \"$comment\" and "
                "\"imports\" besides it");
        if (!l->is_array()) root.key("$list").fail(show(*l) + " is not a list");
        doc.body = *l;
      } else {
        doc.body = ojson::object();
        for (const auto& [k, v] : raw.items())
          if (k != "$schema" && k != "$comment" && k != "imports") doc.body[k] = v;
      }
    } else if (raw.is_array()) {
      doc.body = raw;
    } else {
      root.fail("a config file must hold a JSON object or list, got " + show(raw));
    }

    std::map<std::string, ConfigDocument> by_alias;
    if (!imports.is_null()) {
      ErrorContext ic = root.key("imports");
      detail::get_object(imports, ic, "an imports dict {alias: path}");
      for (const auto& [alias, ref] : imports.items()) {
        ErrorContext ac = ic.key(alias);
        std::string ref_s = detail::get_string(ref, ac);
        if (ref_s.empty()) ac.fail("import path is empty");
        auto found = find_config_file(ref_s, file.parent_path());
        if (!found)
          ac.fail("cannot find config file \"" + ref_s + "\" (relative to " + doc.label + " or " +
                  configs_dir().generic_string() + ")");
        std::error_code ec2;
        if (loading.count(fs::weakly_canonical(*found, ec2).string()))
          ac.fail("circular import of \"" + ref_s + "\"");
        by_alias.emplace(alias, load(*found, loading));
      }
    }
    aliases_ = &by_alias;
    doc.body = resolve(doc.body, root);
    aliases_ = nullptr;
    validate_schema(doc);
    return doc;
  }

 private:
  const ConfigDocument& lookup(const ojson& ref, const ErrorContext& ctx) const {
    std::string name = detail::get_string(ref, ctx);
    auto it = aliases_->find(name);
    if (it == aliases_->end()) {
      std::vector<std::string> known;
      for (const auto& [k, v] : *aliases_) known.push_back(k);
      ctx.fail("unknown $import alias \"" + name + "\" (" +
               (known.empty() ? std::string("no imports are declared")
                              : "imports: " + detail::join(known)) +
               ")");
    }
    return it->second;
  }

  ojson resolve(const ojson& obj, const ErrorContext& ctx) const {
    if (obj.is_object()) {
      if (auto ref = obj.find(kImport); ref != obj.end()) {
        ErrorContext rc = ctx.key(kImport);
        ojson merged = ojson::object();
        std::vector<ojson> refs;
        if (ref->is_array())
          refs.assign(ref->begin(), ref->end());
        else
          refs.push_back(*ref);
        for (size_t i = 0; i < refs.size(); ++i) {
          ErrorContext c = ref->is_array() ? rc.index(i) : rc;
          const ConfigDocument& snippet = lookup(refs[i], c);
          if (!snippet.body.is_object())
            c.fail("$import \"" + refs[i].get<std::string>() +
                   "\" inside a dict must resolve to a dict, " + snippet.label + " holds a list");
          merged.update(snippet.body);
        }
        for (const auto& [k, v] : obj.items())
          if (k != kImport) merged[k] = v;
        // The snippet is resolved already; this resolves $import markers in the inline values.
        ojson out = ojson::object();
        for (const auto& [k, v] : merged.items())
          out[k] = obj.contains(k) ? resolve(v, ctx.key(k)) : v;
        return out;
      }
      ojson out = ojson::object();
      for (const auto& [k, v] : obj.items()) out[k] = resolve(v, ctx.key(k));
      return out;
    }
    if (obj.is_array()) {
      ojson out = ojson::array();
      for (size_t i = 0; i < obj.size(); ++i) {
        const ojson& e = obj[i];
        if (e.is_object() && e.size() == 1 && e.contains(kImport)) {
          ErrorContext c = ctx.index(i).key(kImport);
          const ConfigDocument& snippet = lookup(e[kImport], c);
          if (snippet.body.is_array()) {
            for (const auto& item : snippet.body) out.push_back(item);  // splice a list snippet
          } else {
            out.push_back(snippet.body);  // append a single element
          }
        } else {
          out.push_back(resolve(e, ctx.index(i)));
        }
      }
      return out;
    }
    return obj;
  }

  const std::map<std::string, ConfigDocument>* aliases_ = nullptr;
};

}  // namespace

std::optional<fs::path> find_config_file(const std::string& ref, const fs::path& base_dir) {
  fs::path p(ref);
  std::vector<fs::path> bases;
  if (p.is_absolute()) {
    bases.push_back(p);
  } else {
    bases.push_back(base_dir / p);
    bases.push_back(configs_dir() / p);
    // ModelOpt's built-in recipe root: its "configs/numerics/fp8" spelling finds the YAML twin
    // there.
    if (detail::yaml_supported()) bases.push_back(modelopt_recipes_dir() / p);
    bases.push_back(configs_dir().parent_path() / p);
  }
  const std::string ext = p.extension().string();
  const bool has_ext = ext == ".json" || ext == ".yaml" || ext == ".yml";
  std::vector<std::string> suffixes{""};
  if (!has_ext) {
    suffixes.push_back(".json");
    if (detail::yaml_supported()) {
      suffixes.push_back(".yml");
      suffixes.push_back(".yaml");
    }
  }
  for (const auto& b : bases) {
    for (const std::string& suf : suffixes) {
      const fs::path cand(b.string() + suf);
      std::error_code ec;
      if (fs::is_regular_file(cand, ec)) return cand.lexically_normal();
    }
  }
  return std::nullopt;
}

fs::path modelopt_recipes_dir() { return configs_dir() / "modelopt_recipes"; }

bool yaml_supported() { return detail::yaml_supported(); }

ConfigDocument load_config_document(const fs::path& file) { return Resolver{}.load(file, {}); }

}  // namespace mq::config
