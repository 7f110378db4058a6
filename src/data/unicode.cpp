#include <algorithm>
#include <array>
#include <iterator>

#include "data/unicode_impl.hpp"
#include "data/unicode_tables_impl.hpp"
#include "mq/core/error.hpp"

namespace mq::data::unicode {
namespace {

template <typename R, std::size_t N>
bool in_ranges(const R (&table)[N], char32_t c) {
  auto it = std::upper_bound(std::begin(table), std::end(table), static_cast<std::uint32_t>(c),
                             [](std::uint32_t v, const R& r) { return v < r.lo; });
  return it != std::begin(table) && static_cast<std::uint32_t>(c) <= std::prev(it)->hi;
}

enum Cls : std::uint8_t { kLetter = 1, kNumber = 2, kSpace = 4 };

// ASCII answers without a table search: tokenizer input is mostly ASCII.
constexpr std::array<std::uint8_t, 128> make_ascii() {
  std::array<std::uint8_t, 128> a{};
  for (int c = 0; c < 128; ++c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) a[c] = kLetter;
    if (c >= '0' && c <= '9') a[c] = kNumber;
    if ((c >= 0x09 && c <= 0x0D) || c == ' ') a[c] = kSpace;
  }
  return a;
}
constexpr auto kAscii = make_ascii();

}  // namespace

bool is_letter(char32_t c) {
  return c < 128 ? (kAscii[c] & kLetter) != 0 : in_ranges(kLetterRanges, c);
}
bool is_number(char32_t c) {
  return c < 128 ? (kAscii[c] & kNumber) != 0 : in_ranges(kNumberRanges, c);
}
bool is_space(char32_t c) {
  return c < 128 ? (kAscii[c] & kSpace) != 0 : in_ranges(kSpaceRanges, c);
}

std::u32string decode_utf8(std::string_view s, std::vector<std::size_t>* offsets) {
  std::u32string out;
  out.reserve(s.size());
  if (offsets) {
    offsets->clear();
    offsets->reserve(s.size() + 1);
  }
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  std::size_t i = 0, n = s.size();
  while (i < n) {
    if (offsets) offsets->push_back(i);
    unsigned b = p[i];
    if (b < 0x80) {
      out.push_back(b);
      ++i;
      continue;
    }
    int len;
    char32_t cp;
    unsigned lo = 0x80, hi = 0xBF;  // range of the second byte
    if (b >= 0xC2 && b <= 0xDF) {
      len = 2, cp = b & 0x1F;
    } else if (b >= 0xE0 && b <= 0xEF) {
      len = 3, cp = b & 0x0F;
      if (b == 0xE0) lo = 0xA0;
      if (b == 0xED) hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
      len = 4, cp = b & 0x07;
      if (b == 0xF0) lo = 0x90;
      if (b == 0xF4) hi = 0x8F;
    } else {
      MQ_THROW(Error, "invalid UTF-8 at byte ", i);
    }
    MQ_CHECK(i + len <= n, "invalid UTF-8 at byte ", i, " (truncated sequence)");
    for (int k = 1; k < len; ++k) {
      unsigned c = p[i + k];
      unsigned l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
      MQ_CHECK(c >= l && c <= h, "invalid UTF-8 at byte ", i);
      cp = (cp << 6) | (c & 0x3F);
    }
    out.push_back(cp);
    i += len;
  }
  if (offsets) offsets->push_back(n);
  return out;
}

void append_utf8(std::string& out, char32_t c) {
  if (c < 0x80) {
    out.push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (c >> 6)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (c >> 12)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (c >> 18)));
    out.push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
}

std::string utf8_lossy(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  std::size_t i = 0, n = s.size();
  while (i < n) {
    unsigned b = p[i];
    int len = 0;
    unsigned lo = 0x80, hi = 0xBF;
    if (b < 0x80) {
      len = 1;
    } else if (b >= 0xC2 && b <= 0xDF) {
      len = 2;
    } else if (b >= 0xE0 && b <= 0xEF) {
      len = 3;
      if (b == 0xE0) lo = 0xA0;
      if (b == 0xED) hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
      len = 4;
      if (b == 0xF0) lo = 0x90;
      if (b == 0xF4) hi = 0x8F;
    }
    // Consume the longest valid prefix of the sequence; an incomplete one is replaced as a whole.
    std::size_t k = 1;
    bool ok = len > 0;
    for (; ok && k < static_cast<std::size_t>(len); ++k) {
      if (i + k >= n) {
        ok = false;
        break;
      }
      unsigned c = p[i + k];
      unsigned l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
      if (c < l || c > h) {
        ok = false;
        break;
      }
    }
    if (ok) {
      out.append(s.substr(i, len));
      i += len;
    } else {
      out.append("\xEF\xBF\xBD");
      i += k;
    }
  }
  return out;
}

// ---- NFC
// -------------------------------------------------------------------------------------------

namespace {

constexpr char32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr char32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount,
                   kSCount = kLCount * kNCount;

std::uint8_t ccc(char32_t c) {
  if (c < 0x300) return 0;
  auto it =
      std::upper_bound(std::begin(kCccRanges), std::end(kCccRanges), static_cast<std::uint32_t>(c),
                       [](std::uint32_t v, const CccRange& r) { return v < r.lo; });
  if (it == std::begin(kCccRanges)) return 0;
  --it;
  return static_cast<std::uint32_t>(c) <= it->hi ? it->ccc : 0;
}

void decompose(char32_t c, std::u32string& out) {
  if (c >= kSBase && c < kSBase + kSCount) {
    char32_t s = c - kSBase;
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount) out.push_back(kTBase + s % kTCount);
    return;
  }
  if (c >= 0xC0) {
    auto it =
        std::lower_bound(std::begin(kDecomp), std::end(kDecomp), static_cast<std::uint32_t>(c),
                         [](const Decomp& d, std::uint32_t v) { return d.cp < v; });
    if (it != std::end(kDecomp) && it->cp == c) {
      decompose(it->first, out);
      if (it->second) decompose(it->second, out);
      return;
    }
  }
  out.push_back(c);
}

char32_t compose(char32_t a, char32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount)
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase &&
      b < kTBase + kTCount)
    return a + (b - kTBase);
  auto key = [](const Compose& x) {
    return (static_cast<std::uint64_t>(x.first) << 32) | x.second;
  };
  std::uint64_t k = (static_cast<std::uint64_t>(a) << 32) | b;
  auto it = std::lower_bound(std::begin(kCompose), std::end(kCompose), k,
                             [&](const Compose& x, std::uint64_t v) { return key(x) < v; });
  return it != std::end(kCompose) && key(*it) == k ? it->composite : 0;
}

}  // namespace

std::string nfc(std::string_view text) {
  if (std::all_of(text.begin(), text.end(),
                  [](char ch) { return static_cast<unsigned char>(ch) < 0x80; }))
    return std::string(text);
  std::u32string cps = decode_utf8(text);
  std::u32string d;
  d.reserve(cps.size() + 8);
  for (char32_t c : cps) decompose(c, d);
  // Canonical ordering: stable sort of each run of non-starters by combining class.
  for (std::size_t i = 0; i < d.size();) {
    if (ccc(d[i]) == 0) {
      ++i;
      continue;
    }
    std::size_t j = i;
    while (j < d.size() && ccc(d[j]) != 0) ++j;
    std::stable_sort(d.begin() + i, d.begin() + j,
                     [](char32_t a, char32_t b) { return ccc(a) < ccc(b); });
    i = j;
  }
  std::u32string out;
  out.reserve(d.size());
  std::ptrdiff_t starter = -1;
  int last_cc = 0;
  for (char32_t c : d) {
    int cc = ccc(c);
    if (starter >= 0) {
      bool adjacent = static_cast<std::ptrdiff_t>(out.size()) - 1 == starter;
      if (adjacent || last_cc < cc) {
        if (char32_t comp = compose(out[starter], c)) {
          out[starter] = comp;
          continue;
        }
      }
    }
    if (cc == 0) {
      starter = static_cast<std::ptrdiff_t>(out.size());
      last_cc = 0;
    } else {
      last_cc = cc;
    }
    out.push_back(c);
  }
  std::string s;
  s.reserve(text.size());
  for (char32_t c : out) append_utf8(s, c);
  return s;
}

// ---- pre-tokenizer scanners
// ----------------------------------------------------------------------

std::string_view pattern_source(SplitPattern p) {
  switch (p) {
    case SplitPattern::kGpt2:
      return R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
    case SplitPattern::kLlama3:
      return R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
    case SplitPattern::kQwen2:
      return R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  }
  return {};
}

namespace {

bool is_other(char32_t c) { return !is_letter(c) && !is_number(c) && !is_space(c); }
bool is_newline(char32_t c) { return c == '\r' || c == '\n'; }

// 's 't 're 've 'm 'll 'd; returns the match length or 0. Case-insensitive matching follows Unicode
// simple case folding as Oniguruma does: only U+017F (long s) folds onto one of these letters.
std::size_t contraction(const char32_t* c, std::size_t n, std::size_t i, bool icase) {
  if (c[i] != '\'' || i + 1 >= n) return 0;
  auto eq = [&](char32_t x, char ch) {
    if (x == static_cast<char32_t>(ch)) return true;
    if (!icase) return false;
    if (x < 128) return x == static_cast<char32_t>(ch - 'a' + 'A');
    return ch == 's' && x == 0x17F;
  };
  char32_t d = c[i + 1];
  if (eq(d, 's') || eq(d, 't') || eq(d, 'm') || eq(d, 'd')) return 2;
  if (i + 2 < n) {
    char32_t e = c[i + 2];
    if ((eq(d, 'r') && eq(e, 'e')) || (eq(d, 'v') && eq(e, 'e')) || (eq(d, 'l') && eq(e, 'l')))
      return 3;
  }
  return 0;
}

template <typename Pred>
std::size_t run(const char32_t* c, std::size_t n, std::size_t j, Pred pred) {
  while (j < n && pred(c[j])) ++j;
  return j;
}

// \s+(?!\S)|\s+ at a whitespace position: the run, less its last character when a non-space follows
// and the run is longer than one (that character then starts the next match, e.g. " word").
std::size_t space_run(const char32_t* c, std::size_t n, std::size_t i) {
  std::size_t j = run(c, n, i, is_space);
  if (j == n || j - i == 1) return j - i;
  return j - i - 1;
}

std::size_t match_gpt2(const char32_t* c, std::size_t n, std::size_t i) {
  if (std::size_t k = contraction(c, n, i, false)) return k;
  std::size_t j = (c[i] == ' ' && i + 1 < n) ? i + 1 : i;
  // ` ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+`: ' ' itself is none of the three classes.
  for (auto pred : {is_letter, is_number, is_other})
    if (pred(c[j])) return run(c, n, j, pred) - i;
  return space_run(c, n, i);
}

std::size_t match_llama3(const char32_t* c, std::size_t n, std::size_t i, std::size_t max_digits) {
  if (std::size_t k = contraction(c, n, i, true)) return k;
  // [^\r\n\p{L}\p{N}]?\p{L}+
  if (is_letter(c[i])) return run(c, n, i, is_letter) - i;
  if (!is_newline(c[i]) && !is_number(c[i]) && i + 1 < n && is_letter(c[i + 1]))
    return run(c, n, i + 1, is_letter) - i;
  // \p{N}{1,max}
  if (is_number(c[i])) {
    std::size_t j = i;
    while (j < n && j - i < max_digits && is_number(c[j])) ++j;
    return j - i;
  }
  //  ?[^\s\p{L}\p{N}]+[\r\n]*
  std::size_t j = (c[i] == ' ' && i + 1 < n && is_other(c[i + 1])) ? i + 1 : i;
  if (is_other(c[j])) return run(c, n, run(c, n, j, is_other), is_newline) - i;
  // \s*[\r\n]+: the whitespace run up to and including its last newline.
  std::size_t end = run(c, n, i, is_space);
  for (std::size_t p = end; p > i; --p)
    if (is_newline(c[p - 1])) return p - i;
  return space_run(c, n, i);
}

}  // namespace

std::size_t match_at(SplitPattern p, const char32_t* c, std::size_t n, std::size_t i) {
  MQ_ASSERT(i < n);
  switch (p) {
    case SplitPattern::kGpt2:
      return match_gpt2(c, n, i);
    case SplitPattern::kLlama3:
      return match_llama3(c, n, i, 3);
    case SplitPattern::kQwen2:
      return match_llama3(c, n, i, 1);
  }
  MQ_ASSERT(false);
  return 1;
}

}  // namespace mq::data::unicode
