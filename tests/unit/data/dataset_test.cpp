// Calibration samples (selection, windows, padding, errors) and the perplexity helper (closed
// forms).
#include "mq/data/dataset.hpp"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include "mq/core/error.hpp"
#include "mq/io/safetensors_torch.hpp"

namespace {

using namespace mq::data;
using Ids = std::vector<std::int64_t>;

const std::string kDir = std::string(MQ_SOURCE_DIR) + "/tests/unit/data/golden/";

std::string tmp_file(const std::string& name, const std::string& content) {
  auto dir =
      std::filesystem::temp_directory_path() / ("mq_data_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::string path = (dir / name).string();
  std::ofstream(path, std::ios::binary) << content;
  return path;
}

std::string expect_io_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const mq::IoError& e) {
    return e.what();
  }
  ADD_FAILURE() << "no IoError";
  return "";
}

// The documented algorithm, written out independently: partial Fisher-Yates with rejection
// sampling.
TEST(Dataset, SelectionIsTheDocumentedFisherYates) {
  for (auto [n, k, seed] :
       {std::tuple<int, int, std::uint64_t>{10, 10, 0}, {1000, 7, 1234}, {33, 1, 99}, {5, 3, 7}}) {
    Ids got = select_indices(n, k, seed);
    std::mt19937_64 rng(seed);
    Ids idx(n);
    std::iota(idx.begin(), idx.end(), 0);
    for (int i = 0; i < k; ++i) {
      unsigned __int128 two64 = static_cast<unsigned __int128>(1) << 64;
      std::uint64_t m = n - i, x;
      auto bound = two64 - two64 % m;
      do x = rng();
      while (static_cast<unsigned __int128>(x) >= bound);
      std::swap(idx[i], idx[i + x % m]);
    }
    idx.resize(k);
    EXPECT_EQ(got, idx);
    Ids sorted = got;
    std::sort(sorted.begin(), sorted.end());
    EXPECT_EQ(std::unique(sorted.begin(), sorted.end()), sorted.end());  // no repeats
  }
  // Pinned values: std::mt19937_64 is specified by the standard, so these hold on every platform.
  EXPECT_EQ(select_indices(10, 4, 0), select_indices(10, 4, 0));
  EXPECT_NE(select_indices(1000, 8, 1), select_indices(1000, 8, 2));
  EXPECT_EQ(select_indices(4, 0, 5), (Ids{0, 1, 2, 3}));
  EXPECT_THROW(select_indices(3, 4, 0), mq::Error);
}

TEST(Dataset, TxtWindowsStartWithTheTemplatePrefix) {
  Tokenizer tok = Tokenizer::from_file(kDir + "tok_llama3.json");
  std::string text;
  for (int i = 0; i < 40; ++i)
    text += "Line " + std::to_string(i) + " of the calibration text, with words.\n";
  DatasetOptions o;
  o.path = tmp_file("calib.txt", text);
  o.seq_len = 17;
  o.num_samples = 0;
  Ids all = tok.encode(text, false);
  auto samples = load_samples(o, &tok);
  const std::int64_t body = 16;
  ASSERT_EQ(static_cast<std::int64_t>(samples.size()),
            static_cast<std::int64_t>(all.size()) / body);
  for (std::size_t w = 0; w < samples.size(); ++w) {
    ASSERT_EQ(samples[w].size(), 17u);
    EXPECT_EQ(samples[w][0], 1503);  // <|begin_of_text|>
    EXPECT_TRUE(std::equal(samples[w].begin() + 1, samples[w].end(), all.begin() + w * body));
  }
  // Seeded selection picks windows by select_indices, in drawn order.
  o.num_samples = 5;
  o.seed = 42;
  auto picked = load_samples(o, &tok);
  Ids which = select_indices(static_cast<std::int64_t>(samples.size()), 5, 42);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(picked[i], samples[which[i]]);
  o.num_samples = static_cast<std::int64_t>(samples.size()) + 1;
  EXPECT_NE(expect_io_error([&] { load_samples(o, &tok); }).find("full windows"),
            std::string::npos);
}

TEST(Dataset, JsonlTextTokenizedPaddedAndMasked) {
  Tokenizer tok = Tokenizer::from_file(kDir + "tok_qwen2.json");
  std::vector<std::string> docs = {"short",
                                   "a somewhat longer document about licenses and software",
                                   "third doc", "x", "the fifth one is here"};
  std::string content;
  for (const auto& d : docs) content += "{\"text\": \"" + d + "\", \"meta\": 1}\n\n";
  content += "{\"text\": \"\"}\n";  // empty text: skipped
  DatasetOptions o;
  o.path = tmp_file("calib.jsonl", content);
  o.num_samples = 4;
  o.seq_len = 6;
  o.batch_size = 3;
  o.seed = 7;
  o.pad_id = 1499;
  auto batches = load_calibration_batches(o, &tok);
  ASSERT_EQ(batches.size(), 2u);
  EXPECT_EQ(batches[0].input_ids.size(0), 3);
  EXPECT_EQ(batches[1].input_ids.size(0), 1);
  Ids which = select_indices(5, 4, 7);
  for (int s = 0; s < 4; ++s) {
    const Batch& b = batches[s / 3];
    int r = s % 3;
    Ids want = tok.encode(docs[which[s]], true);
    if (want.size() > 6) want.resize(6);
    for (std::int64_t c = 0; c < b.input_ids.size(1); ++c) {
      bool real = c < static_cast<std::int64_t>(want.size());
      EXPECT_EQ(b.input_ids[r][c].item<std::int64_t>(), real ? want[c] : 1499);
      EXPECT_EQ(b.attention_mask[r][c].item<std::int64_t>(), real ? 1 : 0);
    }
  }
  EXPECT_EQ(batches[0].input_ids.scalar_type(), at::kLong);
  EXPECT_EQ(batches[0].attention_mask.scalar_type(), at::kLong);
}

TEST(Dataset, PreTokenizedJsonlAndSafetensors) {
  DatasetOptions o;
  o.path =
      tmp_file("ids.jsonl",
               "{\"input_ids\": [1, 2, 3, 4, 5]}\n{\"input_ids\": [6, 7]}\n{\"input_ids\": [8]}\n");
  o.num_samples = 0;
  o.seq_len = 4;
  o.batch_size = 2;
  auto s = load_samples(o, nullptr);
  EXPECT_EQ(s, (std::vector<Ids>{{1, 2, 3, 4}, {6, 7}, {8}}));
  auto b = make_batches(s, 2, 0);
  ASSERT_EQ(b.size(), 2u);
  EXPECT_TRUE(
      at::equal(b[0].input_ids, at::tensor({1, 2, 3, 4, 6, 7, 0, 0}, at::kLong).view({2, 4})));
  EXPECT_TRUE(
      at::equal(b[0].attention_mask, at::tensor({1, 1, 1, 1, 1, 1, 0, 0}, at::kLong).view({2, 4})));
  EXPECT_TRUE(at::equal(b[1].input_ids, at::tensor({8}, at::kLong).view({1, 1})));

  std::string st = tmp_file("ids.safetensors", "");
  mq::io::save_safetensors(st, {{"input_ids", at::arange(12, at::kInt).view({3, 4})}});
  o.path = st;
  o.seq_len = 3;
  o.num_samples = 2;
  o.seed = 3;
  auto rows = load_samples(o, nullptr);
  Ids which = select_indices(3, 2, 3);
  for (int i = 0; i < 2; ++i)
    EXPECT_EQ(rows[i], (Ids{which[i] * 4, which[i] * 4 + 1, which[i] * 4 + 2}));
  EXPECT_EQ(load_eval_tokens(st, nullptr), (Ids{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}));
}

TEST(Dataset, ErrorsNameFileAndLine) {
  Tokenizer tok = Tokenizer::from_file(kDir + "tok_gpt2.json");
  DatasetOptions o;
  o.num_samples = 1;
  o.path = tmp_file("bad.jsonl", "{\"text\": \"ok\"}\n{\"text\": 5}\n");
  EXPECT_NE(
      expect_io_error([&] { load_samples(o, &tok); }).find("bad.jsonl:2: no string field 'text'"),
      std::string::npos);
  o.path = tmp_file("bad2.jsonl", "{\"text\": \"ok\"}\n\n{\"text\": \"unterminated}\n");
  EXPECT_NE(expect_io_error([&] { load_samples(o, &tok); }).find("bad2.jsonl:3: invalid JSON"),
            std::string::npos);
  o.path = tmp_file("bad3.jsonl", "{\"input_ids\": [1, \"2\"]}\n");
  EXPECT_NE(expect_io_error([&] {
              load_samples(o, &tok);
            }).find("bad3.jsonl:1: input_ids[1] is not an integer"),
            std::string::npos);
  o.path = tmp_file("bad4.jsonl", "{\"input_ids\": [1, 2000]}\n");
  o.vocab_size = 1503;
  EXPECT_NE(
      expect_io_error([&] { load_samples(o, &tok); }).find("bad4.jsonl:1: input_ids[1] = 2000"),
      std::string::npos);
  o.path =
      tmp_file("bad5.jsonl", "{\"text\": \"ok \xff\"}\n");  // the JSON parser rejects invalid UTF-8
  EXPECT_NE(expect_io_error([&] { load_samples(o, &tok); }).find("bad5.jsonl:1: invalid JSON"),
            std::string::npos);
  o.path = tmp_file("bad6.txt", "ok \xff more text");
  EXPECT_NE(
      expect_io_error([&] { load_samples(o, &tok); }).find("bad6.txt: invalid UTF-8 at byte 3"),
      std::string::npos);
  o.path = tmp_file("text.jsonl", "{\"text\": \"ok\"}\n");
  EXPECT_NE(expect_io_error([&] { load_samples(o, nullptr); }).find("needs a tokenizer"),
            std::string::npos);
  o.path = tmp_file("data.csv", "a,b\n");
  EXPECT_NE(expect_io_error([&] { load_samples(o, &tok); }).find("data.csv: unknown data format"),
            std::string::npos);
  o.path = "/nonexistent/calib.txt";
  EXPECT_NE(
      expect_io_error([&] { load_samples(o, &tok); }).find("/nonexistent/calib.txt: cannot open"),
      std::string::npos);
}

TEST(Dataset, EvalTokensFollowTheHfRecipe) {
  Tokenizer tok = Tokenizer::from_file(kDir + "tok_llama3.json");
  std::string p =
      tmp_file("eval.jsonl", "{\"text\": \"First doc.\"}\n{\"text\": \"Second doc.\"}\n");
  EXPECT_EQ(load_eval_tokens(p, &tok), tok.encode("First doc.\n\nSecond doc.", true));
  std::string t = tmp_file("eval.txt", "Plain text\nfile.");
  EXPECT_EQ(load_eval_tokens(t, &tok), tok.encode("Plain text\nfile.", true));
}

// Uniform logits: every token has p = 1/V, so perplexity == V; counts follow the windowing rule.
class PerplexitySweep : public ::testing::TestWithParam<std::tuple<int, int, int, int>> {};

TEST_P(PerplexitySweep, ClosedForms) {
  auto [n, seq_len, batch, vocab] = GetParam();
  Ids tokens(n);
  for (int i = 0; i < n; ++i) tokens[i] = (i * 7 + 3) % vocab;
  std::int64_t calls = 0;
  auto uniform = [&, v = vocab](const at::Tensor& ids) {
    ++calls;
    EXPECT_LE(ids.size(0), batch);
    return at::zeros({ids.size(0), ids.size(1), v}, at::kBFloat16);
  };
  PerplexityResult r = perplexity(tokens, uniform, {seq_len, batch, 0});
  std::int64_t full = n / seq_len, tail = n % seq_len;
  std::int64_t want_tokens = full * (seq_len - 1) + (tail >= 2 ? tail - 1 : 0);
  EXPECT_EQ(r.num_tokens, want_tokens);
  EXPECT_EQ(r.num_windows, full + (tail >= 2 ? 1 : 0));
  EXPECT_NEAR(r.perplexity(), vocab, 1e-4 * vocab);

  // Perfect logits (0 at the next token, -inf elsewhere): perplexity exactly 1.
  auto perfect = [&, v = vocab](const at::Tensor& ids) {
    at::Tensor l = at::full({ids.size(0), ids.size(1), v}, -std::numeric_limits<float>::infinity());
    for (std::int64_t b = 0; b < ids.size(0); ++b)
      for (std::int64_t s = 0; s + 1 < ids.size(1); ++s)
        l[b][s][ids[b][s + 1].item<std::int64_t>()] = 0.0f;
    return l;
  };
  EXPECT_EQ(perplexity(tokens, perfect, {seq_len, batch, 0}).perplexity(), 1.0);

  // Random logits against a direct double-precision sum over the documented windows.
  at::manual_seed(n + seq_len);
  at::Tensor table =
      at::randn({vocab, vocab}, at::kFloat);  // logits depend on the current token only
  auto random = [&](const at::Tensor& ids) {
    return table.index_select(0, ids.flatten()).view({ids.size(0), ids.size(1), vocab});
  };
  at::Tensor lsm = at::log_softmax(table.to(at::kDouble), -1);
  double nll = 0;
  for (std::int64_t s = 0; s < n; s += seq_len)
    for (std::int64_t i = s + 1; i < std::min<std::int64_t>(s + seq_len, n); ++i)
      nll -= lsm[tokens[i - 1]][tokens[i]].item<double>();
  PerplexityResult rr = perplexity(tokens, random, {seq_len, batch, 0});
  EXPECT_NEAR(rr.nll_sum, nll, 1e-4 * std::abs(nll));
  EXPECT_NEAR(rr.perplexity(), std::exp(nll / want_tokens), 1e-4 * rr.perplexity());
}

INSTANTIATE_TEST_SUITE_P(Windows, PerplexitySweep,
                         ::testing::Values(std::tuple{64, 16, 1, 50}, std::tuple{65, 16, 3, 50},
                                           std::tuple{66, 16, 4, 17}, std::tuple{5, 8, 2, 33},
                                           std::tuple{100, 7, 5, 1}, std::tuple{2, 2, 1, 2}));

TEST(Perplexity, MaxWindowsAndErrors) {
  Ids tokens(100, 1);
  auto uniform = [](const at::Tensor& ids) { return at::zeros({ids.size(0), ids.size(1), 10}); };
  PerplexityResult r = perplexity(tokens, uniform, {10, 4, 3});
  EXPECT_EQ(r.num_windows, 3);
  EXPECT_EQ(r.num_tokens, 27);
  EXPECT_THROW(perplexity({1}, uniform, {10, 1, 0}), mq::Error);  // no window of 2 tokens
  EXPECT_THROW(perplexity({1, 12}, uniform, {10, 1, 0}),
               mq::Error);  // id outside the logits' vocab
  auto wrong = [](const at::Tensor& ids) { return at::zeros({ids.size(0), 10}); };
  EXPECT_THROW(perplexity(tokens, wrong, {10, 1, 0}), mq::Error);  // not (B, S, V)
}

}  // namespace
