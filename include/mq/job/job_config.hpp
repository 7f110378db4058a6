#pragma once
/// The PTQ job file of `mqdist --cfg job.json`: which checkpoint, which quant config, which data,
/// where the export goes. Parsed strictly (unknown keys are errors) with errors naming the file and
/// the JSON path, like every other config in mqdist.
///
///   {
///     "model":   "../../assets/models/mq-tiny-dense",      HF checkpoint dir (config.json +
///     safetensors) "quant":   "NVFP4_DEFAULT_CFG",                       preset name, config file,
///     or an inline
///                                                           QuantizeConfig object {"quant_cfg":
///                                                           [...], ...}
///     "kv_cache": "FP8_KV_CFG",                             optional KV-cache preset / file /
///     object whose
///                                                           quant_cfg is merged
///                                                           (update_quant_cfg_with_kv_cache_quant)
///     "algorithm": "max",                                   optional: overrides the config's
///     algorithm "calib":   {"path": "calib.txt", "num_samples": 64, "seq_len": 256, "batch_size":
///     8, "seed": 0,
///                 "format": "auto" | "txt" | "jsonl" | "ids", "text_field": "text"},
///     "eval":    {"path": "heldout.txt", "seq_len": 256, "max_windows": 64, "batch_size": 8},
///     "output":  "../../build/out/tiny-dense-nvfp4",        export dir (written atomically)
///     "overwrite": false,                                   replace an existing export dir
///     "dtype":   "auto" | "bfloat16" | "float16" | "float32",   compute dtype (auto: checkpoint's)
///     "device":  "cpu" | "cuda",
///     "export":  true,                                      write the unified HF checkpoint
///     "save_state": true,                                   write the calibrated quantizer state
///     with it "restore_state": "path/to/state"                      optional: restore instead of
///     calibrating
///   }
///
/// Relative paths in a job file resolve against the job file's directory; paths given through
/// `--set key=value` resolve against the working directory. "calib" may be omitted for weight-only
/// configs (and must be given when the config calibrates activations); "eval" may be omitted (no
/// quality line).
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace mq::job {

struct DataSpec {
  std::string path;
  std::string format = "auto";      ///< auto (by extension), txt, jsonl, ids
  std::string text_field = "text";  ///< jsonl field holding the text
  int64_t num_samples = 64;         ///< calib: samples drawn; eval: ignored
  int64_t seq_len = 256;
  int64_t batch_size = 8;
  uint64_t seed = 0;
  int64_t max_windows = 0;  ///< eval: 0 = every window of the text
};

/// "parallel": how `mpirun -np N` / `srun -n N` ranks split the work. World = tp x dp (dp derived);
/// experts are split over ep ranks of the same layout (expert_tp = 1: an expert is never split).
///   tp               tensor parallel size: attention heads, KV heads and the dense MLP split
///                    (q/k/v, gate/up column-parallel; o/down row-parallel); must divide the KV
///                    heads and the intermediate size
///   ep               expert parallel size: must divide the number of experts and tp x dp
///   reduction_chunks the input dim of row-parallel linears is summed in this many chunks, in
///                    order, whatever the layout: runs with equal values give bit-identical
///                    results for every tp/ep/dp (0: tp; must be a multiple of tp)
///   nccl             "auto" (device tensors over NCCL when device is cuda), "on", "off"
///   timeout_s        a rank that makes no progress (one calibration batch, one phase) for this
///                    long ends every rank with a message naming the phase; 0: never
struct ParallelJob {
  int64_t tp = 1;
  int64_t ep = 1;
  int64_t reduction_chunks = 0;
  std::string nccl = "auto";
  double timeout_s = 1800;
};

struct JobConfig {
  std::string source;  ///< the job file ("<inline>" for a JSON string)
  std::string model;
  nlohmann::ordered_json quant;  ///< string (name / path) or object (inline QuantizeConfig)
  std::optional<nlohmann::ordered_json> kv_cache;
  std::optional<std::string> algorithm;  ///< "max", "none", ... overrides the config's algorithm
  std::optional<DataSpec> calib;
  std::optional<DataSpec> eval;
  std::string output;
  bool overwrite = false;
  std::string dtype = "auto";
  std::string device = "cpu";
  bool do_export = true;
  bool save_state = true;
  std::optional<std::string> restore_state;
  ParallelJob parallel;
};

/// One `--set key=value` override: key is a dotted path into the job JSON ("calib.num_samples");
/// value is parsed as JSON when it is valid JSON (numbers, true/false, objects), else taken as a
/// string.
struct Override {
  std::string key;
  std::string value;
};
/// Parses "key=value"; throws mq::ConfigError naming the argument when there is no '=' or no key.
Override parse_override(const std::string& arg);

/// Reads and validates a job file, applying overrides first (they may add keys, e.g. "eval.path").
/// Throws mq::ConfigError ("<file>: <json path>: <rule>") or mq::IoError (unreadable file).
JobConfig load_job(const std::filesystem::path& file, const std::vector<Override>& overrides = {});
/// The same for an in-memory document; relative paths resolve against `base_dir`.
JobConfig parse_job(nlohmann::ordered_json doc, const std::string& source,
                    const std::filesystem::path& base_dir,
                    const std::vector<Override>& overrides = {});

/// The job as canonical JSON (what --dry-run prints, and what is recorded next to the export).
nlohmann::ordered_json to_json(const JobConfig& job);

}  // namespace mq::job
