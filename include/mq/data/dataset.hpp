#pragma once
/// Calibration batches and held-out perplexity.
///
/// Sample sources (chosen by the file extension of DatasetOptions::path):
///   .txt          the whole file is encoded once (add_special_tokens=false) and cut into
///   consecutive
///                 non-overlapping windows; each window is one sample of exactly seq_len ids: the
///                 tokenizer's prefix_ids() (e.g. Llama-3's bos) followed by the next
///                 seq_len - |prefix| text ids. A tail too short for a full window is dropped.
///   .jsonl        one JSON object per non-blank line. A line with "input_ids" (array of integers)
///   is a
///                 pre-tokenized sample used as is; otherwise the string field `text_field` is one
///                 document, encoded with add_special_tokens=true. Both are truncated to the first
///                 seq_len ids. A document that encodes to no ids is skipped.
///   .safetensors  pre-tokenized: a 2-D integer tensor "input_ids" (N, L); each row is a sample,
///                 truncated to seq_len.
/// Pre-tokenized ids must lie in [0, vocab_size) when `vocab_size` > 0.
///
/// Deterministic selection, identical on every platform: with N candidate samples in file order and
/// k = num_samples (0: all, in file order), a std::mt19937_64 seeded with `seed` runs a partial
/// Fisher-Yates shuffle of the indices 0..N-1: for i = 0..k-1, j = i + u(N - i), swap(idx[i],
/// idx[j]), where u(m) draws raw 64-bit outputs x until x < 2^64 - (2^64 mod m) and returns x mod
/// m. The samples are idx[0..k) in that order. k > N is an error naming the file and N.
///
/// Batches take consecutive samples (the last batch may be smaller) and are right-padded with
/// `pad_id` to the longest sample in the batch; attention_mask is 1 on real tokens, 0 on padding.
///
/// Errors (mq::IoError) name the file and, for .jsonl, the 1-based line.
///
/// Example:
///   mq::data::DatasetOptions o;
///   o.path = "calib.jsonl";  o.num_samples = 128;  o.seq_len = 512;  o.batch_size = 8;  o.seed =
///   1234; auto tok = mq::data::Tokenizer::from_file("ckpt/tokenizer.json"); for (const auto& b :
///   mq::data::load_calibration_batches(o, &tok)) model(b.input_ids, b.attention_mask);
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "mq/data/tokenizer.hpp"

namespace mq::data {

struct DatasetOptions {
  std::string path;                 ///< .txt, .jsonl or .safetensors
  std::string text_field = "text";  ///< .jsonl: field holding a document's text
  std::int64_t num_samples = 512;   ///< samples drawn; 0 = all
  std::int64_t seq_len = 512;       ///< max ids per sample (exact length for .txt windows)
  std::int64_t batch_size = 1;
  std::uint64_t seed = 0;
  std::int64_t pad_id = 0;      ///< fills padded positions (masked out)
  std::int64_t vocab_size = 0;  ///< > 0: pre-tokenized ids are checked against it
};

struct Batch {
  at::Tensor input_ids;       ///< (B, S) int64
  at::Tensor attention_mask;  ///< (B, S) int64; 1 = token, 0 = padding
};

/// Indices of the k samples drawn from n candidates (the algorithm above). k == 0 means all n, in
/// order.
std::vector<std::int64_t> select_indices(std::int64_t n, std::int64_t k, std::uint64_t seed);

/// The selected samples as ids (before batching). `tokenizer` may be null for pre-tokenized
/// sources.
std::vector<std::vector<std::int64_t>> load_samples(const DatasetOptions& options,
                                                    const Tokenizer* tokenizer);

/// Consecutive samples grouped into right-padded batches.
std::vector<Batch> make_batches(const std::vector<std::vector<std::int64_t>>& samples,
                                std::int64_t batch_size, std::int64_t pad_id = 0);

/// load_samples + make_batches.
std::vector<Batch> load_calibration_batches(const DatasetOptions& options,
                                            const Tokenizer* tokenizer);

/// The held-out token stream for perplexity, as the usual HF recipe builds it: .txt the whole file,
/// .jsonl the `text_field` of every line joined with "\n\n", encoded once with
/// add_special_tokens=true (so Llama-3's bos appears once, at the start); pre-tokenized .jsonl /
/// .safetensors rows concatenated.
std::vector<std::int64_t> load_eval_tokens(const std::string& path, const Tokenizer* tokenizer,
                                           const std::string& text_field = "text");

struct PerplexityOptions {
  std::int64_t seq_len = 2048;   ///< window length (= stride)
  std::int64_t batch_size = 1;   ///< windows per call of the logits function
  std::int64_t max_windows = 0;  ///< > 0: only the first max_windows windows
};

struct PerplexityResult {
  double nll_sum = 0;           ///< sum of -log p(token) over the scored tokens (natural log)
  std::int64_t num_tokens = 0;  ///< scored tokens
  std::int64_t num_windows = 0;
  double perplexity() const;  ///< exp(nll_sum / num_tokens)
};

/// logits = f(input_ids): (B, S) int64 CPU -> (B, S, V) on any device and floating dtype.
using LogitsFn = std::function<at::Tensor(const at::Tensor& input_ids)>;

/// Perplexity over non-overlapping windows (stride = seq_len): windows start at 0, seq_len,
/// 2*seq_len...; a last partial window is kept when it has at least 2 ids. In a window of length L
/// the ids 1..L-1 are scored by the logits at positions 0..L-2 (the window's first id is context
/// only, as in the HF perplexity recipe with stride == max_length). log_softmax runs in float32,
/// sums in double. Example: auto r = perplexity(load_eval_tokens("wiki.txt", &tok), run_model,
/// {2048, 4, 0});
PerplexityResult perplexity(const std::vector<std::int64_t>& tokens, const LogitsFn& logits_fn,
                            const PerplexityOptions& options);

}  // namespace mq::data
