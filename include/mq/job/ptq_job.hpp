#pragma once
/// The main job of `mqdist --cfg job.json`: load an HF checkpoint, measure quality, quantize it
/// with a ModelOpt config (convert modules, apply quant_cfg, calibrate on the job's data), measure
/// again, and write ModelOpt's unified HF checkpoint plus the calibrated quantizer state.
///
/// Steps (each printed as it starts, with timings):
///   plan       the resolved job, the model shape, the quant config and its algorithm, the data
///   load       load_causal_lm (memory-mapped safetensors, cast to the compute dtype)
///   eval       perplexity on the held-out text before quantization (when "eval" is given)
///   quantize   replace_quant_module + set_quantizer_by_cfg + calibrate (progress with ETA per
///   batch),
///              then the quant summary and, for MoE models, tokens per expert (starved experts
///              warned)
///   eval       perplexity after quantization (fake quant), and the quality line
///              "perplexity: <before> -> <after> (<+x.xx%>)"
///   export     hf_export::export_hf_checkpoint into "output" (atomic), with the quantizer state in
///              "<output>/mqdist_state" and the resolved job in "<output>/mqdist_job.json"
///
/// A bad job is rejected before any model weight is read: unsupported calibration algorithm,
/// missing calib data for a config that calibrates activations, an existing output without
/// "overwrite".
#include <iosfwd>
#include <optional>
#include <string>

#include "mq/job/job_config.hpp"

namespace mq::dist {
class MpiComm;
}

namespace mq::job {

struct RunOptions {
  bool dry_run = false;  ///< print the plan and stop (nothing loaded, nothing written)
  bool quiet = false;    ///< no per-quantizer summary
  /// The world of `mpirun -np N mqdist` (nullptr: one process). Every rank calls run_ptq_job with
  /// the same job; the job's "parallel" layout splits the model (tp, ep) and the calibration
  /// batches (dp); rank 0 prints and writes the export (every rank sends its shards).
  const dist::MpiComm* world = nullptr;
};

struct JobResult {
  std::optional<double> ppl_before;
  std::optional<double> ppl_after;
  int64_t eval_tokens = 0;
  int64_t calib_batches = 0;
  int64_t num_quantizers = 0;
  std::string export_dir;  ///< empty when nothing was exported
};

/// Runs the job, printing progress to `out`. Throws mq::Error (ConfigError / IoError) with one line
/// naming the file and field on bad input; nothing is left in "output" when it throws.
JobResult run_ptq_job(const JobConfig& job, const RunOptions& options, std::ostream& out);

}  // namespace mq::job
