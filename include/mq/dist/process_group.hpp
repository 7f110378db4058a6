#pragma once
/// ProcessGroup: a shared handle to one communication group (tp, dp, ep, ...), ModelOpt's
/// DistributedProcessGroup. It may be "not initialised" (ModelOpt's group = -1): is_initialized()
/// is false, rank() and size() are -1, collectives throw (the sync helpers of parallel_state.hpp
/// skip such groups, as ModelOpt does).
///
/// Collectives dispatch on the tensor's device: host tensors go to the group's MpiComm, CUDA
/// tensors to its NcclComm (present when the groups were made with NCCL). A group without NCCL
/// stages CUDA tensors through host memory over MPI (same results for MAX and gathers; slower;
/// lets several ranks share one GPU, which NCCL refuses). In both cases the ranks
/// first agree on the arguments over MPI (dtype, shape, op, root), so a mismatch raises the same
/// mq::Error on every rank; the row counts of the variable-size collectives travel over MPI too.
/// Copies share the communicators.
///
/// Example:
///   mq::dist::ProcessGroup tp = groups.tp;            // from make_parallel_groups
///   if (tp.is_initialized()) tp.all_reduce(amax, mq::dist::ReduceOp::kMax);
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "mq/dist/mpi_comm.hpp"
#include "mq/dist/nccl_comm.hpp"

namespace mq::dist {

class ProcessGroup {
 public:
  /// Not initialised.
  ProcessGroup() = default;
  /// `name` is for messages ("tp", "dp", ...). `mpi` must be valid; `nccl` may be null (host only).
  ProcessGroup(std::string name, std::shared_ptr<MpiComm> mpi,
               std::shared_ptr<NcclComm> nccl = nullptr, int device = -1);

  bool is_initialized() const { return mpi_ != nullptr; }
  int rank() const { return mpi_ ? mpi_->rank() : -1; }
  int size() const { return mpi_ ? mpi_->size() : -1; }
  const std::string& name() const { return name_; }
  /// Members as MPI_COMM_WORLD ranks, in group-rank order (empty when not initialised).
  const std::vector<int>& world_ranks() const { return world_ranks_; }
  bool has_nccl() const { return nccl_ != nullptr && nccl_->valid(); }
  /// CUDA device of this rank's device tensors: the NCCL communicator's, else the one given at
  /// creation (-1: none given).
  int device() const;
  const MpiComm& mpi() const;
  NcclComm& nccl() const;

  void barrier() const;
  void all_reduce(at::Tensor& t, ReduceOp op) const;
  void broadcast(at::Tensor& t, int root) const;
  void reduce(at::Tensor& t, ReduceOp op, int root) const;
  at::Tensor all_gather(const at::Tensor& t) const;
  std::vector<at::Tensor> all_gather_v(const at::Tensor& t) const;
  at::Tensor all_to_all(const at::Tensor& t) const;
  std::vector<at::Tensor> all_to_all_v(const std::vector<at::Tensor>& send) const;
  std::vector<int64_t> all_gather_int64(int64_t value) const;
  std::vector<bool> all_gather_bool(bool value) const;
  int64_t all_reduce_int64(int64_t value, ReduceOp op) const;

  /// "tp: world ranks [0, 1]" (plus " (nccl)"), or "not initialised" (ModelOpt prints -1).
  std::string to_string() const;

 private:
  // Agrees on the arguments of a device collective over MPI and returns the NCCL communicator.
  NcclComm& device_comm(const char* what, const at::Tensor* t, const std::string& local_error,
                        int op, int root, bool free_dim0) const;

  std::string name_;
  std::shared_ptr<MpiComm> mpi_;
  std::shared_ptr<NcclComm> nccl_;
  std::vector<int> world_ranks_;
  int device_ = -1;
};

}  // namespace mq::dist
