#pragma once
// Private Unicode helpers of the tokenizer: UTF-8 coding, the character classes the pre-tokenizer
// regexes use (\p{L}, \p{N}, Oniguruma's Unicode \s), NFC, and the hand-written scanners that
// replace the three Split regexes byte-level BPE tokenizers use in practice. Tables:
// unicode_tables_impl.hpp (Unicode 14.0).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace mq::data::unicode {

bool is_letter(char32_t c);  // General_Category L*
bool is_number(char32_t c);  // General_Category N*
bool is_space(char32_t c);   // U+0009..U+000D, U+0085, Zs, Zl, Zp (Oniguruma's Unicode \s)

/// Decodes UTF-8; throws mq::Error "invalid UTF-8 at byte N" on malformed input. `offsets`, when
/// given, receives the byte offset of every code point plus a final entry text.size().
std::u32string decode_utf8(std::string_view text, std::vector<std::size_t>* offsets = nullptr);
void append_utf8(std::string& out, char32_t c);
/// Rust's String::from_utf8_lossy: each maximal invalid subsequence becomes one U+FFFD.
std::string utf8_lossy(std::string_view bytes);

/// Unicode Normalization Form C.
std::string nfc(std::string_view text);

/// The Split regexes of tokenizer.json files this library recognises.
enum class SplitPattern {
  kGpt2,    // 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  kLlama3,  // (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
            // ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
  kQwen2,   // as kLlama3 with \p{N} (one digit per match)
};
/// The regex source text of each pattern, exactly as tokenizer.json stores it.
std::string_view pattern_source(SplitPattern p);

/// Length in code points of the regex match that starts at `i` of c[0..n) (leftmost-first
/// alternation, as Oniguruma matches it). All three patterns match at every position, so the result
/// is >= 1.
std::size_t match_at(SplitPattern p, const char32_t* c, std::size_t n, std::size_t i);

}  // namespace mq::data::unicode
