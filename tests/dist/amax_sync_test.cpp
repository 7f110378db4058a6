// AmaxSync under mpirun: a toy HF-named decoder (dense attention + MLP layer, MoE layer) is
// sharded by TP (column: rows, row: columns) and EP (contiguous experts), every rank feeds its own
// DP data, and max calibration with the hook must give, bit for bit, the amaxes (and global
// amaxes) of one process calibrating the full model on every rank's data: the rank's slice for
// sharded per-channel / per-block amaxes, the whole value otherwise.
#include "mq/dist/amax_sync.hpp"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "mq/calib/calibrate.hpp"
#include "mq/config/json.hpp"
#include "mq/config/presets.hpp"
#include "mq/core/error.hpp"
#include "mq/dist/parallel_state.hpp"
#include "mq/nn/conversion.hpp"
#include "mq/nn/moe.hpp"
#include "mq/nn/quant_module.hpp"

namespace mq::dist {
namespace {

// Full sizes. Row-parallel inputs (o_proj: heads*head_dim, down_proj: inter, expert down_proj:
// expert_inter) split into whole INT4 blocks of 128 for every TP size used; hidden = 80 is not a
// multiple of 128 (padded INT4 blocks on the column-parallel weights).
constexpr int64_t kHidden = 80, kHeads = 8, kKvHeads = 4, kHeadDim = 64, kInter = 512;
constexpr int64_t kExperts = 4, kExpertInter = 256, kVocab = 96, kTokens = 12;

uint64_t fnv(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

// Deterministic on every rank: the same (tag, d) gives the same tensor; magnitudes vary with both
// so that maxima come from different ranks.
at::Tensor data(const std::string& tag, int64_t d, at::IntArrayRef shape) {
  auto gen = at::detail::createCPUGenerator(fnv(tag) + 7919 * static_cast<uint64_t>(d));
  const double scale = 1.0 + 0.25 * static_cast<double>((fnv(tag) + d) % 5);
  return at::randn(shape, gen, at::TensorOptions().dtype(at::kFloat)) * scale;
}

// Tokens never reach the last expert, nor expert 1 on DP rank 0.
bool starved(int64_t e, int64_t d) { return e == kExperts - 1 || (e == 1 && d == 0); }

// What this process holds (the reference holds everything).
struct Shard {
  int64_t tp_rank = 0, tp = 1;
  int64_t etp_rank = 0, etp = 1;
  int64_t ep_rank = 0, ep = 1;
  int64_t dp_rank = 0;
  int64_t local_experts() const { return kExperts / ep; }
};

bool is_expert(const std::string& name) { return name.find(".experts.") != std::string::npos; }

bool ends_with(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}

TpRole role_of(const std::string& module) {
  if (ends_with(module, "o_proj") || ends_with(module, "down_proj")) return TpRole::kRow;
  for (const char* c : {"q_proj", "k_proj", "v_proj", "gate_proj", "up_proj", "lm_head"})
    if (ends_with(module, c)) return TpRole::kColumn;
  return TpRole::kReplicated;
}

struct ToyAttention : nn::Module {
  std::string type_name() const override { return "ToyAttention"; }
};

struct ToyMoe : nn::SparseMoeBlock {
  std::string type_name() const override { return "ToyMoe"; }
  nn::ModuleList& experts() override { return child_as<nn::ModuleList>("experts"); }
};

// (out, in) weight of `name`, this shard's rows (column) or columns (row).
std::shared_ptr<nn::Linear> linear(const std::string& name, int64_t out, int64_t in, int64_t rank,
                                   int64_t size, at::ScalarType dtype = at::kFloat) {
  at::Tensor w = data("weight:" + name, 0, {out, in});
  const TpRole role = role_of(name);
  if (role == TpRole::kColumn) w = w.slice(0, rank * out / size, (rank + 1) * out / size);
  if (role == TpRole::kRow) w = w.slice(1, rank * in / size, (rank + 1) * in / size);
  return std::make_shared<nn::Linear>(w.contiguous().to(dtype), at::Tensor());
}

std::shared_ptr<nn::ModuleList> build_model(const Shard& s) {
  auto root = std::make_shared<nn::ModuleList>();
  auto model = std::make_shared<nn::ModuleList>();
  auto layers = std::make_shared<nn::ModuleList>();
  for (int l = 0; l < 2; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    auto layer = std::make_shared<nn::ModuleList>();
    auto attn = std::make_shared<ToyAttention>();
    attn->register_module(
        "q_proj", linear(p + "self_attn.q_proj", kHeads * kHeadDim, kHidden, s.tp_rank, s.tp));
    attn->register_module(
        "k_proj", linear(p + "self_attn.k_proj", kKvHeads * kHeadDim, kHidden, s.tp_rank, s.tp));
    attn->register_module(
        "v_proj", linear(p + "self_attn.v_proj", kKvHeads * kHeadDim, kHidden, s.tp_rank, s.tp));
    attn->register_module(
        "o_proj", linear(p + "self_attn.o_proj", kHidden, kHeads * kHeadDim, s.tp_rank, s.tp));
    layer->register_module("self_attn", attn);
    if (l == 0) {  // dense bf16 MLP: a second dtype in the buckets
      auto mlp = std::make_shared<nn::ModuleList>();
      mlp->register_module("gate_proj", linear(p + "mlp.gate_proj", kInter, kHidden, s.tp_rank,
                                               s.tp, at::kBFloat16));
      mlp->register_module(
          "up_proj", linear(p + "mlp.up_proj", kInter, kHidden, s.tp_rank, s.tp, at::kBFloat16));
      mlp->register_module("down_proj", linear(p + "mlp.down_proj", kHidden, kInter, s.tp_rank,
                                               s.tp, at::kBFloat16));
      layer->register_module("mlp", mlp);
    } else {
      auto moe = std::make_shared<ToyMoe>();
      moe->register_module("gate", linear(p + "mlp.gate", kExperts, kHidden, 0, 1));
      auto experts = std::make_shared<nn::ModuleList>();
      for (int64_t i = 0; i < s.local_experts(); ++i) {
        const int64_t e = s.ep_rank * s.local_experts() + i;
        const std::string q = p + "mlp.experts." + std::to_string(e) + ".";
        auto ex = std::make_shared<nn::ModuleList>();
        ex->register_module("gate_proj",
                            linear(q + "gate_proj", kExpertInter, kHidden, s.etp_rank, s.etp));
        ex->register_module("up_proj",
                            linear(q + "up_proj", kExpertInter, kHidden, s.etp_rank, s.etp));
        ex->register_module("down_proj",
                            linear(q + "down_proj", kHidden, kExpertInter, s.etp_rank, s.etp));
        experts->push_back(ex);
      }
      moe->register_module("experts", experts);
      layer->register_module("mlp", moe);
    }
    layers->push_back(layer);
  }
  model->register_module("layers", layers);
  root->register_module("model", model);
  root->register_module("lm_head", linear("lm_head", kVocab, kHidden, s.tp_rank, s.tp));
  return root;
}

nn::Linear& lin(nn::Module& root, const std::string& name) {
  return dynamic_cast<nn::Linear&>(root.get_submodule(name));
}

at::Tensor slice_cols(const at::Tensor& x, int64_t rank, int64_t size) {
  const int64_t n = x.size(-1) / size;
  return x.slice(-1, rank * n, (rank + 1) * n).contiguous();
}

void run_bmm(nn::Module& attn, const std::string& which, const at::Tensor& t) {
  if (nn::QuantizerModule* q = attn.quantizer(which + "_bmm_quantizer")) q->forward(t);
}

// The forward loop: dense modules see the data of each DP rank in `dense`, expert e the data of
// each DP rank in `expert_data[e]` (not starved). Inputs are generated at full size and sliced
// like the weights, so every collected value also exists in the full model.
void feed(nn::Module& root, const Shard& s, const std::vector<int64_t>& dense,
          const std::map<int64_t, std::set<int64_t>>& expert_data) {
  for (int64_t d : dense) {
    for (int l = 0; l < 2; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      const std::string a = p + "self_attn";
      const at::Tensor x = data(a + ".x", d, {kTokens, kHidden});
      for (const char* n : {".q_proj", ".k_proj", ".v_proj"}) lin(root, a + n).forward(x);
      nn::Module& attn = root.get_submodule(a);
      const int64_t h = kHeads / s.tp, kvh = kKvHeads / s.tp;
      run_bmm(attn, "q",
              data(a + ".q", d, {kHeads, kTokens, kHeadDim})
                  .slice(0, s.tp_rank * h, (s.tp_rank + 1) * h));
      run_bmm(attn, "k",
              data(a + ".k", d, {kKvHeads, kTokens, kHeadDim})
                  .slice(0, s.tp_rank * kvh, (s.tp_rank + 1) * kvh));
      run_bmm(attn, "v",
              data(a + ".v", d, {kKvHeads, kTokens, kHeadDim})
                  .slice(0, s.tp_rank * kvh, (s.tp_rank + 1) * kvh));
      run_bmm(attn, "p",
              at::softmax(data(a + ".p", d, {kHeads, kTokens, kTokens}), -1)
                  .slice(0, s.tp_rank * h, (s.tp_rank + 1) * h));
      lin(root, a + ".o_proj")
          .forward(slice_cols(data(a + ".o", d, {kTokens, kHeads * kHeadDim}), s.tp_rank, s.tp));
      if (l == 0) {
        const at::Tensor xm = data(p + "mlp.x", d, {kTokens, kHidden}).to(at::kBFloat16);
        lin(root, p + "mlp.gate_proj").forward(xm);
        lin(root, p + "mlp.up_proj").forward(xm);
        lin(root, p + "mlp.down_proj")
            .forward(slice_cols(data(p + "mlp.down", d, {kTokens, kInter}), s.tp_rank, s.tp)
                         .to(at::kBFloat16));
      } else {
        lin(root, p + "mlp.gate").forward(data(p + "mlp.x", d, {kTokens, kHidden}));
      }
    }
  }
  const std::string p = "model.layers.1.mlp.experts.";
  for (const auto& [e, ds] : expert_data)
    for (int64_t d : ds) {
      if (starved(e, d)) continue;
      const int64_t local = e - s.ep_rank * s.local_experts();
      const std::string q = p + std::to_string(local) + ".";
      const int64_t t = 3 + e;
      const at::Tensor x = data("expert.x" + std::to_string(e), d, {t, kHidden});
      lin(root, q + "gate_proj").forward(x);
      lin(root, q + "up_proj").forward(x);
      lin(root, q + "down_proj")
          .forward(slice_cols(data("down" + std::to_string(e), d, {t, kExpertInter}), s.etp_rank,
                              s.etp));
    }
}

struct Case {
  std::string name;
  std::string preset;
  std::string kv;            // "" or a kv preset
  bool all_bmm_fp8 = false;  // also enable q/p_bmm (FP8)
  bool sync_expert_weight_amax = false;
};

Case make_case(std::string name, std::string preset, std::string kv = "", bool all_bmm = false,
               bool sync_expert_weights = false) {
  return {std::move(name), std::move(preset), std::move(kv), all_bmm, sync_expert_weights};
}

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

config::QuantizeConfig quant_config(const Case& c) {
  config::QuantizeConfig cfg = config::load_quantize_config(c.preset);
  if (!c.kv.empty())
    cfg = config::update_quant_cfg_with_kv_cache_quant(
        cfg, config::load_quantize_config(c.kv).quant_cfg);
  if (c.all_bmm_fp8)
    cfg.quant_cfg.push_back(config::parse_quantizer_cfg_entry(nlohmann::ordered_json::parse(
        R"({"quantizer_name": "*bmm_quantizer", "cfg": {"num_bits": "e4m3", "axis": null}})")));
  return cfg;
}

config::AlgorithmConfig max_algorithm(const Case& c) {
  config::AlgorithmConfig a;  // "max", whatever the preset's algorithm
  a.sync_expert_weight_amax = c.sync_expert_weight_amax;
  return a;
}

void convert(nn::Module& m, const config::QuantizeConfig& cfg) {
  static const bool registered = [] {
    nn::register_quant_attention("ToyAttention");
    return true;
  }();
  (void)registered;
  nn::replace_quant_module(m);
  nn::set_quantizer_by_cfg(m, cfg.quant_cfg);
}

struct Layout {
  ParallelLayout layout;
  std::string name;
};

std::vector<Layout> layouts(int w) {
  std::vector<Layout> out;
  auto add = [&](ParallelLayout L, const std::string& n) {
    L.world_size = w;
    out.push_back({resolve_layout(L), n});
  };
  add({.tp = 1}, "dp");
  if (w >= 2) {
    add({.tp = 2}, "tp2");
    add({.tp = 1, .ep = 2, .expert_tp = 1}, "dp_ep2");
    add({.tp = 2, .ep = 2, .expert_tp = 1}, "tp2_ep2");
  }
  if (w >= 4) {
    add({.tp = 4, .ep = 1, .expert_tp = 1}, "tp4_etp1");
    add({.tp = 2, .ep = 1}, "tp2_etp2");
    add({.tp = 1, .ep = 4, .expert_tp = 1}, "dp4_ep4");
  }
  // Keep those that fit the toy model (heads, experts and blocks divide).
  std::vector<Layout> fit;
  for (const auto& l : out)
    if (l.layout.tp <= 4 && kExperts % l.layout.ep == 0 && kExpertInter / l.layout.expert_tp >= 128)
      fit.push_back(l);
  return fit;
}

Shard shard_of(const ParallelLayout& L, int rank) {
  const RankGroups g = rank_groups(L, rank);
  return {g.tp_rank, L.tp, g.expert_tp_rank, L.expert_tp, g.ep_rank, L.ep, g.dp_rank};
}

// Experts fed by this rank, and (reference) the union over every rank of the layout.
std::map<int64_t, std::set<int64_t>> expert_feed(const ParallelLayout& L, int rank) {
  const Shard s = shard_of(L, rank);
  std::map<int64_t, std::set<int64_t>> out;
  for (int64_t i = 0; i < s.local_experts(); ++i)
    out[s.ep_rank * s.local_experts() + i].insert(s.dp_rank);
  return out;
}
std::map<int64_t, std::set<int64_t>> expert_feed_all(const ParallelLayout& L) {
  std::map<int64_t, std::set<int64_t>> out;
  for (int r = 0; r < L.world_size; ++r)
    for (auto& [e, ds] : expert_feed(L, r)) out[e].insert(ds.begin(), ds.end());
  return out;
}

ParallelInfoFn info_fn(const ParallelGroups& g) {
  return [&g](const std::string& name, nn::Module&) -> std::optional<ModuleParallelInfo> {
    if (ends_with(name, "mlp.gate")) return std::nullopt;  // ModelOpt's default: DP = world
    if (is_expert(name)) return ModuleParallelInfo{g.experts(), role_of(name)};
    return ModuleParallelInfo{g.dense(), role_of(name)};
  };
}

// The disabled router input quantizer carries a rank-dependent amax into calibration: DP = world
// must leave the world maximum on every rank.
void preset_router_amax(nn::Module& m, double v) {
  dynamic_cast<nn::QuantizerModule&>(m.get_submodule("model.layers.1.mlp.gate.input_quantizer"))
      .tensor()
      .set_amax(at::full({}, v, at::kFloat));
}

bool bits_equal(const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || !a.sizes().equals(b.sizes())) return false;
  const auto it = a.element_size() == 4 ? at::kInt : a.element_size() == 2 ? at::kShort : at::kLong;
  return at::equal(a.contiguous().view(it), b.contiguous().view(it));
}

std::string global_name(const std::string& local, const Shard& s) {
  const std::string key = "mlp.experts.";
  const size_t at = local.find(key);
  if (at == std::string::npos) return local;
  const size_t b = at + key.size(), e = local.find('.', b);
  const int64_t i = std::stoll(local.substr(b, e - b));
  return local.substr(0, b) + std::to_string(s.ep_rank * s.local_experts() + i) + local.substr(e);
}

// Every leaf of `dist` against the reference: equal, or the rank's slice of a sharded amax.
void compare(nn::Module& dist, nn::Module& ref, const Shard& s, const std::string& where,
             bool sharded_weights) {
  std::map<std::string, nn::QuantizerLeaf> refs;
  for (const auto& l : nn::named_tensor_quantizers(ref)) refs.emplace(l.name, l);
  int compared = 0, sliced = 0;
  for (const auto& l : nn::named_tensor_quantizers(dist)) {
    const std::string gname = global_name(l.name, s);
    SCOPED_TRACE(where + " " + l.name);
    auto it = refs.find(gname);
    ASSERT_NE(it, refs.end()) << gname;
    const quant::TensorQuantizer& q = *l.quantizer;
    const quant::TensorQuantizer& r = *it->second.quantizer;
    ASSERT_EQ(q.has_amax_buffer(), r.has_amax_buffer());
    EXPECT_EQ(q.is_static_block_scale_quantizer(), r.is_static_block_scale_quantizer());
    ASSERT_EQ(q.global_amax().has_value(), r.global_amax().has_value());
    if (q.global_amax()) {
      EXPECT_TRUE(bits_equal(*q.global_amax(), *r.global_amax()))
          << *q.global_amax() << " vs " << *r.global_amax();
    }
    if (!q.has_amax_buffer()) continue;
    const at::Tensor a = q.amax_buffer(), b = r.amax_buffer();
    ++compared;
    if (a.sizes().equals(b.sizes())) {
      EXPECT_TRUE(bits_equal(a, b))
          << a.flatten().slice(0, 0, 4) << " vs " << b.flatten().slice(0, 0, 4);
      continue;
    }
    // Sharded: per-channel / per-block amax laid out (cout, blocks per row).
    const std::string module = gname.substr(0, gname.find("_quantizer"));
    const std::string mod = module.substr(0, module.rfind('.'));
    const int64_t cout = dynamic_cast<nn::Linear&>(ref.get_submodule(mod)).out_features();
    const bool expert = is_expert(mod);
    const int64_t rank = expert ? s.etp_rank : s.tp_rank, size = expert ? s.etp : s.tp;
    at::Tensor full = b.reshape({cout, -1});
    const int dim = role_of(mod) == TpRole::kColumn ? 0 : 1;
    ASSERT_NE(role_of(mod), TpRole::kReplicated);
    const int64_t n = full.size(dim) / size;
    const at::Tensor want = full.slice(dim, rank * n, (rank + 1) * n).reshape(a.sizes());
    EXPECT_TRUE(bits_equal(a, want));
    ++sliced;
  }
  EXPECT_GT(compared, 10) << where;
  if (sharded_weights && s.tp > 1) {
    EXPECT_GT(sliced, 0) << where << ": no sharded amax compared";
  }
}

class AmaxSyncPresets : public ::testing::TestWithParam<Case> {};

TEST_P(AmaxSyncPresets, BitIdenticalToOneProcessOnEveryLayout) {
  const Case& c = GetParam();
  MpiComm world = MpiComm::world();
  const config::QuantizeConfig cfg = quant_config(c);
  const config::AlgorithmConfig algo = max_algorithm(c);
  for (const Layout& lay : layouts(world.size())) {
    const ParallelLayout& L = lay.layout;
    const ParallelGroups g = make_parallel_groups(world, L);
    const Shard s = shard_of(L, world.rank());

    auto dist = build_model(s);
    convert(*dist, cfg);
    preset_router_amax(*dist, 1.0 + world.rank());
    AmaxSync sync(info_fn(g), g.world);
    const auto feed_local = expert_feed(L, world.rank());
    calib::ForwardLoop loop = [&](nn::Module& m) { feed(m, s, {s.dp_rank}, feed_local); };
    calib::max_calibrate(*dist, algo, loop, {.parallel = &sync});

    auto ref = build_model(Shard{});
    convert(*ref, cfg);
    preset_router_amax(*ref, world.size());
    std::vector<int64_t> all_dp;
    for (int64_t d = 0; d < L.dp; ++d) all_dp.push_back(d);
    const auto feed_all = expert_feed_all(L);
    calib::ForwardLoop ref_loop = [&](nn::Module& m) { feed(m, Shard{}, all_dp, feed_all); };
    calib::max_calibrate(*ref, algo, ref_loop);

    // Per-channel / per-block weight amaxes are sharded under TP; per-tensor ones never are.
    const bool sharded = c.preset != "FP8_DEFAULT_CFG" && c.preset != "NVFP4_DEFAULT_CFG";
    compare(*dist, *ref, s, c.name + "/" + lay.name, sharded);
    EXPECT_TRUE(sync.report().unset.empty()) << lay.name;

    // Bucketing: one exchange per group and at most one reduction per group and dtype (fp32,
    // bf16), whatever the number of quantizers.
    const AmaxSyncReport& rep = sync.report();
    for (const auto& ph : rep.phases) {
      EXPECT_EQ(ph.exchanges, ph.buckets) << ph.name;
      EXPECT_LE(ph.reductions, 2 * ph.buckets) << ph.name;
    }
    EXPECT_LE(rep.phase("dp").buckets, 3);  // dense dp, expert dp, world (router)
    EXPECT_GT(rep.phase("dp").entries, 40);
    EXPECT_LE(rep.phase("ep").buckets, 1);
    EXPECT_LE(rep.phase("tp").buckets, 2);  // tp, expert tp
    EXPECT_LE(rep.phase("global_tp").buckets, 2);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Presets, AmaxSyncPresets,
    ::testing::Values(make_case("fp8_all_bmm", "FP8_DEFAULT_CFG", "", true),
                      make_case("int8_per_channel", "INT8_DEFAULT_CFG"),
                      make_case("int4_block_w4a16", "INT4_AWQ_CFG"),
                      make_case("nvfp4_fp8_kv", "NVFP4_DEFAULT_CFG", "kv/fp8"),
                      make_case("nvfp4_static", "NVFP4_W4A4_WEIGHT_MSE_FP8_SWEEP_CFG"),
                      make_case("nvfp4_static_sync_expert_weights",
                                "NVFP4_W4A4_WEIGHT_MSE_FP8_SWEEP_CFG", "", false, true),
                      make_case("w4a8_sequential", "W4A8_AWQ_BETA_CFG")),
    [](const auto& info) { return info.param.name; });

// Without the local MoE sync (moe_calib_experts_ratio set) an expert's input amax comes from its
// own tokens only: the last expert (no token anywhere) stays unset and is reported; expert 1 (no
// token on DP rank 0) is reported as incomplete and gets the maximum of the other ranks.
TEST(AmaxSync, StarvedExpertsAreReportedNotHung) {
  MpiComm world = MpiComm::world();
  const int w = world.size();
  ParallelLayout L = resolve_layout({.world_size = w, .tp = 1});
  const ParallelGroups g = make_parallel_groups(world, L);
  const Shard s = shard_of(L, world.rank());
  const Case c = make_case("fp8", "FP8_DEFAULT_CFG");
  config::AlgorithmConfig algo = max_algorithm(c);
  algo.moe_calib_experts_ratio = 1.0;

  auto dist = build_model(s);
  convert(*dist, quant_config(c));
  AmaxSync sync(info_fn(g), g.world);
  const auto feed_local = expert_feed(L, world.rank());
  calib::max_calibrate(*dist, algo, [&](nn::Module& m) { feed(m, s, {s.dp_rank}, feed_local); },
                       {.parallel = &sync});
  auto ref = build_model(Shard{});
  convert(*ref, quant_config(c));
  std::vector<int64_t> all_dp;
  for (int64_t d = 0; d < L.dp; ++d) all_dp.push_back(d);
  const auto feed_all = expert_feed_all(L);
  calib::max_calibrate(*ref, algo, [&](nn::Module& m) { feed(m, Shard{}, all_dp, feed_all); });
  compare(*dist, *ref, s, "starved", false);

  const AmaxSyncReport& rep = sync.report();
  std::vector<std::string> want_unset;
  for (int64_t e : {int64_t{1}, kExperts - 1}) {
    if (e == 1 && w > 1) continue;
    for (const char* p : {"gate_proj", "up_proj", "down_proj"})
      want_unset.push_back("model.layers.1.mlp.experts." + std::to_string(e) + "." + p +
                           ".input_quantizer");
  }
  EXPECT_EQ(rep.unset, want_unset);
  for (const auto& n : want_unset) {
    const auto& q = dynamic_cast<nn::QuantizerModule&>(dist->get_submodule(n)).tensor();
    EXPECT_FALSE(q.has_amax_buffer()) << n;
  }
  if (w > 1) {
    ASSERT_EQ(rep.incomplete.size(), 3u);
    for (const auto& inc : rep.incomplete) {
      EXPECT_NE(inc.quantizer.find("mlp.experts.1."), std::string::npos) << inc.quantizer;
      EXPECT_EQ(inc.ranks_with_value, w - 1);
      EXPECT_EQ(inc.group_size, w);
      EXPECT_EQ(inc.group.rfind("dp: ", 0), 0u) << inc.group;
    }
    ASSERT_FALSE(rep.warnings.empty());
    EXPECT_NE(rep.warnings[0].find("experts.1.gate_proj.input_quantizer (" + std::to_string(w - 1) +
                                   " of " + std::to_string(w) + ")"),
              std::string::npos)
        << rep.warnings[0];
  } else {
    EXPECT_TRUE(rep.incomplete.empty());
  }
}

TEST(AmaxSync, HfDecoderPlan) {
  MpiComm world = MpiComm::world();
  const ParallelGroups g = make_parallel_groups(world, {.tp = world.size()});
  nn::Linear dummy(at::ones({1, 1}), at::Tensor());
  for (bool sharded : {false, true}) {
    const ParallelInfoFn f = hf_decoder_parallel_info(g, sharded);
    auto info = [&](const std::string& n) { return *f(n, dummy); };
    EXPECT_EQ(info("model.layers.0.self_attn.q_proj").role, TpRole::kColumn);
    EXPECT_EQ(info("model.layers.0.self_attn.o_proj").role, TpRole::kRow);
    EXPECT_EQ(info("model.layers.0.mlp.down_proj").role, TpRole::kRow);
    EXPECT_EQ(info("model.layers.0.self_attn").role, TpRole::kReplicated);
    EXPECT_EQ(info("lm_head").role, TpRole::kReplicated);
    EXPECT_EQ(info("model.layers.1.block_sparse_moe.gate").role, TpRole::kReplicated);
    const auto ex = info("model.layers.1.block_sparse_moe.experts.3.w3");
    EXPECT_EQ(ex.role, sharded ? TpRole::kColumn : TpRole::kReplicated);
    EXPECT_EQ(ex.state.expert_model_parallel_group.name(), "ep");
    EXPECT_EQ(ex.state.data_parallel_group.name(), "expert_dp");
    const auto shared = info("model.layers.1.mlp.shared_experts.up_proj");
    EXPECT_EQ(shared.role, TpRole::kColumn);
    EXPECT_FALSE(shared.state.expert_model_parallel_group.is_initialized());
    EXPECT_EQ(shared.state.tensor_parallel_group.name(), "tp");
  }
}

// A rank whose model lists a different number of quantizers makes every rank throw the same error
// (instead of a hang in a mismatched collective).
TEST(AmaxSync, DifferentStructuresThrowOnEveryRank) {
  MpiComm world = MpiComm::world();
  if (world.size() < 2) GTEST_SKIP() << "needs 2 ranks";
  const ParallelGroups g = make_parallel_groups(world, {.tp = 1});
  auto m = std::make_shared<nn::ModuleList>();
  const int n = world.rank() == 1 ? 3 : 2;
  for (int i = 0; i < n; ++i)
    m->push_back(std::make_shared<nn::Linear>(at::ones({2, 2}) * (i + 1), at::Tensor()));
  nn::replace_quant_module(*m);
  AmaxSync sync(
      [&](const std::string&, nn::Module&) { return std::optional<ModuleParallelInfo>(); },
      g.world);
  try {
    calib::max_calibrate(*m, config::AlgorithmConfig{}, {}, {.parallel = &sync});
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("rank 1 lists 9 quantizers but rank 0 lists 6"),
              std::string::npos)
        << e.what();
  }
}

// Closed form over two ranks of DP: an fp32 per-tensor amax set on rank 0 only, a bf16 per-channel
// one on both; one exchange and one reduction per dtype.
TEST(AmaxSync, OptionalValuesAndDtypesInOneBucket) {
  MpiComm world = MpiComm::world();
  const ParallelGroups g = make_parallel_groups(world, {.tp = 1});
  auto m = std::make_shared<nn::ModuleList>();
  m->push_back(std::make_shared<nn::Linear>(at::ones({2, 2}), at::Tensor()));
  nn::replace_quant_module(*m);
  auto& in = dynamic_cast<nn::QuantizerModule&>(m->get_submodule("0.input_quantizer")).tensor();
  auto& w = dynamic_cast<nn::QuantizerModule&>(m->get_submodule("0.weight_quantizer")).tensor();
  nn::disable_quantizer(*m, "*");  // nothing recalibrates: only the preset amaxes travel
  if (world.rank() == 0) in.set_amax(at::full({}, 3.5f));
  w.set_amax(
      at::tensor({1.0f + world.rank(), 5.0f - world.rank()}).reshape({2, 1}).to(at::kBFloat16));
  AmaxSync sync([](const std::string&, nn::Module&) { return std::optional<ModuleParallelInfo>(); },
                g.world);
  calib::max_calibrate(*m, config::AlgorithmConfig{}, {}, {.parallel = &sync});
  ASSERT_TRUE(in.has_amax_buffer());
  EXPECT_EQ(in.amax_buffer().item<float>(), 3.5f);
  EXPECT_EQ(in.amax_buffer().scalar_type(), at::kFloat);
  const int wsz = world.size();
  EXPECT_TRUE(bits_equal(w.amax_buffer(),
                         at::tensor({float(wsz), 5.0f}).reshape({2, 1}).to(at::kBFloat16)));
  const auto& dp = sync.report().phase("dp");
  EXPECT_EQ(dp.entries, 3);  // input, weight, output (disabled, no amax anywhere)
  EXPECT_EQ(dp.buckets, 1);
  EXPECT_EQ(dp.exchanges, 1);
  EXPECT_EQ(dp.reductions, 2);
  EXPECT_TRUE(sync.report().unset.empty());  // disabled quantizers are not reported
  EXPECT_EQ(sync.report().incomplete.size(), wsz > 1 ? 1u : 0u);
}

}  // namespace
}  // namespace mq::dist
