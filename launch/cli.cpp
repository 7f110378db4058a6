// The command line: the only file that includes Boost.ProgramOptions. Options map onto the
// library's option structs here and nowhere else.
#include "cli.hpp"

#include <boost/program_options.hpp>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "mq/config/presets.hpp"
#include "mq/core/error.hpp"
#include "mq/core/version.hpp"
#include "mq/export/tensor_mode.hpp"
#include "mq/io/safetensors_torch.hpp"
#include "mq/job/job_config.hpp"
#include "mq/job/ptq_job.hpp"

namespace po = boost::program_options;

namespace mq::launch {

namespace {

constexpr const char* kUsage =
    "Usage:\n"
    "  mqdist --help | --version\n"
    "  mqdist --cfg <job.json> [--set key=value ...] [--dry-run] [--quiet]\n"
    "  mqdist tensor (--quantizer <PRESET>:<weight|input> | --attr '<attribute JSON>')\n"
    "                --in <in.safetensors> --out <out.safetensors> [--real] [--quiet]\n";

po::options_description tensor_options() {
  po::options_description d("tensor mode: quantize every tensor of a safetensors file");
  d.add_options()(
      "quantizer,q", po::value<std::string>(),
      "a preset (e.g. NVFP4_DEFAULT_CFG, or a config file) and which of its quantizers to use: "
      "weight or input, as for model.layers.0.mlp.up_proj")(
      "attr,a", po::value<std::string>(),
      "one quantizer attribute dict, e.g. '{\"num_bits\": 8, \"axis\": 0}' (a weight quantizer)")(
      "in,i", po::value<std::string>(), "input safetensors file")(
      "out,o", po::value<std::string>(), "output safetensors file (written atomically)")(
      "real", po::bool_switch(),
      "write ModelOpt's unified HF export tensors (packed weight, weight_scale, weight_scale_2, "
      "input_scale) instead of fake-quantized tensors plus <name>._amax")(
      "quiet", po::bool_switch(), "no per-tensor summary");
  return d;
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::ostringstream os;
  os << '(';
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  if (s.size() == 1) os << ',';
  os << ')';
  return os.str();
}

po::options_description job_options() {
  po::options_description d(
      "PTQ job: quantize an HF checkpoint (see configs/jobs/ and include/mq/job/job_config.hpp)");
  d.add_options()("cfg,c", po::value<std::string>(),
                  "job file (JSON): model, quant, kv_cache, algorithm, calib, eval, output, ...")(
      "set,s", po::value<std::vector<std::string>>()->composing(),
      "override a job key, e.g. --set calib.num_samples=32 --set quant=FP8_DEFAULT_CFG (value "
      "parsed as JSON "
      "when it is JSON, else a string; paths relative to the working directory)")(
      "dry-run", po::bool_switch(),
      "print the resolved job and plan, then stop (nothing loaded or written)")(
      "quiet", po::bool_switch(), "no per-quantizer summary");
  return d;
}

int run_job(const po::variables_map& vm, const dist::MpiComm* world) {
  std::vector<job::Override> overrides;
  if (vm.count("set"))
    for (const auto& s : vm["set"].as<std::vector<std::string>>())
      overrides.push_back(job::parse_override(s));
  const job::JobConfig cfg = job::load_job(vm["cfg"].as<std::string>(), overrides);
  job::RunOptions ro;
  ro.dry_run = vm["dry-run"].as<bool>();
  ro.quiet = vm["quiet"].as<bool>();
  ro.world = world;
  job::run_ptq_job(cfg, ro, std::cout);
  return 0;
}

void print_help() {
  std::cout << mq::version_string() << "\n\n"
            << kUsage << '\n'
            << job_options() << '\n'
            << tensor_options() << '\n';
  std::cout << "Presets (--quantizer <NAME>:weight|input):\n";
  std::string line = " ";
  for (const auto& n : mq::config::preset_names()) {
    if (line.size() + n.size() + 1 > 100) {
      std::cout << line << '\n';
      line = " ";
    }
    line += " " + n;
  }
  std::cout << line << '\n';
}

int run_tensor(const std::vector<std::string>& args) {
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(tensor_options()).run(), vm);
  po::notify(vm);
  MQ_CHECK_T(ConfigError, vm.count("quantizer") + vm.count("attr") == 1,
             "tensor: give exactly one of --quantizer <PRESET>:<weight|input> and --attr '<JSON>'");
  MQ_CHECK_T(ConfigError, vm.count("in"), "tensor: --in <file.safetensors> is required");
  MQ_CHECK_T(ConfigError, vm.count("out"), "tensor: --out <file.safetensors> is required");
  const auto in_path = vm["in"].as<std::string>(), out_path = vm["out"].as<std::string>();
  hf_export::TensorModeOptions opts;
  opts.real = vm["real"].as<bool>();

  const hf_export::QuantizerSpec spec =
      vm.count("quantizer") ? hf_export::parse_quantizer_spec(vm["quantizer"].as<std::string>())
                            : hf_export::attr_quantizer_spec(vm["attr"].as<std::string>());
  std::map<std::string, std::string> metadata;
  const auto inputs = io::load_safetensors(in_path, &metadata);
  hf_export::TensorModeResult result;
  try {
    result = hf_export::quantize_tensors(inputs, spec, opts);
  } catch (const Error& e) {
    MQ_THROW(Error, in_path, ": ", e.what());
  }
  metadata["mqdist"] = mq::version_string();
  metadata["mqdist.quantizer"] = spec.label;
  metadata["mqdist.mode"] = opts.real ? "real" : "fake";
  io::save_safetensors(out_path, result.tensors, metadata);

  if (!vm["quiet"].as<bool>()) {
    std::printf("%s: %s, %s -> %s (%zu tensors written)\n", in_path.c_str(), spec.label.c_str(),
                opts.real ? "HF export" : "fake quant", out_path.c_str(), result.tensors.size());
    if (!result.reports.empty())
      std::printf("quantizer (first tensor): %s\n", result.reports.front().format.c_str());
    std::printf("%-40s %-12s %-9s %-10s %-10s %s\n", "tensor", "shape", "dtype", "amax",
                "mean|err|", "SNR dB");
    for (const auto& r : result.reports) {
      char snr[32] = "inf";
      if (!std::isinf(r.snr_db)) std::snprintf(snr, sizeof snr, "%.2f", r.snr_db);
      std::printf("%-40s %-12s %-9s %-10.4g %-10.4g %s\n", r.name.c_str(),
                  shape_str(r.shape).c_str(), r.dtype.c_str(), r.amax, r.mean_abs_error, snr);
    }
  }
  return 0;
}

}  // namespace

int run_cli(int argc, char** argv, const dist::MpiComm* world) {
  po::options_description global("Options");
  global.add_options()("help,h", "this help")("version", "print the version");
  po::options_description hidden;
  hidden.add_options()("mode", po::value<std::string>())("args",
                                                         po::value<std::vector<std::string>>());
  po::options_description all;
  all.add(global).add(job_options()).add(hidden);
  po::positional_options_description pos;
  pos.add("mode", 1).add("args", -1);

  try {
    po::parsed_options parsed =
        po::command_line_parser(argc, argv).options(all).positional(pos).allow_unregistered().run();
    po::variables_map vm;
    po::store(parsed, vm);
    const bool has_mode = vm.count("mode") > 0;
    if (!has_mode) {
      // Options that belong to a mode, given without one, are an error rather than silence.
      for (const auto& o : parsed.options)
        MQ_CHECK_T(ConfigError, !o.unregistered, "unknown option '", o.original_tokens.at(0),
                   "' (modes: tensor; see --help)");
      if (vm.count("version")) {
        std::cout << mq::version_string() << '\n';
        return 0;
      }
      if (vm.count("help")) {
        print_help();
        return 0;
      }
      if (vm.count("cfg")) return run_job(vm, world);
      MQ_THROW(ConfigError, "nothing to do: give --cfg <job.json> or a mode (tensor); see --help");
    }
    const std::string mode = vm["mode"].as<std::string>();
    std::vector<std::string> rest =
        po::collect_unrecognized(parsed.options, po::include_positional);
    rest.erase(rest.begin());  // the mode itself
    if (vm.count("help")) {
      print_help();
      return 0;
    }
    MQ_CHECK_T(ConfigError, !vm.count("cfg") && !vm.count("set") && !vm["dry-run"].as<bool>(),
               "--cfg / --set / --dry-run run a PTQ job and take no mode ('", mode,
               "' given); see --help");
    // --quiet is shared by the job and the modes; the global parser has consumed it.
    if (vm["quiet"].as<bool>()) rest.push_back("--quiet");
    if (mode == "tensor") return run_tensor(rest);
    MQ_THROW(ConfigError, "unknown mode '", mode, "' (modes: tensor; see --help)");
  } catch (const po::error& e) {
    MQ_THROW(ConfigError, e.what(), " (see --help)");
  }
}

}  // namespace mq::launch
