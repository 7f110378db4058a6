#include "mq/models/causal_lm.hpp"

#include <ATen/ATen.h>

#include <cmath>
#include <limits>

#include "mq/core/error.hpp"

namespace mq::models {

std::pair<int64_t, int64_t> ParallelSpec::range(int64_t n, int64_t rank, int64_t size,
                                                const char* what) {
  MQ_CHECK(size >= 1 && rank >= 0 && rank < size, "parallel: rank ", rank, " of size ", size,
           " is invalid (", what, ")");
  MQ_CHECK(n % size == 0, "parallel: ", what, " = ", n, " is not divisible by ", size);
  const int64_t k = n / size;
  return {rank * k, (rank + 1) * k};
}

at::Tensor row_parallel_linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                               const ParallelSpec& parallel) {
  const int64_t tp = parallel.tp_size, chunks = parallel.chunks();
  MQ_CHECK(chunks % tp == 0, "row_parallel_linear: reduction_chunks ", chunks,
           " is not a multiple of tp_size ", tp);
  const int64_t local = chunks / tp, in = w.size(1);
  MQ_CHECK(x.size(-1) == in, "row_parallel_linear: input has ", x.size(-1),
           " features, weight has ", in);
  MQ_CHECK(in % local == 0, "row_parallel_linear: local in_features ", in,
           " is not divisible by reduction_chunks / tp_size = ", local);
  const int64_t c = in / local;
  // Contiguous chunks: every layout hands the GEMM the same operands with the same strides, so the
  // partial products agree bit for bit whichever rank computes them.
  std::vector<at::Tensor> parts;
  parts.reserve(static_cast<size_t>(local));
  for (int64_t j = 0; j < local; ++j)
    parts.push_back(
        at::linear(x.narrow(-1, j * c, c).contiguous(), w.narrow(1, j * c, c).contiguous()));
  at::Tensor all = at::stack(parts);  // (local, ..., out)
  if (tp > 1) {
    at::Tensor g = parallel.tp_all_gather(all);  // (tp, local, ..., out), TP-rank order
    MQ_CHECK(g.dim() == all.dim() + 1 && g.size(0) == tp, "row_parallel_linear: tp_all_gather ",
             "returned shape ", g.sizes(), " for a local stack of ", all.sizes(), " and tp_size ",
             tp);
    std::vector<int64_t> shape = all.sizes().vec();
    shape[0] = chunks;
    all = g.reshape(shape);  // (chunks, ..., out), global chunk order
  }
  at::Tensor acc = all[0];
  for (int64_t j = 1; j < chunks; ++j) acc = acc + all[j];
  if (b.defined()) acc = acc + b;
  return acc;
}

// ---- RMSNorm
// ----------------------------------------------------------------------------------------

RMSNorm::RMSNorm(std::string type, at::Tensor weight, double eps)
    : type_(std::move(type)), eps_(eps) {
  register_parameter("weight", std::move(weight));
}

at::Tensor RMSNorm::forward(const at::Tensor& x) {
  const auto in_dtype = x.scalar_type();
  at::Tensor h = x.to(at::kFloat);
  at::Tensor var = h.pow(2).mean(-1, /*keepdim=*/true);
  h = h * at::rsqrt(var + eps_);
  return parameter("weight") * h.to(in_dtype);
}

// ---- RotaryEmbedding
// --------------------------------------------------------------------------------

RotaryEmbedding::RotaryEmbedding(std::string type, const RopeConfig& rope, int64_t head_dim,
                                 c10::Device device)
    : type_(std::move(type)) {
  // HF: 1.0 / (base ** (arange(0, dim, 2).float() / dim)); Python's `1.0 / t` is t.reciprocal()
  // * 1.0. Computed on the CPU (a few dozen values; also lets the meta-device dry run build it),
  // then moved.
  at::Tensor exps =
      at::arange(0, head_dim, 2, at::TensorOptions().dtype(at::kLong)).to(at::kFloat) /
      static_cast<double>(head_dim);
  at::Tensor inv = at::reciprocal(at::pow(rope.theta, exps));
  if (rope.type == "linear") {
    inv = inv / rope.factor;
  } else if (rope.type == "llama3") {
    const double old_ctx = static_cast<double>(rope.original_max_position_embeddings);
    const double low_wl = old_ctx / rope.low_freq_factor;
    const double high_wl = old_ctx / rope.high_freq_factor;
    at::Tensor wavelen = at::reciprocal(inv) * (2 * M_PI);
    at::Tensor inv_llama = at::where(wavelen > low_wl, inv / rope.factor, inv);
    at::Tensor smooth = (at::reciprocal(wavelen) * old_ctx - rope.low_freq_factor) /
                        (rope.high_freq_factor - rope.low_freq_factor);
    at::Tensor smoothed = (1 - smooth) * inv_llama / rope.factor + smooth * inv_llama;
    at::Tensor medium = at::logical_not(wavelen < high_wl) * at::logical_not(wavelen > low_wl);
    inv = at::where(medium, smoothed, inv_llama);
  } else {
    MQ_CHECK(rope.type == "default", "RotaryEmbedding: rope type '", rope.type,
             "' is not supported");
  }
  inv_freq_ = inv.to(device);
}

std::pair<at::Tensor, at::Tensor> RotaryEmbedding::forward(const at::Tensor& position_ids,
                                                           c10::ScalarType dtype) const {
  at::Tensor inv = inv_freq_.to(position_ids.device())
                       .unsqueeze(0)
                       .unsqueeze(-1)
                       .expand({position_ids.size(0), -1, 1});  // (P, D/2, 1)
  at::Tensor pos = position_ids.unsqueeze(1).to(at::kFloat);    // (P, 1, S)
  at::Tensor freqs = at::matmul(inv, pos).transpose(1, 2);      // (P, S, D/2)
  at::Tensor emb = at::cat({freqs, freqs}, -1);                 // (P, S, D)
  return {emb.cos().to(dtype), emb.sin().to(dtype)};
}

// ---- Attention
// --------------------------------------------------------------------------------------

namespace {

at::Tensor rotate_half(const at::Tensor& x) {
  const int64_t h = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, h, h), x.narrow(-1, 0, h)}, -1);
}

at::Tensor repeat_kv(const at::Tensor& x, int64_t n_rep) {
  if (n_rep == 1) return x;
  const int64_t b = x.size(0), kv = x.size(1), s = x.size(2), d = x.size(3);
  return x.unsqueeze(2).expand({b, kv, n_rep, s, d}).reshape({b, kv * n_rep, s, d});
}

at::Tensor maybe_quantize(const nn::Module& m, const char* name, const at::Tensor& x) {
  nn::QuantizerModule* q = m.quantizer(name);
  return q ? q->forward(x) : x;
}

}  // namespace

Attention::Attention(std::string type, int64_t num_heads, int64_t num_kv_heads, int64_t head_dim,
                     bool sliding)
    : type_(std::move(type)),
      num_heads_(num_heads),
      num_kv_heads_(num_kv_heads),
      head_dim_(head_dim),
      sliding_(sliding) {}

at::Tensor Attention::forward(const at::Tensor& x, const LayerContext& ctx) {
  const int64_t b = x.size(0), s = x.size(1);
  auto project = [&](const char* proj, const char* norm) {
    at::Tensor t = child_as<nn::Linear>(proj).forward(x).view({b, s, -1, head_dim_});
    if (child(norm) != nullptr)
      t = child_as<RMSNorm>(norm).forward(t);  // Qwen3: per head, before RoPE
    return t.transpose(1, 2);                  // (B, H, S, D)
  };
  at::Tensor q = project("q_proj", "q_norm");
  at::Tensor k = project("k_proj", "k_norm");
  at::Tensor v = project("v_proj", "");
  const at::Tensor cos = ctx.cos.unsqueeze(1), sin = ctx.sin.unsqueeze(1);
  q = q * cos + rotate_half(q) * sin;
  k = k * cos + rotate_half(k) * sin;
  q = maybe_quantize(*this, "q_bmm_quantizer", q);
  k = maybe_quantize(*this, "k_bmm_quantizer", k);
  v = maybe_quantize(*this, "v_bmm_quantizer", v);
  const int64_t n_rep = num_heads_ / num_kv_heads_;
  k = repeat_kv(k, n_rep);
  v = repeat_kv(v, n_rep);
  const double scaling = std::pow(static_cast<double>(head_dim_), -0.5);
  // Layout-invariant mode: ATen's CPU bmm picks its kernel by the batch count, so (B*H) batched
  // products of a TP shard (H / tp heads) can differ in the last bit from the same heads of the
  // whole model; one product per head on contiguous operands (batch B and strides the same in
  // every layout) cannot.
  auto product = [&](const at::Tensor& a, const at::Tensor& bt) {
    if (!per_head_products_) return at::matmul(a, bt);
    std::vector<at::Tensor> heads;
    heads.reserve(static_cast<size_t>(a.size(1)));
    for (int64_t i = 0; i < a.size(1); ++i)
      heads.push_back(at::matmul(a.select(1, i).contiguous(), bt.select(1, i).contiguous()));
    return at::stack(heads, 1);
  };
  at::Tensor w = product(q, k.transpose(2, 3)) * scaling;
  const at::Tensor& mask = sliding_ ? ctx.mask_sliding : ctx.mask_full;
  if (mask.defined()) w = w + mask;
  w = at::softmax(w, -1, at::kFloat).to(q.scalar_type());
  w = maybe_quantize(*this, "p_bmm_quantizer", w);
  at::Tensor out = product(w, v).transpose(1, 2).contiguous().reshape({b, s, -1});
  return child_as<nn::Linear>("o_proj").forward(out);
}

// ---- Mlp
// --------------------------------------------------------------------------------------------

Mlp::Mlp(std::string type, std::string gate, std::string up, std::string down)
    : type_(std::move(type)), gate_(std::move(gate)), up_(std::move(up)), down_(std::move(down)) {}

at::Tensor Mlp::forward(const at::Tensor& x) {
  if (has_hooks()) run_pre_hooks(x);
  at::Tensor h =
      at::silu(child_as<nn::Linear>(gate_).forward(x)) * child_as<nn::Linear>(up_).forward(x);
  at::Tensor y = child_as<nn::Linear>(down_).forward(h);
  if (has_hooks()) run_forward_hooks(x, y);
  return y;
}

// ---- SparseMoe
// --------------------------------------------------------------------------------------

SparseMoe::SparseMoe(std::string type, MoeRouting routing, int64_t num_experts, int64_t top_k,
                     bool norm_topk_prob, int64_t expert_begin, int64_t num_local_experts,
                     const ParallelSpec* parallel)
    : type_(std::move(type)),
      routing_(routing),
      num_experts_(num_experts),
      top_k_(top_k),
      norm_topk_prob_(norm_topk_prob),
      expert_begin_(expert_begin),
      parallel_(parallel) {
  token_counts_.assign(static_cast<size_t>(num_local_experts), 0);
}

nn::ModuleList& SparseMoe::experts() { return child_as<nn::ModuleList>("experts"); }

namespace {

/// Routing of one source's tokens: (E, k, T) mask as HF's one_hot(top_k_index).permute(2, 1, 0)
/// (tokens of an expert in (slot, token) order), tokens per expert, flat weights.
struct Routed {
  at::Tensor mask;
  at::Tensor counts;  // (E,) int64 on the CPU
  at::Tensor flat_w;  // (T * k)
};

Routed route(const at::Tensor& top_i, const at::Tensor& top_w, int64_t num_experts) {
  Routed r;
  r.mask = at::one_hot(top_i, num_experts).permute({2, 1, 0});
  r.counts = r.mask.sum({1, 2}).to(at::kCPU).contiguous();
  r.flat_w = top_w.reshape({-1});
  return r;
}

}  // namespace

at::Tensor SparseMoe::forward(const at::Tensor& x) {
  if (has_hooks()) run_pre_hooks(x);
  const int64_t hidden = x.size(-1);
  at::Tensor h = x.reshape({-1, hidden});                       // (T, H)
  at::Tensor logits = child_as<nn::Linear>("gate").forward(h);  // (T, E)
  at::Tensor probs = routing_ == MoeRouting::kMixtral ? at::softmax(logits.to(at::kFloat), -1)
                                                      : at::softmax(logits, -1, at::kFloat);
  auto [top_w, top_i] = at::topk(probs, top_k_, -1);  // (T, k)
  if (routing_ == MoeRouting::kMixtral || norm_topk_prob_)
    top_w = top_w / top_w.sum(-1, /*keepdim=*/true);
  // Qwen3-MoE hands the weights on in the logits dtype; Mixtral keeps them fp32.
  if (routing_ == MoeRouting::kQwen3Moe) top_w = top_w.to(logits.scalar_type());

  at::Tensor out = at::zeros_like(h);
  nn::ModuleList& list = experts();
  const int64_t n_local = static_cast<int64_t>(list.size());
  // Expert `e` (a local one) on the tokens of one source: weighted output rows in the order of
  // where(mask[e]), in the output dtype; undefined when no token of the source chose it.
  auto run_expert = [&](int64_t local, const at::Tensor& hs, const Routed& r) -> at::Tensor {
    const int64_t e = expert_begin_ + local;
    const int64_t n = r.counts.data_ptr<int64_t>()[e];
    token_counts_[static_cast<size_t>(local)] += n;
    if (n == 0) return {};
    std::vector<at::Tensor> where = at::where(r.mask[e]);
    const at::Tensor& slot = where[0];
    const at::Tensor& token = where[1];
    at::Tensor y =
        dynamic_cast<Mlp&>(list[static_cast<size_t>(local)]).forward(hs.index_select(0, token));
    y = y * r.flat_w.index_select(0, token * top_k_ + slot).unsqueeze(-1);
    return y.to(out.scalar_type());
  };

  const Routed own = route(top_i, top_w, num_experts_);
  if (parallel_ == nullptr || parallel_->ep_size == 1) {
    for (int64_t local = 0; local < n_local; ++local) {
      at::Tensor y = run_expert(local, h, own);
      if (y.defined()) out.index_add_(0, at::where(own.mask[expert_begin_ + local])[1], y);
    }
  } else {
    const ParallelSpec& p = *parallel_;
    const int64_t ep = p.ep_size;
    MQ_CHECK(n_local * ep == num_experts_, "SparseMoe: ", n_local, " local experts x ep_size ", ep,
             " != ", num_experts_, " experts");
    // Every EP rank issues the same five collectives, whatever its token counts (empty tensors
    // included), so no rank waits for a collective another one skipped.
    std::vector<at::Tensor> hs = p.ep_all_gather_v(h);
    std::vector<at::Tensor> is = p.ep_all_gather_v(top_i.contiguous());
    std::vector<at::Tensor> ws = p.ep_all_gather_v(top_w.contiguous());
    MQ_CHECK(static_cast<int64_t>(hs.size()) == ep && static_cast<int64_t>(is.size()) == ep &&
                 static_cast<int64_t>(ws.size()) == ep,
             "SparseMoe: ep_all_gather_v returned ", hs.size(), " tensors for ep_size ", ep);
    std::vector<at::Tensor> send(static_cast<size_t>(ep));
    for (int64_t s = 0; s < ep; ++s) {
      const auto su = static_cast<size_t>(s);
      const Routed r = route(is[su], ws[su], num_experts_);
      std::vector<at::Tensor> rows;
      for (int64_t local = 0; local < n_local; ++local)
        if (at::Tensor y = run_expert(local, hs[su], r); y.defined()) rows.push_back(y);
      send[su] = rows.empty() ? at::empty({0, hidden}, out.options()) : at::cat(rows);
    }
    std::vector<at::Tensor> recv = p.ep_all_to_all_v(send);
    MQ_CHECK(static_cast<int64_t>(recv.size()) == ep, "SparseMoe: ep_all_to_all_v returned ",
             recv.size(), " tensors for ep_size ", ep);
    // Global expert order, each expert's rows taken in turn from its rank's block: the additions
    // into `out` happen in exactly the single-process order.
    std::vector<int64_t> offset(static_cast<size_t>(ep), 0);
    const int64_t* counts = own.counts.data_ptr<int64_t>();
    for (int64_t e = 0; e < num_experts_; ++e) {
      if (counts[e] == 0) continue;
      const auto r = static_cast<size_t>(e / n_local);
      MQ_CHECK(offset[r] + counts[e] <= recv[r].size(0), "SparseMoe: EP rank ", r, " sent ",
               recv[r].size(0), " rows, expert ", e, " needs rows up to ", offset[r] + counts[e]);
      out.index_add_(0, at::where(own.mask[e])[1], recv[r].narrow(0, offset[r], counts[e]));
      offset[r] += counts[e];
    }
    for (int64_t r = 0; r < ep; ++r)
      MQ_CHECK(offset[static_cast<size_t>(r)] == recv[static_cast<size_t>(r)].size(0),
               "SparseMoe: EP rank ", r, " sent ", recv[static_cast<size_t>(r)].size(0),
               " rows, this rank's tokens chose its experts ", offset[static_cast<size_t>(r)],
               " times");
  }
  at::Tensor result = out.view(x.sizes());
  if (has_hooks()) run_forward_hooks(x, result);
  return result;
}

// ---- DecoderLayer
// -----------------------------------------------------------------------------------

DecoderLayer::DecoderLayer(std::string type, std::string mlp_name)
    : type_(std::move(type)), mlp_name_(std::move(mlp_name)) {}

SparseMoe* DecoderLayer::moe() const { return dynamic_cast<SparseMoe*>(child(mlp_name_)); }

at::Tensor DecoderLayer::forward(const at::Tensor& hidden, const LayerContext& ctx) {
  if (has_hooks()) run_pre_hooks(hidden);
  // Attention, dense MLP and MoE block all return the complete result on every TP rank (row-
  // parallel o_proj / down_proj gather their partial products; experts are replicated over TP).
  at::Tensor h = child_as<Attention>("self_attn")
                     .forward(child_as<RMSNorm>("input_layernorm").forward(hidden), ctx);
  h = hidden + h;
  at::Tensor residual = h;
  h = child_as<RMSNorm>("post_attention_layernorm").forward(h);
  if (SparseMoe* m = moe())
    h = m->forward(h);
  else
    h = child_as<Mlp>(mlp_name_).forward(h);
  at::Tensor out = residual + h;
  if (has_hooks()) run_forward_hooks(hidden, out);
  return out;
}

// ---- DecoderModel
// -----------------------------------------------------------------------------------

DecoderModel::DecoderModel(std::string type, const HfConfig& cfg, c10::ScalarType dtype)
    : type_(std::move(type)), sliding_(cfg.sliding_window), dtype_(dtype) {}

LayerContext DecoderModel::prepare(const at::Tensor& input_ids,
                                   const at::Tensor& attention_mask) const {
  MQ_CHECK(input_ids.dim() == 2 && input_ids.scalar_type() == at::kLong,
           "forward: input_ids must be (B, S) int64, got ", input_ids.sizes(), " ",
           input_ids.scalar_type());
  const int64_t b = input_ids.size(0), s = input_ids.size(1);
  const auto dev = input_ids.device();
  if (attention_mask.defined())
    MQ_CHECK(
        attention_mask.dim() == 2 && attention_mask.size(0) == b && attention_mask.size(1) == s,
        "forward: attention_mask must be (B, S) = (", b, ", ", s, "), got ",
        attention_mask.sizes());
  LayerContext ctx;
  at::Tensor pos =
      at::arange(s, at::TensorOptions().dtype(at::kLong).device(dev)).unsqueeze(0);  // (1, S)
  std::tie(ctx.cos, ctx.sin) = child_as<RotaryEmbedding>("rotary_emb").forward(pos, dtype_);
  at::Tensor q = at::arange(s, at::TensorOptions().dtype(at::kLong).device(dev)).view({s, 1});
  at::Tensor k = q.view({1, s});
  at::Tensor allowed = (k <= q).view({1, 1, s, s}).expand({b, 1, s, s});
  if (attention_mask.defined())
    allowed = at::logical_and(allowed, attention_mask.to(dev).to(at::kBool).view({b, 1, 1, s}));
  const double min =
      dtype_ == at::kFloat      ? static_cast<double>(std::numeric_limits<float>::lowest())
      : dtype_ == at::kBFloat16 ? static_cast<double>(std::numeric_limits<c10::BFloat16>::lowest())
                                : static_cast<double>(std::numeric_limits<c10::Half>::lowest());
  auto additive = [&](const at::Tensor& ok) {
    return at::where(ok, at::zeros({}, at::TensorOptions().dtype(dtype_).device(dev)),
                     at::full({}, min, at::TensorOptions().dtype(dtype_).device(dev)));
  };
  ctx.mask_full = additive(allowed);
  int64_t window = 0;
  for (int64_t w : sliding_) window = std::max(window, w);
  if (window > 0) {
    for (int64_t w : sliding_)
      MQ_CHECK(w == 0 || w == window, "forward: layers with different sliding windows");
    at::Tensor in_window = (k > q - window).view({1, 1, s, s});
    ctx.mask_sliding = additive(at::logical_and(allowed, in_window));
  }
  return ctx;
}

at::Tensor DecoderModel::forward(const at::Tensor& input_ids, const at::Tensor& attention_mask) {
  LayerContext ctx = prepare(input_ids, attention_mask);
  at::Tensor h = child_as<nn::Embedding>("embed_tokens").forward(input_ids);
  nn::ModuleList& ls = layers();
  for (size_t i = 0; i < ls.size(); ++i) h = dynamic_cast<DecoderLayer&>(ls[i]).forward(h, ctx);
  return child_as<RMSNorm>("norm").forward(h);
}

// ---- CausalLM
// ---------------------------------------------------------------------------------------

CausalLM::CausalLM(HfConfig cfg, c10::ScalarType dtype, c10::Device device, ParallelSpec parallel)
    : cfg_(std::move(cfg)),
      dtype_(dtype),
      device_(device),
      parallel_(std::make_unique<ParallelSpec>(std::move(parallel))) {}

at::Tensor CausalLM::forward(const at::Tensor& input_ids, const at::Tensor& attention_mask) {
  at::Tensor h = model().forward(input_ids, attention_mask);
  return child_as<nn::Linear>("lm_head").forward(h);
}

DecoderLayer& CausalLM::layer(size_t i) const {
  nn::ModuleList& ls = model().layers();
  MQ_CHECK(i < ls.size(), "CausalLM::layer: index ", i, " out of range (", ls.size(), " layers)");
  return dynamic_cast<DecoderLayer&>(ls[i]);
}

std::vector<std::pair<std::string, SparseMoe*>> CausalLM::moe_blocks() const {
  std::vector<std::pair<std::string, SparseMoe*>> out;
  for (size_t i = 0; i < num_layers(); ++i) {
    DecoderLayer& l = layer(i);
    if (SparseMoe* m = l.moe()) out.emplace_back(layer_name(i) + "." + l.mlp_name(), m);
  }
  return out;
}

void CausalLM::reset_expert_token_counts() {
  for (auto& [name, m] : moe_blocks()) m->reset_token_counts();
}

}  // namespace mq::models
