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
  at::Tensor w = at::matmul(q, k.transpose(2, 3)) * scaling;
  const at::Tensor& mask = sliding_ ? ctx.mask_sliding : ctx.mask_full;
  if (mask.defined()) w = w + mask;
  w = at::softmax(w, -1, at::kFloat).to(q.scalar_type());
  w = maybe_quantize(*this, "p_bmm_quantizer", w);
  at::Tensor out = at::matmul(w, v).transpose(1, 2).contiguous().reshape({b, s, -1});
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
                     bool norm_topk_prob, int64_t expert_begin, int64_t num_local_experts)
    : type_(std::move(type)),
      routing_(routing),
      num_experts_(num_experts),
      top_k_(top_k),
      norm_topk_prob_(norm_topk_prob),
      expert_begin_(expert_begin) {
  token_counts_.assign(static_cast<size_t>(num_local_experts), 0);
}

nn::ModuleList& SparseMoe::experts() { return child_as<nn::ModuleList>("experts"); }

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
  // (E, k, T), as HF's one_hot(top_k_index).permute(2, 1, 0): tokens of an expert in (slot, token)
  // order.
  at::Tensor expert_mask = at::one_hot(top_i, num_experts_).permute({2, 1, 0});
  at::Tensor per_expert = expert_mask.sum({1, 2}).to(at::kCPU);  // (E,)
  const int64_t* counts = per_expert.data_ptr<int64_t>();
  nn::ModuleList& list = experts();
  at::Tensor flat_w = top_w.reshape({-1});
  for (size_t local = 0; local < list.size(); ++local) {
    const int64_t e = expert_begin_ + static_cast<int64_t>(local);
    token_counts_[local] += counts[e];
    if (counts[e] == 0) continue;
    std::vector<at::Tensor> where = at::where(expert_mask[e]);
    const at::Tensor& slot = where[0];
    const at::Tensor& token = where[1];
    at::Tensor y = dynamic_cast<Mlp&>(list[local]).forward(h.index_select(0, token));
    y = y * flat_w.index_select(0, token * top_k_ + slot).unsqueeze(-1);
    out.index_add_(0, token, y.to(out.scalar_type()));
  }
  at::Tensor result = out.view(x.sizes());
  if (has_hooks()) run_forward_hooks(x, result);
  return result;
}

// ---- DecoderLayer
// -----------------------------------------------------------------------------------

DecoderLayer::DecoderLayer(std::string type, std::string mlp_name, const ParallelSpec* parallel)
    : type_(std::move(type)), mlp_name_(std::move(mlp_name)), parallel_(parallel) {}

SparseMoe* DecoderLayer::moe() const { return dynamic_cast<SparseMoe*>(child(mlp_name_)); }

at::Tensor DecoderLayer::forward(const at::Tensor& hidden, const LayerContext& ctx) {
  if (has_hooks()) run_pre_hooks(hidden);
  at::Tensor h = child_as<Attention>("self_attn")
                     .forward(child_as<RMSNorm>("input_layernorm").forward(hidden), ctx);
  if (parallel_->tp_size > 1) parallel_->tp_all_reduce(h);
  h = hidden + h;
  at::Tensor residual = h;
  h = child_as<RMSNorm>("post_attention_layernorm").forward(h);
  if (SparseMoe* m = moe()) {
    h = m->forward(h);
    if (parallel_->ep_size > 1) parallel_->ep_all_reduce(h);
  } else {
    h = child_as<Mlp>(mlp_name_).forward(h);
    if (parallel_->tp_size > 1) parallel_->tp_all_reduce(h);
  }
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
