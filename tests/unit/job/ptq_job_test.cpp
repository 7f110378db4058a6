// The main job end to end on committed checkpoints: tests/models/tiny/llama with pre-tokenized data
// (fast), and the embedded mq-tiny-dense for the perplexity golden from transformers.
#include "mq/job/ptq_job.hpp"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "mq/core/error.hpp"
#include "mq/data/dataset.hpp"
#include "mq/data/tokenizer.hpp"
#include "mq/io/safetensors_torch.hpp"
#include "mq/job/job_config.hpp"
#include "mq/models/causal_lm.hpp"

namespace {

namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;
const std::string kSrc = MQ_SOURCE_DIR;

class PtqJob : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("mq_ptq_job_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    // 16 pre-tokenized samples of 32 ids in [0, 200) (the tiny llama's vocab), fixed seed.
    std::mt19937 rng(7);
    std::ofstream f(dir_ / "ids.jsonl");
    for (int s = 0; s < 16; ++s) {
      ojson ids = ojson::array();
      for (int i = 0; i < 32; ++i) ids.push_back(static_cast<int>(rng() % 200));
      f << ojson{{"input_ids", ids}}.dump() << "\n";
    }
  }
  void TearDown() override { fs::remove_all(dir_); }

  ojson job_doc(const std::string& quant, const std::string& out) const {
    ojson j;
    j["model"] = kSrc + "/tests/models/tiny/llama";
    j["quant"] = quant;
    j["calib"] = {{"path", (dir_ / "ids.jsonl").string()},
                  {"num_samples", 8},
                  {"seq_len", 32},
                  {"batch_size", 4}};
    j["eval"] = {{"path", (dir_ / "ids.jsonl").string()}, {"seq_len", 32}};
    j["output"] = (dir_ / out).string();
    return j;
  }
  mq::job::JobResult run(const ojson& doc, std::string* log = nullptr, bool dry = false) const {
    std::ostringstream os;
    mq::job::RunOptions ro;
    ro.dry_run = dry;
    auto r = mq::job::run_ptq_job(mq::job::parse_job(doc, "job.json", dir_), ro, os);
    if (log) *log = os.str();
    return r;
  }
  std::string error_of(const ojson& doc) const {
    try {
      run(doc);
    } catch (const mq::Error& e) {
      return e.what();
    }
    return "<no error>";
  }
  fs::path dir_;
};

TEST_F(PtqJob, QuantizesEvaluatesAndExports) {
  std::string log;
  const auto r = run(job_doc("FP8_DEFAULT_CFG", "fp8"), &log);
  ASSERT_TRUE(r.ppl_before && r.ppl_after);
  // Random ids on a random model: perplexity near the vocab size, and FP8 changes it a little.
  EXPECT_GT(*r.ppl_before, 100.0);
  EXPECT_LT(*r.ppl_before, 400.0);
  EXPECT_NE(*r.ppl_before, *r.ppl_after);
  EXPECT_NEAR(*r.ppl_after / *r.ppl_before, 1.0, 0.05);
  EXPECT_EQ(r.calib_batches, 2);
  EXPECT_EQ(r.eval_tokens, 16 * 31);
  for (const char* f :
       {"model.safetensors", "hf_quant_config.json", "config.json", "mqdist_job.json",
        "mqdist_state/quantizer_state.json", "mqdist_state/quantizer_state.safetensors"})
    EXPECT_TRUE(fs::exists(dir_ / "fp8" / f)) << f;
  EXPECT_NE(log.find("quality: perplexity"), std::string::npos);
  EXPECT_NE(log.find("TensorQuantizers found in model"), std::string::npos);
  std::ifstream hq(dir_ / "fp8" / "hf_quant_config.json");
  EXPECT_EQ(ojson::parse(hq)["quantization"]["quant_algo"], "FP8");
  // No temporaries left next to the export.
  for (const auto& e : fs::directory_iterator(dir_))
    EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << e.path();
}

TEST_F(PtqJob, RestoredStateReExportsIdentically) {
  run(job_doc("FP8_DEFAULT_CFG", "a"));
  ojson j = job_doc("FP8_DEFAULT_CFG", "b");
  j.erase("calib");
  j["restore_state"] = (dir_ / "a" / "mqdist_state").string();
  std::string log;
  run(j, &log);
  EXPECT_NE(log.find("restored quantizer state"), std::string::npos);
  const auto a = mq::io::load_safetensors((dir_ / "a" / "model.safetensors").string());
  const auto b = mq::io::load_safetensors((dir_ / "b" / "model.safetensors").string());
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, t] : a) {
    ASSERT_TRUE(b.count(name)) << name;
    EXPECT_TRUE(at::equal(t, b.at(name))) << name;
  }
}

TEST_F(PtqJob, DryRunReadsNoWeightsAndWritesNothing) {
  std::string log;
  run(job_doc("NVFP4_DEFAULT_CFG", "dry"), &log, /*dry=*/true);
  EXPECT_NE(log.find("dry run: nothing loaded, nothing written"), std::string::npos);
  EXPECT_NE(log.find("NVFP4_DEFAULT_CFG (algorithm max)"), std::string::npos);
  EXPECT_FALSE(fs::exists(dir_ / "dry"));
}

TEST_F(PtqJob, BadJobsFailBeforeTouchingTheOutput) {
  // An algorithm mqdist does not implement yet is named, with the way out.
  EXPECT_NE(error_of(job_doc("INT4_AWQ_CFG", "x"))
                .find("job.json: quant: calibration algorithm 'awq_lite'"),
            std::string::npos);
  // Overriding the algorithm makes the same preset calibrate; the tiny model's 64-wide layers
  // cannot be exported as INT4 blocks of 128, which fails cleanly (module named, no export dir
  // left).
  ojson j = job_doc("INT4_AWQ_CFG", "x");
  j["algorithm"] = "max";
  EXPECT_NE(error_of(j).find("model.layers.0.self_attn.q_proj.weight: cannot export as int4_awq"),
            std::string::npos);
  EXPECT_FALSE(fs::exists(dir_ / "x"));
  // A config that calibrates activations needs data.
  j = job_doc("FP8_DEFAULT_CFG", "y");
  j.erase("calib");
  EXPECT_NE(error_of(j).find("job.json: calib: is required"), std::string::npos);
  EXPECT_FALSE(fs::exists(dir_ / "y"));
  // ... a weight-only one does not.
  j = job_doc("INT8_WEIGHT_ONLY_CFG", "w");
  j.erase("calib");
  j["eval"] = nullptr;
  EXPECT_EQ(error_of(j), "<no error>");
  EXPECT_TRUE(fs::exists(dir_ / "w" / "model.safetensors"));
  // An existing export is not replaced without "overwrite".
  EXPECT_NE(error_of(job_doc("FP8_DEFAULT_CFG", "w")).find("job.json: output: "),
            std::string::npos);
  EXPECT_TRUE(fs::exists(dir_ / "w" / "model.safetensors"));
  // Unknown preset, missing model, missing data file.
  EXPECT_NE(error_of(job_doc("NO_SUCH_CFG", "z")).find("job.json: quant: "), std::string::npos);
  j = job_doc("FP8_DEFAULT_CFG", "z");
  j["model"] = (dir_ / "nomodel").string();
  EXPECT_NE(error_of(j).find("config.json"), std::string::npos);
  j = job_doc("FP8_DEFAULT_CFG", "z");
  j["calib"]["path"] = (dir_ / "none.jsonl").string();
  EXPECT_NE(error_of(j).find("job.json: calib.path: "), std::string::npos);
  EXPECT_FALSE(fs::exists(dir_ / "z"));
}

// The C++ forward + perplexity on the embedded model equal transformers' (ppl_reference.json, made
// by tools/train/make_reference.py: fp32 on CPU, no BOS, 64 windows of 256, first token unscored).
TEST(PtqJobReference, EmbeddedModelPerplexityMatchesTransformers) {
  for (const char* name : {"mq-tiny-dense", "mq-tiny-moe"}) {
    const std::string dir = kSrc + "/assets/models/" + name;
    std::ifstream rf(dir + "/ppl_reference.json");
    const ojson ref = ojson::parse(rf);
    at::NoGradGuard no_grad;
    const auto tok = mq::data::Tokenizer::from_file(dir + "/tokenizer.json");
    std::ifstream tf(kSrc + "/" + ref["text"].get<std::string>());
    std::stringstream ss;
    ss << tf.rdbuf();
    const auto ids = tok.encode(ss.str(), /*add_special_tokens=*/false);
    EXPECT_EQ(static_cast<int64_t>(ids.size()), ref["text_tokens"].get<int64_t>()) << name;
    mq::models::LoadOptions lo;
    lo.dtype = at::kFloat;
    auto model = mq::models::load_causal_lm(dir, lo);
    mq::data::PerplexityOptions po;
    po.seq_len = ref["seq_len"];
    po.max_windows = ref["num_windows"];
    po.batch_size = 8;
    const auto r = mq::data::perplexity(
        ids, [&](const at::Tensor& x) { return model->forward(x); }, po);
    EXPECT_EQ(r.num_tokens, ref["scored_tokens"].get<int64_t>()) << name;
    // fp32 forward in a different op order than HF's sdpa path: agreement to ~1e-5 relative.
    EXPECT_NEAR(r.perplexity(), ref["perplexity"].get<double>(),
                1e-4 * ref["perplexity"].get<double>())
        << name;
  }
}

}  // namespace

namespace {

// The same job on a GPU (skipped without one): CUDA forward and CUDA quantization kernels give the
// same perplexities as the CPU run up to float32 summation order, and the export has the same
// tensors.
TEST(PtqJobCuda, EmbeddedModelOnCudaMatchesCpu) {
  if (!at::globalContext().hasCUDA()) GTEST_SKIP() << "no CUDA";
  const fs::path dir =
      fs::temp_directory_path() / ("mq_ptq_job_cuda_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  std::map<std::string, mq::job::JobResult> res;
  for (const char* dev : {"cpu", "cuda"}) {
    auto job = mq::job::load_job(kSrc + "/configs/jobs/tiny_dense_nvfp4.json",
                                 {{"device", dev},
                                  {"output", (dir / dev).string()},
                                  {"calib.num_samples", "8"},
                                  {"eval.max_windows", "8"}});
    std::ostringstream os;
    res[dev] = mq::job::run_ptq_job(job, {}, os);
  }
  EXPECT_NEAR(*res["cuda"].ppl_before, *res["cpu"].ppl_before, 1e-4 * *res["cpu"].ppl_before);
  EXPECT_NEAR(*res["cuda"].ppl_after, *res["cpu"].ppl_after, 1e-2 * *res["cpu"].ppl_after);
  const auto a = mq::io::load_safetensors((dir / "cpu" / "model.safetensors").string());
  const auto b = mq::io::load_safetensors((dir / "cuda" / "model.safetensors").string());
  ASSERT_EQ(a.size(), b.size());
  int64_t weights_equal = 0, weights = 0;
  for (const auto& [name, t] : a) {
    ASSERT_TRUE(b.count(name)) << name;
    EXPECT_EQ(t.scalar_type(), b.at(name).scalar_type()) << name;
    EXPECT_EQ(t.sizes(), b.at(name).sizes()) << name;
    if (name.ends_with("proj.weight")) {
      ++weights;
      weights_equal += at::equal(t, b.at(name));
    }
  }
  // Packed weights depend only on the weights (not on activations): bit-identical CPU vs CUDA.
  EXPECT_EQ(weights_equal, weights);
  fs::remove_all(dir);
}

}  // namespace
