#pragma once
/// Byte-level BPE tokenizer read from a Hugging Face tokenizer.json (Llama-3, Qwen2/2.5/3, SmolLM2,
/// GPT-2 style checkpoints), giving the same ids as HF `tokenizers` (tested against tokenizers
/// 0.22.2).
///
/// Supported tokenizer.json contents (anything else is a mq::ConfigError naming the file and the
/// field):
///   model         type "BPE"; vocab; merges as "a b" strings or ["a", "b"] pairs; ignore_merges (a
///   word
///                 that is itself in the vocab is emitted whole, as Llama-3 sets it); unk_token;
///                 dropout null/0, byte_fallback false, no
///                 continuing_subword_prefix/end_of_word_suffix.
///   added_tokens  matched in the text before BPE, leftmost-longest; "normalized": false ones on
///   the raw
///                 text, "normalized": true ones on the normalized text; lstrip/rstrip honoured;
///                 single_word unsupported.
///   normalizer    null, NFC, or a Sequence of NFC (full Unicode NFC with the Unicode 14.0 tables).
///   pre_tokenizer ByteLevel(add_prefix_space, use_regex), Split(Regex, behavior Isolated or
///   Removed,
///                 invert false), or a Sequence of these. Regexes recognised (exact text): the
///                 GPT-2 pattern, the Llama-3 pattern, the Qwen2 pattern; they run as hand-written
///                 scanners over code points with Unicode 14.0 category tables (\p{L}, \p{N},
///                 Oniguruma's \s).
///   post_processor null, ByteLevel (ids unchanged), TemplateProcessing (the "single" template,
///   e.g.
///                 Llama-3's "<|begin_of_text|> $A"), or a Sequence of these.
///   decoder       ByteLevel (or a Sequence holding only ByteLevel); invalid UTF-8 in the decoded
///   bytes
///                 becomes U+FFFD as in HF. As in HF, added-token content also goes through the
///                 byte-level map: ASCII content (all real special tokens) decodes verbatim, but
///                 e.g. an added "café" decodes as "caf�" (é is the alphabet character of byte
///                 0xE9).
/// Characters assigned after Unicode 14.0 classify as "other" here but as letters/numbers in HF.
///
/// Thread safety: encode/decode are const and may be called concurrently (the word cache is
/// locked). Copies share the loaded tables.
///
/// Example:
///   auto tok = mq::data::Tokenizer::from_file("ckpt/tokenizer.json");
///   std::vector<int64_t> ids = tok.encode("Hello world", /*add_special_tokens=*/true);  // bos
///   first std::string text = tok.decode(ids, /*skip_special_tokens=*/true);                     //
///   "Hello world"
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mq::data {

class Tokenizer {
 public:
  /// Reads and validates `path`; throws mq::IoError (unreadable / not JSON) or mq::ConfigError.
  static Tokenizer from_file(const std::string& path);
  /// The same from the file's text; `source` names it in error messages.
  static Tokenizer from_json(const std::string& json_text,
                             const std::string& source = "tokenizer.json");

  /// Token ids of UTF-8 `text` (throws mq::Error on invalid UTF-8). `add_special_tokens` applies
  /// the post_processor template (e.g. prepends Llama-3's bos); added tokens inside the text are
  /// always matched.
  std::vector<std::int64_t> encode(std::string_view text, bool add_special_tokens = true) const;
  /// Text of `ids`; added tokens flagged "special" are dropped when `skip_special_tokens`.
  /// Throws mq::Error for an id outside [0, vocab_size()).
  std::string decode(const std::vector<std::int64_t>& ids, bool skip_special_tokens = false) const;

  /// The normalizer's output (NFC or identity).
  std::string normalize(std::string_view text) const;
  /// The pre-tokenizer's pieces of already-normalized text, in the byte-level alphabet (Ġ for ' '),
  /// as HF's `pre_tokenizer.pre_tokenize_str` returns them. Added tokens are not split out here.
  std::vector<std::string> pre_tokenize(std::string_view text) const;

  /// One more than the largest id (model vocab and added tokens).
  std::int64_t vocab_size() const;
  /// The id of a vocab entry or added token (vocab strings in the byte-level alphabet).
  std::optional<std::int64_t> token_to_id(std::string_view token) const;
  /// The vocab string or added-token content of `id`; throws mq::Error when out of range.
  std::string id_to_token(std::int64_t id) const;
  /// The ids the post_processor puts before / after the text (empty when there is no template).
  const std::vector<std::int64_t>& prefix_ids() const;
  const std::vector<std::int64_t>& suffix_ids() const;
  /// The file (or `source`) this tokenizer was loaded from.
  const std::string& source() const;

  struct Impl;

 private:
  explicit Tokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const Impl> impl_;
};

}  // namespace mq::data
