#include <ATen/ATen.h>

#include <chrono>
#include <condition_variable>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <thread>

#if defined(MQ_TORCH_CUDA)
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include "dist_job_impl.hpp"
#include "mq/config/json.hpp"
#include "mq/core/error.hpp"

namespace mq::job::detail {

DistContext make_dist_context(const JobConfig& job, const models::HfConfig& hf,
                              const dist::MpiComm* world, bool use_nccl, int device) {
  const config::ErrorContext pk = config::ErrorContext{job.source, ""}.key("parallel");
  DistContext c;
  c.world = world;
  c.rank = world ? world->rank() : 0;
  c.size = world ? world->size() : 1;
  const int64_t tp = job.parallel.tp, ep = job.parallel.ep;
  dist::ParallelLayout l;
  l.world_size = c.size;
  l.tp = static_cast<int>(tp);
  l.ep = static_cast<int>(ep);
  l.expert_tp = 1;  // experts are never split over TP (see ParallelJob)
  try {
    c.layout = dist::resolve_layout(l);
  } catch (const Error& e) {
    pk.fail(std::string(e.what()) + (c.size == 1 && (tp > 1 || ep > 1)
                                         ? " (tp/ep > 1 need as many ranks: mpirun -np N mqdist)"
                                         : ""));
  }
  auto divides = [&](const char* key, int64_t size, int64_t n, const std::string& what) {
    if (n % size != 0)
      pk.key(key).fail(std::to_string(size) + " does not divide " + what + " = " +
                       std::to_string(n) + " of " + hf.source);
  };
  divides("tp", tp, hf.num_attention_heads, "num_attention_heads");
  divides("tp", tp, hf.num_key_value_heads, "num_key_value_heads");
  bool dense_mlp = false;
  for (int64_t i = 0; i < hf.num_hidden_layers; ++i) dense_mlp |= !hf.is_moe_layer(i);
  if (dense_mlp) divides("tp", tp, hf.intermediate_size, "intermediate_size");
  if (ep > 1 && hf.num_experts == 0)
    pk.key("ep").fail(std::to_string(ep) + ": " + hf.source + " has no experts");
  if (hf.num_experts > 0) divides("ep", ep, hf.num_experts, "num_experts");
  c.reduction_chunks = job.parallel.reduction_chunks > 0 ? job.parallel.reduction_chunks : tp;
  const int64_t attn_in = hf.num_attention_heads * hf.head_dim;
  divides("reduction_chunks", c.reduction_chunks, attn_in, "num_attention_heads x head_dim");
  if (dense_mlp)
    divides("reduction_chunks", c.reduction_chunks, hf.intermediate_size, "intermediate_size");
  if (world && c.size > 1) {
    dist::GroupOptions go;
    go.nccl = use_nccl;
    go.device = device;
    c.groups = dist::make_parallel_groups(*world, c.layout, go);
  }
  return c;
}

std::vector<size_t> local_batches(const DistContext& ctx, size_t num_batches) {
  std::vector<size_t> idx;
  const size_t dp = static_cast<size_t>(ctx.dp_size()), r = static_cast<size_t>(ctx.dp_rank());
  for (size_t i = r; i < num_batches; i += dp) idx.push_back(i);
  return idx;
}

bool ep_spans_data_parallel(const DistContext& ctx) {
  if (!ctx.groups) return false;
  for (int r : ctx.groups->ranks.ep_group)
    if (dist::rank_groups(ctx.layout, r).dp_rank != ctx.dp_rank()) return true;
  return false;
}

calib::MoeCoverage global_moe_coverage(const DistContext& ctx, nn::Module& model) {
  calib::MoeCoverage local = calib::moe_coverage(model);
  if (!ctx.groups) return local;
  const dist::ParallelGroups& g = *ctx.groups;
  // A rank counts the tokens its EP peers send; peers holding the same batch (TP peers) send it
  // once each (multiplicity `same_data`), and the holders of one expert (its expert-DP group) may
  // see the same batches too (`cover` holders per DP replica). The layout is regular, so both are
  // constants and every token is counted exactly once after dividing by them.
  std::set<int> ep_data;
  int64_t same_data = 0;
  for (int r : g.ranks.ep_group) {
    const int d = dist::rank_groups(ctx.layout, r).dp_rank;
    ep_data.insert(d);
    same_data += d == ctx.dp_rank();
  }
  const int64_t cover =
      static_cast<int64_t>(g.ranks.expert_dp_group.size() * ep_data.size()) / ctx.dp_size();
  calib::MoeCoverage cov;
  for (auto& b : local.blocks) {
    at::Tensor c = at::tensor(b.token_counts, at::kLong);
    g.expert_dp.all_reduce(c, dist::ReduceOp::kSum);
    const int64_t times = same_data * cover;  // how often each token was counted
    MQ_CHECK(at::equal(c.remainder(times), at::zeros_like(c)), "token counts of ", b.name,
             " are not a multiple of ", times, " (EP peers sharing a batch x expert holders)");
    c = c.div(times, "floor");
    at::Tensor all = g.ep.all_gather(c).reshape({-1}).contiguous();
    std::string warning;
    calib::MoeBlockCoverage gb = calib::moe_block_coverage(
        b.name,
        std::vector<int64_t>(all.data_ptr<int64_t>(), all.data_ptr<int64_t>() + all.numel()),
        &warning);
    if (!warning.empty()) cov.warnings.push_back(std::move(warning));
    cov.blocks.push_back(std::move(gb));
  }
  return cov;
}

uint64_t peak_host_bytes() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmHWM:", 0) == 0) {
      std::istringstream is(line.substr(6));
      uint64_t kb = 0;
      is >> kb;
      return kb * 1024;
    }
  }
  return 0;
}

uint64_t peak_device_bytes(c10::Device device) {
#if defined(MQ_TORCH_CUDA)
  if (device.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index());
    return static_cast<uint64_t>(
        stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)]
            .peak);
  }
#endif
  (void)device;
  return 0;
}

struct Watchdog::State {
  std::mutex mu;
  std::condition_variable cv;
  std::chrono::steady_clock::time_point last = std::chrono::steady_clock::now();
  std::string phase = "start";
  bool stop = false;
  std::thread thread;
};

Watchdog::Watchdog(double timeout_s, bool distributed) : state_(std::make_unique<State>()) {
  if (timeout_s <= 0 || !distributed) return;
  State* st = state_.get();
  const auto limit = std::chrono::duration<double>(timeout_s);
  st->thread = std::thread([st, limit, timeout_s] {
    std::unique_lock<std::mutex> lock(st->mu);
    while (!st->stop) {
      st->cv.wait_for(lock, std::chrono::milliseconds(500));
      if (st->stop) break;
      if (std::chrono::steady_clock::now() - st->last > limit) {
        char buf[64];
        std::snprintf(buf, sizeof buf, "%.0f", timeout_s);
        dist::abort_all("no progress in " + st->phase + " for " + buf +
                        " s (parallel.timeout_s); aborting every rank");
      }
    }
  });
}

Watchdog::~Watchdog() {
  if (!state_->thread.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->stop = true;
  }
  state_->cv.notify_all();
  state_->thread.join();
}

void Watchdog::beat(const std::string& phase) {
  std::lock_guard<std::mutex> lock(state_->mu);
  state_->last = std::chrono::steady_clock::now();
  state_->phase = phase;
}

}  // namespace mq::job::detail
