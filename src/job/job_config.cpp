#include "mq/job/job_config.hpp"

#include <fstream>
#include <set>
#include <sstream>

#include "config/json_impl.hpp"
#include "mq/core/error.hpp"

namespace mq::job {

namespace {

using config::ErrorContext;
using ojson = nlohmann::ordered_json;
namespace cd = config::detail;
namespace fs = std::filesystem;

// Splits "calib.num_samples" into its components; empty components are an error.
std::vector<std::string> split_key(const std::string& key, const std::string& arg) {
  std::vector<std::string> parts;
  std::string cur;
  for (char c : key + ".") {
    if (c != '.') {
      cur += c;
      continue;
    }
    MQ_CHECK_T(ConfigError, !cur.empty(), "--set ", arg, ": empty component in key '", key, "'");
    parts.push_back(cur);
    cur.clear();
  }
  return parts;
}

void apply_override(ojson& doc, const Override& o, std::set<std::string>& overridden) {
  const std::string arg = o.key + "=" + o.value;
  ojson* node = &doc;
  const auto parts = split_key(o.key, arg);
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    ojson& next = (*node)[parts[i]];
    if (next.is_null()) next = ojson::object();
    MQ_CHECK_T(ConfigError, next.is_object(), "--set ", arg, ": '", parts[i],
               "' is not an object in the job");
    node = &next;
  }
  ojson value = ojson::parse(o.value, nullptr, /*allow_exceptions=*/false);
  if (value.is_discarded()) value = o.value;
  (*node)[parts.back()] = std::move(value);
  overridden.insert(o.key);
}

std::string resolve_path(const std::string& p, const std::string& key, const fs::path& base_dir,
                         const std::set<std::string>& overridden) {
  fs::path path(p);
  if (path.is_absolute() || overridden.count(key)) return path.lexically_normal().string();
  return (base_dir / path).lexically_normal().string();
}

DataSpec parse_data(const ojson& j, const ErrorContext& ctx, bool is_eval,
                    const std::string& prefix, const fs::path& base_dir,
                    const std::set<std::string>& overridden) {
  cd::get_object(j, ctx, is_eval ? "an eval data spec" : "a calibration data spec");
  std::vector<std::string> allowed = {"path", "format", "text_field", "seq_len", "batch_size"};
  if (is_eval) {
    allowed.push_back("max_windows");
  } else {
    allowed.insert(allowed.end(), {"num_samples", "seed"});
  }
  cd::reject_unknown_keys(j, ctx, allowed, is_eval ? "eval" : "calib");
  DataSpec d;
  MQ_CHECK_T(ConfigError, j.contains("path"), ctx.where(), ": 'path' is required");
  d.path = resolve_path(cd::get_string(j["path"], ctx.key("path")), prefix + ".path", base_dir,
                        overridden);
  if (j.contains("format"))
    d.format = cd::get_enum(j["format"], ctx.key("format"), {"auto", "txt", "jsonl", "ids"});
  if (j.contains("text_field"))
    d.text_field = cd::get_string(j["text_field"], ctx.key("text_field"));
  auto positive = [&](const char* k, int64_t& out) {
    if (!j.contains(k)) return;
    out = cd::get_int(j[k], ctx.key(k));
    if (out <= 0) ctx.key(k).fail(std::to_string(out) + " must be > 0");
  };
  positive("seq_len", d.seq_len);
  positive("batch_size", d.batch_size);
  if (d.seq_len < 2) ctx.key("seq_len").fail(std::to_string(d.seq_len) + " must be >= 2");
  if (is_eval) {
    if (j.contains("max_windows")) {
      d.max_windows = cd::get_int(j["max_windows"], ctx.key("max_windows"));
      if (d.max_windows < 0)
        ctx.key("max_windows").fail(std::to_string(d.max_windows) + " must be >= 0");
    }
  } else {
    positive("num_samples", d.num_samples);
    if (j.contains("seed")) {
      const int64_t s = cd::get_int(j["seed"], ctx.key("seed"));
      if (s < 0) ctx.key("seed").fail(std::to_string(s) + " must be >= 0");
      d.seed = static_cast<uint64_t>(s);
    }
  }
  return d;
}

ojson data_json(const DataSpec& d, bool is_eval) {
  ojson j;
  j["path"] = d.path;
  j["format"] = d.format;
  j["text_field"] = d.text_field;
  if (!is_eval) j["num_samples"] = d.num_samples;
  j["seq_len"] = d.seq_len;
  j["batch_size"] = d.batch_size;
  if (is_eval) j["max_windows"] = d.max_windows;
  if (!is_eval) j["seed"] = d.seed;
  return j;
}

}  // namespace

Override parse_override(const std::string& arg) {
  const auto eq = arg.find('=');
  MQ_CHECK_T(ConfigError, eq != std::string::npos && eq > 0, "--set ", arg, ": expected key=value");
  return {arg.substr(0, eq), arg.substr(eq + 1)};
}

JobConfig parse_job(ojson doc, const std::string& source, const fs::path& base_dir,
                    const std::vector<Override>& overrides) {
  MQ_CHECK_T(ConfigError, doc.is_object(), source, ": $: a job is a JSON object, got ",
             cd::show(doc));
  std::set<std::string> overridden;
  for (const auto& o : overrides) apply_override(doc, o, overridden);

  const ErrorContext root{source, ""};
  cd::reject_unknown_keys(
      doc, root,
      {"model", "quant", "kv_cache", "algorithm", "calib", "eval", "output", "overwrite", "dtype",
       "device", "export", "save_state", "restore_state", "parallel"},
      "a job");
  JobConfig job;
  job.source = source;
  for (const char* k : {"model", "quant"})
    if (!doc.contains(k)) root.key(k).fail("is required");
  job.model =
      resolve_path(cd::get_string(doc["model"], root.key("model")), "model", base_dir, overridden);

  const ojson& quant = doc["quant"];
  if (!quant.is_string() && !quant.is_object())
    root.key("quant").fail(cd::show(quant) +
                           " is neither a preset name / config path nor a config object");
  job.quant = quant;
  // A quant config given as a file path (not a preset name) resolves like every other job path.
  if (quant.is_string()) {
    const std::string q = quant.get<std::string>();
    if (q.find('/') != std::string::npos || q.ends_with(".json") || q.ends_with(".yaml") ||
        q.ends_with(".yml")) {
      const std::string resolved = resolve_path(q, "quant", base_dir, overridden);
      if (fs::exists(resolved)) job.quant = resolved;
    }
  }
  if (doc.contains("kv_cache") && !doc["kv_cache"].is_null()) {
    const ojson& kv = doc["kv_cache"];
    if (!kv.is_string() && !kv.is_object())
      root.key("kv_cache")
          .fail(cd::show(kv) + " is neither a preset name / config path nor a config object");
    job.kv_cache = kv;
  }
  if (doc.contains("algorithm") && !doc["algorithm"].is_null())
    job.algorithm = cd::get_string(doc["algorithm"], root.key("algorithm"));
  if (doc.contains("calib") && !doc["calib"].is_null())
    job.calib = parse_data(doc["calib"], root.key("calib"), false, "calib", base_dir, overridden);
  if (doc.contains("eval") && !doc["eval"].is_null())
    job.eval = parse_data(doc["eval"], root.key("eval"), true, "eval", base_dir, overridden);
  if (doc.contains("output"))
    job.output = resolve_path(cd::get_string(doc["output"], root.key("output")), "output", base_dir,
                              overridden);
  if (doc.contains("overwrite"))
    job.overwrite = cd::get_bool(doc["overwrite"], root.key("overwrite"));
  if (doc.contains("dtype"))
    job.dtype =
        cd::get_enum(doc["dtype"], root.key("dtype"), {"auto", "bfloat16", "float16", "float32"});
  if (doc.contains("device"))
    job.device = cd::get_enum(doc["device"], root.key("device"), {"cpu", "cuda"});
  if (doc.contains("export")) job.do_export = cd::get_bool(doc["export"], root.key("export"));
  if (doc.contains("save_state"))
    job.save_state = cd::get_bool(doc["save_state"], root.key("save_state"));
  if (doc.contains("restore_state") && !doc["restore_state"].is_null())
    job.restore_state =
        resolve_path(cd::get_string(doc["restore_state"], root.key("restore_state")),
                     "restore_state", base_dir, overridden);
  if (doc.contains("parallel") && !doc["parallel"].is_null()) {
    const ErrorContext ctx = root.key("parallel");
    const ojson& p = doc["parallel"];
    cd::get_object(p, ctx, "a parallel layout");
    cd::reject_unknown_keys(p, ctx, {"tp", "ep", "reduction_chunks", "nccl", "timeout_s"},
                            "parallel");
    auto size = [&](const char* k, int64_t& out, int64_t min) {
      if (!p.contains(k)) return;
      out = cd::get_int(p[k], ctx.key(k));
      if (out < min) ctx.key(k).fail(std::to_string(out) + " must be >= " + std::to_string(min));
    };
    size("tp", job.parallel.tp, 1);
    size("ep", job.parallel.ep, 1);
    size("reduction_chunks", job.parallel.reduction_chunks, 0);
    if (job.parallel.reduction_chunks % job.parallel.tp != 0)
      ctx.key("reduction_chunks")
          .fail(std::to_string(job.parallel.reduction_chunks) +
                " is not a multiple of tp = " + std::to_string(job.parallel.tp));
    if (p.contains("timeout_s")) {
      job.parallel.timeout_s = cd::get_number(p["timeout_s"], ctx.key("timeout_s"));
      if (!(job.parallel.timeout_s >= 0))
        ctx.key("timeout_s").fail(cd::show(p["timeout_s"]) + " must be >= 0");
    }
    if (p.contains("nccl"))
      job.parallel.nccl = cd::get_enum(p["nccl"], ctx.key("nccl"), {"auto", "on", "off"});
  }
  if (job.do_export && job.output.empty())
    root.key("output").fail("is required when \"export\" is true");
  return job;
}

JobConfig load_job(const fs::path& file, const std::vector<Override>& overrides) {
  std::ifstream in(file);
  MQ_CHECK_T(IoError, in.good(), file.string(), ": cannot open job file");
  std::stringstream ss;
  ss << in.rdbuf();
  ojson doc;
  try {
    doc = ojson::parse(ss.str());
  } catch (const nlohmann::json::parse_error& e) {
    MQ_THROW(ConfigError, file.string(), ": not valid JSON: ", e.what());
  }
  fs::path base = file.parent_path();
  if (base.empty()) base = ".";
  return parse_job(std::move(doc), file.string(), fs::absolute(base), overrides);
}

ojson to_json(const JobConfig& job) {
  ojson j;
  j["model"] = job.model;
  j["quant"] = job.quant;
  if (job.kv_cache) j["kv_cache"] = *job.kv_cache;
  if (job.algorithm) j["algorithm"] = *job.algorithm;
  if (job.calib) j["calib"] = data_json(*job.calib, false);
  if (job.eval) j["eval"] = data_json(*job.eval, true);
  j["output"] = job.output;
  j["overwrite"] = job.overwrite;
  j["dtype"] = job.dtype;
  j["device"] = job.device;
  j["export"] = job.do_export;
  j["save_state"] = job.save_state;
  if (job.restore_state) j["restore_state"] = *job.restore_state;
  j["parallel"] = {{"tp", job.parallel.tp},
                   {"ep", job.parallel.ep},
                   {"reduction_chunks", job.parallel.reduction_chunks},
                   {"nccl", job.parallel.nccl},
                   {"timeout_s", job.parallel.timeout_s}};
  return j;
}

}  // namespace mq::job
