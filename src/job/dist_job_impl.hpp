#pragma once
// The distributed side of the PTQ job: the layout of `mpirun -np N mqdist`, the groups of this
// rank, the model's ParallelSpec over them, which group each quantized module syncs over, and
// helpers for rank-0 output. Private to src/job.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "mq/calib/calibrate.hpp"
#include "mq/dist/amax_sync.hpp"
#include "mq/dist/mpi_comm.hpp"
#include "mq/dist/parallel_state.hpp"
#include "mq/job/job_config.hpp"
#include "mq/models/causal_lm.hpp"
#include "mq/models/hf_config.hpp"

namespace mq::job::detail {

/// This rank's view of the run. A single process (no launcher) has world == nullptr, rank 0 of 1
/// and no groups: every path then is the single-process one.
struct DistContext {
  const dist::MpiComm* world = nullptr;
  int rank = 0;
  int size = 1;
  dist::ParallelLayout layout;  ///< resolved (world_size 1 without MPI)
  std::optional<dist::ParallelGroups> groups;
  int64_t reduction_chunks = 0;

  bool distributed() const { return world != nullptr && size > 1; }
  int dp_rank() const { return groups ? groups->ranks.dp_rank : 0; }
  int dp_size() const { return layout.dp; }
};

/// Resolves the job's layout against the world and the model (plan time, before any weight is
/// read); throws mq::ConfigError naming `<job>: parallel.<key>` on a layout the model or the world
/// does not admit. Collective when `world` is given (all ranks throw alike).
DistContext make_dist_context(const JobConfig& job, const models::HfConfig& hf,
                              const dist::MpiComm* world, bool use_nccl, int device);

/// True when an EP group holds ranks of different DP ranks (tokens of different batches meet in
/// one MoE forward): every rank must then run the same number of batches.
bool ep_spans_data_parallel(const DistContext& ctx);

/// calib::moe_coverage over the whole run: per expert (global index) the tokens it saw over all
/// DP replicas, each batch counted once (EP peers that share a batch send it once each), and the
/// starved-expert warnings of the global counts. Collective.
calib::MoeCoverage global_moe_coverage(const DistContext& ctx, nn::Module& model);

/// The calibration batch indices this rank runs: i % dp == dp_rank (whole batches, so each batch
/// is computed exactly as in a single process).
std::vector<size_t> local_batches(const DistContext& ctx, size_t num_batches);

/// Peak resident host memory of this process (VmHWM), bytes; 0 when unknown.
uint64_t peak_host_bytes();
/// Peak bytes allocated on `device` by LibTorch's caching allocator; 0 for CPU or a CPU-only build.
uint64_t peak_device_bytes(c10::Device device);

/// Ends every rank when the job makes no progress for `timeout_s` seconds (a rank stuck outside a
/// collective would otherwise leave the others waiting forever): prints "no progress in <phase>
/// for N s (parallel.timeout_s)" once and aborts the world (dist::abort_all). 0 disables it.
class Watchdog {
 public:
  Watchdog(double timeout_s, bool distributed);
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;
  /// Marks progress; `phase` names what runs next (for the message).
  void beat(const std::string& phase);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace mq::job::detail
