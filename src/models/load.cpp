#include <ATen/ATen.h>

#include <set>

#include "mq/core/error.hpp"
#include "mq/dist/parallel_state.hpp"
#include "mq/models/causal_lm.hpp"
#include "mq/models/checkpoint.hpp"

namespace mq::models {

namespace {

/// Builds the tree, asking `src` for every parameter by its checkpoint name.
class Builder {
 public:
  Builder(const HfConfig& cfg, const WeightSource& src, const ParallelSpec& par)
      : cfg_(cfg), t_(cfg.traits()), src_(src), par_(par) {}

  at::Tensor whole(const std::string& name, std::vector<int64_t> shape) {
    return src_(name, shape, -1, 0, 0);
  }
  at::Tensor part(const std::string& name, std::vector<int64_t> shape, int64_t dim,
                  std::pair<int64_t, int64_t> r) {
    if (r.first == 0 && r.second == shape[static_cast<size_t>(dim)])
      return whole(name, std::move(shape));
    return src_(name, shape, dim, r.first, r.second);
  }

  /// A linear whose output rows [r) are local (column parallel); `bias` as the config says.
  std::shared_ptr<nn::Linear> column(const std::string& p, int64_t out, int64_t in,
                                     std::pair<int64_t, int64_t> r, bool bias) {
    at::Tensor w = part(p + ".weight", {out, in}, 0, r);
    at::Tensor b = bias ? part(p + ".bias", {out}, 0, r) : at::Tensor();
    auto lin = std::make_shared<nn::Linear>(std::move(w), std::move(b));
    // Layout-invariant mode: the product runs in `chunks` equal output slices of the whole weight,
    // whatever the TP split, so every GEMM has the same shape in every layout (cuBLAS chooses its
    // kernel, and so its summation order, by shape; on the CPU slices are exact anyway).
    const int64_t chunks = par_.chunks();
    if (chunks > 1 && out % chunks == 0) {
      const int64_t local = chunks / par_.tp_size;
      lin->set_linear_fn([local](const at::Tensor& x, const at::Tensor& wt, const at::Tensor& bt) {
        std::vector<at::Tensor> parts;
        const int64_t n = wt.size(0) / local;
        for (int64_t c = 0; c < local; ++c)
          parts.push_back(at::linear(x, wt.narrow(0, c * n, n),
                                     bt.defined() ? bt.narrow(0, c * n, n) : at::Tensor()));
        return local == 1 ? parts[0] : at::cat(parts, -1);
      });
    }
    return lin;
  }
  /// A linear whose input columns [r) are local (row parallel). Every TP rank holds the whole bias
  /// and adds it after the chunked reduction (ParallelSpec), so all layouts give the same bits.
  std::shared_ptr<nn::Linear> row(const std::string& p, int64_t out, int64_t in,
                                  std::pair<int64_t, int64_t> r, bool bias) {
    const int64_t chunks = par_.chunks();
    MQ_CHECK(in % chunks == 0, "parallel: reduction_chunks ", chunks, " does not divide ", p,
             " in_features ", in);
    at::Tensor w = part(p + ".weight", {out, in}, 1, r);
    at::Tensor b = bias ? whole(p + ".bias", {out}) : at::Tensor();
    auto lin = std::make_shared<nn::Linear>(std::move(w), std::move(b));
    if (par_.tp_size > 1 || chunks > 1)
      lin->set_linear_fn(
          [spec = par_](const at::Tensor& x, const at::Tensor& wt, const at::Tensor& bt) {
            return row_parallel_linear(x, wt, bt, spec);
          });
    return lin;
  }
  std::shared_ptr<RMSNorm> norm(const std::string& p, int64_t n) {
    return std::make_shared<RMSNorm>(std::string(t_.norm_class), whole(p + ".weight", {n}),
                                     cfg_.rms_norm_eps);
  }

  std::shared_ptr<Attention> attention(const std::string& p, int64_t layer) {
    const int64_t hd = cfg_.head_dim, hid = cfg_.hidden_size;
    auto heads = ParallelSpec::range(cfg_.num_attention_heads, par_.tp_rank, par_.tp_size,
                                     "num_attention_heads");
    auto kv = ParallelSpec::range(cfg_.num_key_value_heads, par_.tp_rank, par_.tp_size,
                                  "num_key_value_heads");
    auto scale = [&](std::pair<int64_t, int64_t> r) {
      return std::make_pair(r.first * hd, r.second * hd);
    };
    const bool qkv_bias = t_.qkv_bias_always || (t_.qkv_bias_from_config && cfg_.attention_bias);
    const bool o_bias = t_.o_bias_from_config && cfg_.attention_bias;
    auto a = std::make_shared<Attention>(std::string(t_.attention_class),
                                         heads.second - heads.first, kv.second - kv.first, hd,
                                         cfg_.sliding_window[static_cast<size_t>(layer)] > 0);
    a->register_module("q_proj", column(p + ".q_proj", cfg_.num_attention_heads * hd, hid,
                                        scale(heads), qkv_bias));
    a->register_module(
        "k_proj", column(p + ".k_proj", cfg_.num_key_value_heads * hd, hid, scale(kv), qkv_bias));
    a->register_module(
        "v_proj", column(p + ".v_proj", cfg_.num_key_value_heads * hd, hid, scale(kv), qkv_bias));
    a->register_module(
        "o_proj", row(p + ".o_proj", hid, cfg_.num_attention_heads * hd, scale(heads), o_bias));
    a->set_per_head_products(par_.tp_size > 1 || par_.chunks() > 1);
    if (t_.qk_norm) {
      a->register_module("q_norm", norm(p + ".q_norm", hd));
      a->register_module("k_norm", norm(p + ".k_norm", hd));
    }
    return a;
  }

  std::shared_ptr<Mlp> dense_mlp(const std::string& p) {
    const int64_t hid = cfg_.hidden_size, inter = cfg_.intermediate_size;
    auto r = ParallelSpec::range(inter, par_.tp_rank, par_.tp_size, "intermediate_size");
    const bool bias = t_.mlp_bias_from_config && cfg_.mlp_bias;
    auto m = std::make_shared<Mlp>(std::string(t_.mlp_class), "gate_proj", "up_proj", "down_proj");
    m->register_module("gate_proj", column(p + ".gate_proj", inter, hid, r, bias));
    m->register_module("up_proj", column(p + ".up_proj", inter, hid, r, bias));
    m->register_module("down_proj", row(p + ".down_proj", hid, inter, r, bias));
    return m;
  }

  std::shared_ptr<SparseMoe> moe(const std::string& p, const ParallelSpec* spec) {
    const int64_t hid = cfg_.hidden_size, inter = cfg_.expert_intermediate_size(),
                  e_all = cfg_.num_experts;
    auto r = ParallelSpec::range(e_all, par_.ep_rank, par_.ep_size, "num_experts");
    auto m = std::make_shared<SparseMoe>(std::string(t_.moe_class), t_.routing, e_all,
                                         cfg_.num_experts_per_tok, cfg_.norm_topk_prob, r.first,
                                         r.second - r.first, spec);
    m->register_module("gate", std::make_shared<nn::Linear>(whole(p + ".gate.weight", {e_all, hid}),
                                                            at::Tensor()));
    auto experts = std::make_shared<nn::ModuleList>();
    const std::string g(t_.expert_gate), u(t_.expert_up), d(t_.expert_down);
    for (int64_t e = r.first; e < r.second; ++e) {
      const std::string q = p + ".experts." + std::to_string(e) + ".";
      auto x = std::make_shared<Mlp>(std::string(t_.expert_class), g, u, d);
      // HF module order of an expert: w1, w2, w3 (Mixtral) / gate_proj, up_proj, down_proj
      // (Qwen3-MoE).
      auto add = [&](const std::string& n, int64_t out, int64_t in) {
        x->register_module(
            n, std::make_shared<nn::Linear>(whole(q + n + ".weight", {out, in}), at::Tensor()));
      };
      if (t_.routing == MoeRouting::kMixtral) {
        add(g, inter, hid);
        add(d, hid, inter);
        add(u, inter, hid);
      } else {
        add(g, inter, hid);
        add(u, inter, hid);
        add(d, hid, inter);
      }
      experts->push_back(x);
    }
    m->register_module("experts", experts);
    return m;
  }

  std::unique_ptr<CausalLM> build(c10::ScalarType dtype, c10::Device device) {
    auto lm = std::make_unique<CausalLM>(cfg_, dtype, device, par_);
    const int64_t hid = cfg_.hidden_size, vocab = cfg_.vocab_size;
    auto model = std::make_shared<DecoderModel>(std::string(t_.model_class), cfg_, dtype);
    at::Tensor embed = whole("model.embed_tokens.weight", {vocab, hid});
    model->register_module("embed_tokens", std::make_shared<nn::Embedding>(embed));
    auto layers = std::make_shared<nn::ModuleList>();
    for (int64_t i = 0; i < cfg_.num_hidden_layers; ++i) {
      const std::string p = "model.layers." + std::to_string(i);
      const bool is_moe = cfg_.is_moe_layer(i);
      const std::string mlp_name = is_moe ? std::string(t_.moe_child) : "mlp";
      auto layer = std::make_shared<DecoderLayer>(std::string(t_.decoder_layer_class), mlp_name);
      layer->register_module("self_attn", attention(p + ".self_attn", i));
      if (is_moe)
        layer->register_module(mlp_name, moe(p + "." + mlp_name, &lm->parallel()));
      else
        layer->register_module(mlp_name, dense_mlp(p + ".mlp"));
      layer->register_module("input_layernorm", norm(p + ".input_layernorm", hid));
      layer->register_module("post_attention_layernorm",
                             norm(p + ".post_attention_layernorm", hid));
      layers->push_back(layer);
    }
    model->register_module("layers", layers);
    model->register_module("norm", norm("model.norm", hid));
    model->register_module(
        "rotary_emb", std::make_shared<RotaryEmbedding>(std::string(t_.rotary_class), cfg_.rope,
                                                        cfg_.head_dim, device));
    lm->register_module("model", model);
    at::Tensor head = cfg_.tie_word_embeddings ? embed : whole("lm_head.weight", {vocab, hid});
    lm->register_module("lm_head", std::make_shared<nn::Linear>(head, at::Tensor()));
    return lm;
  }

 private:
  const HfConfig& cfg_;
  const FamilyTraits& t_;
  const WeightSource& src_;
  const ParallelSpec& par_;
};

void check_parallel(const ParallelSpec& p) {
  MQ_CHECK(p.tp_size >= 1 && p.tp_rank >= 0 && p.tp_rank < p.tp_size, "parallel: tp_rank ",
           p.tp_rank, " / tp_size ", p.tp_size, " is invalid");
  MQ_CHECK(p.ep_size >= 1 && p.ep_rank >= 0 && p.ep_rank < p.ep_size, "parallel: ep_rank ",
           p.ep_rank, " / ep_size ", p.ep_size, " is invalid");
  MQ_CHECK(p.reduction_chunks >= 0, "parallel: reduction_chunks ", p.reduction_chunks,
           " is negative (0 means tp_size)");
  MQ_CHECK(p.chunks() % p.tp_size == 0, "parallel: reduction_chunks ", p.chunks(),
           " is not a multiple of tp_size ", p.tp_size);
  MQ_CHECK(p.tp_size == 1 || p.tp_all_gather, "parallel: tp_size ", p.tp_size,
           " needs tp_all_gather");
  MQ_CHECK(p.ep_size == 1 || p.ep_all_gather_v, "parallel: ep_size ", p.ep_size,
           " needs ep_all_gather_v");
  MQ_CHECK(p.ep_size == 1 || p.ep_all_to_all_v, "parallel: ep_size ", p.ep_size,
           " needs ep_all_to_all_v");
}

std::vector<int64_t> sliced(std::vector<int64_t> shape, int64_t dim, int64_t begin, int64_t end) {
  if (dim >= 0) shape[static_cast<size_t>(dim)] = end - begin;
  return shape;
}

}  // namespace

std::unique_ptr<CausalLM> build_causal_lm(const HfConfig& cfg, const WeightSource& source,
                                          c10::ScalarType dtype, c10::Device device,
                                          const ParallelSpec& parallel) {
  check_parallel(parallel);
  return Builder(cfg, source, parallel).build(dtype, device);
}

namespace {

/// (name, full shape) of every tensor the build asks for, found by a build on the meta device.
std::vector<std::pair<std::string, std::vector<int64_t>>> planned_tensors(
    const HfConfig& cfg, const ParallelSpec& parallel) {
  std::vector<std::pair<std::string, std::vector<int64_t>>> out;
  WeightSource meta = [&](const std::string& name, const std::vector<int64_t>& shape, int64_t dim,
                          int64_t b, int64_t e) {
    out.emplace_back(name, shape);
    return at::empty(sliced(shape, dim, b, e),
                     at::TensorOptions().dtype(at::kFloat).device(c10::kMeta));
  };
  ParallelSpec p = parallel;
  // The dry run never runs forward; placeholders satisfy the callback check.
  if (!p.tp_all_gather) p.tp_all_gather = [](const at::Tensor& t) { return t; };
  if (!p.ep_all_gather_v)
    p.ep_all_gather_v = [](const at::Tensor& t) { return std::vector<at::Tensor>{t}; };
  if (!p.ep_all_to_all_v) p.ep_all_to_all_v = [](const std::vector<at::Tensor>& t) { return t; };
  build_causal_lm(cfg, meta, at::kFloat, c10::kMeta, p);
  return out;
}

}  // namespace

std::vector<std::string> expected_tensor_names(const HfConfig& cfg) {
  std::vector<std::string> out;
  for (auto& [n, s] : planned_tensors(cfg, {})) out.push_back(n);
  return out;
}

std::unique_ptr<CausalLM> load_causal_lm(const std::string& dir, const LoadOptions& options) {
  const HfConfig cfg = load_hf_config(dir);
  check_parallel(options.parallel);
  const Checkpoint ck = Checkpoint::open(dir);
  c10::ScalarType dtype = at::kFloat;
  if (options.dtype) {
    dtype = *options.dtype;
  } else if (cfg.dtype == "bfloat16") {
    dtype = at::kBFloat16;
  } else if (cfg.dtype == "float16") {
    dtype = at::kHalf;
  }
  MQ_CHECK(dtype == at::kFloat || dtype == at::kBFloat16 || dtype == at::kHalf,
           "load_causal_lm: dtype ", c10::toString(dtype),
           " is not supported (float32, bfloat16, float16)");

  // Validate names and shapes of the whole model before reading any data (the full model, even when
  // this rank holds a shard: a rank must not accept a checkpoint another rank would reject).
  std::set<std::string> needed;
  for (auto& [name, shape] : planned_tensors(cfg, {})) {
    const io::TensorInfo& ti = ck.info(name);  // throws "<dir>: no tensor '<name>' (looked in ...)"
    MQ_CHECK_T(IoError, ti.shape == shape, ck.file_of(name), ": tensor '", name, "' has shape ",
               at::IntArrayRef(ti.shape), ", expected ", at::IntArrayRef(shape), " (", cfg.source,
               ")");
    needed.insert(name);
  }
  for (const std::string& name : ck.names()) {
    if (needed.count(name)) continue;
    const bool rotary_buffer = name.ends_with("rotary_emb.inv_freq");
    const bool tied_head = cfg.tie_word_embeddings && name == "lm_head.weight";
    if (rotary_buffer || tied_head) continue;
    MQ_THROW(IoError, ck.file_of(name), ": unexpected tensor '", name, "' (not a parameter of ",
             cfg.architecture, ")");
  }

  WeightSource src = [&](const std::string& name, const std::vector<int64_t>&, int64_t dim,
                         int64_t b, int64_t e) {
    if (dim < 0) return ck.load(name, dtype, options.device);
    return ck.load_slice(name, dim, b, e, dtype, options.device);
  };
  return build_causal_lm(cfg, src, dtype, options.device, options.parallel);
}

ParallelSpec parallel_spec_from_groups(const dist::ParallelGroups& groups,
                                       int64_t reduction_chunks) {
  const dist::ParallelLayout& l = groups.layout;
  MQ_CHECK_T(ConfigError, l.pp == 1, "parallel_spec_from_groups: pipeline parallel size ", l.pp,
             " is not supported by the model forward (use pp = 1)");
  MQ_CHECK_T(
      ConfigError, l.ep == 1 || l.expert_tp == 1, "parallel_spec_from_groups: expert_tp ",
      l.expert_tp,
      " is not supported by the model forward (experts are not TP-sharded: use expert_tp = 1)");
  ParallelSpec p;
  p.tp_rank = groups.ranks.tp_rank;
  p.tp_size = l.tp;
  p.ep_rank = groups.ranks.ep_rank;
  p.ep_size = l.ep;
  p.reduction_chunks = reduction_chunks;
  // The lambdas hold copies of the groups, which share (and keep alive) the communicators.
  if (groups.tp.is_initialized()) {
    MQ_CHECK(groups.tp.size() == l.tp, "parallel_spec_from_groups: tp group has ", groups.tp.size(),
             " ranks, layout tp ", l.tp);
    p.tp_all_gather = [g = groups.tp](const at::Tensor& t) { return g.all_gather(t.contiguous()); };
  }
  if (groups.ep.is_initialized()) {
    MQ_CHECK(groups.ep.size() == l.ep, "parallel_spec_from_groups: ep group has ", groups.ep.size(),
             " ranks, layout ep ", l.ep);
    p.ep_all_gather_v = [g = groups.ep](const at::Tensor& t) {
      return g.all_gather_v(t.contiguous());
    };
    p.ep_all_to_all_v = [g = groups.ep](const std::vector<at::Tensor>& send) {
      std::vector<at::Tensor> c;
      c.reserve(send.size());
      for (const at::Tensor& t : send) c.push_back(t.contiguous());
      return g.all_to_all_v(c);
    };
  }
  return p;
}

}  // namespace mq::models
