#include "mq/data/dataset.hpp"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "mq/core/error.hpp"
#include "mq/io/safetensors_torch.hpp"

namespace mq::data {
namespace {

using json = nlohmann::json;
using Ids = std::vector<std::int64_t>;

enum class Format { kTxt, kJsonl, kSafetensors };

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

Format format_of(const std::string& path) {
  if (ends_with(path, ".txt")) return Format::kTxt;
  if (ends_with(path, ".jsonl")) return Format::kJsonl;
  if (ends_with(path, ".safetensors")) return Format::kSafetensors;
  MQ_THROW(IoError, path, ": unknown data format (expected .txt, .jsonl or .safetensors)");
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  MQ_CHECK_T(IoError, f.good(), path, ": cannot open data file");
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

const Tokenizer& need_tokenizer(const Tokenizer* tok, const std::string& where) {
  MQ_CHECK_T(IoError, tok != nullptr, where, ": text data needs a tokenizer");
  return *tok;
}

void check_ids(const Ids& ids, std::int64_t vocab_size, const std::string& where) {
  for (std::size_t i = 0; i < ids.size(); ++i)
    MQ_CHECK_T(IoError, ids[i] >= 0 && (vocab_size <= 0 || ids[i] < vocab_size), where,
               ": input_ids[", i, "] = ", ids[i], " is outside [0, ",
               vocab_size > 0 ? std::to_string(vocab_size) : "inf", ")");
}

// One .jsonl record: pre-tokenized ids, or a document's text.
struct Record {
  std::size_t line = 0;
  bool tokenized = false;
  Ids ids;
  std::string text;
};

std::vector<Record> read_jsonl(const std::string& path, const std::string& text_field,
                               std::int64_t vocab_size) {
  std::ifstream f(path, std::ios::binary);
  MQ_CHECK_T(IoError, f.good(), path, ": cannot open data file");
  std::vector<Record> out;
  std::string line;
  for (std::size_t no = 1; std::getline(f, line); ++no) {
    if (std::all_of(line.begin(), line.end(),
                    [](char c) { return c == ' ' || c == '\t' || c == '\r'; }))
      continue;
    std::string where = path + ":" + std::to_string(no);
    json j;
    try {
      j = json::parse(line);
    } catch (const json::parse_error& e) {
      MQ_THROW(IoError, where, ": invalid JSON: ", e.what());
    }
    MQ_CHECK_T(IoError, j.is_object(), where, ": expected a JSON object per line");
    Record r;
    r.line = no;
    if (auto it = j.find("input_ids"); it != j.end()) {
      MQ_CHECK_T(IoError, it->is_array(), where, ": input_ids must be an array of integers");
      for (std::size_t i = 0; i < it->size(); ++i) {
        MQ_CHECK_T(IoError, (*it)[i].is_number_integer(), where, ": input_ids[", i,
                   "] is not an integer");
        r.ids.push_back((*it)[i].get<std::int64_t>());
      }
      check_ids(r.ids, vocab_size, where);
      r.tokenized = true;
      if (r.ids.empty()) continue;
    } else {
      auto t = j.find(text_field);
      MQ_CHECK_T(IoError, t != j.end() && t->is_string(), where, ": no string field '", text_field,
                 "' (and no input_ids)");
      r.text = t->get<std::string>();
      if (r.text.empty()) continue;
    }
    out.push_back(std::move(r));
  }
  return out;
}

std::vector<Ids> read_safetensors_rows(const std::string& path, std::int64_t vocab_size) {
  at::Tensor t = io::load_safetensor(path, "input_ids");
  MQ_CHECK_T(
      IoError, t.dim() == 2 && !at::isFloatingType(t.scalar_type()) && t.scalar_type() != at::kBool,
      path, ": input_ids must be a 2-D integer tensor, got ", t.sizes(), " ", t.scalar_type());
  t = t.to(at::kLong).contiguous();
  std::vector<Ids> rows;
  const std::int64_t* p = t.data_ptr<std::int64_t>();
  for (std::int64_t r = 0; r < t.size(0); ++r) {
    rows.emplace_back(p + r * t.size(1), p + (r + 1) * t.size(1));
    check_ids(rows.back(), vocab_size, path + ": row " + std::to_string(r));
  }
  return rows;
}

Ids encode_checked(const Tokenizer& tok, const std::string& text, bool add_special,
                   const std::string& where) {
  try {
    return tok.encode(text, add_special);
  } catch (const IoError&) {
    throw;
  } catch (const Error& e) {
    MQ_THROW(IoError, where, ": ", e.what());
  }
}

}  // namespace

std::vector<std::int64_t> select_indices(std::int64_t n, std::int64_t k, std::uint64_t seed) {
  MQ_CHECK(n >= 0 && k >= 0, "select_indices: n = ", n, ", k = ", k, " must be >= 0");
  MQ_CHECK(k <= n, "select_indices: ", k, " samples requested but only ", n, " available");
  std::vector<std::int64_t> idx(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) idx[i] = i;
  if (k == 0) return idx;
  std::mt19937_64 rng(seed);
  for (std::int64_t i = 0; i < k; ++i) {
    auto m = static_cast<std::uint64_t>(n - i);
    // Rejection keeps u(m) exactly uniform; the bound is 2^64 - (2^64 mod m), computed without
    // overflow.
    const std::uint64_t rem = (std::numeric_limits<std::uint64_t>::max() % m + 1) % m;
    const std::uint64_t limit =
        std::numeric_limits<std::uint64_t>::max() - rem;  // accept x <= limit
    std::uint64_t x;
    do x = rng();
    while (x > limit);
    std::swap(idx[i], idx[i + static_cast<std::int64_t>(x % m)]);
  }
  idx.resize(static_cast<std::size_t>(k));
  return idx;
}

std::vector<Ids> load_samples(const DatasetOptions& o, const Tokenizer* tok) {
  MQ_CHECK_T(ConfigError, o.seq_len >= 1, o.path, ": seq_len = ", o.seq_len, " must be >= 1");
  MQ_CHECK_T(ConfigError, o.num_samples >= 0, o.path, ": num_samples = ", o.num_samples,
             " must be >= 0");
  auto select = [&](std::int64_t n, const char* what) {
    MQ_CHECK_T(IoError, o.num_samples <= n, o.path, ": num_samples = ", o.num_samples,
               " but the file has only ", n, " ", what);
    return select_indices(n, o.num_samples, o.seed);
  };
  std::vector<Ids> out;
  switch (format_of(o.path)) {
    case Format::kTxt: {
      const Tokenizer& t = need_tokenizer(tok, o.path);
      const Ids& prefix = t.prefix_ids();
      auto body = o.seq_len - static_cast<std::int64_t>(prefix.size());
      MQ_CHECK_T(ConfigError, body >= 1, o.path, ": seq_len = ", o.seq_len,
                 " leaves no room after the ", prefix.size(), " prefix ids");
      Ids ids = encode_checked(t, read_file(o.path), false, o.path);
      std::int64_t n = static_cast<std::int64_t>(ids.size()) / body;
      for (std::int64_t w : select(n, "full windows")) {
        Ids s = prefix;
        s.insert(s.end(), ids.begin() + w * body, ids.begin() + (w + 1) * body);
        out.push_back(std::move(s));
      }
      break;
    }
    case Format::kJsonl: {
      std::vector<Record> recs = read_jsonl(o.path, o.text_field, o.vocab_size);
      for (std::int64_t i : select(static_cast<std::int64_t>(recs.size()), "records")) {
        Record& r = recs[i];
        Ids ids = r.tokenized ? std::move(r.ids)
                              : encode_checked(need_tokenizer(tok, o.path), r.text, true,
                                               o.path + ":" + std::to_string(r.line));
        if (static_cast<std::int64_t>(ids.size()) > o.seq_len) ids.resize(o.seq_len);
        out.push_back(std::move(ids));
      }
      break;
    }
    case Format::kSafetensors: {
      std::vector<Ids> rows = read_safetensors_rows(o.path, o.vocab_size);
      for (std::int64_t i : select(static_cast<std::int64_t>(rows.size()), "rows")) {
        Ids ids = std::move(rows[i]);
        if (static_cast<std::int64_t>(ids.size()) > o.seq_len) ids.resize(o.seq_len);
        out.push_back(std::move(ids));
      }
      break;
    }
  }
  return out;
}

std::vector<Batch> make_batches(const std::vector<Ids>& samples, std::int64_t batch_size,
                                std::int64_t pad_id) {
  MQ_CHECK(batch_size >= 1, "make_batches: batch_size = ", batch_size, " must be >= 1");
  std::vector<Batch> out;
  for (std::size_t b = 0; b < samples.size(); b += batch_size) {
    std::size_t e = std::min(samples.size(), b + static_cast<std::size_t>(batch_size));
    std::size_t len = 0;
    for (std::size_t i = b; i < e; ++i) len = std::max(len, samples[i].size());
    auto rows = static_cast<std::int64_t>(e - b), cols = static_cast<std::int64_t>(len);
    at::Tensor ids = at::full({rows, cols}, pad_id, at::kLong);
    at::Tensor mask = at::zeros({rows, cols}, at::kLong);
    auto* pi = ids.data_ptr<std::int64_t>();
    auto* pm = mask.data_ptr<std::int64_t>();
    for (std::size_t i = b; i < e; ++i) {
      std::int64_t r = static_cast<std::int64_t>(i - b);
      std::copy(samples[i].begin(), samples[i].end(), pi + r * cols);
      std::fill(pm + r * cols, pm + r * cols + static_cast<std::int64_t>(samples[i].size()), 1);
    }
    out.push_back({ids, mask});
  }
  return out;
}

std::vector<Batch> load_calibration_batches(const DatasetOptions& o, const Tokenizer* tok) {
  MQ_CHECK_T(ConfigError, o.batch_size >= 1, o.path, ": batch_size = ", o.batch_size,
             " must be >= 1");
  return make_batches(load_samples(o, tok), o.batch_size, o.pad_id);
}

std::vector<std::int64_t> load_eval_tokens(const std::string& path, const Tokenizer* tok,
                                           const std::string& text_field) {
  switch (format_of(path)) {
    case Format::kTxt:
      return encode_checked(need_tokenizer(tok, path), read_file(path), true, path);
    case Format::kJsonl: {
      std::vector<Record> recs = read_jsonl(path, text_field, tok ? tok->vocab_size() : 0);
      MQ_CHECK_T(IoError, !recs.empty(), path, ": no records");
      if (recs.front().tokenized) {
        Ids all;
        for (const Record& r : recs) {
          MQ_CHECK_T(IoError, r.tokenized, path, ":", r.line, ": mixes text and input_ids records");
          all.insert(all.end(), r.ids.begin(), r.ids.end());
        }
        return all;
      }
      std::string joined;
      for (const Record& r : recs) {
        MQ_CHECK_T(IoError, !r.tokenized, path, ":", r.line, ": mixes text and input_ids records");
        if (!joined.empty()) joined += "\n\n";
        joined += r.text;
      }
      return encode_checked(need_tokenizer(tok, path), joined, true, path);
    }
    case Format::kSafetensors: {
      Ids all;
      for (const Ids& r : read_safetensors_rows(path, tok ? tok->vocab_size() : 0))
        all.insert(all.end(), r.begin(), r.end());
      return all;
    }
  }
  return {};
}

double PerplexityResult::perplexity() const {
  MQ_CHECK(num_tokens > 0, "perplexity: no scored tokens");
  return std::exp(nll_sum / static_cast<double>(num_tokens));
}

PerplexityResult perplexity(const std::vector<std::int64_t>& tokens, const LogitsFn& logits_fn,
                            const PerplexityOptions& o) {
  MQ_CHECK(o.seq_len >= 2, "perplexity: seq_len = ", o.seq_len, " must be >= 2");
  MQ_CHECK(o.batch_size >= 1, "perplexity: batch_size = ", o.batch_size, " must be >= 1");
  const auto n = static_cast<std::int64_t>(tokens.size());
  std::vector<std::pair<std::int64_t, std::int64_t>> windows;  // (start, length)
  for (std::int64_t s = 0; s < n; s += o.seq_len) {
    std::int64_t len = std::min(o.seq_len, n - s);
    if (len >= 2) windows.emplace_back(s, len);
  }
  if (o.max_windows > 0 && static_cast<std::int64_t>(windows.size()) > o.max_windows)
    windows.resize(o.max_windows);
  MQ_CHECK(!windows.empty(), "perplexity: ", n, " tokens give no window of at least 2 tokens");

  PerplexityResult res;
  for (std::size_t w = 0; w < windows.size();) {
    // Windows of equal length share a call; only the last one can be shorter.
    std::int64_t len = windows[w].second;
    std::size_t e = w;
    while (e < windows.size() && e - w < static_cast<std::size_t>(o.batch_size) &&
           windows[e].second == len)
      ++e;
    auto rows = static_cast<std::int64_t>(e - w);
    at::Tensor ids = at::empty({rows, len}, at::kLong);
    auto* p = ids.data_ptr<std::int64_t>();
    for (std::size_t i = w; i < e; ++i)
      std::copy(tokens.begin() + windows[i].first, tokens.begin() + windows[i].first + len,
                p + static_cast<std::int64_t>(i - w) * len);
    at::Tensor logits = logits_fn(ids);
    MQ_CHECK(logits.dim() == 3 && logits.size(0) == rows && logits.size(1) == len,
             "perplexity: logits of shape ", logits.sizes(), " for input_ids of shape ",
             ids.sizes(), " (expected (B, S, V))");
    const std::int64_t vocab = logits.size(2);
    const std::int64_t max_id = ids.max().item<std::int64_t>();
    MQ_CHECK(ids.min().item<std::int64_t>() >= 0 && max_id < vocab, "perplexity: token id ", max_id,
             " is outside the logits' vocabulary of ", vocab);
    at::Tensor logp =
        at::log_softmax(logits.slice(1, 0, len - 1).to(at::kFloat), -1);         // (B, S-1, V)
    at::Tensor target = ids.slice(1, 1, len).to(logits.device()).unsqueeze(-1);  // (B, S-1, 1)
    at::Tensor picked = logp.gather(-1, target);                                 // (B, S-1, 1)
    res.nll_sum -= picked.to(at::kDouble).sum().item<double>();
    res.num_tokens += rows * (len - 1);
    res.num_windows += rows;
    w = e;
  }
  return res;
}

}  // namespace mq::data
