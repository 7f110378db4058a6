#include "mq/data/tokenizer.hpp"

#include <algorithm>
#include <array>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <queue>
#include <sstream>
#include <unordered_map>

#include "data/unicode_impl.hpp"
#include "mq/core/error.hpp"

namespace mq::data {
namespace {

using json = nlohmann::json;
using unicode::SplitPattern;

// GPT-2's reversible byte <-> character map: printable Latin-1 bytes stand for themselves, the
// others are shifted to U+0100.. in byte order.
struct ByteLevelAlphabet {
  std::array<char32_t, 256> byte_to_char{};
  std::array<int, 512>
      char_to_byte{};  // indexed by code point (all < 512); -1: not in the alphabet
  ByteLevelAlphabet() {
    char_to_byte.fill(-1);
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      bool printable =
          (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      byte_to_char[b] = printable ? static_cast<char32_t>(b) : next++;
      char_to_byte[byte_to_char[b]] = b;
    }
  }
  int byte_of(char32_t c) const { return c < 512 ? char_to_byte[c] : -1; }
};
const ByteLevelAlphabet& alphabet() {
  static const ByteLevelAlphabet a;
  return a;
}

std::string to_byte_level(std::string_view raw) {
  std::string s;
  s.reserve(raw.size() * 2);
  for (unsigned char b : raw) unicode::append_utf8(s, alphabet().byte_to_char[b]);
  return s;
}

struct AddedToken {
  std::string content;
  std::int32_t id = 0;
  bool special = false, lstrip = false, rstrip = false;
};

// Added tokens matched leftmost-longest; candidates are bucketed by their first byte.
struct AddedMatcher {
  std::vector<AddedToken> tokens;
  std::array<std::vector<std::size_t>, 256> by_first;
  void build() {
    for (std::size_t i = 0; i < tokens.size(); ++i)
      by_first[static_cast<unsigned char>(tokens[i].content[0])].push_back(i);
  }
  bool empty() const { return tokens.empty(); }
};

struct Segment {
  std::size_t begin, end;
  std::int32_t id;  // -1: text to tokenize
};

enum class Kind : std::uint8_t { kNone, kModel, kAdded, kAddedSpecial };

struct PreStep {
  bool byte_level = false;
  bool add_prefix_space = false;  // ByteLevel
  bool use_regex = true;          // ByteLevel
  SplitPattern pattern = SplitPattern::kGpt2;
  bool removed = false;  // Split behavior "Removed" (else "Isolated")
  // Digits: every \p{N} code point (individual_digits) or every run of them becomes its own piece
  // (HF's Digits pre-tokenizer tests Rust's char::is_numeric, i.e. General_Category N*).
  bool digits = false;
  bool individual_digits = false;
};

std::string show(const json& j) {
  std::string s = j.dump();
  return s.size() > 120 ? s.substr(0, 117) + "..." : s;
}

}  // namespace

struct Tokenizer::Impl {
  std::string source;
  bool nfc = false;
  std::vector<PreStep> pre;
  std::unordered_map<std::string, std::int32_t> vocab;  // byte-level string -> id
  std::unordered_map<std::string, std::int32_t>
      raw_vocab;                    // raw bytes -> id (ignore_merges lookups)
  std::vector<std::string> id_str;  // vocab string / added content by id
  std::vector<Kind> id_kind;
  std::array<std::int32_t, 256> byte_id{};
  std::unordered_map<std::uint64_t, std::pair<std::int32_t, std::int32_t>>
      merges;  // (a,b) -> (rank, ab)
  bool ignore_merges = false;
  std::int32_t unk = -1;
  AddedMatcher added_raw, added_norm;
  std::vector<std::int64_t> prefix, suffix;

  mutable std::mutex cache_mu;
  mutable std::unordered_map<std::string, std::vector<std::int32_t>> cache;

  [[noreturn]] void fail(const std::string& field, const std::string& msg) const {
    MQ_THROW(ConfigError, source, ": ", field, ": ", msg);
  }
  const json& need(const json& j, const std::string& key, const std::string& field) const {
    auto it = j.find(key);
    if (it == j.end()) fail(field, "missing field '" + key + "'");
    return *it;
  }
  std::string str(const json& j, const std::string& field) const {
    if (!j.is_string()) fail(field, "expected a string, got " + show(j));
    return j.get<std::string>();
  }
  bool flag(const json& obj, const std::string& key, const std::string& field, bool dflt) const {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return dflt;
    if (!it->is_boolean()) fail(field + "." + key, "expected true/false, got " + show(*it));
    return it->get<bool>();
  }

  void parse(const json& doc);
  void parse_model(const json& m);
  void parse_added(const json& a);
  void parse_normalizer(const json& n, const std::string& field);
  void parse_pre(const json& p, const std::string& field);
  void parse_post(const json& p, const std::string& field, bool& have_template);
  void parse_decoder(const json& d, const std::string& field);

  std::vector<Segment> split_added(std::string_view text, const AddedMatcher& m) const;
  std::vector<std::string> pre_tokenize_raw(std::string_view text) const;
  void bpe(const std::string& piece, std::vector<std::int64_t>& out) const;
  std::vector<std::int32_t> merge_word(const std::string& piece) const;
};

void Tokenizer::Impl::parse(const json& doc) {
  if (!doc.is_object()) fail("<root>", "expected a JSON object");
  parse_model(need(doc, "model", "<root>"));
  if (auto it = doc.find("normalizer"); it != doc.end()) parse_normalizer(*it, "normalizer");
  if (auto it = doc.find("added_tokens"); it != doc.end() && !it->is_null()) parse_added(*it);
  added_raw.build();
  added_norm.build();
  auto pre_it = doc.find("pre_tokenizer");
  if (pre_it == doc.end() || pre_it->is_null())
    fail("pre_tokenizer", "null: only byte-level BPE (a ByteLevel pre_tokenizer) is supported");
  parse_pre(*pre_it, "pre_tokenizer");
  if (std::none_of(pre.begin(), pre.end(), [](const PreStep& s) { return s.byte_level; }))
    fail("pre_tokenizer", "no ByteLevel step: only byte-level BPE is supported");
  if (auto it = doc.find("post_processor"); it != doc.end()) {
    bool have_template = false;
    parse_post(*it, "post_processor", have_template);
  }
  auto dec = doc.find("decoder");
  if (dec == doc.end() || dec->is_null()) fail("decoder", "null: a ByteLevel decoder is required");
  parse_decoder(*dec, "decoder");
}

void Tokenizer::Impl::parse_model(const json& m) {
  if (!m.is_object()) fail("model", "expected an object");
  if (auto t = m.find("type"); t != m.end() && str(*t, "model.type") != "BPE")
    fail("model.type", "'" + t->get<std::string>() + "' is not supported (byte-level BPE only)");
  if (auto d = m.find("dropout");
      d != m.end() && !d->is_null() && !(d->is_number() && d->get<double>() == 0.0))
    fail("model.dropout",
         show(*d) + ": BPE dropout is not supported (encoding must be deterministic)");
  if (flag(m, "byte_fallback", "model", false))
    fail("model.byte_fallback", "true is not supported");
  for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (auto it = m.find(k);
        it != m.end() && !it->is_null() && !(it->is_string() && it->get<std::string>().empty()))
      fail(std::string("model.") + k, show(*it) + " is not supported");
  ignore_merges = flag(m, "ignore_merges", "model", false);

  const json& v = need(m, "vocab", "model");
  if (!v.is_object()) fail("model.vocab", "expected an object {token: id}");
  std::int64_t max_id = -1;
  for (auto it = v.begin(); it != v.end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<std::int64_t>() < 0 ||
        it.value().get<std::int64_t>() > INT32_MAX)
      fail("model.vocab[\"" + it.key() + "\"]",
           "expected a non-negative integer id, got " + show(it.value()));
    max_id = std::max(max_id, it.value().get<std::int64_t>());
  }
  id_str.assign(static_cast<std::size_t>(max_id + 1), std::string());
  id_kind.assign(static_cast<std::size_t>(max_id + 1), Kind::kNone);
  const auto& ab = alphabet();
  for (auto it = v.begin(); it != v.end(); ++it) {
    auto id = static_cast<std::int32_t>(it.value().get<std::int64_t>());
    if (id_kind[id] != Kind::kNone)
      fail("model.vocab",
           "id " + std::to_string(id) + " is used by '" + id_str[id] + "' and '" + it.key() + "'");
    id_kind[id] = Kind::kModel;
    id_str[id] = it.key();
    vocab.emplace(it.key(), id);
    // Entries made only of alphabet characters also get a raw-byte key; BPE works on raw bytes.
    std::u32string cps;
    try {
      cps = unicode::decode_utf8(it.key());
    } catch (const Error&) {
      continue;
    }
    std::string raw;
    bool in_alphabet = !cps.empty();
    for (char32_t c : cps) {
      int b = ab.byte_of(c);
      if (b < 0) {
        in_alphabet = false;
        break;
      }
      raw.push_back(static_cast<char>(b));
    }
    if (in_alphabet) raw_vocab.emplace(std::move(raw), id);
  }
  byte_id.fill(-1);
  for (int b = 0; b < 256; ++b) {
    std::string s;
    unicode::append_utf8(s, ab.byte_to_char[b]);
    if (auto it = vocab.find(s); it != vocab.end()) byte_id[b] = it->second;
  }
  if (auto u = m.find("unk_token"); u != m.end() && !u->is_null()) {
    auto it = vocab.find(str(*u, "model.unk_token"));
    if (it == vocab.end())
      fail("model.unk_token", "'" + u->get<std::string>() + "' is not in model.vocab");
    unk = it->second;
  }

  const json& mg = need(m, "merges", "model");
  if (!mg.is_array()) fail("model.merges", "expected an array");
  merges.reserve(mg.size());
  for (std::size_t i = 0; i < mg.size(); ++i) {
    std::string field = "model.merges[" + std::to_string(i) + "]";
    std::string a, b;
    if (mg[i].is_string()) {
      std::string s = mg[i].get<std::string>();
      auto sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
        fail(field, "'" + s + "' is not of the form \"a b\"");
      a = s.substr(0, sp), b = s.substr(sp + 1);
    } else if (mg[i].is_array() && mg[i].size() == 2) {
      a = str(mg[i][0], field), b = str(mg[i][1], field);
    } else {
      fail(field, "expected \"a b\" or [\"a\", \"b\"], got " + show(mg[i]));
    }
    auto ia = vocab.find(a), ib = vocab.find(b), iab = vocab.find(a + b);
    if (ia == vocab.end()) fail(field, "token '" + a + "' is not in model.vocab");
    if (ib == vocab.end()) fail(field, "token '" + b + "' is not in model.vocab");
    if (iab == vocab.end()) fail(field, "merged token '" + a + b + "' is not in model.vocab");
    std::uint64_t key =
        (static_cast<std::uint64_t>(ia->second) << 32) | static_cast<std::uint32_t>(ib->second);
    merges[key] = {static_cast<std::int32_t>(i),
                   iab->second};  // a repeated pair keeps the last rank, as HF
  }
}

void Tokenizer::Impl::parse_added(const json& a) {
  if (!a.is_array()) fail("added_tokens", "expected an array");
  for (std::size_t i = 0; i < a.size(); ++i) {
    std::string field = "added_tokens[" + std::to_string(i) + "]";
    const json& t = a[i];
    if (!t.is_object()) fail(field, "expected an object");
    AddedToken tok;
    tok.content = str(need(t, "content", field), field + ".content");
    if (tok.content.empty()) fail(field + ".content", "empty");
    const json& idj = need(t, "id", field);
    if (!idj.is_number_integer() || idj.get<std::int64_t>() < 0 ||
        idj.get<std::int64_t>() > INT32_MAX)
      fail(field + ".id", "expected a non-negative integer, got " + show(idj));
    tok.id = static_cast<std::int32_t>(idj.get<std::int64_t>());
    tok.special = flag(t, "special", field, false);
    tok.lstrip = flag(t, "lstrip", field, false);
    tok.rstrip = flag(t, "rstrip", field, false);
    if (flag(t, "single_word", field, false)) fail(field + ".single_word", "true is not supported");
    bool normalized = flag(t, "normalized", field, !tok.special);
    if (static_cast<std::size_t>(tok.id) >= id_str.size()) {
      id_str.resize(tok.id + 1);
      id_kind.resize(tok.id + 1, Kind::kNone);
    }
    if (id_kind[tok.id] == Kind::kModel && id_str[tok.id] != tok.content &&
        vocab.count(tok.content) == 0)
      fail(field + ".id",
           std::to_string(tok.id) + " is already model.vocab's '" + id_str[tok.id] + "'");
    id_kind[tok.id] = tok.special ? Kind::kAddedSpecial : Kind::kAdded;
    id_str[tok.id] = tok.content;
    (normalized && nfc ? added_norm : added_raw).tokens.push_back(tok);
  }
}

void Tokenizer::Impl::parse_normalizer(const json& n, const std::string& field) {
  if (n.is_null()) return;
  if (!n.is_object()) fail(field, "expected an object or null");
  std::string type = str(need(n, "type", field), field + ".type");
  if (type == "NFC") {
    nfc = true;
  } else if (type == "Sequence") {
    const json& list = need(n, "normalizers", field);
    if (!list.is_array()) fail(field + ".normalizers", "expected an array");
    for (std::size_t i = 0; i < list.size(); ++i)
      parse_normalizer(list[i], field + ".normalizers[" + std::to_string(i) + "]");
  } else {
    fail(field + ".type", "'" + type + "' is not supported (null, NFC or a Sequence of NFC)");
  }
}

void Tokenizer::Impl::parse_pre(const json& p, const std::string& field) {
  if (!p.is_object()) fail(field, "expected an object");
  std::string type = str(need(p, "type", field), field + ".type");
  if (type == "Sequence") {
    const json& list = need(p, "pretokenizers", field);
    if (!list.is_array()) fail(field + ".pretokenizers", "expected an array");
    for (std::size_t i = 0; i < list.size(); ++i)
      parse_pre(list[i], field + ".pretokenizers[" + std::to_string(i) + "]");
  } else if (type == "ByteLevel") {
    PreStep s;
    s.byte_level = true;
    s.add_prefix_space = flag(p, "add_prefix_space", field, true);
    s.use_regex = flag(p, "use_regex", field, true);
    pre.push_back(s);
  } else if (type == "Split") {
    PreStep s;
    const json& pat = need(p, "pattern", field);
    if (!pat.is_object() || !pat.contains("Regex"))
      fail(field + ".pattern", show(pat) + ": only {\"Regex\": ...} patterns are supported");
    std::string re = str(pat["Regex"], field + ".pattern.Regex");
    bool known = false;
    for (auto sp : {SplitPattern::kGpt2, SplitPattern::kLlama3, SplitPattern::kQwen2}) {
      if (re == unicode::pattern_source(sp)) {
        s.pattern = sp;
        known = true;
      }
    }
    if (!known)
      fail(field + ".pattern.Regex",
           "unknown regex " + show(pat["Regex"]) +
               " (recognised: the GPT-2, Llama-3 and Qwen2 pre-tokenizer patterns, exact text)");
    std::string behavior = str(need(p, "behavior", field), field + ".behavior");
    if (behavior == "Removed") {
      s.removed = true;
    } else if (behavior != "Isolated") {
      fail(field + ".behavior", "'" + behavior + "' is not supported (Isolated, Removed)");
    }
    if (flag(p, "invert", field, false)) fail(field + ".invert", "true is not supported");
    pre.push_back(s);
  } else if (type == "Digits") {
    PreStep s;
    s.digits = true;
    s.individual_digits = flag(p, "individual_digits", field, false);
    pre.push_back(s);
  } else {
    fail(field + ".type", "'" + type + "' is not supported (ByteLevel, Split, Digits, Sequence)");
  }
}

void Tokenizer::Impl::parse_post(const json& p, const std::string& field, bool& have_template) {
  if (p.is_null()) return;
  if (!p.is_object()) fail(field, "expected an object or null");
  std::string type = str(need(p, "type", field), field + ".type");
  if (type == "ByteLevel") return;  // offsets only
  if (type == "Sequence") {
    const json& list = need(p, "processors", field);
    if (!list.is_array()) fail(field + ".processors", "expected an array");
    for (std::size_t i = 0; i < list.size(); ++i)
      parse_post(list[i], field + ".processors[" + std::to_string(i) + "]", have_template);
    return;
  }
  if (type != "TemplateProcessing")
    fail(field + ".type",
         "'" + type + "' is not supported (ByteLevel, TemplateProcessing, Sequence)");
  if (have_template) fail(field, "more than one TemplateProcessing");
  have_template = true;
  const json& single = need(p, "single", field);
  const json& specials = need(p, "special_tokens", field);
  if (!single.is_array()) fail(field + ".single", "expected an array");
  bool seen_a = false;
  for (std::size_t i = 0; i < single.size(); ++i) {
    std::string f = field + ".single[" + std::to_string(i) + "]";
    const json& item = single[i];
    if (item.contains("Sequence")) {
      std::string id = str(need(item["Sequence"], "id", f + ".Sequence"), f + ".Sequence.id");
      if (id != "A" || seen_a) fail(f, "expected exactly one {\"Sequence\": {\"id\": \"A\"}}");
      seen_a = true;
    } else if (item.contains("SpecialToken")) {
      std::string name =
          str(need(item["SpecialToken"], "id", f + ".SpecialToken"), f + ".SpecialToken.id");
      auto st = specials.find(name);
      if (st == specials.end()) fail(field + ".special_tokens", "no entry for '" + name + "'");
      const json& ids = need(*st, "ids", field + ".special_tokens." + name);
      if (!ids.is_array()) fail(field + ".special_tokens." + name + ".ids", "expected an array");
      for (const auto& id : ids) {
        if (!id.is_number_integer() || id.get<std::int64_t>() < 0)
          fail(field + ".special_tokens." + name + ".ids",
               "expected non-negative integers, got " + show(id));
        (seen_a ? suffix : prefix).push_back(id.get<std::int64_t>());
      }
    } else {
      fail(f, "expected {\"Sequence\": ...} or {\"SpecialToken\": ...}, got " + show(item));
    }
  }
  if (!seen_a) fail(field + ".single", "no {\"Sequence\": {\"id\": \"A\"}}");
}

void Tokenizer::Impl::parse_decoder(const json& d, const std::string& field) {
  if (!d.is_object()) fail(field, "expected an object");
  std::string type = str(need(d, "type", field), field + ".type");
  if (type == "ByteLevel") return;
  if (type == "Sequence") {
    const json& list = need(d, "decoders", field);
    if (!list.is_array() || list.size() != 1)
      fail(field + ".decoders", "expected exactly one ByteLevel decoder");
    parse_decoder(list[0], field + ".decoders[0]");
    return;
  }
  fail(field + ".type", "'" + type + "' is not supported (ByteLevel)");
}

std::vector<Segment> Tokenizer::Impl::split_added(std::string_view text,
                                                  const AddedMatcher& m) const {
  std::vector<Segment> segs;
  if (m.empty()) {
    if (!text.empty()) segs.push_back({0, text.size(), -1});
    return segs;
  }
  auto is_space_at = [&](std::size_t pos, std::size_t* len) {
    std::size_t k = 1;
    while (pos + k < text.size() && (static_cast<unsigned char>(text[pos + k]) & 0xC0) == 0x80) ++k;
    *len = k;
    try {
      auto cps = unicode::decode_utf8(text.substr(pos, k));
      return cps.size() == 1 && unicode::is_space(cps[0]);
    } catch (const Error&) {
      return false;
    }
  };
  std::size_t done = 0;  // end of the last emitted segment
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto& cands = m.by_first[static_cast<unsigned char>(text[i])];
    const AddedToken* best = nullptr;
    for (std::size_t c : cands) {
      const auto& t = m.tokens[c];
      if (text.compare(i, t.content.size(), t.content) == 0 &&
          (!best || t.content.size() > best->content.size()))
        best = &t;
    }
    if (!best) continue;
    std::size_t begin = i, end = i + best->content.size(), len = 0;
    if (best->lstrip) {
      while (begin > done) {
        std::size_t p = begin - 1;
        while (p > done && (static_cast<unsigned char>(text[p]) & 0xC0) == 0x80) --p;
        if (!is_space_at(p, &len)) break;
        begin = p;
      }
    }
    if (best->rstrip)
      while (end < text.size() && is_space_at(end, &len)) end += len;
    if (begin > done) segs.push_back({done, begin, -1});
    segs.push_back({begin, end, best->id});
    done = end;
    i = end - 1;
  }
  if (done < text.size()) segs.push_back({done, text.size(), -1});
  return segs;
}

std::vector<std::string> Tokenizer::Impl::pre_tokenize_raw(std::string_view text) const {
  std::vector<std::string> pieces;
  if (!text.empty()) pieces.emplace_back(text);
  std::vector<std::size_t> offs;
  for (const PreStep& s : pre) {
    std::vector<std::string> next;
    next.reserve(pieces.size() * 2);
    for (std::string& piece : pieces) {
      if (s.byte_level && s.add_prefix_space && piece[0] != ' ') piece.insert(piece.begin(), ' ');
      if (s.byte_level && !s.use_regex) {
        next.push_back(std::move(piece));
        continue;
      }
      std::u32string cps = unicode::decode_utf8(piece, &offs);
      if (s.digits) {
        for (std::size_t i = 0; i < cps.size();) {
          const bool num = unicode::is_number(cps[i]);
          std::size_t k = 1;
          if (!num || !s.individual_digits)
            while (i + k < cps.size() && unicode::is_number(cps[i + k]) == num) ++k;
          next.push_back(piece.substr(offs[i], offs[i + k] - offs[i]));
          i += k;
        }
        continue;
      }
      for (std::size_t i = 0; i < cps.size();) {
        std::size_t k = unicode::match_at(s.pattern, cps.data(), cps.size(), i);
        if (!s.removed) next.push_back(piece.substr(offs[i], offs[i + k] - offs[i]));
        i += k;
      }
    }
    pieces = std::move(next);
  }
  return pieces;
}

std::vector<std::int32_t> Tokenizer::Impl::merge_word(const std::string& piece) const {
  // Symbols form a linked list over the bytes; the heap holds candidate pairs ordered by (rank,
  // left position), and stale entries are skipped when popped. Ties in rank merge leftmost first,
  // as HF does.
  std::vector<std::int32_t> id;
  id.reserve(piece.size());
  for (unsigned char b : piece) {
    std::int32_t t = byte_id[b] >= 0 ? byte_id[b] : unk;
    if (t >= 0)
      id.push_back(t);  // HF drops a character with no vocab entry when there is no unk_token
  }
  const std::size_t n = id.size();
  if (n < 2) return id;
  std::vector<std::int32_t> prev(n), next(n);
  for (std::size_t i = 0; i < n; ++i) {
    prev[i] = static_cast<std::int32_t>(i) - 1;
    next[i] = i + 1 < n ? static_cast<std::int32_t>(i + 1) : -1;
  }
  struct Cand {
    std::int32_t rank, pos, left, right;
    bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap;
  auto push = [&](std::int32_t pos) {
    if (pos < 0) return;
    std::int32_t r = next[pos];
    if (r < 0) return;
    auto it = merges.find((static_cast<std::uint64_t>(id[pos]) << 32) |
                          static_cast<std::uint32_t>(id[r]));
    if (it != merges.end()) heap.push({it->second.first, pos, id[pos], id[r]});
  };
  for (std::size_t i = 0; i + 1 < n; ++i) push(static_cast<std::int32_t>(i));
  std::vector<bool> dead(n, false);
  while (!heap.empty()) {
    Cand c = heap.top();
    heap.pop();
    std::int32_t r = next[c.pos];
    if (dead[c.pos] || r < 0 || id[c.pos] != c.left || id[r] != c.right) continue;
    id[c.pos] =
        merges.at((static_cast<std::uint64_t>(c.left) << 32) | static_cast<std::uint32_t>(c.right))
            .second;
    dead[r] = true;
    next[c.pos] = next[r];
    if (next[r] >= 0) prev[next[r]] = c.pos;
    push(prev[c.pos]);
    push(c.pos);
  }
  std::vector<std::int32_t> out;
  for (std::int32_t i = 0; i >= 0; i = next[i]) out.push_back(id[i]);
  return out;
}

void Tokenizer::Impl::bpe(const std::string& piece, std::vector<std::int64_t>& out) const {
  if (ignore_merges) {
    if (auto it = raw_vocab.find(piece); it != raw_vocab.end()) {
      out.push_back(it->second);
      return;
    }
  }
  {
    std::lock_guard<std::mutex> lock(cache_mu);
    if (auto it = cache.find(piece); it != cache.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<std::int32_t> ids = merge_word(piece);
  out.insert(out.end(), ids.begin(), ids.end());
  std::lock_guard<std::mutex> lock(cache_mu);
  if (cache.size() >= (1u << 18)) cache.clear();  // bounded memory on long, varied corpora
  cache.emplace(piece, std::move(ids));
}

// ---- public API
// ----------------------------------------------------------------------------------

Tokenizer Tokenizer::from_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  MQ_CHECK_T(IoError, f.good(), path, ": cannot open tokenizer file");
  std::stringstream ss;
  ss << f.rdbuf();
  return from_json(ss.str(), path);
}

Tokenizer Tokenizer::from_json(const std::string& json_text, const std::string& source) {
  json doc;
  try {
    doc = json::parse(json_text);
  } catch (const json::parse_error& e) {
    MQ_THROW(IoError, source, ": not valid JSON: ", e.what());
  }
  auto impl = std::make_shared<Impl>();
  impl->source = source;
  impl->parse(doc);
  return Tokenizer(std::move(impl));
}

std::vector<std::int64_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  const Impl& m = *impl_;
  unicode::decode_utf8(text);  // rejects malformed UTF-8 before anything is split
  std::vector<std::int64_t> out;
  out.reserve(text.size() / 3 + 4);
  if (add_special_tokens) out.insert(out.end(), m.prefix.begin(), m.prefix.end());
  for (const Segment& s : m.split_added(text, m.added_raw)) {
    if (s.id >= 0) {
      out.push_back(s.id);
      continue;
    }
    std::string norm = m.nfc ? unicode::nfc(text.substr(s.begin, s.end - s.begin))
                             : std::string(text.substr(s.begin, s.end - s.begin));
    for (const Segment& t : m.split_added(norm, m.added_norm)) {
      if (t.id >= 0) {
        out.push_back(t.id);
        continue;
      }
      for (const std::string& piece :
           m.pre_tokenize_raw(std::string_view(norm).substr(t.begin, t.end - t.begin)))
        m.bpe(piece, out);
    }
  }
  if (add_special_tokens) out.insert(out.end(), m.suffix.begin(), m.suffix.end());
  return out;
}

std::string Tokenizer::decode(const std::vector<std::int64_t>& ids,
                              bool skip_special_tokens) const {
  const Impl& m = *impl_;
  std::string bytes;
  for (std::int64_t id : ids) {
    MQ_CHECK(
        id >= 0 && id < static_cast<std::int64_t>(m.id_kind.size()) && m.id_kind[id] != Kind::kNone,
        m.source, ": decode: id ", id, " is not in the vocabulary (size ", m.id_kind.size(), ")");
    Kind k = m.id_kind[id];
    if (k == Kind::kAddedSpecial && skip_special_tokens) continue;
    // HF runs added tokens through the ByteLevel decoder too, so non-ASCII content such as "é" (an
    // alphabet character) decodes as the byte it stands for; kept for identical output.
    for (char32_t c : unicode::decode_utf8(m.id_str[id])) {
      int b = alphabet().byte_of(c);
      if (b >= 0) {
        bytes.push_back(static_cast<char>(b));
      } else {
        unicode::append_utf8(bytes, c);
      }
    }
  }
  return unicode::utf8_lossy(bytes);
}

std::string Tokenizer::normalize(std::string_view text) const {
  return impl_->nfc ? unicode::nfc(text) : std::string(text);
}

std::vector<std::string> Tokenizer::pre_tokenize(std::string_view text) const {
  std::vector<std::string> out;
  for (const std::string& p : impl_->pre_tokenize_raw(text)) out.push_back(to_byte_level(p));
  return out;
}

std::int64_t Tokenizer::vocab_size() const {
  return static_cast<std::int64_t>(impl_->id_kind.size());
}

std::optional<std::int64_t> Tokenizer::token_to_id(std::string_view token) const {
  for (const auto* m : {&impl_->added_raw, &impl_->added_norm})
    for (const auto& t : m->tokens)
      if (t.content == token) return t.id;
  if (auto it = impl_->vocab.find(std::string(token)); it != impl_->vocab.end()) return it->second;
  return std::nullopt;
}

std::string Tokenizer::id_to_token(std::int64_t id) const {
  MQ_CHECK(id >= 0 && id < vocab_size() && impl_->id_kind[id] != Kind::kNone, impl_->source,
           ": id ", id, " is not in the vocabulary");
  return impl_->id_str[id];
}

const std::vector<std::int64_t>& Tokenizer::prefix_ids() const { return impl_->prefix; }
const std::vector<std::int64_t>& Tokenizer::suffix_ids() const { return impl_->suffix; }
const std::string& Tokenizer::source() const { return impl_->source; }

}  // namespace mq::data
