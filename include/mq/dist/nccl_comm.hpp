#pragma once
/// NcclComm: an owned NCCL communicator over device (CUDA) tensors, bootstrapped over MPI.
///
/// Bootstrap (collective over an MpiComm; NCCL's MPI example): ranks sharing a node are found with
/// MpiComm::split_shared, a rank's device is its local rank (select_device), rank 0 makes the
/// ncclUniqueId, MPI_Bcast carries it, every rank calls ncclCommInitRank. Any NCCL failure aborts
/// the communicator (ncclCommAbort, so peers blocked in it return) and throws NcclError.
///
/// Collectives are enqueued on the current CUDA stream of the communicator's device (PyTorch's
/// getCurrentCUDAStream) and are asynchronous; synchronize() waits and surfaces asynchronous
/// errors. Device results follow NCCL's reduction order, not the host fold of MpiComm (ReduceOp
/// documents the host rules); kMax/kMin of floats use NCCL's operators.
///
/// NcclComm checks its arguments locally only. Use it through ProcessGroup, which agrees on the
/// arguments over MPI first and exchanges the row counts of the variable-size collectives.
///
/// Built only with NCCL (MQ_HAVE_NCCL, i.e. MQ_CUDA and nccl.h found); device tensors additionally
/// need LibTorch's CUDA backend (MQ_TORCH_CUDA). Elsewhere built() is false and bootstrap throws.
///
/// Example (one GPU per local rank):
///   auto world = mq::dist::MpiComm::world();
///   auto nccl = mq::dist::NcclComm::bootstrap(world, mq::dist::NcclComm::select_device(world));
///   nccl.all_reduce(amax_cuda, mq::dist::ReduceOp::kMax);
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "mq/dist/mpi_comm.hpp"
#include "mq/dist/reduce_op.hpp"

struct ncclComm;  // nccl.h: typedef struct ncclComm* ncclComm_t

namespace mq::dist {

class NcclComm {
 public:
  /// True when this build has NCCL.
  static bool built();
  /// Visible CUDA devices; 0 (never an error) without a GPU or driver, or without NCCL.
  static int device_count();
  /// Collective over `world`: the device for this rank. Ranks of one node get device = local rank;
  /// a rank that sees exactly one device (CUDA_VISIBLE_DEVICES per task, srun --gpus-per-task=1)
  /// gets 0. Throws when a node has more ranks than devices or there is no device.
  static int select_device(const MpiComm& world);
  /// Collective over `comm`: cudaSetDevice(device), rank 0 ncclGetUniqueId, MPI_Bcast,
  /// ncclCommInitRank.
  static NcclComm bootstrap(const MpiComm& comm, int device);

  NcclComm() = default;
  ~NcclComm();
  NcclComm(NcclComm&& other) noexcept;
  NcclComm& operator=(NcclComm&& other) noexcept;
  NcclComm(const NcclComm&) = delete;
  NcclComm& operator=(const NcclComm&) = delete;

  bool valid() const { return comm_ != nullptr; }
  int rank() const { return rank_; }
  int size() const { return size_; }
  int device() const { return device_; }

  /// Collective ncclCommSplit: same color, one communicator, ordered by (key, rank); color < 0:
  /// null.
  NcclComm split(int color, int key) const;
  /// ncclCommAbort; the communicator becomes null. Safe to call on a null communicator.
  void abort() noexcept;
  /// Waits for the current stream and throws NcclError on an asynchronous NCCL error.
  void synchronize();

  /// Same contracts as MpiComm's collectives, on contiguous tensors on device().
  void all_reduce(at::Tensor& t, ReduceOp op);
  void broadcast(at::Tensor& t, int root);
  void reduce(at::Tensor& t, ReduceOp op, int root);
  at::Tensor all_gather(const at::Tensor& t);
  /// rows[i]: dim 0 of rank i's tensor (exchanged by the caller, e.g. ProcessGroup over MPI).
  std::vector<at::Tensor> all_gather_v(const at::Tensor& t, const std::vector<int64_t>& rows);
  at::Tensor all_to_all(const at::Tensor& t);
  /// recv_rows[i]: dim 0 of the tensor rank i sends to this rank.
  std::vector<at::Tensor> all_to_all_v(const std::vector<at::Tensor>& send,
                                       const std::vector<int64_t>& recv_rows);

 private:
  void check(const at::Tensor& t, const char* what) const;

  ncclComm* comm_ = nullptr;
  int rank_ = -1;
  int size_ = -1;
  int device_ = -1;
};

}  // namespace mq::dist
