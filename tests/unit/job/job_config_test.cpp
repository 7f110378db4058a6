#include "mq/job/job_config.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "mq/core/error.hpp"

namespace {

using mq::job::parse_job;
using ojson = nlohmann::ordered_json;
namespace fs = std::filesystem;

std::string error_of(const ojson& doc, const std::vector<mq::job::Override>& ov = {}) {
  try {
    parse_job(doc, "job.json", "/base", ov);
  } catch (const mq::ConfigError& e) {
    return e.what();
  }
  return "<no error>";
}

ojson minimal() {
  return ojson::parse(R"({"model": "m", "quant": "NVFP4_DEFAULT_CFG", "output": "out"})");
}

TEST(JobConfig, DefaultsAndPathResolution) {
  auto doc = minimal();
  doc["calib"] = ojson::parse(R"({"path": "data/calib.txt"})");
  doc["eval"] = ojson::parse(R"({"path": "/abs/heldout.txt", "seq_len": 128, "max_windows": 4})");
  const auto job = parse_job(doc, "job.json", "/base/dir");
  EXPECT_EQ(job.model, "/base/dir/m");
  EXPECT_EQ(job.output, "/base/dir/out");
  EXPECT_EQ(job.quant, "NVFP4_DEFAULT_CFG");
  ASSERT_TRUE(job.calib);
  EXPECT_EQ(job.calib->path, "/base/dir/data/calib.txt");
  EXPECT_EQ(job.calib->num_samples, 64);
  EXPECT_EQ(job.calib->seq_len, 256);
  EXPECT_EQ(job.calib->batch_size, 8);
  EXPECT_EQ(job.calib->seed, 0u);
  ASSERT_TRUE(job.eval);
  EXPECT_EQ(job.eval->path, "/abs/heldout.txt");
  EXPECT_EQ(job.eval->seq_len, 128);
  EXPECT_EQ(job.eval->max_windows, 4);
  EXPECT_EQ(job.dtype, "auto");
  EXPECT_EQ(job.device, "cpu");
  EXPECT_TRUE(job.do_export);
  EXPECT_FALSE(job.overwrite);
  EXPECT_FALSE(job.algorithm);
}

TEST(JobConfig, OverridesParseJsonOrStringAndResolveAgainstCwd) {
  auto doc = minimal();
  doc["calib"] = ojson::parse(R"({"path": "c.txt"})");
  const auto job = parse_job(doc, "job.json", "/base",
                             {{"calib.num_samples", "16"},
                              {"output", "rel/out"},
                              {"algorithm", "max"},
                              {"eval.path", "h.txt"},
                              {"overwrite", "true"},
                              {"quant", R"({"quant_cfg": [], "algorithm": "max"})"}});
  EXPECT_EQ(job.calib->num_samples, 16);
  EXPECT_EQ(job.calib->path, "/base/c.txt");
  EXPECT_EQ(job.output, "rel/out");  // --set paths stay relative to the working directory
  EXPECT_EQ(job.eval->path, "h.txt");
  EXPECT_EQ(*job.algorithm, "max");
  EXPECT_TRUE(job.overwrite);
  ASSERT_TRUE(job.quant.is_object());
  EXPECT_EQ(job.quant["algorithm"], "max");
}

TEST(JobConfig, ErrorsNameFileAndPath) {
  auto doc = minimal();
  doc["calb"] = 1;
  EXPECT_NE(error_of(doc).find("job.json"), std::string::npos);
  EXPECT_NE(error_of(doc).find("calb"), std::string::npos);

  doc = minimal();
  doc.erase("model");
  EXPECT_EQ(error_of(doc), "job.json: model: is required");

  doc = minimal();
  doc["calib"] = ojson::parse(R"({"path": "c.txt", "seq_len": 0})");
  EXPECT_EQ(error_of(doc), "job.json: calib.seq_len: 0 must be > 0");

  doc = minimal();
  doc["calib"] = ojson::parse(R"({"path": "c.txt", "num_samples": "many"})");
  EXPECT_EQ(error_of(doc), "job.json: calib.num_samples: \"many\" is not an integer");

  doc = minimal();
  doc["eval"] = ojson::parse(R"({"path": "c.txt", "seed": 3})");  // seed belongs to calib only
  EXPECT_NE(error_of(doc).find("job.json: eval"), std::string::npos);

  doc = minimal();
  doc["dtype"] = "fp8";
  EXPECT_NE(error_of(doc).find("job.json: dtype: \"fp8\" is not one of"), std::string::npos);

  doc = minimal();
  doc["quant"] = 3;
  EXPECT_NE(error_of(doc).find("job.json: quant:"), std::string::npos);

  doc = minimal();
  doc.erase("output");
  EXPECT_EQ(error_of(doc), "job.json: output: is required when \"export\" is true");
  doc["export"] = false;
  EXPECT_EQ(error_of(doc), "<no error>");

  EXPECT_NE(error_of(minimal(), {{"model.x", "1"}}).find("'model' is not an object"),
            std::string::npos);
  EXPECT_THROW(mq::job::parse_override("novalue"), mq::ConfigError);
  EXPECT_THROW(mq::job::parse_override("=3"), mq::ConfigError);
  EXPECT_EQ(mq::job::parse_override("a.b=c=d").value, "c=d");
}

TEST(JobConfig, LoadJobFileAndRoundTrip) {
  const fs::path dir = fs::temp_directory_path() / ("mq_job_test_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  {
    std::ofstream(dir / "job.json") << R"({"model": "m", "quant": "FP8_DEFAULT_CFG", "output": "o",
                                          "calib": {"path": "c.jsonl", "format": "jsonl", "seed": 7}})";
    std::ofstream(dir / "bad.json") << R"({"model": "m", )";
  }
  const auto job = mq::job::load_job(dir / "job.json");
  EXPECT_EQ(job.model, (dir / "m").string());
  EXPECT_EQ(job.calib->seed, 7u);
  const auto again = parse_job(mq::job::to_json(job), "dump", "/elsewhere");
  EXPECT_EQ(mq::job::to_json(again), mq::job::to_json(job));
  try {
    mq::job::load_job(dir / "bad.json");
    FAIL() << "no error";
  } catch (const mq::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("bad.json: not valid JSON"), std::string::npos);
  }
  EXPECT_THROW(mq::job::load_job(dir / "missing.json"), mq::IoError);
  fs::remove_all(dir);
}

}  // namespace
