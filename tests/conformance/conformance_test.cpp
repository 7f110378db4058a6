// Conformance of mq::quant::TensorQuantizer with NVIDIA ModelOpt 0.47.0, bit for bit.
//
// Data: tests/conformance/golden/manifest.json (ModelOpt run on CPU) and manifest_cuda.json
// (ModelOpt run on an H100: NVFP4 Triton path, static NVFP4, MX), written by gen_golden.py next to
// this file. One parameterised test per manifest case: the case's attribute config goes through the
// config parser, mqdist's quantizer runs ModelOpt's state machine on the stored input (max
// calibration when the case says so, a loaded amax, or none), and its output and buffers must equal
// the stored ones exactly: same dtype, same shape, same bits (NaN only matches NaN; -0 only matches
// -0).
//
// Which stored tensor the output must equal is data, not code: `expect[device]` of the case. It is
// ModelOpt's `output` except where ModelOpt's result is not the intended arithmetic (the manifest's
// `annotation` says why: Triton's approximate division at E2M1 ties, the NVFP4 block-32 Triton bug,
// ModelOpt's CPU-vs-CUDA FP8 scale rounding).
//
// CUDA replay: golden/manifest_cuda_replay.json (gen_golden.py --device cuda --replay-cpu-manifest)
// holds ModelOpt's results for every CPU case of manifest.json run on CUDA tensors (same stored
// input, loaded amax, config and calibration). Where it is present and CUDA is available, each CPU
// case also runs on CUDA tensors against that golden, bit for bit. MQ_CONFORMANCE_REPLAY=<path>
// names another replay manifest (e.g. one written with --device cpu, which then runs on CPU: a
// self-check of the mechanism); without the file or without CUDA the suite is the CPU + GPU-golden
// one.
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "mq/config/json.hpp"
#include "mq/io/safetensors_torch.hpp"
#include "mq/quant/sequential_quantizer.hpp"
#include "mq/quant/tensor_quantizer.hpp"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const fs::path kGoldenDir = fs::path(MQ_SOURCE_DIR) / "tests" / "conformance" / "golden";
const char* const kManifests[] = {"manifest.json", "manifest_cuda.json"};
const char* const kReplayManifest = "manifest_cuda_replay.json";

struct Case {
  std::string manifest;  // file name inside golden/
  size_t index = 0;      // position in its "cases" array
  json spec;             // the case object
  std::string test_name;
  fs::path dir = kGoldenDir;  // directory the case's tensor files are relative to
};

json read_json(const fs::path& p) {
  std::ifstream in(p);
  if (!in) throw std::runtime_error(p.string() + ": cannot open");
  return json::parse(in);
}

std::string sanitize(const std::string& id) {
  std::string s;
  for (char c : id) s += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
  return s;
}

// Loaded once per process at test registration; a missing manifest yields no cases, which the
// ConformanceManifest tests below turn into a failure.
const std::vector<Case>& all_cases() {
  static const std::vector<Case> cases = [] {
    std::vector<Case> out;
    for (const char* m : kManifests) {
      const fs::path p = kGoldenDir / m;
      if (!fs::exists(p)) continue;
      const json doc = read_json(p);
      const std::string prefix = std::string(m) == "manifest.json" ? "cpu_" : "gpu_";
      for (size_t i = 0; i < doc.at("cases").size(); ++i) {
        const json& c = doc["cases"][i];
        out.push_back({m, i, c, prefix + sanitize(c.at("id").get<std::string>())});
      }
    }
    return out;
  }();
  return cases;
}

// Golden safetensors files, loaded on first use and kept for the rest of the process.
const std::map<std::string, at::Tensor>& golden_file(const fs::path& path) {
  static std::mutex mu;
  static std::map<std::string, std::map<std::string, at::Tensor>> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(path.string());
  if (it == cache.end())
    it = cache.emplace(path.string(), mq::io::load_safetensors(path.string())).first;
  return it->second;
}

// A tensor role of a case: "key" (in the case's "file") or, in the replay manifest,
// {"file": ..., "key": ...} (a result equal to the CPU golden references the CPU file). Files are
// relative to the manifest's directory, else to golden/ (a replay manifest written elsewhere).
at::Tensor golden(const Case& c, const std::string& role) {
  const json& keys = c.spec.at("tensors");
  if (!keys.contains(role))
    throw std::runtime_error(c.spec["id"].get<std::string>() + ": no tensor role " + role);
  const json& ref = keys[role];
  const std::string rel =
      ref.is_object() ? ref.at("file").get<std::string>() : c.spec.at("file").get<std::string>();
  const std::string key =
      ref.is_object() ? ref.at("key").get<std::string>() : ref.get<std::string>();
  const fs::path p = fs::exists(c.dir / rel) ? c.dir / rel : kGoldenDir / rel;
  const auto& file = golden_file(p);
  const auto it = file.find(key);
  if (it == file.end()) throw std::runtime_error(p.string() + " lacks " + key);
  return it->second;
}

fs::path replay_manifest_path() {
  const char* env = std::getenv("MQ_CONFORMANCE_REPLAY");
  return env && *env ? fs::path(env) : kGoldenDir / kReplayManifest;
}

// The replay manifest (if present): its device and its cases by CPU case id.
struct Replay {
  bool present = false;
  std::string device;
  json doc;
  std::map<std::string, Case> by_id;
};

const Replay& replay() {
  static const Replay r = [] {
    Replay out;
    const fs::path p = replay_manifest_path();
    if (!fs::exists(p)) return out;
    out.present = true;
    out.doc = read_json(p);
    out.device = out.doc.at("device").get<std::string>();
    const json& cases = out.doc.at("cases");
    for (size_t i = 0; i < cases.size(); ++i) {
      const std::string id = cases[i].at("id").get<std::string>();
      out.by_id.emplace(
          id, Case{kReplayManifest, i, cases[i], "replay_" + sanitize(id), p.parent_path()});
    }
    return out;
  }();
  return r;
}

std::string bits_hex(const at::Tensor& t, int64_t i) {
  const at::Tensor e = t.reshape({-1})[i].contiguous();
  const auto* p = static_cast<const unsigned char*>(e.data_ptr());
  std::ostringstream s;
  s << "0x";
  for (int64_t b = static_cast<int64_t>(e.element_size()) - 1; b >= 0; --b) {
    static const char* hex = "0123456789abcdef";
    s << hex[p[b] >> 4] << hex[p[b] & 15];
  }
  return s.str();
}

// Bit-exact comparison (NaN payloads ignored). Returns "" when equal, else a description of the
// first differences.
std::string compare_exact(const at::Tensor& got_in, const at::Tensor& want_in,
                          const std::string& what) {
  if (!got_in.defined()) return what + ": missing in mqdist";
  const at::Tensor got = got_in.detach().cpu().contiguous();
  const at::Tensor want = want_in.contiguous();
  std::ostringstream msg;
  if (got.scalar_type() != want.scalar_type()) {
    msg << what << ": dtype " << got.scalar_type() << ", ModelOpt " << want.scalar_type();
    return msg.str();
  }
  if (got.sizes() != want.sizes()) {
    msg << what << ": shape " << got.sizes() << ", ModelOpt " << want.sizes();
    return msg.str();
  }
  at::Tensor bad;
  if (at::isFloatingType(want.scalar_type())) {
    const at::Tensor g = got.to(at::kDouble), w = want.to(at::kDouble);
    const at::Tensor both_nan = at::isnan(g) & at::isnan(w);
    bad = ((g != w) | (at::signbit(g) != at::signbit(w))) & ~both_nan;
  } else {
    bad = got != want;
  }
  const int64_t n = bad.sum().item<int64_t>();
  if (n == 0) return "";
  msg << what << ": " << n << " of " << want.numel() << " elements differ";
  if (at::isFloatingType(want.scalar_type())) {
    const at::Tensor g = got.to(at::kDouble), w = want.to(at::kDouble);
    if (((g != w) & ~(at::isnan(g) & at::isnan(w))).sum().item<int64_t>() == 0)
      msg << " (only the sign of zero)";
  }
  const at::Tensor idx = at::nonzero(bad.reshape({-1})).reshape({-1});
  for (int64_t k = 0; k < std::min<int64_t>(idx.numel(), 5); ++k) {
    const int64_t i = idx[k].item<int64_t>();
    msg << "\n    [" << i << "] mqdist " << got.reshape({-1})[i].to(at::kDouble).item<double>()
        << " (" << bits_hex(got, i) << "), ModelOpt "
        << want.reshape({-1})[i].to(at::kDouble).item<double>() << " (" << bits_hex(want, i) << ")";
  }
  return msg.str();
}

std::vector<mq::config::QuantizerAttributeConfig> parse_cfgs(const Case& c) {
  const json& cfg = c.spec.at("cfg");
  const mq::config::ErrorContext ctx{c.manifest, "cases[" + std::to_string(c.index) + "].cfg"};
  std::vector<mq::config::QuantizerAttributeConfig> out;
  if (cfg.is_array()) {
    for (size_t i = 0; i < cfg.size(); ++i)
      out.push_back(mq::config::parse_quantizer_attribute(cfg[i], ctx.index(i)));
  } else {
    out.push_back(mq::config::parse_quantizer_attribute(cfg, ctx));
  }
  return out;
}

// ModelOpt's enable_stats_collection / finish_stats_collection for the stages of one quantizer
// (all stages calibrate at once on the raw input), then promote_static_block_weight_quantizers.
void max_calibrate(std::vector<mq::quant::TensorQuantizer*> stages,
                   const std::function<void()>& forward) {
  for (auto* q : stages) {
    if (!q->is_enabled()) continue;
    if (q->use_constant_amax() || q->constant_amax()) {
      q->disable_quant();
    } else if (q->calibrator() != nullptr) {
      q->disable_quant();
      q->enable_calib();
    } else {
      q->disable();
    }
  }
  forward();
  for (auto* q : stages) {
    if (!q->is_enabled()) continue;
    if (q->use_constant_amax() || q->constant_amax()) {
      q->enable_quant();
      continue;
    }
    if (q->calibrator() != nullptr && !q->is_dynamic() && q->calibrator()->has_data())
      q->load_calib_amax();
    if (q->bias() && q->bias_calibrator() != nullptr &&
        q->bias()->type.value_or("static") == "static")
      q->load_calib_bias();
    q->enable_quant();
    q->disable_calib();
  }
  for (auto* q : stages) {
    if (q->is_enabled() && q->is_static_block_quant() && q->is_nvfp4_static() &&
        q->has_amax_buffer()) {
      q->promote_to_static_block_scale(q->amax_buffer().abs().max().to(at::kFloat));
    }
  }
}

// gtest prints the parameter of a failed test; the case id is what a reader needs.
void PrintTo(const Case& c, std::ostream* os) {
  *os << c.manifest << ":" << c.spec.at("id").get<std::string>();
}

class ModelOptConformance : public ::testing::TestWithParam<Case> {};

void run_case(const Case& c, const std::string& device) {
  const json& s = c.spec;
  SCOPED_TRACE(c.manifest + " " + s.at("id").get<std::string>() + " on " + device);
  const std::vector<mq::config::QuantizerAttributeConfig> cfgs = parse_cfgs(c);
  const at::Device dev = device == "cuda" ? at::Device(at::kCUDA) : at::Device(at::kCPU);
  const at::Tensor x = golden(c, "input").to(dev);
  const std::string mode = s.at("amax_source").get<std::string>();
  const bool real = s.at("kind").get<std::string>() == "real_quant";

  std::vector<mq::quant::TensorQuantizer> owned;
  for (const auto& cfg : cfgs) owned.emplace_back(cfg);
  std::unique_ptr<mq::quant::SequentialQuantizer> seq;
  std::vector<mq::quant::TensorQuantizer*> stages;
  if (cfgs.size() > 1) {
    seq = std::make_unique<mq::quant::SequentialQuantizer>(std::move(owned));
    for (size_t i = 0; i < seq->size(); ++i) stages.push_back(&(*seq)[i]);
  } else {
    stages.push_back(&owned[0]);
  }
  auto forward = [&](const at::Tensor& in) {
    return seq ? seq->forward(in) : stages[0]->forward(in);
  };

  if (mode == "calibrated") {
    max_calibrate(stages, [&] { forward(x); });
  } else if (mode == "loaded") {
    ASSERT_EQ(stages.size(), 1u);
    stages[0]->set_amax(golden(c, "_amax").to(dev));
  }
  const at::Tensor y = forward(x);

  const std::string expect_role =
      s.at("expect").at(device == "cuda" ? "cuda" : "cpu").get<std::string>();
  std::vector<std::string> failures;
  auto check = [&](const at::Tensor& got, const std::string& role) {
    std::string m = compare_exact(got, golden(c, role), role);
    if (!m.empty()) failures.push_back(m);
  };

  if (real) {
    const auto& qt = stages[0]->last_qtensor();
    ASSERT_TRUE(qt.has_value()) << "fake_quant=false forward kept no QTensor";
    check(qt->data, "quantized_data");
    if (s["tensors"].contains("dequantized")) check(y, "dequantized");
  } else {
    check(y, expect_role);
    if (!failures.empty()) {
      // Say which other stored result mqdist reproduces instead (e.g. ModelOpt's CUDA kernel rather
      // than its CPU path): that names the rounding step that differs.
      for (const auto& [role, key] : s.at("tensors").items()) {
        (void)key;
        if (role.rfind("output", 0) == 0 && role != expect_role &&
            compare_exact(y, golden(c, role), role).empty()) {
          failures.push_back("mqdist equals the stored " + role + " instead");
        }
      }
    }
  }
  // Quantizer buffers after the run: "_amax", "_global_amax", "_bias_value", "_scale", ...; stage i
  // of a SequentialQuantizer as "i._amax".
  for (const auto& [role, key] : s.at("tensors").items()) {
    (void)key;
    size_t stage = 0;
    std::string name = role;
    if (role.size() > 2 && std::isdigit(static_cast<unsigned char>(role[0])) && role[1] == '.') {
      stage = static_cast<size_t>(role[0] - '0');
      name = role.substr(2);
    }
    if (name.empty() || name[0] != '_') continue;
    ASSERT_LT(stage, stages.size()) << role;
    const auto buffers = stages[stage]->named_buffers();
    const auto it = buffers.find(name);
    const at::Tensor got = it == buffers.end() ? at::Tensor() : it->second;
    if (name == "_bias_value" && c.manifest == "manifest_cuda.json" && device == "cpu" &&
        got.defined()) {
      // Named tolerance (the only one in this suite): ModelOpt's static affine bias of the GPU
      // goldens is torch's CUDA mean, whose summation order (interleaved partial sums, then a
      // multiply by fp32(1/n)) mqdist's mean does not reproduce; see README item 8. The difference
      // is rounding of a sum, so it is bounded relative to the bias tensor's magnitude, not per
      // element (means near zero come from cancellation): |mqdist - ModelOpt| <= kBiasMeanRel *
      // max|ModelOpt|. The quantized output of these cases is still compared bit for bit above.
      constexpr double kBiasMeanRel = 16.0 * 1.1920928955078125e-07;  // 16 fp32 epsilons
      const at::Tensor want = golden(c, role).to(at::kDouble);
      const at::Tensor have = got.to(at::kCPU).to(at::kDouble);
      if (!have.sizes().equals(want.sizes())) {
        failures.push_back(role + ": shape differs");
      } else {
        const double scale = want.abs().max().item<double>();
        const double err = (have - want).abs().max().item<double>();
        if (!(err <= kBiasMeanRel * scale))
          failures.push_back(role + ": max |diff| " + std::to_string(err) + " exceeds 16 eps x " +
                             std::to_string(scale));
      }
      continue;
    }
    check(got, role);
  }
  if (!failures.empty()) {
    std::string all;
    for (const auto& f : failures) all += "\n  " + f;
    const std::string note = s.value("annotation", "");
    ADD_FAILURE() << "mismatch with ModelOpt (" << s.at("modelopt_path").get<std::string>() << ")"
                  << all << (note.empty() ? "" : "\n  manifest annotation: " + note);
  }
}

TEST_P(ModelOptConformance, BitExact) {
  const Case& c = GetParam();
  RecordProperty("modelopt_path", c.spec.at("modelopt_path").get<std::string>());
  run_case(c, "cpu");
  // On CUDA tensors only goldens ModelOpt itself produced on a GPU are a valid reference: a CPU
  // golden says nothing about ModelOpt's CUDA arithmetic (reciprocal scalar division, CUDA kernels
  // vs eager dispatch). GPU-only formats: manifest_cuda.json; CPU cases: their CUDA replay.
  if (c.manifest == "manifest_cuda.json") {
    if (at::hasCUDA()) run_case(c, "cuda");
    return;
  }
  const Replay& r = replay();
  const auto it = r.by_id.find(c.spec.at("id").get<std::string>());
  if (it == r.by_id.end()) return;
  if (r.device == "cuda" && !at::hasCUDA()) return;
  run_case(it->second, r.device);
}

INSTANTIATE_TEST_SUITE_P(Golden, ModelOptConformance, ::testing::ValuesIn(all_cases()),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return info.param.test_name;
                         });

// The data itself: both manifests present, produced by the pinned reference, and non-trivial.
TEST(ConformanceManifest, BothManifestsLoadedFromPinnedModelOpt) {
  for (const char* m : kManifests) {
    const fs::path p = kGoldenDir / m;
    ASSERT_TRUE(fs::exists(p)) << p;
    const json doc = read_json(p);
    EXPECT_EQ(doc.at("modelopt_version"), "0.47.0") << m;
    EXPECT_EQ(doc.at("torch_version").get<std::string>().substr(0, 6), "2.11.0") << m;
    EXPECT_GT(doc.at("cases").size(), 300u) << m;
    EXPECT_EQ(doc.at("num_cases").get<size_t>(), doc.at("cases").size()) << m;
  }
  std::set<std::string> names;
  for (const auto& c : all_cases())
    EXPECT_TRUE(names.insert(c.test_name).second) << "duplicate " << c.test_name;
}

// The CUDA replay (optional): pinned reference, and every CPU case either replayed or skipped with
// a reason (a replay case with no CPU case would never run).
TEST(ConformanceManifest, CudaReplayCoversTheCpuManifest) {
  const Replay& r = replay();
  if (!r.present) GTEST_SKIP() << replay_manifest_path() << " absent: CPU cases run on CPU only";
  EXPECT_EQ(r.doc.at("modelopt_version"), "0.47.0");
  EXPECT_EQ(r.doc.at("torch_version").get<std::string>().substr(0, 6), "2.11.0");
  EXPECT_EQ(r.doc.at("num_cases").get<size_t>(), r.doc.at("cases").size());
  const json cpu = read_json(kGoldenDir / "manifest.json");
  std::set<std::string> ids, skipped;
  for (const auto& c : cpu.at("cases")) ids.insert(c.at("id").get<std::string>());
  for (const auto& sk : r.doc.at("skipped")) {
    EXPECT_FALSE(sk.at("reason").get<std::string>().empty());
    skipped.insert(sk.at("case").get<std::string>());
  }
  for (const auto& [id, c] : r.by_id) {
    EXPECT_TRUE(ids.count(id)) << "replay case " << id << " is not in manifest.json";
    EXPECT_TRUE(c.spec.at("expect").contains(r.device)) << id;
  }
  for (const auto& id : ids)
    EXPECT_TRUE(r.by_id.count(id) || skipped.count(id)) << id << " neither replayed nor skipped";
}

// Every distinct preset quantizer config is either covered by a case or listed as skipped with a
// reason, so a new preset cannot silently escape the conformance suite.
TEST(ConformanceManifest, EveryPresetConfigCoveredOrExplained) {
  std::set<std::string> covered, skipped;
  for (const char* m : kManifests) {
    const json doc = read_json(kGoldenDir / m);
    for (const auto& c : doc.at("cases")) covered.insert(c.at("cfg_id").get<std::string>());
    for (const auto& sk : doc.at("skipped")) {
      EXPECT_FALSE(sk.at("reason").get<std::string>().empty());
      if (!sk.contains("case")) skipped.insert(sk.at("cfg_id").get<std::string>());
    }
  }
  for (const char* id : {"int8_pt",
                         "int8_axis0",
                         "fp8_pt",
                         "fp8_axis0",
                         "fp8_b128x128",
                         "int4_b128",
                         "seq_int4_b128__fp8_pt",
                         "fp8_pt_bias",
                         "fp8_ball_dyn",
                         "fp8_pt_constamax",
                         "nvfp4_b16",
                         "nvfp4_b32",
                         "nvfp4_static_b16",
                         "nvfp4_static_b16_4o6",
                         "nvfp4_b16_bias",
                         "nvfp4_b16_constamax",
                         "mxfp4_b32",
                         "mxfp6_e3m2_b32",
                         "mxfp8_b32",
                         "mxint8_b32"}) {
    EXPECT_TRUE(covered.count(id)) << id;
  }
  for (const auto& id : skipped) {
    EXPECT_TRUE(covered.count(id) || id == "nvfp4_b16_rot") << "config " << id << " has no case";
  }
}

}  // namespace
