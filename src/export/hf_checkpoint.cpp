#include "mq/export/hf_checkpoint.hpp"

#include <ATen/ATen.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "mq/core/error.hpp"
#include "mq/io/safetensors_torch.hpp"
#include "mq/nn/moe.hpp"

namespace mq::hf_export {

namespace fs = std::filesystem;

namespace {

constexpr double kKvMaxBound =
    448.0;  // ModelOpt: kv scale = amax / 448 for FP8 and NVFP4 KV caches

// ---- quantizer access
// ---------------------------------------------------------------------------------

nn::QuantizerModule* quantizer_of(const nn::Module& m, const char* name) {
  return m.quantizer(name);
}

const quant::TensorQuantizer* input_tq(const nn::Module& m) {
  nn::QuantizerModule* q = quantizer_of(m, "input_quantizer");
  if (q == nullptr || q->is_sequential()) return nullptr;
  return &q->tensor();
}

bool enabled(const nn::QuantizerModule* q) { return q != nullptr && q->is_enabled(); }

// The module's format as ModelOpt's get_quantization_format sees it (weight quantizer first).
QuantFormat module_format(const nn::Module& m, bool fused_with_prequant) {
  nn::QuantizerModule* wq = quantizer_of(m, "weight_quantizer");
  if (wq == nullptr) return QuantFormat::kNone;
  if (wq->is_sequential()) return detect_quant_format(wq->sequential(), input_tq(m));
  return detect_quant_format(wq->tensor(), input_tq(m), false, fused_with_prequant);
}

int64_t weight_block_size(const nn::Module& m) {
  nn::QuantizerModule* wq = quantizer_of(m, "weight_quantizer");
  if (wq == nullptr || !wq->is_enabled()) return 0;
  const quant::TensorQuantizer& t = wq->is_sequential() ? wq->sequential()[0] : wq->tensor();
  const auto& bs = t.block_sizes();
  if (!bs) return 0;
  auto it = bs->axes.find(-1);
  return it != bs->axes.end() && it->second ? *it->second : 0;
}

std::string join(const std::string& prefix, const std::string& name) {
  return prefix.empty() ? name : prefix + "." + name;
}

std::string parent_of(const std::string& name) {
  const auto dot = name.rfind('.');
  return dot == std::string::npos ? std::string() : name.substr(0, dot);
}

// ---- step 1: MoE experts that never received a token
// ---------------------------------------------------

void prepare_moe_inputs(nn::Module& model) {
  for (auto& [name, m] : model.named_modules()) {
    auto* moe = dynamic_cast<nn::SparseMoeBlock*>(m);
    if (moe == nullptr) continue;
    nn::ModuleList& experts = moe->experts();
    // projection name -> input quantizers of that projection over all experts
    std::map<std::string, std::vector<quant::TensorQuantizer*>> by_proj;
    for (size_t e = 0; e < experts.size(); ++e)
      for (const auto& [pname, proj] : experts[e].children()) {
        nn::QuantizerModule* iq = proj->quantizer("input_quantizer");
        if (iq != nullptr && !iq->is_sequential() && iq->is_enabled() && !iq->tensor().is_dynamic())
          by_proj[pname].push_back(&iq->tensor());
      }
    for (auto& [pname, qs] : by_proj) {
      at::Tensor best;
      for (auto* q : qs)
        if (q->has_amax_buffer())
          best = best.defined() ? at::maximum(best, q->amax_buffer()) : q->amax_buffer();
      for (auto* q : qs) {
        if (q->has_amax_buffer()) continue;
        if (best.defined())
          q->set_amax(best.clone());
        else
          q->set_amax(0.5);
      }
    }
  }
}

// ---- step 2: fusion of sibling linears that read one tensor
// -------------------------------------------

const std::vector<std::vector<std::string>>& fusion_sets() {
  static const std::vector<std::vector<std::string>> sets = {
      {"q_proj", "k_proj", "v_proj"}, {"gate_proj", "up_proj"}, {"w1", "w3"}};
  return sets;
}

// The norm whose output feeds a fused group, by HF decoder-layer naming.
nn::Module* norm_before(nn::Module& model, const std::string& container) {
  const std::string layer = parent_of(container);
  const std::string leaf = container.substr(layer.empty() ? 0 : layer.size() + 1);
  const char* norm = leaf == "self_attn"                             ? "input_layernorm"
                     : (leaf == "mlp" || leaf == "block_sparse_moe") ? "post_attention_layernorm"
                                                                     : nullptr;
  if (norm == nullptr) return nullptr;
  nn::Module& l = layer.empty() ? model : model.get_submodule(layer);
  return l.child(norm);
}

at::Tensor stack_max(const std::vector<at::Tensor>& ts) {
  at::Tensor m = ts.at(0);
  for (size_t i = 1; i < ts.size(); ++i) m = at::maximum(m, ts[i]);
  return m;
}

using Members = std::vector<std::pair<std::string, nn::Module*>>;

// One input amax (the max) for linears that read the same tensor.
void unify_input_amax(const Members& members) {
  const quant::TensorQuantizer* iq0 = input_tq(*members[0].second);
  if (iq0 == nullptr || !iq0->is_enabled() || !iq0->has_amax_buffer() || iq0->is_mx_format())
    return;
  MQ_CHECK(iq0->amax_buffer().numel() == 1, members[0].first,
           ".input_quantizer: only a scalar input amax can be fused (ModelOpt asserts)");
  std::vector<at::Tensor> a;
  for (const auto& [n, m] : members) {
    const quant::TensorQuantizer* iq = input_tq(*m);
    MQ_CHECK(iq && iq->has_amax_buffer(), n, ".input_quantizer: no amax (calibrate it first)");
    a.push_back(iq->amax_buffer());
  }
  const at::Tensor mx = stack_max(a);
  for (const auto& [n, m] : members) m->quantizer("input_quantizer")->tensor().set_amax(mx);
}

// One scalar weight amax (the max): the FP8 stage of a SequentialQuantizer, the global amax of a
// static NVFP4 quantizer, or a per-tensor amax. Per-channel and per-block amaxes are left alone.
void unify_weight_amax(const Members& members) {
  nn::QuantizerModule* wq0 = members[0].second->quantizer("weight_quantizer");
  if (wq0->is_sequential()) {
    if (wq0->sequential()[wq0->sequential().size() - 1].is_enabled()) {
      std::vector<at::Tensor> a;
      for (const auto& [n, m] : members) {
        auto& s = m->quantizer("weight_quantizer")->sequential();
        MQ_CHECK(s.size() == 2 && s[1].has_amax_buffer(), n, ".weight_quantizer.1: no amax");
        a.push_back(s[1].amax_buffer());
      }
      const at::Tensor mx = stack_max(a);
      for (const auto& [n, m] : members)
        m->quantizer("weight_quantizer")->sequential()[1].set_amax(mx);
    }
  } else if (wq0->tensor().is_static_block_scale_quantizer()) {
    std::vector<at::Tensor> a;
    for (const auto& [n, m] : members)
      if (auto g = m->quantizer("weight_quantizer")->tensor().global_amax()) a.push_back(*g);
    if (!a.empty()) {
      const at::Tensor mx = stack_max(a);
      for (const auto& [n, m] : members)
        m->quantizer("weight_quantizer")->tensor().set_global_amax(mx);
    }
  } else if (wq0->tensor().is_enabled() && wq0->tensor().has_amax_buffer() &&
             wq0->tensor().amax_buffer().numel() == 1) {
    std::vector<at::Tensor> a;
    for (const auto& [n, m] : members) {
      const auto& t = m->quantizer("weight_quantizer")->tensor();
      MQ_CHECK(t.has_amax_buffer(), n, ".weight_quantizer: no amax (calibrate it first)");
      a.push_back(t.amax_buffer());
    }
    const at::Tensor mx = stack_max(a);
    for (const auto& [n, m] : members) m->quantizer("weight_quantizer")->tensor().set_amax(mx);
  }
}

void fuse_group(nn::Module& model, const std::string& container,
                const std::vector<std::pair<std::string, nn::Module*>>& members,
                std::set<std::string>& fused_with_prequant) {
  const QuantFormat f = module_format(*members[0].second, false);
  for (const auto& [n, m] : members)
    MQ_CHECK(module_format(*m, false) == f, n, ": fused with ", members[0].first,
             " (same input) but quantized as ", quant_format_name(module_format(*m, false)), " vs ",
             quant_format_name(f),
             " (ModelOpt asserts: modules have different quantization formats)");
  if (f == QuantFormat::kNone || f == QuantFormat::kFp8) return;

  // Pre-quant scales (§6.6 step 1): every member gets the mean scale; a member whose scale differs
  // has its weight re-scaled in fp32 (W * old / avg, back to the weight dtype) and its weight amax
  // recalibrated.
  const quant::TensorQuantizer* iq0 = input_tq(*members[0].second);
  std::optional<at::Tensor> pqs = iq0 ? iq0->pre_quant_scale() : std::nullopt;
  if (pqs) {
    std::vector<at::Tensor> all;
    for (const auto& [n, m] : members) {
      const quant::TensorQuantizer* iq = input_tq(*m);
      auto p = iq ? iq->pre_quant_scale() : std::nullopt;
      MQ_CHECK(p.has_value(), n, ": fused with ", members[0].first,
               " (same input) but has no pre_quant_scale while the group has one");
      all.push_back(*p);
    }
    const at::Tensor avg = at::mean(at::stack(all), 0);
    for (size_t i = 0; i < members.size(); ++i) {
      if (at::equal(all[i], avg)) continue;
      nn::Module& m = *members[i].second;
      at::Tensor& w = m.parameter("weight");
      const auto wdt = w.scalar_type();
      w = (w.to(at::kFloat) * all[i].to(at::kFloat).to(w.device()) /
           avg.to(at::kFloat).to(w.device()))
              .to(wdt);
      m.quantizer("input_quantizer")->tensor().set_pre_quant_scale(avg.to(all[i].scalar_type()));
      nn::QuantizerModule* wq = m.quantizer("weight_quantizer");
      for (quant::TensorQuantizer* q : wq->leaves()) {
        if (!q->is_enabled()) continue;
        q->reset_amax();
        quant::calibrate_and_fake_quant(*q, w);
      }
    }
    pqs = avg;
  }

  unify_input_amax(members);
  unify_weight_amax(members);

  // AWQ formats: the shared pre_quant_scale moves into the norm that produces the input.
  const std::string_view fname = quant_format_name(f);
  if (pqs && fname.find("awq") != std::string_view::npos) {
    nn::Module* norm = norm_before(model, container);
    if (norm != nullptr && norm->has_parameter("weight")) {
      at::Tensor& w = norm->parameter("weight");
      w = (w * pqs->to(w.device())).to(w.scalar_type());
      if (norm->has_parameter("bias") && norm->parameter("bias").defined()) {
        at::Tensor& b = norm->parameter("bias");
        b = (b * pqs->to(b.device())).to(b.scalar_type());
      }
      for (const auto& [n, m] : members) {
        m->quantizer("input_quantizer")->tensor().remove_pre_quant_scale();
        fused_with_prequant.insert(n);
      }
    }
  }
}

bool is_quant_linear(const nn::Module& m) {
  if (!m.has_parameter("weight")) return false;
  nn::QuantizerModule* wq = m.quantizer("weight_quantizer");
  nn::QuantizerModule* iq = m.quantizer("input_quantizer");
  return wq != nullptr && (enabled(wq) || enabled(iq));
}

// transformers 5 keeps MoE experts fused in memory (gate_up_proj (E, 2I, H), down_proj (E, H, I))
// and ModelOpt quantizes that layout: one input quantizer per projection type for all experts, and
// one weight quantizer per expert over the concatenated gate/up rows. Our experts are separate
// linears, so the export makes the equivalent choice: input amax = max over all experts (gate and
// up together; down separately), and per expert one gate/up weight amax (the max of the two) for
// every format with a scalar weight amax, FP8 included. The max over experts equals the amax over
// all routed tokens.
void unify_moe_experts(nn::Module& model) {
  static const std::vector<std::pair<std::vector<std::string>, std::vector<std::string>>> kinds = {
      {{"gate_proj", "up_proj"}, {"down_proj"}}, {{"w1", "w3"}, {"w2"}}};
  for (auto& [name, m] : model.named_modules()) {
    auto* moe = dynamic_cast<nn::SparseMoeBlock*>(m);
    if (moe == nullptr) continue;
    nn::ModuleList& experts = moe->experts();
    const std::string ex = join(name, "experts");
    for (const auto& [first, second] : kinds) {
      Members firsts, seconds;
      for (size_t e = 0; e < experts.size(); ++e) {
        Members pair;
        for (const auto& c : first)
          if (nn::Module* l = experts[e].child(c); l != nullptr && is_quant_linear(*l))
            pair.emplace_back(join(join(ex, std::to_string(e)), c), l);
        for (const auto& c : second)
          if (nn::Module* l = experts[e].child(c); l != nullptr && is_quant_linear(*l))
            seconds.emplace_back(join(join(ex, std::to_string(e)), c), l);
        if (pair.size() > 1 && module_format(*pair[0].second, false) != QuantFormat::kNone)
          unify_weight_amax(pair);
        firsts.insert(firsts.end(), pair.begin(), pair.end());
      }
      for (const Members* g : {&firsts, &seconds})
        if (g->size() > 1 && module_format(*(*g)[0].second, false) != QuantFormat::kNone)
          unify_input_amax(*g);
    }
  }
}

void fuse_linears(nn::Module& model, std::set<std::string>& fused_with_prequant) {
  for (auto& [name, m] : model.named_modules()) {
    for (const auto& set : fusion_sets()) {
      std::vector<std::pair<std::string, nn::Module*>> members;
      for (const auto& c : set) {
        nn::Module* child = m->child(c);
        if (child != nullptr && is_quant_linear(*child)) members.emplace_back(join(name, c), child);
      }
      if (members.size() > 1) fuse_group(model, name, members, fused_with_prequant);
    }
  }
}

// ---- hf_quant_config
// ----------------------------------------------------------------------------------

std::string kv_format_of(const std::vector<config::NumBits>& bits, bool affine) {
  auto has = [&](auto pred) { return std::any_of(bits.begin(), bits.end(), pred); };
  if (has([](const config::NumBits& b) { return b.is_float(4, 3); })) return "FP8";
  if (has([](const config::NumBits& b) { return b.is_int() && b.bits == 8; })) return "INT8";
  if (has([](const config::NumBits& b) { return b.is_float(2, 1); }))
    return affine ? "NVFP4_AFFINE" : "NVFP4";
  return "";
}

}  // namespace

std::string kv_cache_format(const nn::Module& attention) {
  std::vector<config::NumBits> bits;
  bool affine = true;
  for (const char* qn : {"k_bmm_quantizer", "v_bmm_quantizer", "output_quantizer"}) {
    nn::QuantizerModule* q = attention.quantizer(qn);
    if (q == nullptr || !q->is_enabled()) continue;
    const quant::TensorQuantizer& t = q->is_sequential() ? q->sequential()[0] : q->tensor();
    bits.push_back(t.num_bits());
    affine = affine && t.bias_value().has_value();
  }
  return kv_format_of(bits, affine);
}

namespace {

// What ModelOpt's per-layer entry carries after quant_algo: nothing, the group size, or the group
// size and the AWQ flags.
enum class LayerFields { kAlgo, kGroup, kAwq };

struct LayerAlgo {
  QuantFormat format;
  const char* quant_algo;
  LayerFields fields;
};

// Formats not listed pass their internal name through (ModelOpt: {"quant_algo": v}).
constexpr LayerAlgo kLayerAlgos[] = {
    {QuantFormat::kFp8, "FP8", LayerFields::kAlgo},
    {QuantFormat::kFp8PcPt, "FP8_PER_CHANNEL_PER_TOKEN", LayerFields::kAlgo},
    {QuantFormat::kInt4Awq, "W4A16_AWQ", LayerFields::kAwq},
    {QuantFormat::kW4A8Awq, "W4A8_AWQ", LayerFields::kAwq},
    {QuantFormat::kInt8Wo, "W8A16", LayerFields::kAlgo},
    {QuantFormat::kInt8Sq, "W8A8_SQ_PER_CHANNEL", LayerFields::kAlgo},
    {QuantFormat::kNvfp4, "NVFP4", LayerFields::kGroup},
    {QuantFormat::kW4A16Nvfp4, "W4A16_NVFP4", LayerFields::kGroup},
    {QuantFormat::kNvfp4Awq, "NVFP4_AWQ", LayerFields::kAwq},
    {QuantFormat::kW4A8Nvfp4Fp8, "W4A8_NVFP4_FP8", LayerFields::kGroup},
    {QuantFormat::kW4A8Mxfp4Fp8, "W4A8_MXFP4_FP8", LayerFields::kGroup},
    {QuantFormat::kNvfp4Svdquant, "NVFP4_SVD", LayerFields::kAwq},
    {QuantFormat::kMxfp8, "MXFP8", LayerFields::kGroup},
};

}  // namespace

nlohmann::ordered_json layer_quant_config(QuantFormat f, int64_t block_size) {
  nlohmann::ordered_json j;
  if (f == QuantFormat::kNone) {
    j["quant_algo"] = nullptr;
    return j;
  }
  const auto* row = std::find_if(std::begin(kLayerAlgos), std::end(kLayerAlgos),
                                 [&](const LayerAlgo& a) { return a.format == f; });
  if (row == std::end(kLayerAlgos)) {
    j["quant_algo"] = std::string(quant_format_name(f));
    return j;
  }
  j["quant_algo"] = row->quant_algo;
  if (row->fields != LayerFields::kAlgo) j["group_size"] = block_size;
  if (row->fields == LayerFields::kAwq) {
    j["has_zero_point"] = false;
    j["pre_quant_scale"] = true;
  }
  return j;
}

std::vector<std::string> summarize_exclude_modules(const std::vector<std::string>& unquantized,
                                                   const std::vector<std::string>& quantized) {
  std::set<std::string> negative;
  for (const auto& q : quantized) {
    negative.insert(q);
    for (size_t i = 0; i <= q.size(); ++i) negative.insert(q.substr(0, i) + "*");
  }
  std::set<std::string> res;
  for (const auto& u : unquantized) {
    std::vector<std::vector<std::string>> cands;
    for (size_t i = 0; i < u.size(); ++i)
      if (u[i] == '.') {
        cands.push_back({u.substr(0, i) + "*"});
        cands.push_back({u.substr(0, i), u.substr(0, i) + ".*"});
      }
    cands.push_back({u});
    std::vector<std::string> pick;
    for (const auto& c : cands) {
      if (std::any_of(c.begin(), c.end(),
                      [&](const std::string& w) { return negative.count(w) != 0; }))
        continue;
      if (std::all_of(c.begin(), c.end(),
                      [&](const std::string& w) { return res.count(w) != 0; })) {
        pick.clear();
        break;
      }
      pick = c;
      break;
    }
    // A pair {prefix, prefix.*} is recorded as prefix.* only.
    if (pick.size() == 2)
      res.insert(pick[1]);
    else
      res.insert(pick.begin(), pick.end());
  }
  return {res.begin(), res.end()};
}

nlohmann::ordered_json convert_hf_quant_config_format(const nlohmann::ordered_json& in) {
  using oj = nlohmann::ordered_json;
  oj out = oj::object();
  const oj q = in.contains("quantization") ? in["quantization"] : oj::object();
  const oj algo = q.value("quant_algo", oj());
  auto gs = [&](int64_t dflt) { return q.contains("group_size") ? q["group_size"] : oj(dflt); };
  auto fp = [](int bits, const oj& group) {
    oj e = {{"dynamic", false}, {"num_bits", bits}, {"type", "float"}};
    if (!group.is_null()) e["group_size"] = group;
    return e;
  };
  const std::string a = algo.is_string() ? algo.get<std::string>() : "";
  if (a == "FP8") {
    out["config_groups"] = {
        {"group_0",
         {{"input_activations", fp(8, oj())}, {"weights", fp(8, oj())}, {"targets", {"Linear"}}}}};
  } else if (a == "NVFP4" || a == "NVFP4_SVD") {
    oj g = {{"input_activations", fp(4, gs(16))}, {"weights", fp(4, gs(16))}};
    if (a == "NVFP4_SVD") {
      g["has_zero_point"] = false;
      g["pre_quant_scale"] = true;
    }
    g["targets"] = {"Linear"};
    if (a == "NVFP4_SVD" && q.contains("lora_rank") && !q["lora_rank"].is_null())
      g["lora_rank"] = q["lora_rank"];
    out["config_groups"] = {{"group_0", g}};
  } else if (a == "W4A16_NVFP4") {
    out["config_groups"] = {{"group_0", {{"weights", fp(4, gs(16))}, {"targets", {"Linear"}}}}};
  } else if (a == "MIXED_PRECISION") {
    // One group per distinct layer config (sorted items, first-seen order), targets sorted.
    std::vector<std::pair<std::string, std::vector<std::string>>> groups;
    std::map<std::string, oj> cfg_of;
    const oj layers = q.value("quantized_layers", oj::object());
    for (const auto& [lname, lcfg] : layers.items()) {
      const std::string key = nlohmann::json(lcfg).dump();  // std::map keys: sorted items
      auto it =
          std::find_if(groups.begin(), groups.end(), [&](const auto& g) { return g.first == key; });
      if (it == groups.end()) {
        groups.push_back({key, {}});
        cfg_of[key] = lcfg;
        it = groups.end() - 1;
      }
      it->second.push_back(lname);
    }
    oj cg = oj::object();
    for (size_t i = 0; i < groups.size(); ++i) {
      const oj& lc = cfg_of[groups[i].first];
      const std::string la = lc.value("quant_algo", std::string());
      const oj lgs = lc.value("group_size", oj());
      auto gsz = [&](int64_t d) { return lgs.is_null() || lgs == 0 ? oj(d) : lgs; };
      oj g;
      if (la == "FP8") {
        g = {{"input_activations", fp(8, oj())}, {"weights", fp(8, oj())}};
      } else if (la == "FP8_PER_CHANNEL_PER_TOKEN") {
        oj w = fp(8, oj());
        w["strategy"] = "channel";
        g = {{"input_activations", fp(8, oj())}, {"weights", w}};
      } else if (la == "NVFP4" || la == "NVFP4_SVD") {
        g = {{"input_activations", fp(4, gsz(16))}, {"weights", fp(4, gsz(16))}};
        if (la == "NVFP4_SVD") {
          g["has_zero_point"] = false;
          g["pre_quant_scale"] = true;
        }
      } else if (la == "W4A16_AWQ") {
        g = {{"weights",
              {{"dynamic", false}, {"num_bits", 4}, {"type", "int"}, {"group_size", gsz(128)}}}};
      } else if (la == "W4A16_NVFP4") {
        g = {{"weights", fp(4, gsz(16))}};
      } else if (la == "NVFP4_AWQ" || la == "W4A8_AWQ") {
        g = {{"input_activations", fp(8, gsz(128))}, {"weights", fp(4, gsz(128))}};
      } else if (la == "W8A16") {
        g = {{"weights", {{"dynamic", false}, {"num_bits", 8}, {"type", "int"}}}};
      } else if (la == "W8A8_SQ_PER_CHANNEL") {
        g = {{"input_activations", {{"dynamic", false}, {"num_bits", 8}, {"type", "int"}}},
             {"weights",
              {{"dynamic", false}, {"num_bits", 8}, {"type", "int"}, {"strategy", "channel"}}}};
      } else if (la == "W4A8_NVFP4_FP8" || la == "W4A8_MXFP4_FP8") {
        g = {{"input_activations", fp(8, oj())}, {"weights", fp(4, gsz(16))}};
      } else if (la == "MXFP8") {
        g = {{"input_activations", fp(8, gsz(32))}, {"weights", fp(8, gsz(32))}};
      } else {
        g = {{"quant_algo", la}};
      }
      std::vector<std::string> t = groups[i].second;
      std::sort(t.begin(), t.end());
      g["targets"] = t;
      cg["group_" + std::to_string(i)] = g;
    }
    out["config_groups"] = cg;
    out["quantized_layers"] = layers;
  }
  out["ignore"] = q.contains("exclude_modules") && !q["exclude_modules"].is_null()
                      ? q["exclude_modules"]
                      : oj::array();
  if (!a.empty()) out["quant_algo"] = a;
  const oj kv = q.value("kv_cache_quant_algo", oj());
  if (kv.is_string() && !kv.get<std::string>().empty()) {
    if (kv == "FP8")
      out["kv_cache_scheme"] = {{"dynamic", false}, {"num_bits", 8}, {"type", "float"}};
    else
      out["kv_cache_scheme"] = kv;
  }
  if (in.contains("producer") && !in["producer"].is_null() && !in["producer"].empty())
    out["producer"] = in["producer"];
  out["quant_method"] = "modelopt";
  return out;
}

// ---- the state dict
// -----------------------------------------------------------------------------------

std::vector<std::pair<std::string, at::Tensor>> build_export_state_dict(
    nn::Module& model, c10::ScalarType dtype, const ExportOptions& options,
    nlohmann::ordered_json* quant_config) {
  ExportSummary summary;
  auto out = build_export_state_dict(model, dtype, summary);
  if (quant_config != nullptr) *quant_config = make_hf_quant_config(summary, options);
  return out;
}

std::vector<std::pair<std::string, at::Tensor>> build_export_state_dict(nn::Module& model,
                                                                        c10::ScalarType dtype,
                                                                        ExportSummary& summary) {
  prepare_moe_inputs(model);
  unify_moe_experts(model);
  std::set<std::string> fused_with_prequant;
  fuse_linears(model, fused_with_prequant);

  summary = ExportSummary{};
  auto& layer_cfgs = summary.layer_configs;  // quantized layers, in module order
  auto& unquantized = summary.unquantized;
  std::string& kv_format = summary.kv_cache_format;
  std::vector<std::string> quantized;
  std::vector<std::pair<std::string, at::Tensor>> out;
  std::set<const void*> seen_storage;
  std::set<std::string> seen_names;

  auto emit = [&](const std::string& name, const at::Tensor& t) {
    MQ_CHECK(seen_names.insert(name).second, "export_hf_checkpoint: duplicate tensor name '", name,
             "'");
    out.emplace_back(name, t.cpu().contiguous());
  };
  auto first_use = [&](const at::Tensor& t) {
    const void* p = t.storage().data();
    return p == nullptr || seen_storage.insert(p).second;
  };

  for (auto& [name, m] : model.named_modules()) {
    if (dynamic_cast<nn::QuantizerModule*>(m) != nullptr) {
      // KV cache scales live on the attention module's k/v BMM quantizers (§6.5 renames).
      const std::string leaf = name.substr(name.rfind('.') + 1);
      const std::string attn = parent_of(name);
      auto* qm = static_cast<nn::QuantizerModule*>(m);
      if ((leaf == "k_bmm_quantizer" || leaf == "v_bmm_quantizer") && !qm->is_sequential()) {
        const quant::TensorQuantizer& t = qm->tensor();
        const std::string proj = join(attn, leaf == "k_bmm_quantizer" ? "k_proj" : "v_proj");
        const std::string kind = leaf == "k_bmm_quantizer" ? "k" : "v";
        if (t.has_amax_buffer()) {
          const std::string fmt = kv_cache_format(model.get_submodule(attn));
          MQ_CHECK(fmt == "FP8" || fmt == "NVFP4" || fmt == "NVFP4_AFFINE",
                   "export_hf_checkpoint: ", name, ": has an amax but the KV cache format is '",
                   fmt, "' (ModelOpt exports k/v scales for FP8 and NVFP4 KV caches only)");
          emit(proj + "." + kind + "_scale", t.amax_buffer().to(at::kFloat) / kKvMaxBound);
        }
        if (auto b = t.bias_value()) emit(proj + "." + kind + "_bias", *b);
      }
      continue;
    }

    // KV cache format (one for the whole model).
    if (enabled(m->quantizer("k_bmm_quantizer")) || enabled(m->quantizer("v_bmm_quantizer")) ||
        enabled(m->quantizer("output_quantizer"))) {
      const std::string f = kv_cache_format(*m);
      MQ_CHECK(kv_format.empty() || kv_format == f, "export_hf_checkpoint: ", name,
               ": KV cache format ", f, " differs from ", kv_format,
               " elsewhere (ModelOpt does not support mixed KV formats)");
      kv_format = f;
    }

    const bool has_quantizers =
        m->quantizer("weight_quantizer") != nullptr || m->quantizer("input_quantizer") != nullptr;
    QuantFormat f = QuantFormat::kNone;
    if (has_quantizers) {
      try {
        f = module_format(*m, fused_with_prequant.count(name) != 0);
      } catch (const Error& e) {
        MQ_THROW(Error, "export_hf_checkpoint: ", name, ": ", e.what());
      }
      if (f == QuantFormat::kNone) {
        unquantized.push_back(name);
      } else {
        quantized.push_back(name);
        layer_cfgs.emplace_back(name, layer_quant_config(f, weight_block_size(*m)));
      }
    }

    if (f != QuantFormat::kNone && m->has_parameter("weight")) {
      const std::string wname = join(name, "weight");
      nn::QuantizerModule* wq = m->quantizer("weight_quantizer");
      const quant::TensorQuantizer* iq = input_tq(*m);
      std::map<std::string, at::Tensor> t;
      try {
        LinearExportInputs in = wq->is_sequential() ? linear_export_inputs(wq->sequential(), iq)
                                                    : linear_export_inputs(wq->tensor(), iq);
        in.format = f;  // fused_with_prequant can turn nvfp4 into nvfp4_awq
        first_use(m->parameter("weight"));
        t = export_linear(wname, m->parameter("weight").to(dtype), in);
      } catch (const Error& e) {
        MQ_THROW(Error, "export_hf_checkpoint: ", name, ": ", e.what());
      }
      const HfTensorNames names = hf_tensor_names(wname);
      // state_dict order: parameters (weight, bias, ...), then the registered scale buffers.
      for (const auto& [pn, p] : m->parameters()) {
        if (!p.defined()) continue;
        if (pn == "weight")
          emit(names.weight, t.at(names.weight));
        else
          emit(join(name, pn), p.to(dtype));
      }
      for (const std::string* n : {&names.weight_scale, &names.input_scale, &names.weight_scale_2})
        if (auto it = t.find(*n); it != t.end()) emit(*n, it->second);
    } else {
      for (const auto& [pn, p] : m->parameters()) {
        if (!p.defined() || !first_use(p)) continue;
        emit(join(name, pn), p.is_floating_point() ? p.to(dtype) : p);
      }
    }
    // The state_dict rename input_quantizer._pre_quant_scale -> pre_quant_scale applies to every
    // module holding one, the input quantizer enabled or not (AWQ W4A16 keeps it disabled).
    if (const quant::TensorQuantizer* iq = input_tq(*m))
      if (auto pqs = iq->pre_quant_scale()) emit(join(name, "pre_quant_scale"), *pqs);
  }

  // MoE routers without quantizers are excluded too (ModelOpt detects them structurally).
  for (auto& [name, m] : model.named_modules()) {
    auto* moe = dynamic_cast<nn::SparseMoeBlock*>(m);
    if (moe == nullptr) continue;
    for (const char* r : {"gate", "router", "shared_expert_gate"}) {
      nn::Module* g = moe->child(r);
      const std::string gname = join(name, r);
      if (g == nullptr || !g->has_parameter("weight")) continue;
      if (std::find(quantized.begin(), quantized.end(), gname) != quantized.end()) continue;
      if (std::find(unquantized.begin(), unquantized.end(), gname) == unquantized.end())
        unquantized.push_back(gname);
    }
  }

  return out;
}
nlohmann::ordered_json make_hf_quant_config(const ExportSummary& summary,
                                            const ExportOptions& options) {
  using oj = nlohmann::ordered_json;
  const auto& layer_cfgs = summary.layer_configs;
  std::vector<std::string> quantized;
  for (const auto& [n, c] : layer_cfgs) quantized.push_back(n);
  oj q = oj::object();
  q["quant_algo"] = nullptr;
  q["kv_cache_quant_algo"] = nullptr;
  std::vector<std::string> distinct;
  for (const auto& [n, c] : layer_cfgs)
    if (std::find(distinct.begin(), distinct.end(), c.dump()) == distinct.end())
      distinct.push_back(c.dump());
  if (distinct.size() > 1) {
    q["quant_algo"] = "MIXED_PRECISION";
    oj layers = oj::object();
    for (const auto& [n, c] : layer_cfgs) layers[n] = c;
    q["quantized_layers"] = layers;
  } else if (distinct.size() == 1) {
    for (const auto& [k, v] : layer_cfgs.back().second.items()) q[k] = v;
    q["exclude_modules"] = summarize_exclude_modules(summary.unquantized, quantized);
  } else {
    q["quantized_layers"] = oj::object();
  }
  if (!summary.kv_cache_format.empty()) q["kv_cache_quant_algo"] = summary.kv_cache_format;
  return oj{{"producer", {{"name", options.producer_name}, {"version", options.producer_version}}},
            {"quantization", q}};
}

// ---- writing
// ------------------------------------------------------------------------------------------

namespace {

std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

c10::ScalarType parse_dtype(const std::string& s, const std::string& where) {
  if (s == "bfloat16") return at::kBFloat16;
  if (s == "float16") return at::kHalf;
  if (s == "float32") return at::kFloat;
  MQ_THROW(ConfigError, where, ": unsupported dtype '", s, "' (bfloat16, float16 or float32)");
}

void write_text(const fs::path& p, const std::string& s) {
  std::ofstream f(p, std::ios::binary);
  MQ_CHECK_T(IoError, f.good(), p.string(), ": cannot create file");
  f << s;
  f.close();
  MQ_CHECK_T(IoError, f.good(), p.string(), ": write failed");
}

std::string shard_name(size_t i, size_t n) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", i + 1, n);
  return buf;
}

bool is_parameter_name(const std::string& n) {
  for (const char* s : {".weight_scale", ".weight_scale_2", ".input_scale", ".pre_quant_scale",
                        ".k_scale", ".v_scale", ".k_bias", ".v_bias"})
    if (n.size() >= std::strlen(s) &&
        n.compare(n.size() - std::strlen(s), std::string::npos, s) == 0)
      return false;
  return true;
}

void write_export(const fs::path& dir, const std::vector<std::pair<std::string, at::Tensor>>& sd,
                  const nlohmann::ordered_json& quant_config,
                  const nlohmann::ordered_json& hf_config, const fs::path& source,
                  const ExportOptions& options, ExportReport& report) {
  // huggingface_hub's split: greedy in state_dict order, an oversized tensor alone in its own
  // shard.
  std::vector<std::vector<size_t>> shards;
  std::vector<size_t> cur;
  uint64_t cur_size = 0, total = 0, params = 0;
  for (size_t i = 0; i < sd.size(); ++i) {
    const uint64_t sz = sd[i].second.nbytes();
    total += sz;
    if (is_parameter_name(sd[i].first)) params += sd[i].second.numel();
    if (sz > options.max_shard_size) {
      shards.push_back({i});
      continue;
    }
    if (cur_size + sz > options.max_shard_size) {
      shards.push_back(cur);
      cur.clear();
      cur_size = 0;
    }
    cur.push_back(i);
    cur_size += sz;
  }
  if (!cur.empty()) shards.push_back(cur);
  if (shards.empty()) shards.push_back({});
  nlohmann::ordered_json weight_map = nlohmann::ordered_json::object();
  for (size_t s = 0; s < shards.size(); ++s) {
    const std::string fname =
        shards.size() == 1 ? "model.safetensors" : shard_name(s, shards.size());
    std::map<std::string, at::Tensor> tensors;
    for (size_t i : shards[s]) {
      tensors[sd[i].first] = sd[i].second;
      weight_map[sd[i].first] = fname;
    }
    io::save_safetensors((dir / fname).string(), tensors, {{"format", "pt"}});
    report.files.push_back(fname);
  }
  if (shards.size() > 1) {
    // transformers: json.dumps(index, indent=2, sort_keys=True) + "\n"
    nlohmann::json index = {{"metadata", {{"total_parameters", params}, {"total_size", total}}},
                            {"weight_map", nlohmann::json(weight_map)}};
    write_text(dir / "model.safetensors.index.json", index.dump(2, ' ', true) + "\n");
    report.files.push_back("model.safetensors.index.json");
  }
  report.num_tensors = sd.size();
  report.total_bytes = total;

  const auto& q = quant_config["quantization"];
  const bool quantized = !q["quant_algo"].is_null() || !q["kv_cache_quant_algo"].is_null();
  nlohmann::ordered_json cfg = hf_config;
  if (quantized) {
    write_text(dir / "hf_quant_config.json", quant_config.dump(4, ' ', true));
    report.files.push_back("hf_quant_config.json");
    cfg.erase("quantization_config");
    cfg["quantization_config"] = convert_hf_quant_config_format(quant_config);
  }
  write_text(dir / "config.json", cfg.dump(4, ' ', true));
  report.files.push_back("config.json");
  for (const auto& f : options.copy_files) {
    if (!fs::is_regular_file(source / f)) continue;
    std::error_code ec;
    fs::copy_file(source / f, dir / f, fs::copy_options::overwrite_existing, ec);
    MQ_CHECK_T(IoError, !ec, (source / f).string(), ": cannot copy to ", dir.string(), ": ",
               ec.message());
    report.files.push_back(f);
  }
  std::sort(report.files.begin(), report.files.end());
  report.quant_algo = q["quant_algo"].is_string() ? q["quant_algo"].get<std::string>() : "";
  report.kv_cache_quant_algo =
      q["kv_cache_quant_algo"].is_string() ? q["kv_cache_quant_algo"].get<std::string>() : "";
}

}  // namespace

namespace {

// "out/" -> "out"
fs::path normalized_target(const std::string& export_dir) {
  MQ_CHECK(!export_dir.empty(), "export_hf_checkpoint: empty export_dir");
  fs::path target(export_dir);
  while (target.has_filename() == false && target.has_parent_path() && target != target.root_path())
    target = target.parent_path();
  return target;
}

}  // namespace

nlohmann::ordered_json read_source_config(const std::string& source_dir) {
  const fs::path cfg_path = fs::path(source_dir) / "config.json";
  std::ifstream cf(cfg_path);
  MQ_CHECK_T(IoError, cf.good(), cfg_path.string(),
             ": cannot open (export_hf_checkpoint needs the source config)");
  nlohmann::ordered_json hf_config;
  try {
    hf_config = nlohmann::ordered_json::parse(cf);
  } catch (const std::exception& e) {
    MQ_THROW(IoError, cfg_path.string(), ": invalid JSON: ", e.what());
  }
  MQ_CHECK_T(IoError, hf_config.is_object(), cfg_path.string(), ": not a JSON object");
  return hf_config;
}

void check_export_dir(const std::string& export_dir, bool overwrite) {
  const fs::path target = normalized_target(export_dir);
  std::error_code ec;
  if (fs::exists(target, ec)) {
    MQ_CHECK_T(IoError, fs::is_directory(target), target.string(),
               ": exists and is not a directory");
    MQ_CHECK_T(IoError, overwrite || fs::is_empty(target), target.string(),
               ": exists and is not empty (set overwrite to replace it)");
  }
}

std::optional<c10::ScalarType> configured_export_dtype(const ExportOptions& options,
                                                       const nlohmann::ordered_json& hf_config,
                                                       const std::string& source_dir) {
  const std::string cfg_path = (fs::path(source_dir) / "config.json").string();
  if (options.dtype) return *options.dtype;
  if (hf_config.contains("dtype") && hf_config["dtype"].is_string())
    return parse_dtype(hf_config["dtype"].get<std::string>(), cfg_path + ": dtype");
  if (hf_config.contains("torch_dtype") && hf_config["torch_dtype"].is_string())
    return parse_dtype(hf_config["torch_dtype"].get<std::string>(), cfg_path + ": torch_dtype");
  return std::nullopt;
}

c10::ScalarType model_export_dtype(nn::Module& model) {
  auto ps = model.named_parameters();
  MQ_CHECK(!ps.empty(), "export_hf_checkpoint: the model has no parameters");
  return ps.front().second.scalar_type();
}

ExportReport write_hf_checkpoint(const std::string& source_dir, const std::string& export_dir,
                                 const std::vector<std::pair<std::string, at::Tensor>>& sd,
                                 const nlohmann::ordered_json& quant_config,
                                 const nlohmann::ordered_json& hf_config,
                                 const ExportOptions& options) {
  const fs::path source(source_dir);
  const fs::path target = normalized_target(export_dir);
  check_export_dir(export_dir, options.overwrite);
  std::error_code ec;
  const bool exists = fs::exists(target, ec);
  const fs::path tmp = target.string() + ".tmp-" + std::to_string(::getpid());
  ExportReport report;
  try {
    fs::remove_all(tmp, ec);
    fs::create_directories(tmp, ec);
    MQ_CHECK_T(IoError, !ec, "export_hf_checkpoint: ", tmp.string(),
               ": cannot create directory: ", ec.message());
    write_export(tmp, sd, quant_config, hf_config, source, options, report);
    if (exists) {
      const fs::path old = target.string() + ".old-" + std::to_string(::getpid());
      fs::rename(target, old, ec);
      MQ_CHECK_T(IoError, !ec, target.string(),
                 ": cannot move the previous export aside: ", ec.message());
      fs::rename(tmp, target, ec);
      if (ec) {
        std::error_code ec2;
        fs::rename(old, target, ec2);
        MQ_THROW(IoError, target.string(), ": cannot rename ", tmp.string(),
                 " onto it: ", ec.message());
      }
      fs::remove_all(old, ec);
    } else {
      fs::rename(tmp, target, ec);
      MQ_CHECK_T(IoError, !ec, target.string(), ": cannot rename ", tmp.string(),
                 " onto it: ", ec.message());
    }
  } catch (const Error&) {
    std::error_code ec2;
    fs::remove_all(tmp, ec2);
    throw;
  } catch (const c10::Error& e) {
    std::error_code ec2;
    fs::remove_all(tmp, ec2);
    MQ_THROW(IoError, "export_hf_checkpoint: ", tmp.string(), ": ",
             first_line(e.what_without_backtrace()));
  } catch (const std::exception& e) {
    std::error_code ec2;
    fs::remove_all(tmp, ec2);
    MQ_THROW(IoError, "export_hf_checkpoint: ", tmp.string(), ": ", first_line(e.what()));
  }
  return report;
}

ExportReport export_hf_checkpoint(nn::Module& model, const std::string& source_dir,
                                  const std::string& export_dir, const ExportOptions& options) {
  normalized_target(export_dir);
  const nlohmann::ordered_json hf_config = read_source_config(source_dir);
  check_export_dir(export_dir, options.overwrite);
  const std::optional<c10::ScalarType> configured =
      configured_export_dtype(options, hf_config, source_dir);
  const c10::ScalarType dtype = configured ? *configured : model_export_dtype(model);

  nlohmann::ordered_json quant_config;
  std::vector<std::pair<std::string, at::Tensor>> sd;
  try {
    sd = build_export_state_dict(model, dtype, options, &quant_config);
  } catch (const c10::Error& e) {
    MQ_THROW(Error, "export_hf_checkpoint: ", first_line(e.what_without_backtrace()));
  }
  return write_hf_checkpoint(source_dir, export_dir, sd, quant_config, hf_config, options);
}

}  // namespace mq::hf_export
