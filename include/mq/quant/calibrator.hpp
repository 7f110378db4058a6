#pragma once
/// Calibrators: objects a TensorQuantizer feeds with what it would quantize (`collect`) and asks for an
/// amax once calibration ends (`compute_amax`). They mirror ModelOpt's `calib/{max,histogram,bias}.py`
/// (reference modelopt-numerics §2.1, §2.8; modelopt-algorithms §0, §1.15).
///
/// Example (per-channel weight calibration, quantization axis 0 kept):
///   auto cal = mq::quant::make_calibrator("max", 8, std::vector<int64_t>{0}, false);
///   cal->collect(W);                       // W (out, in)
///   at::Tensor amax = *cal->compute_amax(); // (out, 1), dtype of W
///
/// Example (histogram, entropy):
///   HistogramCalibrator h(8);
///   for (auto& x : batches) h.collect(x);
///   auto amax = h.compute_amax({.method = "entropy"});  // 0-d fp32 on CPU
///
/// Calibrators are never reset by finishing calibration; a later collect continues the running
/// statistics (ModelOpt behaviour several algorithms rely on). Only reset() clears them.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

namespace mq::quant {

/// Arguments of Calibrator::compute_amax. MaxCalibrator ignores them. HistogramCalibrator needs `method`
/// ("percentile", "entropy" or "mse"; empty throws, like ModelOpt's compute_amax() without a method).
struct CalibAmaxArgs {
  std::string method = "";
  double percentile = 99.99;  ///< "percentile": in [0, 100]
  int start_bin = 128;        ///< "entropy"/"mse": first candidate bin
  int stride = 1;             ///< "entropy"/"mse": candidate step in bins
};

class Calibrator {
 public:
  virtual ~Calibrator() = default;
  /// Accumulates statistics of x, which is exactly what the quantizer would quantize.
  virtual void collect(const at::Tensor& x) = 0;
  /// The calibrated amax, or nullopt when no data was collected.
  virtual std::optional<at::Tensor> compute_amax(const CalibAmaxArgs& args = {}) = 0;
  /// Drops every collected statistic.
  virtual void reset() = 0;
  /// ModelOpt's class name: "MaxCalibrator" or "HistogramCalibrator" (used by extra_repr).
  virtual std::string class_name() const = 0;
  /// The quantizer's axis (the dims KEPT); nullopt is per-tensor.
  virtual void set_axis(std::optional<std::vector<int64_t>> axis) = 0;
  virtual bool has_data() const = 0;
};

/// Running max of reduce_amax(x) over the dims not in `axis`, keepdims (a 0-d scalar when it has one
/// element). The amax keeps the input dtype (bf16 activations give a bf16 amax; FP8 gives fp32).
/// collect throws mq::Error on NaN, Inf or negative amax, and "amax shape changed!" on a shape change.
class MaxCalibrator final : public Calibrator {
 public:
  explicit MaxCalibrator(int num_bits = 8, std::optional<std::vector<int64_t>> axis = std::nullopt,
                         bool is_unsigned = false);
  void collect(const at::Tensor& x) override;
  std::optional<at::Tensor> compute_amax(const CalibAmaxArgs& args = {}) override;
  void reset() override;
  std::string class_name() const override { return "MaxCalibrator"; }
  void set_axis(std::optional<std::vector<int64_t>> axis) override { axis_ = std::move(axis); }
  bool has_data() const override { return calib_amax_.has_value(); }

  const std::optional<std::vector<int64_t>>& axis() const { return axis_; }
  int num_bits() const { return num_bits_; }
  bool is_unsigned() const { return unsigned_; }

 private:
  int num_bits_;
  std::optional<std::vector<int64_t>> axis_;
  bool unsigned_;
  std::optional<at::Tensor> calib_amax_;
};

/// Per-tensor histogram of |x| (ModelOpt's HistogramCalibrator with torch_hist=True).
/// The first collect makes `num_bins` bins on [0, max|x|] (torch.histc; edges = linspace(0, max, n+1),
/// fp32). A later batch with a larger max extends the edges at the same width
/// (edges = arange(0, max + width, width)) and re-bins with histc over [0, edges.back()]; counts are fp32
/// and accumulate elementwise, as in ModelOpt. An axis throws (per-tensor only).
///
/// compute_amax methods (results are 0-d fp32 on CPU):
///  - "percentile": the bin edge at which the CDF first reaches percentile/100.
///  - "entropy": TensorRT's KL-divergence search over candidate bins i = start_bin, start_bin+stride, ...,
///    n_bins with 2^(num_bits-1+unsigned) quantized bins; the LAST argmin wins; amax = edges[i].
///  - "mse": the bin centre c_i (i = start_bin, ... < n_bins, step stride) minimising
///    mean_j(count_j * (Q(c_j; amax=c_i) - c_j)^2), Q = INT-N fake quant or FP8 E4M3 (float format (4,3)),
///    evaluated in fp32 per centre and accumulated in float64; the first minimum wins.
///    ModelOpt calls fake_tensor_quant with shifted positional arguments here (a bug); we implement the
///    intended quantization instead, so "mse" deliberately differs from ModelOpt.
class HistogramCalibrator final : public Calibrator {
 public:
  static constexpr int kDefaultNumBins = 2048;
  /// INT-N quantization target.
  explicit HistogramCalibrator(int num_bits = 8, std::optional<std::vector<int64_t>> axis = std::nullopt,
                               bool is_unsigned = false, int num_bins = kDefaultNumBins,
                               bool skip_zeros = false);
  /// Float (E, M) quantization target: "entropy" then throws (ModelOpt raises TypeError); "mse" supports
  /// (4, 3) only.
  HistogramCalibrator(std::pair<int, int> float_num_bits, std::optional<std::vector<int64_t>> axis = std::nullopt,
                      bool is_unsigned = false, int num_bins = kDefaultNumBins, bool skip_zeros = false);

  void collect(const at::Tensor& x) override;
  std::optional<at::Tensor> compute_amax(const CalibAmaxArgs& args = {}) override;
  void reset() override;
  std::string class_name() const override { return "HistogramCalibrator"; }
  /// Throws mq::Error for any axis (ModelOpt only checks in its constructor and then silently collects a
  /// per-tensor histogram; we refuse instead).
  void set_axis(std::optional<std::vector<int64_t>> axis) override;
  bool has_data() const override { return hist_.has_value(); }

  /// The collected counts (fp32, CPU or the input's device) and bin edges (fp32); nullopt before collect.
  const std::optional<at::Tensor>& histogram() const { return hist_; }
  const std::optional<at::Tensor>& bin_edges() const { return edges_; }
  /// The bin count the next histc uses (2048 at first; grows with the range).
  int64_t num_bins() const { return num_bins_; }

 private:
  int num_bits_;
  std::optional<std::pair<int, int>> float_bits_;
  bool unsigned_;
  int64_t num_bins_;
  bool skip_zeros_;
  std::optional<at::Tensor> hist_;
  std::optional<at::Tensor> edges_;
};

/// The histogram amax searches, usable on any (counts, edges) pair. `hist` is truncated to integers first
/// (ModelOpt's `.int()`; int64 here, so huge tails cannot overflow as ModelOpt's int32 could), `edges` is
/// converted to fp32; both must be 1-D. Results are 0-d fp32 CPU tensors. percentile and entropy match
/// ModelOpt bit for bit (entropy reproduces numpy/scipy's float64 summation order).
at::Tensor compute_amax_percentile(const at::Tensor& hist, const at::Tensor& edges, double percentile);
at::Tensor compute_amax_entropy(const at::Tensor& hist, const at::Tensor& edges, int num_bits, bool is_unsigned,
                                int stride = 1, int start_bin = 128);
/// `float_bits` set: FP8 E4M3 (must be (4, 3)) instead of INT-`num_bits`.
at::Tensor compute_amax_mse(const at::Tensor& hist, const at::Tensor& edges, int num_bits, bool is_unsigned,
                            std::optional<std::pair<int, int>> float_bits = std::nullopt, int stride = 1,
                            int start_bin = 128);

/// kind "max" or "histogram" (anything else throws mq::Error naming it). A histogram with an axis throws.
std::unique_ptr<Calibrator> make_calibrator(const std::string& kind, int num_bits,
                                            std::optional<std::vector<int64_t>> axis, bool is_unsigned);
/// The same for a float (E, M) num_bits, e.g. {4, 3} for FP8.
std::unique_ptr<Calibrator> make_calibrator(const std::string& kind, std::pair<int, int> float_num_bits,
                                            std::optional<std::vector<int64_t>> axis, bool is_unsigned);

/// Affine bias (reference §2.8). `reduce_axes` are the dims REDUCED (the int keys of the `bias` config);
/// nullopt reduces everything (0-d result). Reduced dims are kept with length 1, so KV (B, H, S, D) with
/// {-2, -4} gives (1, H, 1, D). method "mean" = mean(x); "max_min" = (max(x) + min(x)) / 2. The dtype of x
/// is kept. Any other method throws mq::Error.
at::Tensor compute_bias(const at::Tensor& x, const std::optional<std::vector<int64_t>>& reduce_axes,
                        const std::string& method = "mean");

/// Static bias calibrator. "mean": running mean of per-batch means with equal weight per batch
/// (b <- (b * n + mean_k) / (n + 1), computed in fp32 and cast back to the batch dtype);
/// "max_min": (running max + running min) / 2. A bias shape change throws. No distributed sync.
class BiasCalibrator {
 public:
  explicit BiasCalibrator(std::string method = "mean",
                          std::optional<std::vector<int64_t>> reduce_axes = std::nullopt);
  void collect(const at::Tensor& x);
  /// nullopt before any collect.
  std::optional<at::Tensor> compute_bias() const { return calib_bias_; }
  /// The bias of x alone (the "dynamic" bias type).
  at::Tensor compute_dynamic_bias(const at::Tensor& x) const;
  void reset();
  bool has_data() const { return calib_bias_.has_value(); }
  const std::string& method() const { return method_; }
  const std::optional<std::vector<int64_t>>& reduce_axes() const { return reduce_axes_; }

 private:
  std::string method_;
  std::optional<std::vector<int64_t>> reduce_axes_;
  std::optional<at::Tensor> calib_bias_;
  std::optional<at::Tensor> calib_max_;
  std::optional<at::Tensor> calib_min_;
  int64_t count_ = 0;
};

}  // namespace mq::quant
