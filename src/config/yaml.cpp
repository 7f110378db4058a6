#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "config/yaml_impl.hpp"
#include "mq/core/error.hpp"

#ifdef MQ_HAVE_YAML
#include <yaml.h>
#endif

namespace mq::config::detail {

using ojson = nlohmann::ordered_json;

namespace {

// PyYAML's SafeLoader implicit resolvers (yaml/resolver.py), minus the sexagesimal forms.
const std::regex& bool_re() {
  static const std::regex r(
      "^(?:yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$");
  return r;
}
const std::regex& int_re() {
  static const std::regex r(
      "^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$");
  return r;
}
const std::regex& float_re() {
  static const std::regex r(
      "^(?:[-+]?(?:[0-9][0-9_]*)\\.[0-9_]*(?:[eE][-+][0-9]+)?|\\.[0-9_]+(?:[eE][-+][0-9]+)?|"
      "[-+]?\\.(?:inf|Inf|INF)|\\.(?:nan|NaN|NAN))$");
  return r;
}

std::string without_underscores(const std::string& s) {
  std::string o;
  for (char c : s)
    if (c != '_') o += c;
  return o;
}

ojson yaml_null() { return ojson(nullptr); }

ojson to_bool(const std::string& s) {
  const char c = s[0];
  return ojson(c == 'y' || c == 'Y' || c == 't' || c == 'T' || s == "on" || s == "On" || s == "ON");
}

// PyYAML's construct_yaml_int: sign, then 0b / 0x / leading-0 octal / decimal.
ojson to_int(const std::string& text, bool* ok) {
  std::string s = without_underscores(text);
  int sign = 1;
  if (!s.empty() && (s[0] == '-' || s[0] == '+')) {
    if (s[0] == '-') sign = -1;
    s = s.substr(1);
  }
  int base = 10;
  if (s.rfind("0b", 0) == 0) {
    base = 2;
    s = s.substr(2);
  } else if (s.rfind("0x", 0) == 0) {
    base = 16;
    s = s.substr(2);
  } else if (s.size() > 1 && s[0] == '0') {
    base = 8;
    s = s.substr(1);
  }
  errno = 0;
  char* end = nullptr;
  const unsigned long long v = std::strtoull(s.c_str(), &end, base);
  *ok = errno == 0 && end && *end == '\0' && v <= static_cast<unsigned long long>(INT64_MAX);
  return ojson(sign * static_cast<int64_t>(v));
}

ojson to_float(const std::string& text) {
  const std::string s = without_underscores(text);
  std::string low;
  for (char c : s) low += static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  if (low == ".inf" || low == "+.inf") return ojson(HUGE_VAL);
  if (low == "-.inf") return ojson(-HUGE_VAL);
  if (low == ".nan") return ojson(std::nan(""));
  return ojson(std::strtod(s.c_str(), nullptr));
}

// The value of a plain (unquoted, untagged) scalar.
[[maybe_unused]] ojson resolve_plain(const std::string& s) {
  if (s.empty() || s == "~" || s == "null" || s == "Null" || s == "NULL") return yaml_null();
  if (std::regex_match(s, bool_re())) return to_bool(s);
  if (std::regex_match(s, int_re())) {
    bool ok = false;
    ojson v = to_int(s, &ok);
    if (ok) return v;
  }
  if (std::regex_match(s, float_re())) return to_float(s);
  return ojson(s);
}

// JSON object key of a YAML mapping key (PyYAML keeps typed keys; the JSON configs spell them as
// strings, e.g. block_sizes {-1: 16} -> {"-1": 16}).
[[maybe_unused]] std::string key_string(const ojson& k) {
  if (k.is_string()) return k.get<std::string>();
  if (k.is_null()) return "None";
  if (k.is_boolean()) return k.get<bool>() ? "True" : "False";
  return k.dump();
}

}  // namespace

#ifdef MQ_HAVE_YAML

namespace {

[[noreturn]] void fail(const std::string& label, const yaml_mark_t& m, const std::string& what) {
  MQ_THROW(ConfigError, label, ": line ", m.line + 1, " column ", m.column + 1, ": ", what);
}

class Builder {
 public:
  explicit Builder(std::string label) : label_(std::move(label)) {}

  std::vector<ojson> run(const std::string& text) {
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser))
      MQ_THROW(ConfigError, label_, ": cannot initialise the YAML parser");
    struct Guard {
      yaml_parser_t* p;
      ~Guard() { yaml_parser_delete(p); }
    } guard{&parser};
    yaml_parser_set_input_string(&parser, reinterpret_cast<const unsigned char*>(text.data()),
                                 text.size());
    std::vector<ojson> docs;
    for (bool done = false; !done;) {
      yaml_event_t ev;
      if (!yaml_parser_parse(&parser, &ev)) {
        const yaml_mark_t m = parser.problem_mark;
        fail(label_, m,
             std::string(parser.problem ? parser.problem : "invalid YAML") +
                 (parser.context ? std::string(" ") + parser.context : std::string()));
      }
      struct EvGuard {
        yaml_event_t* e;
        ~EvGuard() { yaml_event_delete(e); }
      } eg{&ev};
      switch (ev.type) {
        case YAML_STREAM_END_EVENT:
          done = true;
          break;
        case YAML_DOCUMENT_START_EVENT:
          anchors_.clear();
          break;
        case YAML_DOCUMENT_END_EVENT:
          docs.push_back(root_.is_discarded() ? yaml_null() : std::move(root_));
          root_ = ojson(ojson::value_t::discarded);
          break;
        case YAML_MAPPING_START_EVENT:
          check_collection_tag(ev.data.mapping_start.tag, "tag:yaml.org,2002:map", ev.start_mark);
          open(ojson::object(), anchor_of(ev.data.mapping_start.anchor), ev.start_mark);
          break;
        case YAML_SEQUENCE_START_EVENT:
          check_collection_tag(ev.data.sequence_start.tag, "tag:yaml.org,2002:seq", ev.start_mark);
          open(ojson::array(), anchor_of(ev.data.sequence_start.anchor), ev.start_mark);
          break;
        case YAML_MAPPING_END_EVENT:
        case YAML_SEQUENCE_END_EVENT:
          close(ev.start_mark);
          break;
        case YAML_SCALAR_EVENT: {
          const auto& sc = ev.data.scalar;
          std::string v(reinterpret_cast<const char*>(sc.value), sc.length);
          ojson j = scalar(v, sc.tag ? reinterpret_cast<const char*>(sc.tag) : nullptr,
                           sc.style == YAML_PLAIN_SCALAR_STYLE, ev.start_mark);
          const std::string a = anchor_of(sc.anchor);
          if (!a.empty()) anchors_[a] = j;
          add(std::move(j), ev.start_mark, v == "<<" && sc.style == YAML_PLAIN_SCALAR_STYLE);
          break;
        }
        case YAML_ALIAS_EVENT: {
          const std::string a = anchor_of(ev.data.alias.anchor);
          auto it = anchors_.find(a);
          if (it == anchors_.end()) fail(label_, ev.start_mark, "unknown alias *" + a);
          add(it->second, ev.start_mark, false);
          break;
        }
        default:
          break;
      }
    }
    return docs;
  }

 private:
  struct Frame {
    ojson node;
    std::string anchor;
    bool have_key = false;
    std::string key;
    bool merge_key = false;  // the pending key is "<<"
  };

  // safe_load only constructs the standard types: any other tag on a mapping or sequence is an
  // error.
  void check_collection_tag(const yaml_char_t* tag, const char* standard,
                            const yaml_mark_t& m) const {
    if (!tag) return;
    const std::string t(reinterpret_cast<const char*>(tag));
    if (t != "!" && t != standard)
      fail(label_, m, "unsupported YAML tag " + t + " (safe_load types only)");
  }

  static std::string anchor_of(const yaml_char_t* a) {
    return a ? reinterpret_cast<const char*>(a) : "";
  }

  ojson scalar(const std::string& v, const char* tag, bool plain, const yaml_mark_t& m) const {
    if (tag && std::string(tag) != "!") {
      const std::string t(tag);
      if (t == "tag:yaml.org,2002:str") return ojson(v);
      if (t == "tag:yaml.org,2002:null") return yaml_null();
      if (t == "tag:yaml.org,2002:bool") {
        if (!std::regex_match(v, bool_re())) fail(label_, m, "'" + v + "' is not a !!bool");
        return to_bool(v);
      }
      if (t == "tag:yaml.org,2002:int") {
        bool ok = std::regex_match(v, int_re());
        ojson r = ok ? to_int(v, &ok) : ojson();
        if (!ok) fail(label_, m, "'" + v + "' is not a !!int");
        return r;
      }
      if (t == "tag:yaml.org,2002:float") {
        if (std::regex_match(v, int_re())) {
          bool ok = false;
          ojson r = to_int(v, &ok);
          if (ok) return ojson(static_cast<double>(r.get<int64_t>()));
        }
        if (!std::regex_match(v, float_re())) fail(label_, m, "'" + v + "' is not a !!float");
        return to_float(v);
      }
      fail(label_, m, "unsupported YAML tag " + t + " (safe_load types only)");
    }
    return plain && !tag ? resolve_plain(v) : ojson(v);
  }

  void open(ojson node, std::string anchor, const yaml_mark_t&) {
    Frame f;
    f.node = std::move(node);
    f.anchor = std::move(anchor);
    stack_.push_back(std::move(f));
  }

  void close(const yaml_mark_t& m) {
    Frame f = std::move(stack_.back());
    stack_.pop_back();
    if (!f.anchor.empty()) anchors_[f.anchor] = f.node;
    add(std::move(f.node), m, false);
  }

  void add(ojson v, const yaml_mark_t& m, bool is_merge_key) {
    if (stack_.empty()) {
      root_ = std::move(v);
      return;
    }
    Frame& f = stack_.back();
    if (f.node.is_array()) {
      f.node.push_back(std::move(v));
      return;
    }
    if (!f.have_key) {
      if (v.is_object() || v.is_array()) fail(label_, m, "a mapping key must be a scalar");
      f.key = key_string(v);
      f.merge_key = is_merge_key;
      f.have_key = true;
      return;
    }
    f.have_key = false;
    if (f.merge_key) {  // "<<: *base" or "<<: [*a, *b]": keys not set explicitly come from the
                        // merged maps
      std::vector<ojson> maps;
      if (v.is_object())
        maps.push_back(v);
      else if (v.is_array())
        maps.assign(v.begin(), v.end());
      for (const auto& mp : maps) {
        if (!mp.is_object())
          fail(label_, m, "a merge key '<<' needs a mapping or a list of mappings");
        for (const auto& [k, x] : mp.items())
          if (!f.node.contains(k)) f.node[k] = x;
      }
      return;
    }
    f.node[f.key] = std::move(v);
  }

  std::string label_;
  std::vector<Frame> stack_;
  std::map<std::string, ojson> anchors_;
  ojson root_ = ojson(ojson::value_t::discarded);
};

}  // namespace

bool yaml_supported() { return true; }

std::vector<ojson> parse_yaml_documents(const std::string& text, const std::string& label) {
  return Builder(label).run(text);
}

#else

bool yaml_supported() { return false; }

std::vector<ojson> parse_yaml_documents(const std::string&, const std::string& label) {
  MQ_THROW(
      ConfigError, label,
      ": this mqdist was built without YAML support (libyaml not found): use the JSON configs, "
      "or install libyaml-dev and rebuild");
}

#endif

ojson read_yaml_config(const std::string& text, const std::string& label) {
  // The `# modelopt-schema:` preamble: comment lines before the first content line.
  static const std::regex schema_re("^\\s*#\\s*modelopt-schema:\\s*(\\S+)\\s*$");
  std::string schema;
  {
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
      const auto first = line.find_first_not_of(" \t\r");
      if (first == std::string::npos) continue;
      if (line[first] != '#') break;
      std::smatch sm;
      if (std::regex_match(line, sm, schema_re)) {
        if (!schema.empty())
          MQ_THROW(ConfigError, label, ": multiple modelopt-schema comments found");
        schema = sm[1].str();
      }
    }
  }
  std::vector<ojson> docs = parse_yaml_documents(text, label);
  ojson raw;
  if (docs.empty() || docs[0].is_null()) {
    raw = ojson::object();
  } else if (docs.size() == 1) {
    raw = std::move(docs[0]);
  } else if (docs.size() == 2) {
    if (!docs[0].is_object())
      MQ_THROW(ConfigError, label,
               ": the first YAML document must be a mapping (the imports header)");
    ojson content = docs[1].is_null() ? ojson::object() : std::move(docs[1]);
    if (content.is_object()) {
      raw = std::move(docs[0]);
      for (auto& [k, v] : content.items()) raw[k] = v;
    } else if (content.is_array()) {
      raw = ojson::object();
      auto im = docs[0].find("imports");
      raw["imports"] = (im == docs[0].end() || im->is_null()) ? ojson::object() : *im;
      raw["$list"] = std::move(content);
    } else {
      MQ_THROW(ConfigError, label, ": the second YAML document must be a mapping or a list");
    }
  } else {
    MQ_THROW(ConfigError, label, ": expected 1 or 2 YAML documents, got ", docs.size());
  }
  if (!raw.is_object() && !raw.is_array())
    MQ_THROW(ConfigError, label, ": a config file must contain a YAML mapping or list");
  if (!schema.empty()) {
    const std::string name = schema.substr(schema.rfind('.') + 1);
    if (name == "QuantizeConfig" || name == "QuantizerCfgListConfig" ||
        name == "QuantizerCfgEntry" || name == "QuantizerAttributeConfig") {
      if (raw.is_array()) raw = ojson{{"$list", std::move(raw)}};
      raw["$schema"] = name;
    }
  }
  return raw;
}

}  // namespace mq::config::detail
