#include "mq/job/ptq_job.hpp"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/core/grad_mode.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <ostream>
#include <span>
#include <sstream>

#include "config/json_impl.hpp"
#include "dist_job_impl.hpp"
#include "mq/calib/calibrate.hpp"
#include "mq/config/presets.hpp"
#include "mq/config/quantize_config.hpp"
#include "mq/core/error.hpp"
#include "mq/data/dataset.hpp"
#include "mq/data/tokenizer.hpp"
#include "mq/dist/nccl_comm.hpp"
#include "mq/export/dist_export.hpp"
#include "mq/export/hf_checkpoint.hpp"
#include "mq/io/safetensors.hpp"
#include "mq/models/causal_lm.hpp"
#include "mq/models/hf_config.hpp"
#include "mq/nn/conversion.hpp"
#include "mq/nn/quant_module.hpp"

namespace mq::job {

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using ojson = nlohmann::ordered_json;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

// The quant config the job names, with the KV-cache config merged and the algorithm overridden.
config::QuantizeConfig resolve_quant_config(const JobConfig& job, std::string* label) {
  const config::ErrorContext root{job.source, ""};
  auto load = [&](const ojson& spec, const char* key) {
    if (spec.is_string()) {
      try {
        return config::load_quantize_config(spec.get<std::string>());
      } catch (const Error& e) {
        MQ_THROW(ConfigError, job.source, ": ", key, ": ", e.what());
      }
    }
    return config::parse_quantize_config(spec, root.key(key));
  };
  config::QuantizeConfig cfg = load(job.quant, "quant");
  *label =
      job.quant.is_string() ? job.quant.get<std::string>() : std::string("<inline quant config>");
  if (job.kv_cache) {
    const config::QuantizeConfig kv = load(*job.kv_cache, "kv_cache");
    cfg = config::update_quant_cfg_with_kv_cache_quant(cfg, kv.quant_cfg);
    *label += " + " + (job.kv_cache->is_string() ? job.kv_cache->get<std::string>()
                                                 : std::string("<inline kv>"));
  }
  if (job.algorithm) {
    const ojson a = *job.algorithm == "none" ? ojson(nullptr) : ojson(*job.algorithm);
    cfg.algorithm = config::parse_algorithm(a, root.key("algorithm"), &cfg.algorithm_is_list);
    cfg.fields_set.insert("algorithm");
  }
  for (const auto& a : cfg.algorithm) {
    if (a.is_none()) continue;
    if (!calib::is_registered_algorithm(*a.method))
      root.key(job.algorithm ? "algorithm" : "quant")
          .fail("calibration algorithm '" + *a.method + "' of " + *label +
                " is not implemented in mqdist yet (available: " +
                config::detail::join(calib::algorithm_names()) +
                "); set \"algorithm\": \"max\" to calibrate with max");
  }
  return cfg;
}

std::string algorithm_label(const config::QuantizeConfig& cfg) {
  std::string s;
  for (const auto& a : cfg.algorithm)
    s += (s.empty() ? "" : ", ") + (a.is_none() ? std::string("None") : *a.method);
  return s.empty() ? "None" : s;
}

std::optional<c10::ScalarType> compute_dtype(const std::string& d) {
  if (d == "bfloat16") return at::kBFloat16;
  if (d == "float16") return at::kHalf;
  if (d == "float32") return at::kFloat;
  return std::nullopt;
}

// (MoE block name, global index of its experts.0) of every block: EP ranks number their experts
// from 0.
std::vector<std::pair<std::string, int64_t>> expert_begins(const models::CausalLM& model) {
  std::vector<std::pair<std::string, int64_t>> v;
  for (const auto& [name, moe] : model.moe_blocks()) v.emplace_back(name, moe->expert_begin());
  return v;
}

}  // namespace

JobResult run_ptq_job(const JobConfig& job, const RunOptions& options, std::ostream& out_all) {
  const auto t_start = Clock::now();
  // Rank 0 prints; the other ranks' lines would repeat it (their errors still reach stderr).
  std::ostream null_out(nullptr);
  const bool rank0 = options.world == nullptr || options.world->rank() == 0;
  std::ostream& out = rank0 ? out_all : null_out;
  JobResult result;
  const config::ErrorContext root{job.source, ""};

  // ---- plan: everything that can be checked without reading weights
  // --------------------------------
  std::string quant_label;
  config::QuantizeConfig qcfg = resolve_quant_config(job, &quant_label);
  const models::HfConfig hf = models::load_hf_config(job.model);
  if (job.device == "cuda" && !at::globalContext().hasCUDA())
    root.key("device").fail(
        "\"cuda\": this mqdist build or machine has no CUDA (build with -DMQ_TORCH_CUDA=ON on a "
        "GPU machine)");
  if (job.parallel.nccl == "on" && job.device != "cuda")
    root.key("parallel").key("nccl").fail("\"on\" needs \"device\": \"cuda\"");
  const bool use_nccl = job.device == "cuda" && job.parallel.nccl != "off" &&
                        options.world != nullptr && options.world->size() > 1;
  // One GPU per rank: local rank -> device (collective; a rank that sees one device uses it).
  int device_index = 0;
  if (job.device == "cuda" && options.world != nullptr && options.world->size() > 1) {
    if (use_nccl) {
      device_index = dist::NcclComm::select_device(*options.world);
    } else {
      // Without NCCL several ranks may share a GPU (device tensors are staged through the host).
      const dist::MpiComm node = options.world->split_shared();
      const int n = static_cast<int>(at::detail::getCUDAHooks().deviceCount());
      device_index = n > 0 ? node.rank() % n : 0;
    }
  }
  const c10::Device device =
      job.device == "cuda" ? c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(device_index))
                           : c10::Device(c10::kCPU);
  const detail::DistContext dctx =
      detail::make_dist_context(job, hf, options.world, use_nccl, device_index);
  if (job.do_export && fs::exists(job.output) && !fs::is_empty(job.output) && !job.overwrite)
    root.key("output").fail(job.output +
                            " exists and is not empty (set \"overwrite\": true to replace it)");
  const std::string tokenizer_path = (fs::path(job.model) / "tokenizer.json").string();
  auto is_text = [](const DataSpec& d) {
    const std::string ext = fs::path(d.path).extension().string();
    return d.format == "txt" || d.format == "jsonl" ||
           (d.format == "auto" && (ext == ".txt" || ext == ".jsonl"));
  };
  if (job.calib)
    MQ_CHECK_T(IoError, fs::exists(job.calib->path), job.source, ": calib.path: ", job.calib->path,
               ": no such file");
  if (job.eval)
    MQ_CHECK_T(IoError, fs::exists(job.eval->path), job.source, ": eval.path: ", job.eval->path,
               ": no such file");

  out << "mqdist PTQ job " << job.source << "\n"
      << "  model     " << job.model << " (" << hf.architecture << ", " << hf.num_hidden_layers
      << " layers, hidden " << hf.hidden_size
      << (hf.num_experts > 0 ? ", " + std::to_string(hf.num_experts) + " experts top-" +
                                   std::to_string(hf.num_experts_per_tok)
                             : std::string())
      << ")\n"
      << "  quant     " << quant_label << " (algorithm " << algorithm_label(qcfg) << ")\n";
  if (job.calib)
    out << "  calib     " << job.calib->path << " (" << job.calib->num_samples << " samples x "
        << job.calib->seq_len << " tokens, batch " << job.calib->batch_size << ", seed "
        << job.calib->seed << ")\n";
  else
    out << "  calib     none (weights only)\n";
  if (job.eval)
    out << "  eval      " << job.eval->path << " (perplexity, windows of " << job.eval->seq_len
        << " tokens"
        << (job.eval->max_windows ? ", first " + std::to_string(job.eval->max_windows)
                                  : std::string())
        << ")\n";
  out << "  output    " << (job.do_export ? job.output : std::string("none (export disabled)"))
      << "\n"
      << "  compute   " << job.dtype << " on " << job.device << "\n";
  if (dctx.size > 1 || job.parallel.tp > 1 || job.parallel.ep > 1)
    out << "  parallel  " << dist::to_string(dctx.layout) << ", reduction chunks "
        << dctx.reduction_chunks << (use_nccl ? ", NCCL" : ", MPI host collectives") << "\n";
  detail::Watchdog watchdog(options.dry_run ? 0.0 : job.parallel.timeout_s, dctx.distributed());
  if (options.dry_run) {
    out << "resolved job:\n"
        << to_json(job).dump(2) << "\nquant config:\n"
        << config::to_json(qcfg).dump(2) << "\ndry run: nothing loaded, nothing written\n";
    return result;
  }

  // ---- load
  // -------------------------------------------------------------------------------------------
  at::NoGradGuard no_grad;
  std::optional<data::Tokenizer> tokenizer;
  // .jsonl may be pre-tokenized: without a tokenizer the data loader rejects a text line, naming
  // it.
  if (fs::exists(tokenizer_path)) {
    tokenizer = data::Tokenizer::from_file(tokenizer_path);
  } else {
    for (const DataSpec* d : {job.calib ? &*job.calib : nullptr, job.eval ? &*job.eval : nullptr})
      if (d && is_text(*d) && fs::path(d->path).extension() != ".jsonl")
        MQ_THROW(IoError, job.source, ": ", d->path,
                 ": text data needs the checkpoint's tokenizer: ", tokenizer_path,
                 ": no such file");
  }
  watchdog.beat("load");
  auto t0 = Clock::now();
  models::LoadOptions lo;
  lo.dtype = compute_dtype(job.dtype);
  lo.device = device;
  if (dctx.groups) {
    lo.parallel = models::parallel_spec_from_groups(*dctx.groups, dctx.reduction_chunks);
  } else {
    lo.parallel.reduction_chunks = dctx.reduction_chunks;
  }
  std::unique_ptr<models::CausalLM> model = models::load_causal_lm(job.model, lo);
  int64_t n_params = 0;
  for (const auto& [name, p] : model->named_parameters()) n_params += p.numel();
  out << "loaded " << n_params << " parameters (" << c10::toString(model->dtype()) << ")"
      << (dctx.size > 1 ? " on rank 0" : "") << " in " << fmt("%.1f s", seconds_since(t0)) << "\n";
  const data::Tokenizer* tok = tokenizer ? &*tokenizer : nullptr;

  auto logits_fn = [&](const at::Tensor& ids) { return model->forward(ids.to(device)); };
  std::vector<int64_t> eval_tokens;
  data::PerplexityOptions po;
  if (job.eval) {
    eval_tokens = data::load_eval_tokens(job.eval->path, tok, job.eval->text_field);
    po.seq_len = job.eval->seq_len;
    po.batch_size = job.eval->batch_size;
    po.max_windows = job.eval->max_windows;
    watchdog.beat("perplexity before quantization");
    t0 = Clock::now();
    const auto r = data::perplexity(eval_tokens, logits_fn, po);
    result.ppl_before = r.perplexity();
    result.eval_tokens = r.num_tokens;
    out << "perplexity before quantization: " << fmt("%.4f", *result.ppl_before) << " ("
        << r.num_tokens << " tokens, " << r.num_windows << " windows, "
        << fmt("%.1f s", seconds_since(t0)) << ")\n";
  }

  // ---- quantize
  // ---------------------------------------------------------------------------------------
  models::register_hf_quant_modules();
  nn::replace_quant_module(*model);
  nn::set_quantizer_by_cfg(*model, qcfg.quant_cfg);
  std::vector<data::Batch> batches;
  if (job.calib && !job.restore_state) {
    data::DatasetOptions d;
    d.path = job.calib->path;
    d.text_field = job.calib->text_field;
    d.num_samples = job.calib->num_samples;
    d.seq_len = job.calib->seq_len;
    d.batch_size = job.calib->batch_size;
    d.seed = job.calib->seed;
    d.vocab_size = hf.vocab_size;
    batches = data::load_calibration_batches(d, tok);
  } else if (!job.restore_state && calib::needs_activation_forward(*model)) {
    bool calibrates = false;
    for (const auto& a : qcfg.algorithm) calibrates |= !a.is_none();
    if (calibrates)
      root.key("calib").fail(
          "is required: " + quant_label +
          " calibrates activations; give calibration data or use a weight-only config");
  }
  result.calib_batches = static_cast<int64_t>(batches.size());
  // Data parallel: whole batches per DP rank (each batch is computed exactly as in one process).
  const std::vector<size_t> mine = detail::local_batches(dctx, batches.size());
  if (detail::ep_spans_data_parallel(dctx) && batches.size() % static_cast<size_t>(dctx.dp_size()))
    root.key("calib").fail(
        std::to_string(batches.size()) +
        " calibration batches do not split evenly over dp = " + std::to_string(dctx.dp_size()) +
        " (expert-parallel ranks exchange tokens every batch): make "
        "num_samples / batch_size a multiple of dp");
  calib::reset_moe_token_counts(*model);
  calib::ForwardLoop loop;
  if (!batches.empty()) {
    loop = [&](nn::Module&) {
      const auto tl = Clock::now();
      for (size_t j = 0; j < mine.size(); ++j) {
        watchdog.beat("calibration batch " + std::to_string(mine[j]));
        const data::Batch& b = batches[mine[j]];
        model->forward(b.input_ids.to(device), b.attention_mask.to(device));
        const double el = seconds_since(tl);
        const double eta =
            el / static_cast<double>(j + 1) * static_cast<double>(mine.size() - j - 1);
        // About ten progress lines per pass, whatever the number of batches (logs are files, not
        // ttys).
        const size_t every = std::max<size_t>(1, mine.size() / 10);
        if ((j + 1) % every == 0 || j + 1 == mine.size())
          out << "calibrating: batch " << (j + 1) << "/" << mine.size()
              << (dctx.dp_size() > 1 ? " (of " + std::to_string(batches.size()) + " over dp " +
                                           std::to_string(dctx.dp_size()) + ")"
                                     : std::string())
              << ", " << fmt("%.1f s", el) << ", ETA " << fmt("%.1f s", eta) << std::endl;
      }
    };
  }
  t0 = Clock::now();
  if (job.restore_state) {
    // A saved calibration replaces the algorithm: same quantizer names required (restore checks).
    std::string state_path = *job.restore_state;
    if (dctx.distributed()) {
      char rank_dir[32];
      std::snprintf(rank_dir, sizeof rank_dir, "rank-%05d", dctx.rank);
      if (fs::exists(fs::path(state_path) / rank_dir)) state_path = fs::path(state_path) / rank_dir;
    }
    nn::restore_quantizer_state(*model, nn::load_quantizer_state(state_path));
    out << "restored quantizer state from " << *job.restore_state << " (no calibration)\n";
  } else {
    calib::CalibrateOptions co;
    std::unique_ptr<dist::AmaxSync> sync;
    if (dctx.groups) {
      // q/k/v, gate/up column-parallel; o, down row-parallel; routed experts over the expert
      // groups (whole on each rank); everything else replicated.
      sync = std::make_unique<dist::AmaxSync>(dist::hf_decoder_parallel_info(*dctx.groups),
                                              dctx.groups->world);
      co.parallel = sync.get();
    }
    for (const auto& a : qcfg.algorithm) calib::calibrate(*model, a, loop, co);
    watchdog.beat("summary");
    out << "calibrated (" << algorithm_label(qcfg) << ") in " << fmt("%.1f s", seconds_since(t0))
        << "\n";
  }

  const std::string summary = nn::print_quant_summary(*model, std::nullopt, /*print=*/false);
  if (!options.quiet) out << summary << "\n";
  result.num_quantizers = static_cast<int64_t>(nn::named_tensor_quantizers(*model).size());
  const calib::MoeCoverage coverage = detail::global_moe_coverage(dctx, *model);
  for (const auto& block : coverage.blocks) {
    std::string line;
    for (size_t e = 0; e < block.token_counts.size(); ++e)
      line += (e ? " " : "") + std::to_string(block.token_counts[e]);
    out << "tokens per expert " << block.name << ": [" << line << "]\n";
  }
  for (const auto& w : coverage.warnings)
    out << "warning: " << w
        << " (weights still calibrated; inputs take the siblings' max at export)\n";

  if (job.eval) {
    watchdog.beat("perplexity after quantization");
    t0 = Clock::now();
    const auto r = data::perplexity(eval_tokens, logits_fn, po);
    result.ppl_after = r.perplexity();
    out << "perplexity after quantization:  " << fmt("%.4f", *result.ppl_after) << " ("
        << fmt("%.1f s", seconds_since(t0)) << ")\n";
    out << "quality: perplexity " << fmt("%.4f", *result.ppl_before) << " -> "
        << fmt("%.4f", *result.ppl_after) << " ("
        << fmt("%+.2f%%", 100.0 * (*result.ppl_after / *result.ppl_before - 1.0)) << ") with "
        << quant_label << "\n";
  }

  // ---- export
  // -----------------------------------------------------------------------------------------
  if (job.do_export) {
    watchdog.beat("export");
    t0 = Clock::now();
    // One temp name for every rank: rank 0's pid.
    const int64_t token =
        dctx.distributed() ? options.world->all_gather_int64(::getpid())[0] : ::getpid();
    const fs::path state_tmp = job.output + ".state.tmp-" + std::to_string(token);
    // The export, its quantizer state and mqdist_job.json are assembled in one staging directory
    // that is renamed to "output" last: a reader never sees an export without them.
    const fs::path staging = job.output + ".partial-" + std::to_string(token);
    ojson job_json = to_json(job);
    job_json["parallel"]["world_size"] = dctx.size;
    try {
      if (job.save_state) {
        if (dctx.distributed()) {
          // Each rank's quantizers (its shards): restorable into the same layout.
          if (rank0) fs::create_directories(state_tmp);
          options.world->barrier();
          char rank_dir[32];
          std::snprintf(rank_dir, sizeof rank_dir, "rank-%05d", dctx.rank);
          nn::save_quantizer_state(*model, (state_tmp / rank_dir).string(), job_json);
        } else {
          nn::save_quantizer_state(*model, state_tmp.string(), job_json);
        }
      }
      hf_export::ExportOptions eo;
      eo.overwrite = true;  // the staging directory is ours; "output" itself was checked above
      const auto rep =
          dctx.distributed()
              ? hf_export::export_hf_checkpoint_distributed(
                    *model, job.model, staging.string(), eo, *options.world,
                    hf_export::hf_decoder_shard_rule(model->parallel().tp_rank,
                                                     model->parallel().tp_size),
                    hf_export::moe_expert_global_names(expert_begins(*model)))
              : hf_export::export_hf_checkpoint(*model, job.model, staging.string(), eo);
      if (dctx.distributed()) options.world->barrier();
      if (rank0) {
        if (job.save_state) fs::rename(state_tmp, staging / "mqdist_state");
        const std::string job_text = job_json.dump(2) + "\n";
        io::write_file_atomic((staging / "mqdist_job.json").string(),
                              std::as_bytes(std::span(job_text.data(), job_text.size())));
        // Replace an existing output (allowed by "overwrite", checked in the plan) by renames.
        const fs::path old = job.output + ".old-" + std::to_string(token);
        const bool had = fs::exists(job.output);
        if (had) fs::rename(job.output, old);
        fs::rename(staging, job.output);
        std::error_code ec;
        if (had) fs::remove_all(old, ec);
      }
      if (dctx.distributed()) options.world->barrier();
      out << "exported " << rep.num_tensors << " tensors ("
          << fmt("%.2f MB", static_cast<double>(rep.total_bytes) / 1e6) << ", quant_algo "
          << (rep.quant_algo.empty() ? "none" : rep.quant_algo)
          << (rep.kv_cache_quant_algo.empty() ? std::string()
                                              : ", kv_cache " + rep.kv_cache_quant_algo)
          << ") to " << job.output << " in " << fmt("%.1f s", seconds_since(t0)) << "\n";
      result.export_dir = job.output;
    } catch (...) {
      std::error_code ec;
      if (rank0) {
        fs::remove_all(state_tmp, ec);
        fs::remove_all(staging, ec);
      }
      throw;
    }
  }
  if (dctx.distributed()) {
    const auto peaks =
        options.world->all_gather_int64(static_cast<int64_t>(detail::peak_host_bytes()));
    out << "peak host memory per rank:";
    for (size_t r = 0; r < peaks.size(); ++r)
      out << (r ? ", " : " ") << fmt("%.0f MB", static_cast<double>(peaks[r]) / 1e6);
    out << "\n";
    if (device.is_cuda()) {
      const auto dev =
          options.world->all_gather_int64(static_cast<int64_t>(detail::peak_device_bytes(device)));
      out << "peak device memory per rank:";
      for (size_t r = 0; r < dev.size(); ++r)
        out << (r ? ", " : " ") << fmt("%.0f MB", static_cast<double>(dev[r]) / 1e6);
      out << "\n";
    }
  } else {
    out << "peak host memory: "
        << fmt("%.0f MB", static_cast<double>(detail::peak_host_bytes()) / 1e6)
        << (device.is_cuda()
                ? ", device " +
                      fmt("%.0f MB", static_cast<double>(detail::peak_device_bytes(device)) / 1e6)
                : std::string())
        << "\n";
  }
  out << "done in " << fmt("%.1f s", seconds_since(t_start)) << "\n";
  return result;
}

}  // namespace mq::job
