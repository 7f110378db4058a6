// Golden test against ModelOpt 0.47.0 on CPU (tests/unit/nn/gen_toy_golden.py): a toy model
// (Embedding, Linear with and without bias) quantized with several presets and a legacy-form
// config, max calibration on fixed ids. Quantizer names, enabled flags, summary lines and every
// amax must match exactly.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <string>

#include "mq/calib/calibrate.hpp"
#include "mq/config/presets.hpp"
#include "mq/io/safetensors_torch.hpp"
#include "mq/nn/conversion.hpp"
#include "mq/nn/quant_module.hpp"

namespace {

using namespace mq;

const std::string kDir = std::string(MQ_SOURCE_DIR) + "/tests/unit/nn/golden/";

struct Toy : nn::Module {
  explicit Toy(const std::map<std::string, at::Tensor>& w) {
    register_module("embed", std::make_shared<nn::Embedding>(w.at("embed.weight").clone()));
    register_module(
        "fc1", std::make_shared<nn::Linear>(w.at("fc1.weight").clone(), w.at("fc1.bias").clone()));
    register_module("fc2", std::make_shared<nn::Linear>(w.at("fc2.weight").clone(), at::Tensor()));
    register_module("lm_head",
                    std::make_shared<nn::Linear>(w.at("lm_head.weight").clone(), at::Tensor()));
  }
  std::string type_name() const override { return "Toy"; }
  at::Tensor forward(const at::Tensor& ids) {
    at::Tensor x = child_as<nn::Embedding>("embed").forward(ids);
    at::Tensor h = at::relu(child_as<nn::Linear>("fc1").forward(x));
    at::Tensor y = child_as<nn::Linear>("fc2").forward(h) + x;
    return child_as<nn::Linear>("lm_head").forward(y);
  }
};

class ToyGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(ToyGolden, MatchesModelOpt) {
  const std::string tag = GetParam();
  auto weights = io::load_safetensors(kDir + "toy_weights.safetensors");
  std::ifstream f(kDir + "toy_" + tag + ".json");
  ASSERT_TRUE(f.good()) << tag;
  auto meta = nlohmann::ordered_json::parse(f);
  auto golden = io::load_safetensors(kDir + "toy_" + tag + ".safetensors");

  config::QuantizeConfig cfg =
      meta["preset"].is_null()
          ? config::parse_quantize_config(meta["config"], {"toy_" + tag + ".json", ""})
          : config::load_quantize_config(meta["preset"].get<std::string>());
  if (!meta["algorithm_override"].is_null()) {
    cfg.algorithm = config::parse_algorithm(meta["algorithm_override"], {});
    cfg.fields_set.insert("algorithm");
  }
  Toy model(weights);
  calib::ForwardLoop loop = [&](nn::Module& m) {
    auto& toy = dynamic_cast<Toy&>(m);
    toy.forward(weights.at("calib_ids_0"));
    toy.forward(weights.at("calib_ids_1"));
  };
  auto warnings = calib::quantize(model, cfg, loop);
  EXPECT_TRUE(warnings.empty());

  auto leaves = nn::named_tensor_quantizers(model);
  std::vector<std::string> names;
  std::vector<bool> enabled;
  for (const auto& l : leaves) {
    names.push_back(l.name);
    enabled.push_back(l.stage < 0 ? l.owner->is_enabled() : l.quantizer->is_enabled());
  }
  EXPECT_EQ(names, meta["quantizers"].get<std::vector<std::string>>());
  EXPECT_EQ(enabled, meta["enabled"].get<std::vector<bool>>());

  std::string summary = nn::print_quant_summary(model, std::nullopt, false);
  std::vector<std::string> lines;
  for (size_t s = 0, e; (e = summary.find('\n', s)) != std::string::npos; s = e + 1)
    lines.push_back(summary.substr(s, e - s));
  auto want_lines = meta["summary_lines"].get<std::vector<std::string>>();
  ASSERT_EQ(lines.size(), want_lines.size());
  for (size_t i = 0; i < lines.size(); ++i) EXPECT_EQ(lines[i], want_lines[i]);

  // Every buffer, bit for bit (amax, global amax).
  size_t n_buffers = 0;
  for (const auto& l : leaves) {
    for (const auto& [b, t] : l.quantizer->named_buffers()) {
      const std::string key = l.name + "." + b;
      auto it = golden.find(key);
      ASSERT_NE(it, golden.end()) << "mqdist has " << key << ", ModelOpt does not";
      EXPECT_EQ(t.scalar_type(), it->second.scalar_type()) << key;
      EXPECT_EQ(t.sizes(), it->second.sizes()) << key;
      EXPECT_TRUE(at::equal(t, it->second)) << key;
      ++n_buffers;
    }
  }
  EXPECT_EQ(n_buffers + 1, golden.size());  // + "output"

  at::Tensor out = model.forward(weights.at("eval_ids"));
  const at::Tensor& want = golden.at("output");
  // Same ops in the same order as torch (embedding, addmm, relu, add): bit-exact on the same build.
  EXPECT_TRUE(at::equal(out, want))
      << tag << ": max |diff| " << (out - want).abs().max().item<float>();
}

INSTANTIATE_TEST_SUITE_P(Presets, ToyGolden,
                         ::testing::Values("fp8", "int8", "int4_blockwise", "w4a8", "legacy"),
                         [](const auto& info) { return info.param; });

}  // namespace
