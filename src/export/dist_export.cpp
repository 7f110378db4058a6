#include "mq/export/dist_export.hpp"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstring>
#include <list>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <unordered_map>

#include "mq/core/error.hpp"

namespace mq::hf_export {

std::string to_string(const ShardSpec& s) {
  if (s.kind == ShardKind::kReplicated) return "replicated";
  return detail::cat("concat(dim=", s.dim, ", ", s.index, "/", s.count, ")");
}

// ---- merge order
// ---------------------------------------------------------------------------------

std::vector<std::string> merge_name_order(const std::vector<std::vector<std::string>>& ranks) {
  std::list<std::string> merged;
  std::unordered_map<std::string, std::list<std::string>::iterator> where;
  for (const auto& names : ranks) {
    // Walking the rank's list backwards, `anchor` is the placed successor of the current name.
    auto anchor = merged.end();
    for (auto it = names.rbegin(); it != names.rend(); ++it) {
      auto found = where.find(*it);
      if (found != where.end()) {
        anchor = found->second;
        continue;
      }
      anchor = merged.insert(anchor, *it);
      where.emplace(*it, anchor);
    }
  }
  return {merged.begin(), merged.end()};
}

// ---- metadata
// ------------------------------------------------------------------------------------

namespace {

uint64_t mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  return h;
}

std::vector<int64_t> shape_of(const at::Tensor& t) { return {t.sizes().begin(), t.sizes().end()}; }

std::string shape_str(const std::vector<int64_t>& s) {
  std::ostringstream os;
  os << "(";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << (s.size() == 1 ? ",)" : ")");
  return os.str();
}

bool same_bytes(const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  const at::Tensor ca = a.contiguous(), cb = b.contiguous();
  const size_t n = static_cast<size_t>(ca.numel()) * ca.element_size();
  return n == 0 || std::memcmp(ca.data_ptr(), cb.data_ptr(), n) == 0;
}

}  // namespace

uint64_t tensor_content_hash(const at::Tensor& t) {
  MQ_CHECK(t.defined() && t.device().is_cpu(), "tensor_content_hash: needs a defined CPU tensor");
  const at::Tensor c = t.contiguous();
  uint64_t h = mix(0x6d71686173680000ULL, static_cast<uint64_t>(c.scalar_type()));
  h = mix(h, static_cast<uint64_t>(c.dim()));
  for (int64_t d : c.sizes()) h = mix(h, static_cast<uint64_t>(d));
  const auto* p = static_cast<const unsigned char*>(c.data_ptr());
  const size_t n = static_cast<size_t>(c.numel()) * c.element_size();
  // Word-wise multiply-rotate over the bytes; a final mix per 8 words keeps it cheap.
  uint64_t acc = 0x243f6a8885a308d3ULL;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    acc = (acc ^ w) * 0x9fb21c651e98df25ULL;
    acc = (acc << 29) | (acc >> 35);
    if ((i & 63) == 56) h = mix(h, acc);
  }
  uint64_t tail = 0;
  if (i < n) std::memcpy(&tail, p + i, n - i);
  h = mix(h, acc);
  h = mix(h, tail);
  return mix(h, n);
}

TensorMeta tensor_meta(const std::string& name, const at::Tensor& t, const ShardSpec& shard) {
  return {name, t.scalar_type(), shape_of(t), shard, tensor_content_hash(t)};
}

// ---- planning
// ------------------------------------------------------------------------------------

std::vector<MergeStep> plan_merge(const std::vector<std::vector<TensorMeta>>& ranks) {
  MQ_CHECK(!ranks.empty(), "merge: no ranks");
  std::vector<std::vector<std::string>> names(ranks.size());
  std::vector<std::unordered_map<std::string, size_t>> index(ranks.size());
  for (size_t r = 0; r < ranks.size(); ++r)
    for (size_t i = 0; i < ranks[r].size(); ++i) {
      const TensorMeta& m = ranks[r][i];
      MQ_CHECK(index[r].emplace(m.name, i).second, "merge: rank ", r, " lists tensor '", m.name,
               "' twice");
      names[r].push_back(m.name);
      const ShardSpec& s = m.shard;
      if (s.kind == ShardKind::kConcat)
        MQ_CHECK(s.count >= 1 && s.index >= 0 && s.index < s.count && s.dim >= 0 &&
                     s.dim < static_cast<int64_t>(m.shape.size()),
                 "merge: tensor '", m.name, "' of rank ", r, ": shard ", to_string(s),
                 " does not fit its shape ", shape_str(m.shape));
    }

  std::vector<MergeStep> plan;
  for (const std::string& name : merge_name_order(names)) {
    std::vector<TensorRef> holders;
    for (size_t r = 0; r < ranks.size(); ++r)
      if (auto it = index[r].find(name); it != index[r].end())
        holders.push_back({static_cast<int>(r), it->second});
    auto meta = [&](const TensorRef& h) -> const TensorMeta& { return ranks[h.rank][h.index]; };
    const TensorMeta& first = meta(holders[0]);
    MergeStep step;
    step.name = name;
    step.dtype = first.dtype;
    step.shard = first.shard;
    for (const TensorRef& h : holders) {
      const ShardSpec& s = meta(h).shard;
      MQ_CHECK(s.kind == first.shard.kind &&
                   (s.kind == ShardKind::kReplicated ||
                    (s.dim == first.shard.dim && s.count == first.shard.count)),
               "merge: tensor '", name, "': rank ", holders[0].rank, " holds it as ",
               to_string(first.shard), " but rank ", h.rank, " as ", to_string(s));
    }
    auto check_same = [&](const TensorRef& a, const TensorRef& b, const std::string& what) {
      const TensorMeta &ma = meta(a), &mb = meta(b);
      MQ_CHECK(ma.dtype == mb.dtype && ma.shape == mb.shape, "merge: tensor '", name, "'", what,
               ": rank ", a.rank, " holds ", ma.dtype, " ", shape_str(ma.shape), " but rank ",
               b.rank, " holds ", mb.dtype, " ", shape_str(mb.shape));
      MQ_CHECK(ma.hash == mb.hash, "merge: tensor '", name, "'", what, ": rank ", a.rank,
               " and rank ", b.rank,
               " hold different values (replicas must be equal: are the "
               "amaxes synchronised?)");
    };
    if (first.shard.kind == ShardKind::kReplicated) {
      step.shard = ShardSpec::replicated();
      step.parts = {holders[0]};
      for (size_t i = 1; i < holders.size(); ++i) {
        check_same(holders[0], holders[i], " (replicated)");
        step.duplicates.push_back(holders[i]);
        step.duplicate_of.push_back(0);
      }
      step.shape = first.shape;
    } else {
      const int64_t dim = first.shard.dim, count = first.shard.count;
      step.shard = ShardSpec::concat(dim, 0, count);
      std::vector<std::optional<TensorRef>> piece(static_cast<size_t>(count));
      for (const TensorRef& h : holders) {
        const int64_t k = meta(h).shard.index;
        auto& slot = piece[static_cast<size_t>(k)];
        if (!slot) {
          slot = h;
          continue;
        }
        check_same(*slot, h, detail::cat(" piece ", k, "/", count));
        step.duplicates.push_back(h);
        step.duplicate_of.push_back(static_cast<size_t>(k));
      }
      for (int64_t k = 0; k < count; ++k) {
        MQ_CHECK(piece[static_cast<size_t>(k)].has_value(), "merge: tensor '", name, "': piece ", k,
                 " of ", count, " along dim ", dim, " is held by no rank");
        step.parts.push_back(*piece[static_cast<size_t>(k)]);
      }
      step.shape = meta(step.parts[0]).shape;
      step.shape[static_cast<size_t>(dim)] = 0;
      for (const TensorRef& p : step.parts) {
        const TensorMeta& m = meta(p);
        std::vector<int64_t> a = m.shape, b = meta(step.parts[0]).shape;
        a[static_cast<size_t>(dim)] = b[static_cast<size_t>(dim)] = 0;
        MQ_CHECK(m.dtype == step.dtype && a == b, "merge: tensor '", name, "': piece ",
                 m.shard.index, " of rank ", p.rank, " is ", m.dtype, " ", shape_str(m.shape),
                 " but piece 0 of rank ", step.parts[0].rank, " is ", meta(step.parts[0]).dtype,
                 " ", shape_str(meta(step.parts[0]).shape), " (pieces may differ along dim ", dim,
                 " only)");
        step.shape[static_cast<size_t>(dim)] += m.shape[static_cast<size_t>(dim)];
      }
    }
    plan.push_back(std::move(step));
  }
  return plan;
}

std::vector<std::pair<std::string, at::Tensor>> merge_sharded_state_dicts(
    const std::vector<std::vector<ShardedTensor>>& ranks) {
  std::vector<std::vector<TensorMeta>> metas(ranks.size());
  for (size_t r = 0; r < ranks.size(); ++r)
    for (const ShardedTensor& t : ranks[r]) {
      MQ_CHECK(t.tensor.defined(), "merge: tensor '", t.name, "' of rank ", r, " is undefined");
      metas[r].push_back(tensor_meta(t.name, t.tensor.cpu(), t.shard));
    }
  const std::vector<MergeStep> plan = plan_merge(metas);
  auto tensor = [&](const TensorRef& h) { return ranks[h.rank][h.index].tensor.cpu(); };
  std::vector<std::pair<std::string, at::Tensor>> out;
  out.reserve(plan.size());
  for (const MergeStep& s : plan) {
    // Hashes agreed; the bytes decide.
    for (size_t i = 0; i < s.duplicates.size(); ++i) {
      const TensorRef& a = s.parts[s.duplicate_of[i]];
      const TensorRef& b = s.duplicates[i];
      MQ_CHECK(same_bytes(tensor(a), tensor(b)), "merge: tensor '", s.name, "': rank ", a.rank,
               " and rank ", b.rank,
               " hold different values (replicas must be equal: are the "
               "amaxes synchronised?)");
    }
    if (s.shard.kind == ShardKind::kReplicated) {
      out.emplace_back(s.name, tensor(s.parts[0]).contiguous());
    } else {
      std::vector<at::Tensor> pieces;
      for (const TensorRef& p : s.parts) pieces.push_back(tensor(p));
      out.emplace_back(s.name, pieces.size() == 1 ? pieces[0].contiguous()
                                                  : at::cat(pieces, s.shard.dim).contiguous());
    }
  }
  return out;
}

ExportSummary merge_export_summaries(const std::vector<ExportSummary>& ranks) {
  ExportSummary out;
  std::vector<std::vector<std::string>> layer_names, unq_names;
  std::map<std::string, std::pair<size_t, const nlohmann::ordered_json*>> cfg_of;
  std::map<std::string, size_t> unq_rank;
  for (size_t r = 0; r < ranks.size(); ++r) {
    layer_names.emplace_back();
    for (const auto& [n, c] : ranks[r].layer_configs) {
      layer_names.back().push_back(n);
      auto [it, fresh] = cfg_of.emplace(n, std::make_pair(r, &c));
      MQ_CHECK(fresh || *it->second.second == c, "export: module '", n, "' is quantized as ",
               it->second.second->dump(), " on rank ", it->second.first, " but as ", c.dump(),
               " on rank ", r);
    }
    unq_names.push_back(ranks[r].unquantized);
    for (const auto& n : ranks[r].unquantized) unq_rank.emplace(n, r);
  }
  for (const auto& [n, r] : unq_rank)
    if (auto it = cfg_of.find(n); it != cfg_of.end())
      MQ_THROW(Error, "export: module '", n, "' is quantized on rank ", it->second.first,
               " but not on rank ", r);
  for (const auto& n : merge_name_order(layer_names))
    out.layer_configs.emplace_back(n, *cfg_of[n].second);
  out.unquantized = merge_name_order(unq_names);
  for (size_t r = 0; r < ranks.size(); ++r) {
    const std::string& f = ranks[r].kv_cache_format;
    if (f.empty()) continue;
    MQ_CHECK(out.kv_cache_format.empty() || out.kv_cache_format == f,
             "export_hf_checkpoint: KV cache format ", f, " on rank ", r, " differs from ",
             out.kv_cache_format, " elsewhere (ModelOpt does not support mixed KV formats)");
    out.kv_cache_format = f;
  }
  return out;
}

// ---- the HF decoder rule
// ---------------------------------------------------------------------------

LinearRole hf_decoder_linear_role(std::string_view module_name) {
  const size_t dot = module_name.rfind('.');
  const std::string_view leaf =
      dot == std::string_view::npos ? module_name : module_name.substr(dot + 1);
  if (module_name.substr(0, 8) == "experts." ||
      module_name.find(".experts.") != std::string_view::npos)
    return LinearRole::kReplicated;
  for (const char* c : {"q_proj", "k_proj", "v_proj", "gate_proj", "up_proj"})
    if (leaf == c) return LinearRole::kColumn;
  for (const char* r : {"o_proj", "down_proj"})
    if (leaf == r) return LinearRole::kRow;
  return LinearRole::kReplicated;
}

namespace {

constexpr int64_t kAnyDim = -1;
constexpr int64_t kNoConcat = -1;

// One row per tensor build_export_state_dict writes for a quantized (or bias-carrying) linear; see
// the table in dist_export.hpp and hf_tensors.hpp for the shapes.
struct RuleRow {
  LinearRole role;
  const char* suffix;
  int64_t ndim;        // kAnyDim: any
  int64_t concat_dim;  // kNoConcat: replicated
};

constexpr RuleRow kRules[] = {
    // column parallel: output rows split
    {LinearRole::kColumn, "weight", 2,
     0},  // plain, FP8/INT8 (out, in), NVFP4/MX (out, in/2), INT4 (out/2, in)
    {LinearRole::kColumn, "weight_scale", 0, kNoConcat},  // per-tensor (FP8)
    {LinearRole::kColumn, "weight_scale", 1, 0},          // per-channel (out,)
    {LinearRole::kColumn, "weight_scale", 2, 0},          // block (out, in/bs)
    {LinearRole::kColumn, "weight_scale", 4, 0},          // FP8 2-D block (out/128, 1, in/128, 1)
    {LinearRole::kColumn, "weight_scale_2", 0, kNoConcat},
    {LinearRole::kColumn, "input_scale", 0, kNoConcat},
    {LinearRole::kColumn, "bias", 1, 0},
    {LinearRole::kColumn, "pre_quant_scale", 1, kNoConcat},  // (in,): the whole input
    {LinearRole::kColumn, "k_scale", 0, kNoConcat},
    {LinearRole::kColumn, "v_scale", 0, kNoConcat},
    // row parallel: input columns split
    {LinearRole::kRow, "weight", 2, 1},
    {LinearRole::kRow, "weight_scale", 0, kNoConcat},
    {LinearRole::kRow, "weight_scale", 1, kNoConcat},  // per-channel over the whole row (synced)
    {LinearRole::kRow, "weight_scale", 2, 1},
    {LinearRole::kRow, "weight_scale", 4, 2},
    {LinearRole::kRow, "weight_scale_2", 0, kNoConcat},
    {LinearRole::kRow, "input_scale", 0, kNoConcat},
    {LinearRole::kRow, "bias", 1, kNoConcat},     // whole on its holders
    {LinearRole::kRow, "pre_quant_scale", 1, 0},  // (in,): this rank's columns
};

const char* role_name(LinearRole r) {
  switch (r) {
    case LinearRole::kColumn:
      return "column-parallel";
    case LinearRole::kRow:
      return "row-parallel";
    case LinearRole::kReplicated:
      break;
  }
  return "replicated";
}

}  // namespace

ShardSpec hf_decoder_shard_spec(LinearRole role, std::string_view suffix, int64_t ndim,
                                int64_t tp_rank, int64_t tp_size) {
  MQ_CHECK(tp_size >= 1 && tp_rank >= 0 && tp_rank < tp_size, "hf_decoder_shard_spec: tp_rank ",
           tp_rank, " / tp_size ", tp_size, " is invalid");
  if (role == LinearRole::kReplicated || tp_size == 1) return ShardSpec::replicated();
  for (const RuleRow& r : kRules)
    if (r.role == role && suffix == r.suffix && (r.ndim == kAnyDim || r.ndim == ndim))
      return r.concat_dim == kNoConcat ? ShardSpec::replicated()
                                       : ShardSpec::concat(r.concat_dim, tp_rank, tp_size);
  MQ_THROW(Error, "hf_decoder_shard_spec: no rule for tensor '", suffix, "' with ", ndim,
           " dimensions of a ", role_name(role),
           " linear (the distributed export cannot merge it under tensor parallelism)");
}

ShardRule hf_decoder_shard_rule(int64_t tp_rank, int64_t tp_size) {
  hf_decoder_shard_spec(LinearRole::kReplicated, "", 0, tp_rank, tp_size);  // validates
  return [tp_rank, tp_size](const std::string& name, const at::Tensor& t) {
    const size_t dot = name.rfind('.');
    const std::string module = dot == std::string::npos ? std::string() : name.substr(0, dot);
    const std::string suffix = dot == std::string::npos ? name : name.substr(dot + 1);
    ShardSpec s;
    try {
      s = hf_decoder_shard_spec(hf_decoder_linear_role(module), suffix, t.dim(), tp_rank, tp_size);
    } catch (const Error& e) {
      MQ_THROW(Error, name, ": ", e.what());
    }
    return s;
  };
}

// ---- local -> global names
// ------------------------------------------------------------------------

NameMap moe_expert_global_names(std::vector<std::pair<std::string, int64_t>> block_expert_begin) {
  for (const auto& [b, begin] : block_expert_begin)
    MQ_CHECK(begin >= 0, "moe_expert_global_names: ", b, ": negative expert offset ", begin);
  return [blocks = std::move(block_expert_begin)](const std::string& name) {
    for (const auto& [b, begin] : blocks) {
      const std::string prefix = b.empty() ? std::string("experts.") : b + ".experts.";
      if (name.compare(0, prefix.size(), prefix) != 0) continue;
      size_t end = prefix.size();
      while (end < name.size() && name[end] >= '0' && name[end] <= '9') ++end;
      if (end == prefix.size() || (end < name.size() && name[end] != '.')) continue;
      const int64_t local = std::stoll(name.substr(prefix.size(), end - prefix.size()));
      return prefix + std::to_string(local + begin) + name.substr(end);
    }
    return name;
  };
}

// ---- the distributed export
// ------------------------------------------------------------------------

namespace {

constexpr const char* kWho = "export_hf_checkpoint_distributed";
constexpr int kTagMeta = 0x4d5101;
constexpr int kTagRequest = 0x4d5102;
constexpr int kTagTensor = 0x4d5103;

std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

// Runs f, returning "" or the one-line message of what it threw.
template <typename F>
std::string capture(F&& f) {
  try {
    f();
  } catch (const c10::Error& e) {
    return first_line(e.what_without_backtrace());
  } catch (const std::exception& e) {
    std::string m = first_line(e.what());
    return m.empty() ? std::string("unknown error") : m;
  }
  return {};
}

// Collective: every rank learns every rank's status; all throw when any failed.
void agree_or_throw(const dist::MpiComm& world, const std::string& err, const char* phase) {
  const std::vector<bool> ok = world.all_gather_bool(err.empty());
  if (std::all_of(ok.begin(), ok.end(), [](bool b) { return b; })) return;
  at::Tensor bytes = at::empty({static_cast<int64_t>(err.size())}, at::kByte);
  if (!err.empty()) std::memcpy(bytes.data_ptr(), err.data(), err.size());
  const std::vector<at::Tensor> msgs = world.all_gather_v(bytes);
  int first = -1, failed = 0;
  for (size_t r = 0; r < ok.size(); ++r)
    if (!ok[r]) {
      ++failed;
      if (first < 0) first = static_cast<int>(r);
    }
  const at::Tensor m = msgs[static_cast<size_t>(first)].contiguous();
  const std::string msg(static_cast<const char*>(m.data_ptr()), static_cast<size_t>(m.numel()));
  MQ_THROW(Error, kWho, ": rank ", first, " failed while ", phase,
           failed > 1 ? detail::cat(" (", failed - 1, " other rank(s) failed too)") : std::string(),
           ": ", msg);
}

std::string broadcast_string(const dist::MpiComm& world, const std::string& s) {
  at::Tensor n = at::full({1}, static_cast<int64_t>(s.size()), at::kLong);
  world.broadcast(n, 0);
  at::Tensor b = at::empty({n.item<int64_t>()}, at::kByte);
  if (world.rank() == 0 && !s.empty()) std::memcpy(b.data_ptr(), s.data(), s.size());
  world.broadcast(b, 0);
  return std::string(static_cast<const char*>(b.data_ptr()), static_cast<size_t>(b.numel()));
}

nlohmann::json metadata_to_json(const std::vector<TensorMeta>& metas, const ExportSummary& s) {
  nlohmann::json ts = nlohmann::json::array();
  for (const TensorMeta& m : metas)
    ts.push_back({m.name, static_cast<int64_t>(m.dtype), m.shape,
                  m.shard.kind == ShardKind::kConcat, m.shard.dim, m.shard.index, m.shard.count,
                  m.hash});
  nlohmann::json layers = nlohmann::json::array();
  for (const auto& [n, c] : s.layer_configs) layers.push_back({n, c.dump()});
  return {{"tensors", ts},
          {"layers", layers},
          {"unquantized", s.unquantized},
          {"kv", s.kv_cache_format}};
}

void metadata_from_json(const nlohmann::json& j, std::vector<TensorMeta>& metas, ExportSummary& s) {
  for (const auto& t : j.at("tensors")) {
    TensorMeta m;
    m.name = t.at(0).get<std::string>();
    m.dtype = static_cast<c10::ScalarType>(t.at(1).get<int64_t>());
    m.shape = t.at(2).get<std::vector<int64_t>>();
    m.shard.kind = t.at(3).get<bool>() ? ShardKind::kConcat : ShardKind::kReplicated;
    m.shard.dim = t.at(4).get<int64_t>();
    m.shard.index = t.at(5).get<int64_t>();
    m.shard.count = t.at(6).get<int64_t>();
    m.hash = t.at(7).get<uint64_t>();
    metas.push_back(std::move(m));
  }
  for (const auto& l : j.at("layers"))
    s.layer_configs.emplace_back(l.at(0).get<std::string>(),
                                 nlohmann::ordered_json::parse(l.at(1).get<std::string>()));
  s.unquantized = j.at("unquantized").get<std::vector<std::string>>();
  s.kv_cache_format = j.at("kv").get<std::string>();
}

// The single-process export gives every expert of a block one input amax per projection group
// (gate/up or w1/w3 together, down / w2): the max over all experts. Each rank can only take the max
// over its own experts, so equal input scales across EP ranks are what calibration's EP sync must
// have provided; different ones would be written silently, so they are an error here.
void check_expert_input_scales(const std::vector<std::vector<TensorMeta>>& ranks) {
  static const std::string kExperts = ".experts.", kSuffix = ".input_scale";
  struct Seen {
    int rank;
    std::string name;
    uint64_t hash;
  };
  std::map<std::string, Seen> first;  // "<block>|<projection group>" -> first holder
  for (size_t r = 0; r < ranks.size(); ++r)
    for (const TensorMeta& m : ranks[r]) {
      const std::string& n = m.name;
      if (n.size() <= kSuffix.size() ||
          n.compare(n.size() - kSuffix.size(), kSuffix.size(), kSuffix))
        continue;
      const size_t e = n.rfind(kExperts);
      if (e == std::string::npos) continue;
      const size_t idx_end = n.find('.', e + kExperts.size());
      if (idx_end == std::string::npos) continue;
      std::string proj = n.substr(idx_end + 1, n.size() - kSuffix.size() - idx_end - 1);
      if (proj == "up_proj") proj = "gate_proj";
      if (proj == "w3") proj = "w1";
      const std::string key = n.substr(0, e) + "|" + proj;
      auto [it, fresh] = first.emplace(key, Seen{static_cast<int>(r), n, m.hash});
      if (fresh || it->second.hash == m.hash || it->second.rank == static_cast<int>(r)) continue;
      MQ_THROW(Error, "MoE expert input scales differ between ranks: '", it->second.name,
               "' on rank ", it->second.rank, " and '", n, "' on rank ", r,
               " (the single-process export uses the max over all experts: synchronise expert "
               "input amaxes over EP first)");
    }
}

nlohmann::json report_to_json(const ExportReport& r) {
  return {{"quant_algo", r.quant_algo},
          {"kv_cache_quant_algo", r.kv_cache_quant_algo},
          {"files", r.files},
          {"num_tensors", r.num_tensors},
          {"total_bytes", r.total_bytes}};
}

ExportReport report_from_json(const nlohmann::json& j) {
  ExportReport r;
  r.quant_algo = j.at("quant_algo").get<std::string>();
  r.kv_cache_quant_algo = j.at("kv_cache_quant_algo").get<std::string>();
  r.files = j.at("files").get<std::vector<std::string>>();
  r.num_tensors = j.at("num_tensors").get<size_t>();
  r.total_bytes = j.at("total_bytes").get<uint64_t>();
  return r;
}

}  // namespace

ExportReport export_hf_checkpoint_distributed(nn::Module& local, const std::string& source_dir,
                                              const std::string& export_dir,
                                              const ExportOptions& options,
                                              const dist::MpiComm& world, const ShardRule& rule,
                                              const NameMap& global_name) {
  MQ_CHECK(world.valid(), kWho, ": the communicator is not valid");
  const int rank = world.rank(), size = world.size();

  // 1. Rank 0: source config, target directory, export dtype.
  nlohmann::ordered_json hf_config;
  int64_t dtype_code = -1;
  std::string err;
  if (rank == 0)
    err = capture([&] {
      hf_config = read_source_config(source_dir);
      check_export_dir(export_dir, options.overwrite);
      const auto d = configured_export_dtype(options, hf_config, source_dir);
      dtype_code = static_cast<int64_t>(d ? *d : model_export_dtype(local));
    });
  agree_or_throw(world, err, "preparing the export");
  at::Tensor code = at::full({1}, dtype_code, at::kLong);
  world.broadcast(code, 0);
  const auto dtype = static_cast<c10::ScalarType>(code.item<int64_t>());

  // 2. Every rank: its export state dict, summary and shard metadata.
  std::vector<std::pair<std::string, at::Tensor>> sd;
  ExportSummary summary;
  std::vector<TensorMeta> metas;
  err = capture([&] {
    MQ_CHECK(rule, "no shard rule");
    try {
      sd = build_export_state_dict(local, dtype, summary);
    } catch (const c10::Error& e) {
      MQ_THROW(Error, "export_hf_checkpoint: ", first_line(e.what_without_backtrace()));
    }
    if (global_name) {
      for (auto& [n, t] : sd) n = global_name(n);
      for (auto& [n, c] : summary.layer_configs) n = global_name(n);
      for (auto& n : summary.unquantized) n = global_name(n);
    }
    for (const auto& [n, t] : sd) metas.push_back(tensor_meta(n, t, rule(n, t)));
  });
  // 3.
  agree_or_throw(world, err, "building its export state dict");

  // 4. Metadata to rank 0, which plans the merge.
  std::vector<MergeStep> plan;
  nlohmann::ordered_json quant_config;
  std::vector<std::vector<int64_t>> wanted(static_cast<size_t>(size));  // local indices per rank
  std::vector<std::vector<TensorMeta>> all(static_cast<size_t>(size));
  if (rank == 0) {
    std::vector<ExportSummary> sums(static_cast<size_t>(size));
    all[0] = metas;
    sums[0] = summary;
    std::vector<std::string> docs(static_cast<size_t>(size));
    for (int r = 1; r < size; ++r) docs[static_cast<size_t>(r)] = world.recv_string(r, kTagMeta);
    err = capture([&] {
      for (int r = 1; r < size; ++r)
        metadata_from_json(nlohmann::json::parse(docs[static_cast<size_t>(r)]),
                           all[static_cast<size_t>(r)], sums[static_cast<size_t>(r)]);
      plan = plan_merge(all);
      check_expert_input_scales(all);
      quant_config = make_hf_quant_config(merge_export_summaries(sums), options);
    });
    if (!err.empty()) err = detail::cat("merging the shards: ", err);
    for (const MergeStep& s : plan)
      for (const TensorRef& p : s.parts)
        wanted[static_cast<size_t>(p.rank)].push_back(static_cast<int64_t>(p.index));
  } else {
    world.send_string(metadata_to_json(metas, summary).dump(), 0, kTagMeta);
  }
  agree_or_throw(world, err, "planning the merge");

  // 5. Transfers, one tensor per message in plan order; rank 0 merges and writes.
  ExportReport report;
  if (rank == 0) {
    for (int r = 1; r < size; ++r) {
      const auto& w = wanted[static_cast<size_t>(r)];
      world.send(at::tensor(at::ArrayRef<int64_t>(w.data(), w.size()), at::kLong).reshape({-1}), r,
                 kTagRequest);
    }
    std::vector<std::pair<std::string, at::Tensor>> merged;
    merged.reserve(plan.size());
    for (const MergeStep& s : plan) {
      std::vector<at::Tensor> pieces;
      for (const TensorRef& p : s.parts) {
        if (p.rank == 0) {
          pieces.push_back(sd[p.index].second);
          continue;
        }
        at::Tensor t = world.recv(p.rank, kTagTensor);
        if (err.empty()) {
          const TensorMeta& want = all[static_cast<size_t>(p.rank)][p.index];
          if (t.scalar_type() != want.dtype || shape_of(t) != want.shape ||
              tensor_content_hash(t) != want.hash)
            err = detail::cat("rank ", p.rank, " sent ", t.scalar_type(), " ",
                              shape_str(shape_of(t)), " for '", s.name, "', announced ", want.dtype,
                              " ", shape_str(want.shape), " with another content hash");
        }
        pieces.push_back(std::move(t));
      }
      if (!err.empty()) continue;  // keep receiving: the senders must not be left blocked
      err = capture([&] {
        at::Tensor t = pieces.size() == 1 ? pieces[0] : at::cat(pieces, s.shard.dim);
        MQ_CHECK(shape_of(t) == s.shape, "'", s.name, "' merged to ", shape_str(shape_of(t)),
                 " instead of ", shape_str(s.shape));
        merged.emplace_back(s.name, t.contiguous());
      });
    }
    if (err.empty()) {
      sd.clear();
      err = capture([&] {
        report =
            write_hf_checkpoint(source_dir, export_dir, merged, quant_config, hf_config, options);
      });
    }
  } else {
    const at::Tensor w = world.recv(0, kTagRequest);
    const auto* idx = w.data_ptr<int64_t>();
    for (int64_t i = 0; i < w.numel(); ++i) {
      const size_t k = static_cast<size_t>(idx[i]);
      MQ_ASSERT(k < sd.size());
      world.send(sd[k].second, 0, kTagTensor);
    }
  }
  // 6.
  agree_or_throw(world, err, "merging and writing the checkpoint");
  return report_from_json(nlohmann::json::parse(
      broadcast_string(world, rank == 0 ? report_to_json(report).dump() : "")));
}

}  // namespace mq::hf_export
