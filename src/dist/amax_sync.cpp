#include "mq/dist/amax_sync.hpp"

#include <ATen/ATen.h>
#include <ATen/Functions.h>

#include <algorithm>
#include <iostream>
#include <limits>
#include <map>
#include <sstream>
#include <tuple>
#include <utility>

#include "mq/core/error.hpp"
#include "mq/nn/module.hpp"

namespace mq::dist {

namespace {

constexpr int kMaxDims = 8;
// Per listed quantizer: [has, dtype, device type, dim, sizes...]; has = 2 flags too many dims.
constexpr int kHeader = 4 + kMaxDims;

// One (value, group) pair of a phase.
struct Item {
  std::string name;
  std::optional<at::Tensor> value;  // in/out
  const ProcessGroup* group = nullptr;
  int ranks_with_value = 0;
  int group_size = 0;
};

struct Bucket {
  const ProcessGroup* group;
  std::vector<size_t> items;
};

// Every item's group must be initialised. Buckets by communicator, visited in one global order
// (group name, then members), so that no two ranks wait on each other in a cycle whatever the
// order in which their modules mention the groups.
void run_phase(const std::string& phase, std::vector<Item>& items, AmaxSyncReport& report) {
  AmaxSyncReport::Phase stats;
  stats.name = phase;
  stats.entries = static_cast<int>(items.size());
  std::vector<Bucket> buckets;
  std::map<const MpiComm*, size_t> index;
  for (size_t i = 0; i < items.size(); ++i) {
    const MpiComm* comm = &items[i].group->mpi();
    auto [it, fresh] = index.emplace(comm, buckets.size());
    if (fresh) buckets.push_back({items[i].group, {}});
    buckets[it->second].items.push_back(i);
  }
  std::stable_sort(buckets.begin(), buckets.end(), [](const Bucket& a, const Bucket& b) {
    return std::tie(a.group->name(), a.group->world_ranks()) <
           std::tie(b.group->name(), b.group->world_ranks());
  });
  stats.buckets = static_cast<int>(buckets.size());

  for (const Bucket& b : buckets) {
    const ProcessGroup& g = *b.group;
    const int64_t n = static_cast<int64_t>(b.items.size());
    at::Tensor header = at::zeros({n * kHeader}, at::kLong);
    int64_t* h = header.data_ptr<int64_t>();
    for (int64_t k = 0; k < n; ++k) {
      const auto& v = items[b.items[k]].value;
      int64_t* row = h + k * kHeader;
      if (!v || !v->defined()) continue;
      row[0] = v->dim() > kMaxDims ? 2 : 1;
      row[1] = static_cast<int64_t>(v->scalar_type());
      row[2] = static_cast<int64_t>(v->device().type());
      row[3] = v->dim();
      for (int64_t d = 0; d < v->dim() && d < kMaxDims; ++d) row[4 + d] = v->size(d);
    }
    const std::vector<at::Tensor> all = g.all_gather_v(header);
    ++stats.exchanges;
    const std::string where = "amax sync (" + phase + ") over " + g.to_string();
    for (int r = 0; r < g.size(); ++r)
      MQ_CHECK(all[r].numel() == all[0].numel(), where, ": rank ", r, " lists ",
               all[r].numel() / kHeader, " quantizers but rank 0 lists ", all[0].numel() / kHeader,
               " (every rank of a group needs the same module structure and parallel plan)");

    // (device type, dtype) -> items with a value somewhere, in list order.
    std::map<std::pair<int64_t, int64_t>, std::vector<std::pair<size_t, const int64_t*>>> classes;
    for (int64_t k = 0; k < n; ++k) {
      Item& item = items[b.items[k]];
      const int64_t* first = nullptr;
      int first_rank = -1, count = 0;
      for (int r = 0; r < g.size(); ++r) {
        const int64_t* row = all[r].data_ptr<int64_t>() + k * kHeader;
        MQ_CHECK(row[0] != 2, where, ": ", item.name, " has an amax of more than ", kMaxDims,
                 " dims on rank ", r);
        if (row[0] == 0) continue;
        ++count;
        if (!first) {
          first = row;
          first_rank = r;
          continue;
        }
        MQ_CHECK(std::equal(row, row + kHeader, first), where, ": quantizer #", k, " (", item.name,
                 " here) has a ", static_cast<at::ScalarType>(first[1]), " amax of ", first[3],
                 " dims on rank ", first_rank, " but a ", static_cast<at::ScalarType>(row[1]),
                 " amax of ", row[3], " dims (or another shape/device) on rank ", r);
      }
      item.ranks_with_value = count;
      item.group_size = g.size();
      if (count == 0) continue;
      MQ_CHECK(at::isFloatingType(static_cast<at::ScalarType>(first[1])), where, ": ", item.name,
               " has a ", static_cast<at::ScalarType>(first[1]), " amax (floating point needed)");
      classes[{first[2], first[1]}].emplace_back(b.items[k], first);
    }

    for (auto& [cls, members] : classes) {
      const auto dtype = static_cast<at::ScalarType>(cls.second);
      at::TensorOptions opts = at::TensorOptions().dtype(dtype);
      if (static_cast<at::DeviceType>(cls.first) != at::kCPU)
        opts = opts.device(at::kCUDA, std::max(g.device(), 0));
      std::vector<at::Tensor> parts;
      parts.reserve(members.size());
      for (auto& [i, row] : members) {
        const auto& v = items[i].value;
        if (v && v->defined()) {
          parts.push_back(v->detach().reshape({-1}));
        } else {
          const std::vector<int64_t> shape(row + 4, row + 4 + row[3]);
          int64_t numel = 1;
          for (int64_t s : shape) numel *= s;
          parts.push_back(at::full({numel}, -std::numeric_limits<double>::infinity(), opts));
        }
      }
      at::Tensor flat = at::cat(parts).contiguous();
      g.all_reduce(flat, ReduceOp::kMax);
      ++stats.reductions;
      int64_t offset = 0;
      for (auto& [i, row] : members) {
        const std::vector<int64_t> shape(row + 4, row + 4 + row[3]);
        int64_t numel = 1;
        for (int64_t s : shape) numel *= s;
        items[i].value = flat.slice(0, offset, offset + numel).reshape(shape).clone();
        offset += numel;
      }
    }
  }
  report.phases.push_back(stats);
}

bool routed_expert(const std::string& module) {
  return module.find("experts") != std::string::npos &&
         module.find("shared_experts") == std::string::npos;
}

// Python's `axis == v` for an int axis (a tuple never equals an int).
bool axis_is(const quant::TensorQuantizer& q, int v) {
  const auto& a = q.axis();
  return a && !a->is_tuple && a->dims.size() == 1 && a->dims[0] == v;
}

struct Leaf {
  std::string name;    // dotted quantizer name
  std::string module;  // owning converted module
  std::string child;   // its quantizer child name ("input_quantizer", "k_bmm_quantizer")
  quant::TensorQuantizer* q;
  bool kv_module;  // the module holds both k_bmm_quantizer and v_bmm_quantizer
};

// ModelOpt's `amax` property: None for MX formats and without a buffer.
std::optional<at::Tensor> amax_of(const quant::TensorQuantizer& q) {
  if (!q.has_amax_buffer() || q.is_mx_format()) return std::nullopt;
  return q.amax_buffer();
}

bool expects_amax(const quant::TensorQuantizer& q) {
  return q.is_enabled() && !q.is_dynamic() && !q.is_mx_format() && !q.use_constant_amax() &&
         !q.constant_amax().has_value() && q.calibrator() != nullptr;
}

// Step 11's rule for one leaf.
bool tp_synced(const Leaf& l, TpRole role) {
  const quant::TensorQuantizer& q = *l.q;
  if (l.kv_module) {
    if (l.child == "k_bmm_quantizer" || l.child == "v_bmm_quantizer") return true;
    // Deviation (header): q/p are per-head-sharded like k/v.
    if (l.child == "q_bmm_quantizer" || l.child == "p_bmm_quantizer") return !q.axis().has_value();
  }
  // A static-block quantizer's axis is (0,) once it has seen data, so ModelOpt never syncs it;
  // deciding on the config keeps the lists equal on ranks where it saw none.
  if (q.is_static_block_quant()) return false;
  const bool none = !q.axis().has_value();
  const bool input = l.child == "input_quantizer";
  const bool weight = l.child == "weight_quantizer";
  switch (role) {
    case TpRole::kColumn:
      return (input || weight) && (none || axis_is(q, -1));
    case TpRole::kRow:
      return (input && none) || (weight && (none || axis_is(q, 0)));
    case TpRole::kReplicated:
      return false;
  }
  return false;
}

void print_warning(const std::string& msg) {
  std::cerr << rank_prefix() << ": mqdist warning: " << msg << "\n";
}

}  // namespace

ParallelInfoFn hf_decoder_parallel_info(const ParallelGroups& groups, bool experts_tp_sharded) {
  return [groups, experts_tp_sharded](const std::string& name,
                                      nn::Module&) -> std::optional<ModuleParallelInfo> {
    const std::string leaf = name.substr(name.rfind('.') + 1);
    TpRole role = TpRole::kReplicated;
    for (const char* c : {"q_proj", "k_proj", "v_proj", "gate_proj", "up_proj", "w1", "w3"})
      if (leaf == c) role = TpRole::kColumn;
    for (const char* r : {"o_proj", "down_proj", "w2"})
      if (leaf == r) role = TpRole::kRow;
    if (name.find(".experts.") != std::string::npos && routed_expert(name))
      return ModuleParallelInfo{groups.experts(), experts_tp_sharded ? role : TpRole::kReplicated};
    return ModuleParallelInfo{groups.dense(), role};
  };
}

const AmaxSyncReport::Phase& AmaxSyncReport::phase(const std::string& name) const {
  for (const auto& p : phases)
    if (p.name == name) return p;
  MQ_THROW(Error, "AmaxSyncReport: phase '", name, "' was not run");
}

AmaxSync::AmaxSync(ParallelInfoFn info, ProcessGroup world)
    : info_(std::move(info)), world_(std::move(world)) {
  MQ_CHECK(static_cast<bool>(info_), "AmaxSync: empty ParallelInfoFn");
}

const ModuleParallelInfo& AmaxSync::module_info(const std::string& module) const {
  auto it = infos_.find(module);
  MQ_CHECK(it != infos_.end(), "AmaxSync: '", module,
           "' is not a converted module of the last sync");
  return it->second;
}

void AmaxSync::resolve(nn::Module& model) {
  infos_.clear();
  for (auto& [name, m] : model.named_modules()) {
    if (m->quant_key().empty()) continue;
    auto info = info_(name, *m);
    infos_[name] =
        info ? *info : ModuleParallelInfo{ParallelState{world_, {}, {}}, TpRole::kReplicated};
  }
}

void AmaxSync::sync_amax(nn::Module& model, const config::AlgorithmConfig& cfg) {
  report_ = {};
  amax_synced_ = true;
  resolve(model);
  std::vector<Leaf> leaves;
  for (auto& [name, m] : model.named_modules()) {
    if (m->quant_key().empty()) continue;
    const bool kv = m->quantizer("k_bmm_quantizer") && m->quantizer("v_bmm_quantizer");
    for (auto& [child, qm] : m->quantizers()) {
      const std::string base = name.empty() ? child : name + "." + child;
      auto qs = qm->leaves();
      for (size_t i = 0; i < qs.size(); ++i) {
        // A dynamic quantizer never holds an amax (ModelOpt asserts it has none).
        if (qs[i]->is_dynamic()) continue;
        leaves.push_back({qm->is_sequential() ? base + "." + std::to_string(i) : base, name, child,
                          qs[i], kv && !qm->is_sequential()});
      }
    }
  }

  // The value of each leaf travels through the three phases; the quantizer is written at the end.
  std::vector<std::optional<at::Tensor>> value(leaves.size());
  for (size_t i = 0; i < leaves.size(); ++i) value[i] = amax_of(*leaves[i].q);

  auto phase = [&](const std::string& pname, auto&& group_of) {
    std::vector<Item> items;
    std::vector<size_t> leaf_of;
    for (size_t i = 0; i < leaves.size(); ++i) {
      const ProcessGroup* g = group_of(leaves[i], infos_.at(leaves[i].module));
      if (g == nullptr || !g->is_initialized()) continue;
      items.push_back({leaves[i].name, value[i], g, 0, 0});
      leaf_of.push_back(i);
    }
    run_phase(pname, items, report_);
    // Per group in first-seen order, so the lines come out in module order.
    std::vector<std::pair<const MpiComm*, std::vector<size_t>>> incomplete;
    for (size_t k = 0; k < items.size(); ++k) {
      value[leaf_of[k]] = items[k].value;
      if (items[k].ranks_with_value > 0 && items[k].ranks_with_value < items[k].group_size) {
        report_.incomplete.push_back({items[k].name, pname + ": " + items[k].group->to_string(),
                                      items[k].ranks_with_value, items[k].group_size});
        const MpiComm* comm = &items[k].group->mpi();
        auto it = std::find_if(incomplete.begin(), incomplete.end(),
                               [&](const auto& e) { return e.first == comm; });
        if (it == incomplete.end()) {
          incomplete.push_back({comm, {k}});
        } else {
          it->second.push_back(k);
        }
      }
    }
    for (auto& [comm, ks] : incomplete) {
      const ProcessGroup& g = *items[ks.front()].group;
      std::ostringstream os;
      os << "incomplete calibration over " << pname << " (" << g.to_string()
         << "): only some ranks had an amax for";
      for (size_t k : ks)
        os << " " << items[k].name << " (" << items[k].ranks_with_value << " of "
           << items[k].group_size << ")";
      os << "; every rank now holds the group's maximum (ModelOpt raises \"MoE calibration "
            "incomplete\" here: a larger calibration set covers every expert on every rank)";
      report_.warnings.push_back(os.str());
      if (g.rank() == 0) print_warning(os.str());
    }
  };

  // Step 10: DP, then EP (ModelOpt's per-leaf DP then EP; MAX per leaf is the same in any
  // interleaving of different leaves).
  phase("dp", [](const Leaf&, const ModuleParallelInfo& info) {
    return &info.state.data_parallel_group;
  });
  phase("ep", [&](const Leaf& l, const ModuleParallelInfo& info) -> const ProcessGroup* {
    if (!cfg.sync_expert_weight_amax && l.child.find("weight_quantizer") != std::string::npos &&
        routed_expert(l.module))
      return nullptr;
    return &info.state.expert_model_parallel_group;
  });
  // Step 11.
  phase("tp", [](const Leaf& l, const ModuleParallelInfo& info) -> const ProcessGroup* {
    return tp_synced(l, info.role) ? &info.state.tensor_parallel_group : nullptr;
  });

  for (size_t i = 0; i < leaves.size(); ++i) {
    quant::TensorQuantizer& q = *leaves[i].q;
    if (value[i]) {
      q.set_amax(*value[i]);
    } else if (expects_amax(q)) {
      report_.unset.push_back(leaves[i].name);
    }
  }
  if (!report_.unset.empty()) {
    std::ostringstream os;
    os << report_.unset.size()
       << " enabled quantizer(s) have no amax on any rank of their groups and stay uncalibrated:";
    for (const auto& n : report_.unset) os << " " << n;
    report_.warnings.push_back(os.str());
    print_warning(os.str());
  }
}

void AmaxSync::sync_global_amax(nn::Module& model, const config::AlgorithmConfig& cfg,
                                std::vector<calib::GlobalAmaxSync>& entries) {
  if (!amax_synced_) {
    report_ = {};
    resolve(model);
  }
  amax_synced_ = false;
  auto phase = [&](const std::string& pname, auto&& group_of) {
    std::vector<Item> items;
    std::vector<size_t> entry_of;
    for (size_t i = 0; i < entries.size(); ++i) {
      const auto& e = entries[i];
      MQ_CHECK(!e.modules.empty(), "AmaxSync: a global amax entry without modules");
      const ProcessGroup* g = group_of(e, module_info(e.modules.front()));
      if (g == nullptr || !g->is_initialized()) continue;
      std::optional<at::Tensor> v;
      if (e.global_amax.defined()) v = e.global_amax;
      items.push_back({e.shared ? e.modules.front() + " (shared)" : e.quantizer, v, g, 0, 0});
      entry_of.push_back(i);
    }
    run_phase(pname, items, report_);
    for (size_t k = 0; k < items.size(); ++k)
      if (items[k].value) entries[entry_of[k]].global_amax = *items[k].value;
  };
  // ModelOpt's populate: EP, then TP, of the first member's ParallelState.
  phase("global_ep",
        [&](const calib::GlobalAmaxSync& e, const ModuleParallelInfo& info) -> const ProcessGroup* {
          if (!e.shared) return nullptr;
          // Deviation (header): a routed-expert group is per expert; EP peers hold other experts.
          if (!cfg.sync_expert_weight_amax && routed_expert(e.modules.front())) return nullptr;
          return &info.state.expert_model_parallel_group;
        });
  phase("global_tp", [](const calib::GlobalAmaxSync&, const ModuleParallelInfo& info) {
    return &info.state.tensor_parallel_group;
  });
}

}  // namespace mq::dist
