#pragma once
/// MpiComm: an owned MPI communicator with the collectives calibration needs, over host (CPU)
/// tensors.
///
/// Every collective is called by every rank of the communicator, in the same order (CONVENTIONS.md
/// "Distribution"). Conditions that may differ between ranks are exchanged as data first
/// (all_gather_bool, all_gather_int64), never used to decide whether to call a collective.
///
/// Tensors: CPU, contiguous (checked). Element types: float32, float64, bfloat16, float16, int64,
/// int32, int16, int8, uint8, bool (reductions: see ReduceOp). Each tensor collective first
/// all-gathers a small signature (dtype, rank, shape) so that ranks passing mismatched tensors all
/// throw the same mq::Error instead of hanging or exchanging garbage.
///
/// Floating reductions are computed by mqdist, not by MPI_Allreduce: each rank receives one slice
/// of every rank's tensor (all-to-all), folds it in rank order and the slices are all-gathered
/// back. The result therefore is a closed form, (((x0 + x1) + x2) + x3) in fp32 rounded once,
/// bit-identical on every rank and independent of the MPI library's algorithm; bf16/fp16 MAX is
/// exact.
///
/// Example (main; see also abort_all):
///   mq::dist::MpiRuntime mpi(&argc, &argv);
///   mq::dist::MpiComm world = mq::dist::MpiComm::world();
///   at::Tensor amax = at::full({1}, local_amax);
///   world.all_reduce(amax, mq::dist::ReduceOp::kMax);
///   MpiComm tp = world.split(/*color=*/world.rank() / 2, /*key=*/world.rank());
#include <ATen/core/Tensor.h>
#include <mpi.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "mq/dist/reduce_op.hpp"

namespace mq::dist {

/// Throws MpiError when an MPI call does not return MPI_SUCCESS (communicators made by MpiComm use
/// MPI_ERRORS_RETURN, so failures arrive here instead of aborting inside MPI).
#define MQ_MPI_CHECK(call)                                                \
  do {                                                                    \
    const int mq_mpi_rc_ = (call);                                        \
    if (mq_mpi_rc_ != MPI_SUCCESS)                                        \
      ::mq::dist::throw_mpi_error(mq_mpi_rc_, #call, __FILE__, __LINE__); \
  } while (0)
[[noreturn]] void throw_mpi_error(int code, const char* call, const char* file, int line);

/// Initialises MPI (MPI_THREAD_FUNNELED) unless it already is, and finalises it at scope exit if it
/// initialised it. Create one in main() before any MpiComm; destroy every MpiComm before it.
class MpiRuntime {
 public:
  MpiRuntime(int* argc, char*** argv);
  ~MpiRuntime();
  MpiRuntime(const MpiRuntime&) = delete;
  MpiRuntime& operator=(const MpiRuntime&) = delete;

 private:
  bool owns_ = false;
};

/// "rank N (host)" of MPI_COMM_WORLD, or "rank ? (host)" before MPI_Init.
std::string rank_prefix();

/// Prints "rank N (host): message" to stderr (once per process, whatever the number of callers) and
/// calls MPI_Abort(MPI_COMM_WORLD, code) so no other rank is left waiting in a collective. Without
/// MPI initialised it prints and calls std::exit(code).
[[noreturn]] void abort_all(std::string_view message, int code = 1);

class MpiComm {
 public:
  /// A duplicate of MPI_COMM_WORLD (collective over the world), owned.
  static MpiComm world();
  /// A duplicate of MPI_COMM_SELF.
  static MpiComm self();

  /// The null communicator: valid() is false, rank() and size() are -1, collectives throw.
  MpiComm() = default;
  ~MpiComm();
  MpiComm(MpiComm&& other) noexcept;
  MpiComm& operator=(MpiComm&& other) noexcept;
  MpiComm(const MpiComm&) = delete;
  MpiComm& operator=(const MpiComm&) = delete;

  bool valid() const { return comm_ != MPI_COMM_NULL; }
  int rank() const { return rank_; }
  int size() const { return size_; }
  MPI_Comm native() const { return comm_; }
  /// MPI_Get_processor_name.
  static std::string host();

  /// Collective MPI_Comm_split: ranks with the same color form a communicator, ordered by (key,
  /// rank). color < 0 (MPI_UNDEFINED) returns the null communicator.
  MpiComm split(int color, int key) const;
  /// Ranks sharing memory (one node): MPI_Comm_split_type(MPI_COMM_TYPE_SHARED), ordered by rank.
  MpiComm split_shared() const;
  /// The group's members as ranks of MPI_COMM_WORLD, in group-rank order.
  std::vector<int> world_ranks() const;

  void barrier() const;

  /// In place; every rank ends with the reduction of all ranks' tensors (same shape and dtype).
  void all_reduce(at::Tensor& t, ReduceOp op) const;
  /// In place; `root`'s tensor is copied into every rank's (same shape and dtype).
  void broadcast(at::Tensor& t, int root) const;
  /// In place on `root` only (same bits as all_reduce would give); other ranks' tensors are
  /// unchanged.
  void reduce(at::Tensor& t, ReduceOp op, int root) const;
  /// Same shape on every rank; returns (size, *t.shape), row i from rank i.
  at::Tensor all_gather(const at::Tensor& t) const;
  /// Tensors may differ in dim 0 (including 0 rows); dtype and the other dims must agree. Returns
  /// one tensor per rank, in rank order.
  std::vector<at::Tensor> all_gather_v(const at::Tensor& t) const;
  /// t: (size * k, ...), same shape on every rank. Rows [j*k, (j+1)*k) go to rank j; the result has
  /// t's shape and rows [i*k, (i+1)*k) came from rank i.
  at::Tensor all_to_all(const at::Tensor& t) const;
  /// send[j] goes to rank j (size() tensors, same dtype and dims except dim 0, which may differ and
  /// be 0). Returns recv[i], the tensor rank i sent to this rank.
  std::vector<at::Tensor> all_to_all_v(const std::vector<at::Tensor>& send) const;

  /// Point to point (not collective): sends `t` (CPU, any dtype including float8, any shape
  /// including 0-d and empty; non-contiguous tensors are sent as their contiguous copy) with its
  /// dtype and shape to rank `dest`. Pairs with recv(this rank, tag) on `dest`; messages from one
  /// rank with one tag arrive in send order. Blocks until the payload is handed to MPI (large
  /// payloads: until `dest` receives), in pieces of at most 1 GiB.
  void send(const at::Tensor& t, int dest, int tag = 0) const;
  /// Receives the next send() from rank `source` with `tag`: a new contiguous CPU tensor of the
  /// sent dtype and shape. Throws mq::Error when that message is not a send() tensor.
  at::Tensor recv(int source, int tag = 0) const;
  /// send / recv of a byte string (metadata documents).
  void send_string(std::string_view s, int dest, int tag = 0) const;
  std::string recv_string(int source, int tag = 0) const;

  /// Small exchanges for rank-dependent conditions ("has amax", token counts): element i is rank
  /// i's.
  std::vector<int64_t> all_gather_int64(int64_t value) const;
  std::vector<bool> all_gather_bool(bool value) const;
  /// Exact integer reduction of one value (kAvg is rejected).
  int64_t all_reduce_int64(int64_t value, ReduceOp op) const;
  /// True on every rank when `value` is true on any (all) rank.
  bool any(bool value) const;
  bool all(bool value) const;

 private:
  MpiComm(MPI_Comm comm, bool owned);
  void check_valid(const char* what) const;
  void reset() noexcept;

  MPI_Comm comm_ = MPI_COMM_NULL;
  bool owned_ = false;
  int rank_ = -1;
  int size_ = -1;
};

}  // namespace mq::dist
