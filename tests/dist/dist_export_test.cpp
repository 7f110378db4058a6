// Distributed unified-HF export on 1, 2 and 4 ranks.
//
// Merge and rule: pure functions on hand-made per-rank lists (EP-like name lists, TP pieces, DP
// replicas) with closed-form results and every error path.
//
// End to end: every rank loads a tiny checkpoint twice, whole and as its TP/EP shard
// (LoadOptions::parallel), quantizes both with the same config and weight-only max calibration (no
// forward). Activation amaxes are set to deterministic values on the whole model; the shard gets
// what calibration's amax sync would give it (every amax whose shape the shard shares with the
// whole model is copied from it: per-tensor and row-parallel per-channel amaxes; local column /
// block amaxes stay), and AWQ-style pre_quant_scales are set (row-parallel ones sliced). The shards
// export through export_hf_checkpoint_distributed; rank 0 then exports the whole model with
// export_hf_checkpoint, and every file of every layout must be byte-identical to it.
#include "mq/export/dist_export.hpp"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "mq/calib/calibrate.hpp"
#include "mq/config/presets.hpp"
#include "mq/io/safetensors_torch.hpp"
#include "mq/models/causal_lm.hpp"
#include "mq/nn/conversion.hpp"

namespace mq::hf_export {
namespace {

namespace fs = std::filesystem;
using Named = std::vector<std::pair<std::string, at::Tensor>>;

// ---- merge order
// ---------------------------------------------------------------------------------

// The state-dict names of a 2-layer MoE model holding experts [begin, end) of each layer.
std::vector<std::string> moe_names(int begin, int end) {
  std::vector<std::string> n = {"model.embed_tokens.weight"};
  for (int l = 0; l < 2; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    n.push_back(p + "self_attn.q_proj.weight");
    n.push_back(p + "mlp.gate.weight");
    for (int e = begin; e < end; ++e)
      for (const char* w : {"gate_proj.weight", "up_proj.weight", "down_proj.weight"})
        n.push_back(p + "mlp.experts." + std::to_string(e) + "." + w);
    n.push_back(p + "post_attention_layernorm.weight");
  }
  n.push_back("model.norm.weight");
  n.push_back("lm_head.weight");
  return n;
}

TEST(MergeNameOrder, ExpertsOfLaterRanksLandBeforeTheirSuccessors) {
  // EP 2 and EP 4 over 8 experts: the single-process order.
  EXPECT_EQ(merge_name_order({moe_names(0, 4), moe_names(4, 8)}), moe_names(0, 8));
  EXPECT_EQ(merge_name_order({moe_names(0, 2), moe_names(2, 4), moe_names(4, 6), moe_names(6, 8)}),
            moe_names(0, 8));
  // TP2 x EP2 (ranks 0,1 hold experts 0-3, ranks 2,3 experts 4-7) and DP replicas.
  EXPECT_EQ(merge_name_order({moe_names(0, 4), moe_names(0, 4), moe_names(4, 8), moe_names(4, 8)}),
            moe_names(0, 8));
  EXPECT_EQ(merge_name_order({moe_names(0, 8), moe_names(0, 8)}), moe_names(0, 8));
  // Names with no placed successor go last; a rank listing nothing adds nothing.
  EXPECT_EQ(merge_name_order({{"a", "b"}, {"a", "c", "d"}, {}}),
            (std::vector<std::string>{"a", "b", "c", "d"}));
  EXPECT_EQ(merge_name_order({{"b", "c"}, {"a", "c"}}), (std::vector<std::string>{"b", "a", "c"}));
  // The successor rule also where the lists disagree on the order (d precedes b on rank 2).
  EXPECT_EQ(merge_name_order({{"b", "c"}, {"a", "c"}, {"c", "d", "b"}}),
            (std::vector<std::string>{"d", "b", "a", "c"}));
  EXPECT_TRUE(merge_name_order({}).empty());
}

// ---- merge
// ---------------------------------------------------------------------------------------

at::Tensor iota(std::vector<int64_t> shape, at::ScalarType dt, double scale = 1.0) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return (at::arange(n, at::kFloat) * scale - 3.0).reshape(shape).to(dt);
}

bool bytes_equal(const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  const at::Tensor x = a.contiguous(), y = b.contiguous();
  return std::memcmp(x.data_ptr(), y.data_ptr(), x.nbytes()) == 0;
}

std::string merge_error(const std::vector<std::vector<ShardedTensor>>& ranks) {
  try {
    merge_sharded_state_dicts(ranks);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(MergeShardedStateDicts, ConcatReplicatedExpertsAndReplicas) {
  const at::Tensor w = iota({6, 5}, at::kBFloat16, 0.25);                 // column weight
  const at::Tensor packed = iota({3, 8}, at::kFloat, 1.0).to(at::kByte);  // row packed bytes
  const at::Tensor scale = at::scalar_tensor(0.5f);
  const at::Tensor sc4 = iota({2, 1, 4, 1}, at::kFloat);  // FP8 2-D block scale, row split dim 2
  const at::Tensor e2 = iota({2, 3}, at::kFloat8_e4m3fn, 0.5);
  auto piece = [](const at::Tensor& t, int64_t dim, int64_t k, int64_t n) {
    const int64_t step = t.size(dim) / n;
    return t.narrow(dim, k * step, step).contiguous();
  };
  // 4 ranks: TP 2 (w split along rows, rank 1 holds piece 0) x DP 2; packed split 4 ways along
  // dim 1 in reverse rank order; the expert only on rank 2; the scale everywhere.
  std::vector<std::vector<ShardedTensor>> r(4);
  for (int k = 0; k < 4; ++k) {
    const int tp = 1 - k % 2;
    r[k].push_back({"embed", scale * 2, ShardSpec::replicated()});
    r[k].push_back({"q.weight", piece(w, 0, tp, 2), ShardSpec::concat(0, tp, 2)});
    r[k].push_back({"q.weight_scale", scale, ShardSpec::replicated()});
    if (k == 2) r[k].push_back({"experts.5.w", e2, ShardSpec::replicated()});
    r[k].push_back({"o.weight", piece(packed, 1, 3 - k, 4), ShardSpec::concat(1, 3 - k, 4)});
    r[k].push_back({"o.weight_scale", piece(sc4, 2, k, 4), ShardSpec::concat(2, k, 4)});
    r[k].push_back({"norm", scale * 3, ShardSpec::replicated()});
  }
  const Named m = merge_sharded_state_dicts(r);
  std::vector<std::string> names;
  for (const auto& [n, t] : m) names.push_back(n);
  EXPECT_EQ(names, (std::vector<std::string>{"embed", "q.weight", "q.weight_scale", "experts.5.w",
                                             "o.weight", "o.weight_scale", "norm"}));
  EXPECT_TRUE(bytes_equal(m[1].second, w));
  EXPECT_TRUE(bytes_equal(m[2].second, scale));
  EXPECT_TRUE(bytes_equal(m[3].second, e2));
  EXPECT_TRUE(bytes_equal(m[4].second, packed));
  EXPECT_TRUE(bytes_equal(m[5].second, sc4));
  // Uneven pieces along the concat dim are fine (rows 1 + 3).
  const Named u =
      merge_sharded_state_dicts({{{"x", piece(w, 0, 0, 6), ShardSpec::concat(0, 0, 2)}},
                                 {{"x", w.narrow(0, 1, 5), ShardSpec::concat(0, 1, 2)}}});
  EXPECT_TRUE(bytes_equal(u[0].second, w));
  // One rank: the identity, in its order.
  const Named one = merge_sharded_state_dicts(
      {{{"b", w, ShardSpec::replicated()}, {"a", packed, ShardSpec::concat(0, 0, 1)}}});
  ASSERT_EQ(one.size(), 2u);
  EXPECT_EQ(one[0].first, "b");
  EXPECT_TRUE(bytes_equal(one[1].second, packed));
}

TEST(MergeShardedStateDicts, ErrorsNameTheTensorAndTheRanks) {
  const at::Tensor a = iota({4, 2}, at::kFloat), b = a + 1;
  auto rep = [](const at::Tensor& t) { return ShardSpec::replicated(); };
  std::string e;
  // Replicas that differ (in bytes: same hash impossible to force, so this is the hash path).
  e = merge_error({{{"model.norm.weight", a, rep(a)}},
                   {{"model.norm.weight", a, rep(a)}},
                   {{"model.norm.weight", b, rep(b)}}});
  EXPECT_NE(e.find("'model.norm.weight'"), std::string::npos) << e;
  EXPECT_NE(e.find("rank 0 and rank 2"), std::string::npos) << e;
  // Different shapes of a replicated tensor.
  e = merge_error({{{"s", a, rep(a)}}, {{"s", a.reshape({8}), rep(a)}}});
  EXPECT_NE(e.find("rank 0 holds Float (4, 2) but rank 1 holds Float (8,)"), std::string::npos)
      << e;
  // DP replicas of one piece that differ.
  e = merge_error({{{"w", a, ShardSpec::concat(0, 0, 2)}},
                   {{"w", a, ShardSpec::concat(0, 1, 2)}},
                   {{"w", b, ShardSpec::concat(0, 0, 2)}}});
  EXPECT_NE(e.find("'w' piece 0/2: rank 0 and rank 2"), std::string::npos) << e;
  // A missing piece.
  e = merge_error({{{"w", a, ShardSpec::concat(1, 0, 3)}}, {{"w", a, ShardSpec::concat(1, 2, 3)}}});
  EXPECT_NE(e.find("'w': piece 1 of 3 along dim 1 is held by no rank"), std::string::npos) << e;
  // Ranks that disagree on the shard.
  e = merge_error({{{"w", a, ShardSpec::concat(0, 0, 2)}}, {{"w", a, ShardSpec::replicated()}}});
  EXPECT_NE(e.find("rank 0 holds it as concat(dim=0, 0/2) but rank 1 as replicated"),
            std::string::npos)
      << e;
  e = merge_error({{{"w", a, ShardSpec::concat(0, 0, 2)}}, {{"w", a, ShardSpec::concat(1, 1, 2)}}});
  EXPECT_NE(e.find("but rank 1 as concat(dim=1, 1/2)"), std::string::npos) << e;
  // Pieces that differ off the concat dim, or in dtype.
  e = merge_error({{{"w", a, ShardSpec::concat(0, 0, 2)}},
                   {{"w", iota({4, 3}, at::kFloat), ShardSpec::concat(0, 1, 2)}}});
  EXPECT_NE(e.find("pieces may differ along dim 0 only"), std::string::npos) << e;
  e = merge_error({{{"w", a, ShardSpec::concat(0, 0, 2)}},
                   {{"w", a.to(at::kHalf), ShardSpec::concat(0, 1, 2)}}});
  EXPECT_NE(e.find("pieces may differ along dim 0 only"), std::string::npos) << e;
  // Shards that do not fit the tensor, and a name listed twice.
  e = merge_error({{{"w", a, ShardSpec::concat(2, 0, 2)}}});
  EXPECT_NE(e.find("'w' of rank 0: shard concat(dim=2, 0/2) does not fit its shape (4, 2)"),
            std::string::npos)
      << e;
  e = merge_error({{{"w", a, ShardSpec::concat(0, 2, 2)}}});
  EXPECT_NE(e.find("does not fit"), std::string::npos) << e;
  e = merge_error({{}, {{"w", a, rep(a)}, {"w", a, rep(a)}}});
  EXPECT_NE(e.find("rank 1 lists tensor 'w' twice"), std::string::npos) << e;
}

TEST(TensorContentHash, SeesDtypeShapeAndEveryByte) {
  const at::Tensor a = iota({3, 7}, at::kBFloat16, 0.1);
  EXPECT_EQ(tensor_content_hash(a), tensor_content_hash(a.clone()));
  EXPECT_EQ(tensor_content_hash(a.t().contiguous().t()), tensor_content_hash(a));
  EXPECT_NE(tensor_content_hash(a), tensor_content_hash(a.reshape({7, 3})));
  EXPECT_NE(tensor_content_hash(a), tensor_content_hash(a.view(at::kHalf)));
  for (int64_t i = 0; i < a.numel(); ++i) {  // every element (also the tail after 8-byte words)
    at::Tensor b = a.clone().reshape({-1});
    b[i] = b[i].item<float>() + 1.0f;
    EXPECT_NE(tensor_content_hash(b.reshape({3, 7})), tensor_content_hash(a)) << i;
  }
  EXPECT_NE(tensor_content_hash(at::zeros({0}, at::kFloat)),
            tensor_content_hash(at::zeros({0}, at::kByte)));
}

// ---- summaries
// -----------------------------------------------------------------------------------

TEST(MergeExportSummaries, UnionInModuleOrderAndOneKvFormat) {
  const nlohmann::ordered_json nv = layer_quant_config(QuantFormat::kNvfp4, 16);
  const nlohmann::ordered_json fp8 = layer_quant_config(QuantFormat::kFp8, 0);
  ExportSummary r0, r1;
  r0.layer_configs = {
      {"l0.q", nv}, {"l0.experts.0.w1", nv}, {"l0.experts.1.w1", nv}, {"l1.q", fp8}};
  r1.layer_configs = {{"l0.q", nv}, {"l0.experts.2.w1", nv}, {"l1.q", fp8}};
  r0.unquantized = {"l0.gate", "lm_head"};
  r1.unquantized = {"l0.gate", "l0.experts.2.w9", "lm_head"};
  r1.kv_cache_format = "FP8";
  const ExportSummary m = merge_export_summaries({r0, r1});
  std::vector<std::string> names;
  for (const auto& [n, c] : m.layer_configs) names.push_back(n);
  EXPECT_EQ(names, (std::vector<std::string>{"l0.q", "l0.experts.0.w1", "l0.experts.1.w1",
                                             "l0.experts.2.w1", "l1.q"}));
  EXPECT_EQ(m.layer_configs.back().second, fp8);
  EXPECT_EQ(m.unquantized, (std::vector<std::string>{"l0.gate", "l0.experts.2.w9", "lm_head"}));
  EXPECT_EQ(m.kv_cache_format, "FP8");
  // exclude_modules of the union: the expert held by rank 1 only counts.
  const auto q = make_hf_quant_config(m, {});
  EXPECT_EQ(q["quantization"]["quant_algo"], "MIXED_PRECISION");
  EXPECT_EQ(q["quantization"]["quantized_layers"].size(), 5u);

  ExportSummary bad = r1;
  bad.layer_configs[0].second = fp8;
  EXPECT_THROW(merge_export_summaries({r0, bad}), Error);
  bad = r1;
  bad.unquantized.push_back("l0.q");
  EXPECT_THROW(merge_export_summaries({r0, bad}), Error);
  bad = r1;
  bad.kv_cache_format = "NVFP4";
  r0.kv_cache_format = "FP8";
  EXPECT_THROW(merge_export_summaries({r0, bad}), Error);
}

// ---- the decoder rule
// ----------------------------------------------------------------------------

TEST(HfDecoderRule, RolesAndTable) {
  EXPECT_EQ(hf_decoder_linear_role("model.layers.0.self_attn.q_proj"), LinearRole::kColumn);
  EXPECT_EQ(hf_decoder_linear_role("model.layers.0.self_attn.k_proj"), LinearRole::kColumn);
  EXPECT_EQ(hf_decoder_linear_role("model.layers.0.self_attn.v_proj"), LinearRole::kColumn);
  EXPECT_EQ(hf_decoder_linear_role("model.layers.3.mlp.gate_proj"), LinearRole::kColumn);
  EXPECT_EQ(hf_decoder_linear_role("model.layers.3.mlp.up_proj"), LinearRole::kColumn);
  EXPECT_EQ(hf_decoder_linear_role("model.layers.0.self_attn.o_proj"), LinearRole::kRow);
  EXPECT_EQ(hf_decoder_linear_role("model.layers.3.mlp.down_proj"), LinearRole::kRow);
  for (const char* r :
       {"model.layers.0.mlp.experts.3.down_proj", "model.layers.0.mlp.experts.0.gate_proj",
        "model.layers.1.block_sparse_moe.experts.2.w1", "model.layers.0.mlp.gate",
        "model.layers.0.self_attn.q_norm", "model.layers.0.input_layernorm", "model.embed_tokens",
        "lm_head", "model.norm"})
    EXPECT_EQ(hf_decoder_linear_role(r), LinearRole::kReplicated) << r;

  const auto C = LinearRole::kColumn, R = LinearRole::kRow;
  const ShardSpec rep = ShardSpec::replicated();
  struct Row {
    LinearRole role;
    const char* suffix;
    int64_t ndim;
    ShardSpec want;  // for tp rank 1 of 4
  };
  const Row rows[] = {
      {C, "weight", 2, ShardSpec::concat(0, 1, 4)},
      {C, "weight_scale", 0, rep},
      {C, "weight_scale", 1, ShardSpec::concat(0, 1, 4)},
      {C, "weight_scale", 2, ShardSpec::concat(0, 1, 4)},
      {C, "weight_scale", 4, ShardSpec::concat(0, 1, 4)},
      {C, "weight_scale_2", 0, rep},
      {C, "input_scale", 0, rep},
      {C, "bias", 1, ShardSpec::concat(0, 1, 4)},
      {C, "pre_quant_scale", 1, rep},
      {C, "k_scale", 0, rep},
      {C, "v_scale", 0, rep},
      {R, "weight", 2, ShardSpec::concat(1, 1, 4)},
      {R, "weight_scale", 0, rep},
      {R, "weight_scale", 1, rep},
      {R, "weight_scale", 2, ShardSpec::concat(1, 1, 4)},
      {R, "weight_scale", 4, ShardSpec::concat(2, 1, 4)},
      {R, "weight_scale_2", 0, rep},
      {R, "input_scale", 0, rep},
      {R, "bias", 1, rep},
      {R, "pre_quant_scale", 1, ShardSpec::concat(0, 1, 4)},
  };
  for (const Row& r : rows) {
    EXPECT_EQ(hf_decoder_shard_spec(r.role, r.suffix, r.ndim, 1, 4), r.want)
        << r.suffix << " " << r.ndim;
    EXPECT_EQ(hf_decoder_shard_spec(r.role, r.suffix, r.ndim, 0, 1), rep) << r.suffix;
  }
  EXPECT_EQ(hf_decoder_shard_spec(LinearRole::kReplicated, "anything", 3, 1, 4), rep);
  // Tensors the table does not know are errors under TP, never a silent guess.
  for (const auto& [role, suffix, ndim] : std::vector<std::tuple<LinearRole, const char*, int64_t>>{
           {C, "weight_zero_point", 1}, {R, "k_bias", 1}, {C, "weight", 3}, {R, "bias", 0}})
    EXPECT_THROW(hf_decoder_shard_spec(role, suffix, ndim, 1, 2), Error) << suffix;
  EXPECT_THROW(hf_decoder_shard_spec(C, "weight", 2, 2, 2), Error);

  const ShardRule rule = hf_decoder_shard_rule(1, 2);
  EXPECT_EQ(rule("model.layers.1.self_attn.o_proj.weight", at::zeros({4, 4})),
            ShardSpec::concat(1, 1, 2));
  EXPECT_EQ(rule("model.layers.1.self_attn.k_proj.k_scale", at::zeros({})), rep);
  EXPECT_EQ(rule("model.layers.1.mlp.experts.7.down_proj.weight", at::zeros({4, 4})), rep);
  EXPECT_EQ(rule("model.layers.1.mlp.gate_proj.weight_scale", at::zeros({4, 1})),
            ShardSpec::concat(0, 1, 2));
  try {
    rule("model.layers.1.mlp.up_proj.weight_zero_point", at::zeros({4}));
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.layers.1.mlp.up_proj.weight_zero_point"),
              std::string::npos)
        << e.what();
  }
}

TEST(MoeExpertGlobalNames, RenumbersLocalExperts) {
  const NameMap g = moe_expert_global_names({{"model.layers.0.mlp", 4}, {"model.layers.1.mlp", 4}});
  EXPECT_EQ(g("model.layers.0.mlp.experts.0.gate_proj.weight"),
            "model.layers.0.mlp.experts.4.gate_proj.weight");
  EXPECT_EQ(g("model.layers.1.mlp.experts.3"), "model.layers.1.mlp.experts.7");
  EXPECT_EQ(g("model.layers.1.mlp.experts.13.w1"), "model.layers.1.mlp.experts.17.w1");
  EXPECT_EQ(g("model.layers.0.mlp.gate.weight"), "model.layers.0.mlp.gate.weight");
  EXPECT_EQ(g("model.layers.2.mlp.experts.0.w1"), "model.layers.2.mlp.experts.0.w1");
  EXPECT_EQ(g("model.layers.0.mlp.experts.x1.w1"), "model.layers.0.mlp.experts.x1.w1");
  EXPECT_THROW(moe_expert_global_names({{"b", -1}}), Error);
}

// ---- end to end
// ----------------------------------------------------------------------------------

struct World {
  dist::MpiComm comm = dist::MpiComm::world();
  int rank = comm.rank();
  int size = comm.size();
};

World& world() {
  static World w;
  return w;
}

// One directory for the whole run, named after rank 0's pid, removed at exit by rank 0. Created
// collectively on first use (every rank runs the tests in one order).
std::optional<fs::path>& work_dir_slot() {
  static std::optional<fs::path> dir;
  return dir;
}

const fs::path& work_dir() {
  auto& slot = work_dir_slot();
  if (!slot) {
    const int64_t pid0 = world().comm.all_gather_int64(::getpid())[0];
    fs::path d = fs::temp_directory_path() / ("mq_dist_export_" + std::to_string(pid0));
    if (world().rank == 0) {
      fs::remove_all(d);
      fs::create_directories(d);
    }
    world().comm.barrier();
    slot = d;
  }
  return *slot;
}

class CleanUp : public ::testing::Environment {
 public:
  void TearDown() override {
    if (work_dir_slot() && world().rank == 0) fs::remove_all(*work_dir_slot());
  }
};
[[maybe_unused]] ::testing::Environment* const kCleanUp =
    ::testing::AddGlobalTestEnvironment(new CleanUp);

const fs::path kTiny = fs::path(MQ_SOURCE_DIR) / "tests" / "models" / "tiny";

// A Llama with biases whose 4 KV heads, hidden 128 and intermediate 256 allow TP 4 with every
// block size used here (o_proj / down_proj shards of 32 / 64 input columns). Written by rank 0.
fs::path dense_model() {
  static const fs::path dir = [] {
    const fs::path d = work_dir() / "dense_src";
    if (world().rank == 0) {
      fs::create_directories(d);
      std::ifstream f(kTiny / "llama3_bias" / "config.json");
      nlohmann::ordered_json cfg = nlohmann::ordered_json::parse(f);
      const int64_t h = 128, inter = 256, heads = 4, hd = 32, vocab = 96, layers = 2;
      cfg["hidden_size"] = h;
      cfg["intermediate_size"] = inter;
      cfg["num_key_value_heads"] = heads;
      cfg["head_dim"] = hd;
      cfg["vocab_size"] = vocab;
      cfg["num_hidden_layers"] = layers;
      std::ofstream(d / "config.json") << cfg.dump(2);
      std::ofstream(d / "generation_config.json") << "{\"bos_token_id\": 1}\n";
      std::map<std::string, at::Tensor> t;
      at::manual_seed(1234);
      auto rnd = [](std::vector<int64_t> s, double sd) {
        return (at::randn(s, at::kFloat) * sd).to(at::kBFloat16);
      };
      t["model.embed_tokens.weight"] = rnd({vocab, h}, 1.0);
      t["lm_head.weight"] = rnd({vocab, h}, 0.1);
      t["model.norm.weight"] = 1 + rnd({h}, 0.1);
      for (int64_t l = 0; l < layers; ++l) {
        const std::string p = "model.layers." + std::to_string(l) + ".";
        t[p + "input_layernorm.weight"] = 1 + rnd({h}, 0.1);
        t[p + "post_attention_layernorm.weight"] = 1 + rnd({h}, 0.1);
        for (const char* n : {"q_proj", "k_proj", "v_proj"}) {
          t[p + "self_attn." + n + ".weight"] = rnd({heads * hd, h}, 0.08);
          t[p + "self_attn." + n + ".bias"] = rnd({heads * hd}, 0.02);
        }
        t[p + "self_attn.o_proj.weight"] = rnd({h, heads * hd}, 0.08);
        t[p + "self_attn.o_proj.bias"] = rnd({h}, 0.02);
        for (const char* n : {"gate_proj", "up_proj"}) {
          t[p + "mlp." + n + ".weight"] = rnd({inter, h}, 0.08);
          t[p + "mlp." + n + ".bias"] = rnd({inter}, 0.02);
        }
        t[p + "mlp.down_proj.weight"] = rnd({h, inter}, 0.06);
        t[p + "mlp.down_proj.bias"] = rnd({h}, 0.02);
      }
      io::save_safetensors((d / "model.safetensors").string(), t, {{"format", "pt"}});
    }
    world().comm.barrier();
    return d;
  }();
  return dir;
}

// ParallelSpec's forward callbacks are never called by an export; whichever set this version of
// ParallelSpec has gets placeholders that throw.
template <typename P>
void set_unused_callbacks(P& p) {
  auto no = [](const char* what) -> void {
    MQ_THROW(Error, "dist_export_test: ", what, " called (the export runs no forward)");
  };
  if constexpr (requires { p.tp_all_reduce; }) {
    p.tp_all_reduce = [no](at::Tensor&) { no("tp_all_reduce"); };
    p.ep_all_reduce = [no](at::Tensor&) { no("ep_all_reduce"); };
  }
  if constexpr (requires { p.tp_all_gather; })
    p.tp_all_gather = [no](const at::Tensor&) -> at::Tensor {
      no("tp_all_gather");
      return {};
    };
  if constexpr (requires { p.ep_all_gather_v; })
    p.ep_all_gather_v = [no](const at::Tensor&) -> std::vector<at::Tensor> {
      no("ep_all_gather_v");
      return {};
    };
  if constexpr (requires { p.ep_all_to_all_v; })
    p.ep_all_to_all_v = [no](const std::vector<at::Tensor>&) -> std::vector<at::Tensor> {
      no("ep_all_to_all_v");
      return {};
    };
}

struct Layout {
  int tp = 1, ep = 1;
  int tp_rank = 0, ep_rank = 0;
  std::string name() const {
    return "tp" + std::to_string(tp) + "_ep" + std::to_string(ep) + "_dp" +
           std::to_string(world().size / (tp * ep));
  }
};

// Every TP x EP (x DP = the rest) layout of the world the model allows; TP fastest, then EP.
std::vector<Layout> layouts(int kv_heads, int experts) {
  std::vector<Layout> out;
  const int w = world().size, r = world().rank;
  for (int tp = 1; tp <= w; tp *= 2)
    for (int ep = 1; tp * ep <= w; ep *= 2) {
      if (w % (tp * ep) != 0 || kv_heads % tp != 0) continue;
      if (ep > 1 && (experts == 0 || experts % ep != 0)) continue;
      out.push_back({tp, ep, r % tp, (r / tp) % ep});
    }
  return out;
}

std::unique_ptr<models::CausalLM> load(const fs::path& dir, const Layout& l) {
  models::LoadOptions lo;
  lo.parallel.tp_rank = l.tp_rank;
  lo.parallel.tp_size = l.tp;
  lo.parallel.ep_rank = l.ep_rank;
  lo.parallel.ep_size = l.ep;
  set_unused_callbacks(lo.parallel);
  return models::load_causal_lm(dir.string(), lo);
}

NameMap global_names(models::CausalLM& lm) {
  std::vector<std::pair<std::string, int64_t>> blocks;
  for (auto& [n, moe] : lm.moe_blocks()) blocks.emplace_back(n, moe->expert_begin());
  return moe_expert_global_names(blocks);
}

uint64_t fnv(const std::string& s) {
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ULL;
  return h;
}

// "…experts.<e>.…" -> "…experts.*.…": what calibration's MoE sync makes equal over experts.
std::string expert_agnostic(const std::string& n) {
  const std::string key = ".experts.";
  const size_t p = n.find(key);
  if (p == std::string::npos) return n;
  const size_t e = n.find('.', p + key.size());
  return n.substr(0, p + key.size()) + "*" + (e == std::string::npos ? "" : n.substr(e));
}

// The whole model's activation amaxes: deterministic per quantizer name (equal over experts).
struct SetActivationAmax : calib::ParallelStateHook {
  void sync_amax(nn::Module& model, const config::AlgorithmConfig&) override {
    for (const auto& l : nn::named_tensor_quantizers(model)) {
      quant::TensorQuantizer* q = l.quantizer;
      if (l.name.find("weight_quantizer") != std::string::npos || !q->is_enabled() ||
          q->has_amax_buffer() || q->is_mx_format() || q->use_constant_amax())
        continue;
      if (q->is_dynamic() && !q->is_nvfp4_dynamic()) continue;
      q->set_amax(0.5 + static_cast<double>(fnv(expert_agnostic(l.name)) % 1000) / 250.0);
    }
  }
};

// The shard's amaxes after calibration's sync: shapes shared with the whole model are synced
// (copied); local per-channel / per-block amaxes of split dimensions stay.
struct CopyWholeAmax : calib::ParallelStateHook {
  std::map<std::string, quant::TensorQuantizer*> whole;
  NameMap global;
  void sync_amax(nn::Module& model, const config::AlgorithmConfig&) override {
    for (const auto& l : nn::named_tensor_quantizers(model)) {
      auto it = whole.find(global(l.name));
      ASSERT_NE(it, whole.end()) << l.name;
      const quant::TensorQuantizer* w = it->second;
      if (!w->has_amax_buffer()) continue;
      if (!l.quantizer->has_amax_buffer() ||
          l.quantizer->amax_buffer().sizes() == w->amax_buffer().sizes())
        l.quantizer->set_amax(w->amax_buffer().clone());
    }
  }
};

std::map<std::string, quant::TensorQuantizer*> quantizers_by_name(nn::Module& m) {
  std::map<std::string, quant::TensorQuantizer*> out;
  for (const auto& l : nn::named_tensor_quantizers(m)) out[l.name] = l.quantizer;
  return out;
}

bool is_proj(const std::string& leaf) {
  for (const char* p : {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
                        "w1", "w2", "w3"})
    if (leaf == p) return true;
  return false;
}

std::string leaf_of(const std::string& n) { return n.substr(n.rfind('.') + 1); }

// AWQ-style pre_quant_scales (in,) on the whole model: equal within a fusion group (q/k/v,
// gate/up, w1/w3) so that the export folds them without resmoothing.
void set_pre_quant_scales(nn::Module& whole) {
  for (auto& [name, m] : whole.named_modules()) {
    const std::string leaf = leaf_of(name);
    if (!is_proj(leaf) || m->quantizer("input_quantizer") == nullptr) continue;
    const std::string group = leaf == "k_proj" || leaf == "v_proj" ? "q_proj"
                              : leaf == "up_proj"                  ? "gate_proj"
                              : leaf == "w3"                       ? "w1"
                                                                   : leaf;
    const uint64_t h = fnv(name.substr(0, name.rfind('.') + 1) + group);
    const int64_t k = m->parameter("weight").size(1);
    at::Tensor pqs =
        (at::remainder(at::arange(k, at::kLong) * 37 + static_cast<int64_t>(h % 101), 29)
                 .to(at::kFloat) /
             20.0 +
         0.5)
            .to(m->parameter("weight").scalar_type());
    m->quantizer("input_quantizer")->tensor().set_pre_quant_scale(pqs);
  }
}

// The shard's pre_quant_scales: the whole one, or this TP rank's columns of it.
void copy_pre_quant_scales(nn::Module& shard, nn::Module& whole, const NameMap& global,
                           const Layout& l) {
  for (auto& [name, m] : shard.named_modules()) {
    if (!is_proj(leaf_of(name)) || m->quantizer("input_quantizer") == nullptr) continue;
    auto p =
        whole.get_submodule(global(name)).quantizer("input_quantizer")->tensor().pre_quant_scale();
    ASSERT_TRUE(p.has_value()) << name;
    const int64_t k = m->parameter("weight").size(1);
    at::Tensor v = *p;
    if (k != v.size(0)) v = v.narrow(0, l.tp_rank * k, k).clone();
    m->quantizer("input_quantizer")->tensor().set_pre_quant_scale(v);
  }
}

struct Case {
  std::string model;                 ///< "dense" (synthetic) or a tests/models/tiny family
  std::vector<std::string> presets;  ///< preset, then KV presets appended
  bool pre_quant_scale = false;      ///< AWQ-style scales
  std::string mixed_fp8;             ///< non-empty: this projection gets FP8 (MIXED_PRECISION)
  std::string label;
};
void PrintTo(const Case& c, std::ostream* os) { *os << c.model << "/" << c.label; }

config::QuantizeConfig make_config(const Case& c) {
  config::QuantizeConfig cfg = config::load_quantize_config(c.presets[0]);
  for (size_t i = 1; i < c.presets.size(); ++i) {
    auto kv = config::load_quantize_config(c.presets[i]);
    cfg.quant_cfg.insert(cfg.quant_cfg.end(), kv.quant_cfg.begin(), kv.quant_cfg.end());
  }
  if (!c.mixed_fp8.empty()) {
    const auto fp8 = config::load_quantize_config("FP8_DEFAULT_CFG");
    for (auto e : fp8.quant_cfg)
      if (e.quantizer_name == "*weight_quantizer" || e.quantizer_name == "*input_quantizer") {
        e.quantizer_name = "*" + c.mixed_fp8 + e.quantizer_name;
        cfg.quant_cfg.push_back(e);
      }
  }
  cfg.algorithm = {config::AlgorithmConfig{}};  // "max", weight-only here (no forward loop)
  cfg.algorithm_is_list = false;
  // INT4 blocks of 128 -> 32: TP 4 shards of the tiny models hold whole blocks.
  auto shrink = [](config::QuantizerAttributeConfig& a) {
    if (!a.block_sizes) return;
    for (auto& [axis, b] : a.block_sizes->axes)
      if (b && *b == 128) b = 32;
  };
  for (auto& e : cfg.quant_cfg) {
    if (auto* a = std::get_if<config::QuantizerAttributeConfig>(&e.cfg)) shrink(*a);
    if (auto* v = std::get_if<std::vector<config::QuantizerAttributeConfig>>(&e.cfg))
      for (auto& a : *v) shrink(a);
  }
  return cfg;
}

std::string read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

std::vector<std::string> listing(const fs::path& d) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(d)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

// Byte equality of two export directories; on a difference, names the first differing tensor.
void expect_same_export(const fs::path& want, const fs::path& got) {
  ASSERT_TRUE(fs::is_directory(got)) << got;
  ASSERT_EQ(listing(got), listing(want)) << got;
  for (const auto& f : listing(want)) {
    if (read_file(want / f) == read_file(got / f)) continue;
    ADD_FAILURE() << got / f << " differs from the single-process export";
    if (f.size() > 12 && f.substr(f.size() - 12) == ".safetensors") {
      const auto a = io::load_safetensors((want / f).string());
      const auto b = io::load_safetensors((got / f).string());
      for (const auto& [n, t] : a)
        if (!b.count(n))
          ADD_FAILURE() << "  missing " << n;
        else if (!bytes_equal(t, b.at(n)))
          ADD_FAILURE() << "  tensor " << n << " differs";
      for (const auto& [n, t] : b)
        if (!a.count(n)) ADD_FAILURE() << "  extra " << n;
    } else {
      ADD_FAILURE() << "  want " << read_file(want / f).substr(0, 2000) << "\n  got "
                    << read_file(got / f).substr(0, 2000);
    }
  }
}

struct ModelInfo {
  fs::path dir;
  int kv_heads;
  int experts;
};

ModelInfo model_info(const std::string& m) {
  if (m == "dense") return {dense_model(), 4, 0};
  const fs::path d = kTiny / m;
  std::ifstream f(d / "config.json");
  const auto cfg = nlohmann::json::parse(f);
  const int experts = cfg.contains("num_local_experts") ? cfg["num_local_experts"].get<int>()
                                                        : cfg.value("num_experts", 0);
  return {d, cfg["num_key_value_heads"].get<int>(), experts};
}

std::unique_ptr<models::CausalLM> quantized(const ModelInfo& mi, const Case& c, const Layout& l,
                                            calib::ParallelStateHook& hook) {
  auto lm = load(mi.dir, l);
  calib::quantize(*lm, make_config(c), {}, {&hook});
  return lm;
}

class DistExport : public ::testing::TestWithParam<Case> {
 public:
  static void SetUpTestSuite() { models::register_hf_quant_modules(); }
};

TEST_P(DistExport, EveryLayoutWritesTheSingleProcessCheckpoint) {
  const Case& c = GetParam();
  World& w = world();
  const ModelInfo mi = model_info(c.model);
  const std::string tag = c.model + "_" + c.label;

  SetActivationAmax set_act;
  auto whole = quantized(mi, c, Layout{}, set_act);
  if (c.pre_quant_scale) set_pre_quant_scales(*whole);

  const std::vector<Layout> ls = layouts(mi.kv_heads, mi.experts);
  ASSERT_FALSE(ls.empty());
  std::vector<fs::path> outs;
  for (const Layout& l : ls) {
    SCOPED_TRACE(l.name());
    CopyWholeAmax sync;
    sync.whole = quantizers_by_name(*whole);
    auto shard = load(mi.dir, l);
    sync.global = global_names(*shard);
    calib::quantize(*shard, make_config(c), {}, {&sync});
    if (c.pre_quant_scale) copy_pre_quant_scales(*shard, *whole, sync.global, l);
    const fs::path out = work_dir() / ("dist_" + tag + "_" + l.name());
    const ExportReport r =
        export_hf_checkpoint_distributed(*shard, mi.dir.string(), out.string(), {}, w.comm,
                                         hf_decoder_shard_rule(l.tp_rank, l.tp), sync.global);
    EXPECT_FALSE(r.quant_algo.empty());
    EXPECT_GT(r.num_tensors, 0u);
    // Only rank 0 writes.
    w.comm.barrier();
    std::vector<std::string> stray;
    for (const auto& e : fs::directory_iterator(work_dir()))
      if (e.path().filename().string().find(".tmp-") != std::string::npos)
        stray.push_back(e.path().string());
    EXPECT_TRUE(stray.empty()) << stray.front();
    EXPECT_TRUE(fs::is_directory(out)) << out;
    w.comm.barrier();  // nobody writes before every rank has looked
    outs.push_back(out);
  }
  if (w.rank == 0) {
    const fs::path single = work_dir() / ("single_" + tag);
    const ExportReport r = export_hf_checkpoint(*whole, mi.dir.string(), single.string());
    EXPECT_FALSE(r.quant_algo.empty());
    for (const fs::path& o : outs) {
      SCOPED_TRACE(o.filename().string());
      expect_same_export(single, o);
    }
    if (!c.mixed_fp8.empty()) {
      EXPECT_EQ(r.quant_algo, "MIXED_PRECISION");
    }
    fs::remove_all(single);
    for (const fs::path& o : outs) fs::remove_all(o);
  }
  w.comm.barrier();
}

INSTANTIATE_TEST_SUITE_P(
    Formats, DistExport,
    ::testing::Values(Case{"dense", {"FP8_DEFAULT_CFG", "FP8_KV_CFG"}, false, "", "fp8_kv"},
                      Case{"dense", {"INT8_DEFAULT_CFG"}, false, "", "int8_sq"},
                      Case{"dense", {"INT8_WEIGHT_ONLY_CFG"}, false, "", "int8_wo"},
                      Case{"dense", {"FP8_PER_CHANNEL_PER_TOKEN_CFG"}, false, "", "fp8_pc_pt"},
                      Case{"dense", {"INT4_AWQ_CFG"}, true, "", "int4_awq"},
                      Case{"dense", {"W4A8_AWQ_BETA_CFG"}, true, "", "w4a8_awq"},
                      Case{"dense", {"NVFP4_DEFAULT_CFG", "FP8_KV_CFG"}, false, "", "nvfp4_kv"},
                      Case{"dense", {"W4A16_NVFP4_CFG"}, false, "", "w4a16_nvfp4"},
                      Case{"dense", {"MXFP8_DEFAULT_CFG"}, false, "", "mxfp8"},
                      Case{"dense", {"NVFP4_DEFAULT_CFG"}, false, "down_proj", "mixed"},
                      Case{"mixtral", {"FP8_DEFAULT_CFG", "FP8_KV_CFG"}, false, "", "fp8_kv"},
                      Case{"mixtral", {"NVFP4_DEFAULT_CFG"}, false, "", "nvfp4"},
                      Case{"mixtral", {"INT4_AWQ_CFG"}, true, "", "int4_awq"},
                      Case{"mixtral", {"W4A8_AWQ_BETA_CFG"}, true, "", "w4a8_awq"},
                      Case{"mixtral", {"MXFP8_DEFAULT_CFG"}, false, "", "mxfp8"},
                      Case{"mixtral", {"INT8_DEFAULT_CFG"}, false, "w2", "mixed"},
                      Case{"qwen3_moe", {"NVFP4_DEFAULT_CFG"}, false, "", "nvfp4"},
                      Case{"qwen3_moe", {"INT8_WEIGHT_ONLY_CFG"}, false, "", "int8_wo"}),
    [](const ::testing::TestParamInfo<Case>& i) { return i.param.model + "_" + i.param.label; });

// ---- failures
// ------------------------------------------------------------------------------------

// Runs a distributed export of the dense model in `l`; `spoil` changes this rank's shard first.
std::string failing_export(const Layout& l, const fs::path& out,
                           const std::function<void(models::CausalLM&)>& spoil) {
  const Case c{"dense", {"FP8_DEFAULT_CFG"}, false, "", "fp8"};
  const ModelInfo mi = model_info("dense");
  SetActivationAmax set_act;
  auto whole = quantized(mi, c, Layout{}, set_act);
  CopyWholeAmax sync;
  sync.whole = quantizers_by_name(*whole);
  auto shard = load(mi.dir, l);
  sync.global = global_names(*shard);
  calib::quantize(*shard, make_config(c), {}, {&sync});
  spoil(*shard);
  try {
    export_hf_checkpoint_distributed(*shard, mi.dir.string(), out.string(), {}, world().comm,
                                     hf_decoder_shard_rule(l.tp_rank, l.tp), sync.global);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

void expect_nothing_written(const fs::path& out) {
  world().comm.barrier();
  EXPECT_FALSE(fs::exists(out)) << out;
  for (const auto& e : fs::directory_iterator(out.parent_path()))
    EXPECT_EQ(e.path().filename().string().rfind(out.filename().string(), 0), std::string::npos)
        << e.path();
}

TEST(DistExportFailure, OneRankFailingToBuildStopsEveryRankAndWritesNothing) {
  World& w = world();
  const int bad = w.size - 1;             // the last rank (rank 0 on one rank)
  const Layout l = layouts(4, 0).back();  // the widest TP layout
  const fs::path out = work_dir() / "fail_build";
  const std::string e = failing_export(l, out, [&](models::CausalLM& m) {
    if (w.rank == bad)
      m.get_submodule("model.layers.1.mlp.down_proj")
          .quantizer("weight_quantizer")
          ->tensor()
          .reset_amax();
  });
  EXPECT_NE(e.find("export_hf_checkpoint_distributed: rank " + std::to_string(bad) +
                   " failed while building its export state dict"),
            std::string::npos)
      << e;
  EXPECT_NE(e.find("model.layers.1.mlp.down_proj"), std::string::npos) << e;
  EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  expect_nothing_written(out);
}

TEST(DistExportFailure, ReplicasThatDifferStopEveryRankAndWriteNothing) {
  World& w = world();
  if (w.size < 2) GTEST_SKIP() << "needs two ranks";
  const Layout l = layouts(4, 0).back();
  const fs::path out = work_dir() / "fail_replica";
  const std::string e = failing_export(l, out, [&](models::CausalLM& m) {
    if (w.rank == 1) {
      at::Tensor& n = m.get_submodule("model.norm").parameter("weight");
      n = n * 2;
    }
  });
  EXPECT_NE(e.find("rank 0 failed while planning the merge"), std::string::npos) << e;
  EXPECT_NE(e.find("'model.norm.weight'"), std::string::npos) << e;
  EXPECT_NE(e.find("rank 0 and rank 1 hold different values"), std::string::npos) << e;
  expect_nothing_written(out);
}

TEST(DistExportFailure, UnsyncedExpertInputAmaxesAreAnError) {
  World& w = world();
  if (w.size < 2) GTEST_SKIP() << "needs two ranks";
  const Case c{"mixtral", {"FP8_DEFAULT_CFG"}, false, "", "fp8"};
  const ModelInfo mi = model_info("mixtral");
  const Layout l{1, 2, 0, w.rank % 2};  // EP 2 (x DP)
  SetActivationAmax set_act;
  auto whole = quantized(mi, c, Layout{}, set_act);
  CopyWholeAmax sync;
  sync.whole = quantizers_by_name(*whole);
  auto shard = load(mi.dir, l);
  sync.global = global_names(*shard);
  calib::quantize(*shard, make_config(c), {}, {&sync});
  if (l.ep_rank == 1)  // what a missing EP sync looks like: other experts, other amaxes
    for (const auto& q : nn::named_tensor_quantizers(*shard))
      if (q.name.find(".experts.") != std::string::npos &&
          q.name.find("input_quantizer") != std::string::npos)
        q.quantizer->set_amax(q.quantizer->amax_buffer() * 2);
  const fs::path out = work_dir() / "fail_experts";
  std::string e;
  try {
    export_hf_checkpoint_distributed(*shard, mi.dir.string(), out.string(), {}, w.comm,
                                     hf_decoder_shard_rule(0, 1), sync.global);
  } catch (const Error& x) {
    e = x.what();
  }
  EXPECT_NE(e.find("MoE expert input scales differ between ranks"), std::string::npos) << e;
  EXPECT_NE(e.find("model.layers.0.block_sparse_moe.experts.0.w1.input_scale' on rank 0"),
            std::string::npos)
      << e;
  expect_nothing_written(out);
}

TEST(DistExportFailure, ExistingOutputIsRefusedOnEveryRank) {
  World& w = world();
  const fs::path out = work_dir() / "fail_exists";
  if (w.rank == 0) {
    fs::create_directories(out);
    std::ofstream(out / "keep.txt") << "x";
  }
  w.comm.barrier();
  const std::string e = failing_export(layouts(4, 0).front(), out, [](models::CausalLM&) {});
  EXPECT_NE(e.find("rank 0 failed while preparing the export"), std::string::npos) << e;
  EXPECT_NE(e.find("not empty"), std::string::npos) << e;
  w.comm.barrier();
  EXPECT_EQ(listing(out), std::vector<std::string>{"keep.txt"});
  w.comm.barrier();
}

}  // namespace
}  // namespace mq::hf_export
