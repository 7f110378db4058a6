// HistogramCalibrator and the three amax searches. Numerics follow ModelOpt's calib/histogram.py
// (torch_hist=True path) step by step so that percentile and entropy results match it exactly:
// the histogram itself is built with the same ATen ops (histc/linspace/arange in fp32), and the
// entropy search reproduces numpy's float64 arithmetic, including its pairwise summation order.
#include <algorithm>
#include <cmath>
#include <limits>

#include <ATen/ATen.h>
#include <c10/util/Float8_e4m3fn.h>

#include "mq/core/error.hpp"
#include "mq/quant/calibrator.hpp"

namespace mq::quant {

namespace {

constexpr int kPairwiseBlock = 128;

// numpy's pairwise summation for float64 reductions (np.sum over a contiguous 1-D array): blocks of at
// most 128 values are summed with 8 interleaved accumulators, larger ranges are split at a multiple of 8
// near the middle. Divergences that differ in the last ulp can flip the entropy argmin, hence the care.
double pairwise_sum(const double* a, int64_t n) {
  if (n < 8) {
    double res = 0.0;
    for (int64_t i = 0; i < n; ++i) res += a[i];
    return res;
  }
  if (n <= kPairwiseBlock) {
    double r[8];
    for (int j = 0; j < 8; ++j) r[j] = a[j];
    int64_t i = 8;
    for (; i < n - (n % 8); i += 8) {
      for (int j = 0; j < 8; ++j) r[j] += a[i + j];
    }
    double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; ++i) res += a[i];
    return res;
  }
  int64_t n2 = n / 2;
  n2 -= n2 % 8;
  return pairwise_sum(a, n2) + pairwise_sum(a + n2, n - n2);
}

// np.sum starts from the additive identity and adds the pairwise sum of the whole array.
double np_sum(const std::vector<double>& v) { return 0.0 + pairwise_sum(v.data(), static_cast<int64_t>(v.size())); }

// scipy.special.rel_entr.
double rel_entr(double x, double y) {
  if (std::isnan(x) || std::isnan(y)) return std::numeric_limits<double>::quiet_NaN();
  if (x > 0 && y > 0) return x * std::log(x / y);
  if (x == 0 && y >= 0) return 0.0;
  return std::numeric_limits<double>::infinity();
}

// Counts as integers. ModelOpt uses int32 (`.int()`); int64 gives the same values wherever int32 does not
// overflow, and stays correct where it would (more than 2^31 values in a tail sum).
std::vector<int64_t> to_counts(const at::Tensor& hist) {
  MQ_CHECK(hist.defined() && hist.dim() == 1, "histogram: counts must be a 1-D tensor");
  const at::Tensor h = hist.to(at::kCPU).to(at::kLong).contiguous();
  const int64_t* p = h.data_ptr<int64_t>();
  return std::vector<int64_t>(p, p + h.numel());
}

at::Tensor to_edges(const at::Tensor& edges) {
  MQ_CHECK(edges.defined() && edges.dim() == 1, "histogram: bin edges must be a 1-D tensor");
  return edges.to(at::kCPU).to(at::kFloat).contiguous();
}

at::Tensor edge_at(const at::Tensor& edges, int64_t idx, const char* method) {
  MQ_CHECK(idx >= 0 && idx < edges.numel(), "HistogramCalibrator ", method, ": bin index ", idx,
           " is outside the ", edges.numel(), " bin edges");
  return at::scalar_tensor(static_cast<double>(edges.data_ptr<float>()[idx]), at::kFloat);
}

// Fake quantization of one (non-negative) bin centre with amax `a`, elementwise in fp32 exactly as the
// INT (reference §2.2) and FP8 E4M3 (§2.3) fake quant compute it.
struct CenterQuantizer {
  bool fp8 = false;
  float max_bound = 0.0f;
  float scale = 0.0f;
  float inv = 0.0f;
  bool zero = false;

  CenterQuantizer(float a, int num_bits, bool is_unsigned, bool is_fp8) : fp8(is_fp8) {
    if (fp8) {
      const float amax_eff = a <= 0x1p-24f ? 1.0f : a;
      scale = 448.0f / amax_eff;
      inv = 1.0f / scale;
      return;
    }
    zero = a <= 0x1p-24f;
    max_bound = static_cast<float>((int64_t{1} << (num_bits - 1 + (is_unsigned ? 1 : 0))) - 1);
    scale = max_bound / a;
  }
  float operator()(float c) const {
    if (fp8) {
      const float v = std::clamp(c * scale, -448.0f, 448.0f);
      return static_cast<float>(c10::Float8_e4m3fn(v)) * inv;
    }
    if (zero) return 0.0f;
    // Centres are non-negative, so only the upper bound can clip (narrow or not does not matter).
    return std::min(std::nearbyint(c * scale), max_bound) / scale;
  }
};

void check_search_args(int num_bits, bool is_unsigned, int stride, int start_bin, const char* method) {
  MQ_CHECK(stride >= 1, "HistogramCalibrator ", method, ": stride must be >= 1, got ", stride);
  MQ_CHECK(start_bin >= 1, "HistogramCalibrator ", method, ": start_bin must be >= 1, got ", start_bin);
  MQ_CHECK(num_bits >= 1 && num_bits - 1 + (is_unsigned ? 1 : 0) <= 30, "HistogramCalibrator ", method,
           ": unsupported num_bits ", num_bits);
}

}  // namespace

at::Tensor compute_amax_percentile(const at::Tensor& hist, const at::Tensor& edges_in, double percentile) {
  MQ_CHECK(percentile >= 0.0 && percentile <= 100.0, "HistogramCalibrator percentile: invalid percentile ",
           percentile, " (must be in [0, 100])");
  const auto counts = to_counts(hist);
  const at::Tensor edges = to_edges(edges_in);
  int64_t total = 0;
  for (int64_t c : counts) total += c;
  MQ_CHECK(total > 0, "HistogramCalibrator percentile: the histogram is empty");
  const double target = percentile / 100.0;
  // np.cumsum(hist / total) is a sequential float64 sum; searchsorted (left) finds the first cdf >= target.
  double cdf = 0.0;
  int64_t idx = static_cast<int64_t>(counts.size());
  for (size_t i = 0; i < counts.size(); ++i) {
    cdf += static_cast<double>(counts[i]) / static_cast<double>(total);
    if (cdf >= target) {
      idx = static_cast<int64_t>(i);
      break;
    }
  }
  return edge_at(edges, idx, "percentile");
}

at::Tensor compute_amax_entropy(const at::Tensor& hist, const at::Tensor& edges_in, int num_bits,
                                bool is_unsigned, int stride, int start_bin) {
  check_search_args(num_bits, is_unsigned, stride, start_bin, "entropy");
  std::vector<int64_t> bins = to_counts(hist);
  const at::Tensor edges = to_edges(edges_in);
  const int64_t n = static_cast<int64_t>(bins.size());
  MQ_CHECK(n >= 2, "HistogramCalibrator entropy: needs at least 2 bins, got ", n);
  MQ_CHECK(start_bin <= n, "HistogramCalibrator entropy: start_bin ", start_bin, " exceeds the ", n, " bins");
  // TensorRT's recipe: the first bin (mostly exact zeros) is replaced by its neighbour.
  bins[0] = bins[1];
  int64_t total_data = 0;
  for (int64_t b : bins) total_data += b;
  const int64_t nbins = int64_t{1} << (num_bits - 1 + (is_unsigned ? 1 : 0));

  // tail[i] = sum(bins[i:]).
  std::vector<int64_t> tail(n + 1, 0);
  for (int64_t j = n - 1; j >= 0; --j) tail[j] = tail[j + 1] + bins[j];

  std::vector<double> divergences;
  std::vector<double> group_sum(nbins), new_density, ref_density, vec;
  std::vector<int64_t> group_cnt(nbins);
  for (int64_t i = start_bin; i <= n; i += stride) {
    std::fill(group_sum.begin(), group_sum.end(), 0.0);
    std::fill(group_cnt.begin(), group_cnt.end(), 0);
    // np.digitize(range(i), linspace(0, i, nbins + 1)) - 1 is floor(j * nbins / i): the edges k * i / nbins
    // are exact in float64 because nbins is a power of two. Empty bins do not join their group.
    for (int64_t j = 0; j < i; ++j) {
      if (bins[j] == 0) continue;
      const int64_t g = j * nbins / i;
      group_sum[g] += static_cast<double>(bins[j]);
      ++group_cnt[g];
    }
    for (int64_t g = 0; g < nbins; ++g) {
      if (group_cnt[g] > 0) group_sum[g] /= static_cast<double>(group_cnt[g]);
    }
    new_density.assign(i, 0.0);
    for (int64_t j = 0; j < i; ++j) {
      if (bins[j] != 0) new_density[j] = group_sum[j * nbins / i];
    }
    const double total_new = np_sum(new_density) + static_cast<double>(tail[i]);
    // reference = bins[:i] with the clipped tail folded into its last bin.
    ref_density.assign(i, 0.0);
    int64_t total_old = 0;
    std::vector<int64_t> ref(bins.begin(), bins.begin() + i);
    ref[i - 1] += tail[i];
    for (int64_t v : ref) total_old += v;
    MQ_CHECK(static_cast<int64_t>(std::nearbyint(total_new)) == total_data && total_old == total_data,
             "HistogramCalibrator entropy: count mismatch (new ", total_new, ", old ", total_old, ", total ",
             total_data, ")");
    // scipy.stats.entropy(p, q): both normalised by their sums, then sum(rel_entr(p, q)).
    const double p_sum = static_cast<double>(total_old);
    const double q_sum = np_sum(new_density);
    vec.resize(i);
    for (int64_t j = 0; j < i; ++j) {
      vec[j] = rel_entr(static_cast<double>(ref[j]) / p_sum, new_density[j] / q_sum);
    }
    divergences.push_back(np_sum(vec));
  }
  // The LAST argmin; like np.argmin on the reversed array, a NaN wins over every number.
  int64_t best = -1;
  for (int64_t k = static_cast<int64_t>(divergences.size()) - 1; k >= 0; --k) {
    const double d = divergences[k];
    if (std::isnan(d)) {
      best = k;
      break;
    }
    if (best < 0 || d < divergences[best]) best = k;
  }
  MQ_ASSERT(best >= 0);
  return edge_at(edges, best * stride + start_bin, "entropy");
}

at::Tensor compute_amax_mse(const at::Tensor& hist, const at::Tensor& edges_in, int num_bits, bool is_unsigned,
                            std::optional<std::pair<int, int>> float_bits, int stride, int start_bin) {
  if (float_bits) {
    MQ_CHECK(*float_bits == std::make_pair(4, 3), "HistogramCalibrator mse: float num_bits (", float_bits->first,
             ", ", float_bits->second, ") is not supported (only (4, 3))");
    check_search_args(8, false, stride, start_bin, "mse");
  } else {
    check_search_args(num_bits, is_unsigned, stride, start_bin, "mse");
  }
  const std::vector<int64_t> counts = to_counts(hist);
  const at::Tensor edges = to_edges(edges_in);
  const int64_t n = static_cast<int64_t>(counts.size());
  MQ_CHECK(edges.numel() == n + 1, "HistogramCalibrator mse: ", n, " bins but ", edges.numel(), " bin edges");
  MQ_CHECK(start_bin < n, "HistogramCalibrator mse: start_bin ", start_bin, " leaves no candidate among ", n,
           " bins");
  const float* e = edges.data_ptr<float>();
  std::vector<float> centers(n);
  for (int64_t j = 0; j < n; ++j) centers[j] = (e[j + 1] + e[j]) / 2.0f;  // fp32, as (edges[1:] + edges[:-1]) / 2
  // The intended search (ModelOpt's call shifts num_bits/unsigned into the wrong parameters): quantize the
  // centres with each candidate amax and weight the squared error by the bin counts. The loss is
  // accumulated in float64 (ModelOpt: an fp32 mean), which only sharpens the comparison. First minimum wins.
  int64_t best = -1;
  double best_mse = 0.0;
  for (int64_t i = start_bin; i < n; i += stride) {
    const CenterQuantizer q(centers[i], num_bits, is_unsigned, float_bits.has_value());
    double sum = 0.0;
    for (int64_t j = 0; j < n; ++j) {
      if (counts[j] == 0) continue;
      const float d = q(centers[j]) - centers[j];
      sum += static_cast<double>(d) * static_cast<double>(d) * static_cast<double>(counts[j]);
    }
    const double mse = sum / static_cast<double>(n);
    if (best < 0 || mse < best_mse) {
      best = i;
      best_mse = mse;
    }
  }
  return at::scalar_tensor(static_cast<double>(centers[best]), at::kFloat);
}

HistogramCalibrator::HistogramCalibrator(int num_bits, std::optional<std::vector<int64_t>> axis, bool is_unsigned,
                                         int num_bins, bool skip_zeros)
    : num_bits_(num_bits), unsigned_(is_unsigned), num_bins_(num_bins), skip_zeros_(skip_zeros) {
  MQ_CHECK(num_bins >= 2, "HistogramCalibrator: num_bins must be >= 2, got ", num_bins);
  set_axis(std::move(axis));
}

HistogramCalibrator::HistogramCalibrator(std::pair<int, int> float_num_bits, std::optional<std::vector<int64_t>> axis,
                                         bool is_unsigned, int num_bins, bool skip_zeros)
    : HistogramCalibrator(0, std::move(axis), is_unsigned, num_bins, skip_zeros) {
  float_bits_ = float_num_bits;
}

void HistogramCalibrator::set_axis(std::optional<std::vector<int64_t>> axis) {
  MQ_CHECK(!axis, "HistogramCalibrator: only per-tensor calibration is supported (axis must be None)");
}

void HistogramCalibrator::collect(const at::Tensor& x_in) {
  MQ_CHECK(x_in.defined() && x_in.numel() > 0, "HistogramCalibrator.collect: empty or undefined input");
  at::Tensor x = x_in.detach().to(at::kFloat);
  if (at::min(x).item<float>() < 0.0f) x = x.abs();
  if (skip_zeros_) x = x.masked_select(x != 0);
  MQ_CHECK(x.numel() > 0, "HistogramCalibrator.collect: every value is zero and skip_zeros is set");
  const at::Tensor x_max = x.max();
  const float x_max_v = x_max.item<float>();
  MQ_CHECK(std::isfinite(x_max_v), "HistogramCalibrator.collect: the input contains NaN or Inf (max ", x_max_v,
           ")");
  // Counts start at 0 because the histogram is of |x|: a later batch may have a smaller minimum.
  if (!hist_) {
    hist_ = at::histc(x, num_bins_, 0, x_max_v);
    edges_ = at::linspace(0, x_max_v, num_bins_ + 1, at::TensorOptions().dtype(at::kFloat));
    return;
  }
  at::Tensor edges = *edges_;
  const at::Tensor last_edge = edges[-1];
  if (x_max_v > last_edge.item<float>()) {
    const at::Tensor width = edges[1] - edges[0];
    const float bins = (x_max / width.to(x_max.device())).ceil().item<float>();
    MQ_CHECK(std::isfinite(bins) && bins >= static_cast<float>(hist_->numel()),
             "HistogramCalibrator.collect: cannot extend a histogram of bin width ", width.item<float>(),
             " to max ", x_max_v, " (was the first batch all zeros?)");
    num_bins_ = static_cast<int64_t>(bins);
    const float end = (x_max + width.to(x_max.device())).item<float>();
    edges = at::arange(0, end, width.item<float>(), at::TensorOptions().dtype(at::kFloat).device(x.device()));
    edges_ = edges;
  }
  at::Tensor hist = at::histc(x, num_bins_, 0, edges[-1].item<float>());
  const int64_t old = hist_->numel();
  MQ_ASSERT(hist.numel() >= old);
  hist.narrow(0, 0, old).add_(hist_->to(hist.device()));
  hist_ = hist;
}

std::optional<at::Tensor> HistogramCalibrator::compute_amax(const CalibAmaxArgs& args) {
  MQ_CHECK(!args.method.empty(),
           "HistogramCalibrator.compute_amax: a method is required (\"entropy\", \"mse\" or \"percentile\")");
  if (args.method == "entropy") {
    if (!hist_) return std::nullopt;
    MQ_CHECK(!float_bits_, "HistogramCalibrator entropy: needs an integer num_bits, got (", float_bits_->first, ", ",
             float_bits_->second, ")");
    return compute_amax_entropy(*hist_, *edges_, num_bits_, unsigned_, args.stride, args.start_bin);
  }
  if (args.method == "mse") {
    if (!hist_) return std::nullopt;
    return compute_amax_mse(*hist_, *edges_, num_bits_, unsigned_, float_bits_, args.stride, args.start_bin);
  }
  if (args.method == "percentile") {
    MQ_CHECK(args.percentile >= 0.0 && args.percentile <= 100.0,
             "HistogramCalibrator percentile: invalid percentile ", args.percentile, " (must be in [0, 100])");
    if (!hist_) return std::nullopt;
    return compute_amax_percentile(*hist_, *edges_, args.percentile);
  }
  MQ_THROW(Error, "HistogramCalibrator.compute_amax: unknown calibration method '", args.method,
           "' (expected \"entropy\", \"mse\" or \"percentile\")");
}

// num_bins_ keeps its grown value, as in ModelOpt: a histogram restarted after reset() uses the bin count
// the previous one had reached.
void HistogramCalibrator::reset() {
  hist_.reset();
  edges_.reset();
}

}  // namespace mq::quant
