#include "mq/dist/nccl_comm.hpp"

#include <string>
#include <utility>

#if defined(MQ_HAVE_NCCL)
#include <ATen/Functions.h>
#include <cuda_runtime_api.h>
#include <nccl.h>
#if defined(MQ_TORCH_CUDA)
#include <ATen/cuda/CUDAContext.h>
#endif

#include "collective_check_impl.hpp"
#include "row_blocks_impl.hpp"
#endif

namespace mq::dist {

#if defined(MQ_HAVE_NCCL)
namespace {

ncclComm_t as_nccl(ncclComm* c) { return c; }

[[noreturn]] void throw_nccl(ncclResult_t rc, const char* call, const char* file, int line) {
  MQ_THROW(NcclError, "NCCL error ", static_cast<int>(rc), " (", ncclGetErrorString(rc), ") in ",
           call, " at ", file, ":", line);
}

[[noreturn]] void throw_cuda(cudaError_t rc, const char* call, const char* file, int line) {
  MQ_THROW(NcclError, "CUDA error ", static_cast<int>(rc), " (", cudaGetErrorString(rc), ") in ",
           call, " at ", file, ":", line);
}

ncclDataType_t nccl_type(at::ScalarType st) {
  switch (st) {
    case at::kFloat:
      return ncclFloat32;
    case at::kDouble:
      return ncclFloat64;
    case at::kBFloat16:
      return ncclBfloat16;
    case at::kHalf:
      return ncclFloat16;
    case at::kLong:
      return ncclInt64;
    case at::kInt:
      return ncclInt32;
    case at::kChar:
      return ncclInt8;
    case at::kByte:
    case at::kBool:
      return ncclUint8;
    default:
      MQ_THROW(NcclError, "NcclComm: unsupported dtype ", st);
  }
}

ncclRedOp_t nccl_op(at::ScalarType st, ReduceOp op, const char* what) {
  const bool floating =
      st == at::kFloat || st == at::kDouble || st == at::kBFloat16 || st == at::kHalf;
  if (st == at::kBool)
    MQ_CHECK(op == ReduceOp::kMax || op == ReduceOp::kMin, what,
             ": bool tensors support max and min, not ", reduce_op_name(op));
  switch (op) {
    case ReduceOp::kSum:
      return ncclSum;
    case ReduceOp::kMax:
      return ncclMax;
    case ReduceOp::kMin:
      return ncclMin;
    case ReduceOp::kAvg:
      MQ_CHECK(floating, what, ": avg needs a floating dtype, got ", st);
      return ncclAvg;
  }
  return ncclSum;
}

cudaStream_t current_stream(int device) {
#if defined(MQ_TORCH_CUDA)
  return at::cuda::getCurrentCUDAStream(device).stream();
#else
  MQ_THROW(NcclError,
           "NcclComm: device tensors need LibTorch's CUDA backend (build with MQ_TORCH_CUDA=ON)");
#endif
}

}  // namespace

// On failure the communicator is aborted first, so that peers blocked in it return with an error.
#define MQ_NCCL_CHECK(call)                                            \
  do {                                                                 \
    const ncclResult_t mq_nccl_rc_ = (call);                           \
    if (mq_nccl_rc_ != ncclSuccess && mq_nccl_rc_ != ncclInProgress) { \
      abort();                                                         \
      throw_nccl(mq_nccl_rc_, #call, __FILE__, __LINE__);              \
    }                                                                  \
  } while (0)
#define MQ_NCCL_CUDA_CHECK(call)                                                        \
  do {                                                                                  \
    const cudaError_t mq_cuda_rc_ = (call);                                             \
    if (mq_cuda_rc_ != cudaSuccess) throw_cuda(mq_cuda_rc_, #call, __FILE__, __LINE__); \
  } while (0)

bool NcclComm::built() { return true; }

int NcclComm::device_count() {
  int n = 0;  // cudaGetDeviceCount leaves it untouched when there is no driver
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

int NcclComm::select_device(const MpiComm& world) {
  const MpiComm node = world.split_shared();
  const int n = device_count();
  // Every rank learns every rank's verdict, so a node without devices fails on all ranks alike.
  const bool ok = n == 1 || (n >= 1 && node.size() <= n);
  const std::vector<bool> oks = world.all_gather_bool(ok);
  for (int r = 0; r < world.size(); ++r)
    MQ_CHECK_T(NcclError, oks[r], "NcclComm::select_device: rank ", r,
               " has no device for its local rank (this rank sees ", n, " devices and ",
               node.size(), " ranks on its node; one GPU per local rank is needed)");
  return n == 1 ? 0 : node.rank();
}

NcclComm NcclComm::bootstrap(const MpiComm& comm, int device) {
  MQ_CHECK(comm.valid(), "NcclComm::bootstrap: null MPI communicator");
  MQ_NCCL_CUDA_CHECK(cudaSetDevice(device));
  ncclUniqueId id{};
  if (comm.rank() == 0) {
    const ncclResult_t rc = ncclGetUniqueId(&id);
    if (rc != ncclSuccess) throw_nccl(rc, "ncclGetUniqueId", __FILE__, __LINE__);
  }
  MQ_MPI_CHECK(MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, comm.native()));
  NcclComm out;
  ncclComm_t c = nullptr;
  const ncclResult_t rc = ncclCommInitRank(&c, comm.size(), id, comm.rank());
  if (rc != ncclSuccess) {
    if (c != nullptr) ncclCommAbort(c);
    throw_nccl(rc, "ncclCommInitRank", __FILE__, __LINE__);
  }
  out.comm_ = c;
  out.rank_ = comm.rank();
  out.size_ = comm.size();
  out.device_ = device;
  return out;
}

NcclComm::~NcclComm() {
  if (comm_ != nullptr) ncclCommDestroy(as_nccl(comm_));
}

NcclComm::NcclComm(NcclComm&& o) noexcept
    : comm_(std::exchange(o.comm_, nullptr)),
      rank_(std::exchange(o.rank_, -1)),
      size_(std::exchange(o.size_, -1)),
      device_(std::exchange(o.device_, -1)) {}

NcclComm& NcclComm::operator=(NcclComm&& o) noexcept {
  if (this != &o) {
    if (comm_ != nullptr) ncclCommDestroy(as_nccl(comm_));
    comm_ = std::exchange(o.comm_, nullptr);
    rank_ = std::exchange(o.rank_, -1);
    size_ = std::exchange(o.size_, -1);
    device_ = std::exchange(o.device_, -1);
  }
  return *this;
}

void NcclComm::abort() noexcept {
  if (comm_ != nullptr) ncclCommAbort(as_nccl(comm_));
  comm_ = nullptr;
  rank_ = size_ = device_ = -1;
}

NcclComm NcclComm::split(int color, int key) const {
  MQ_CHECK(valid(), "NcclComm::split: null communicator");
  ncclComm_t c = nullptr;
  const ncclResult_t rc =
      ncclCommSplit(as_nccl(comm_), color < 0 ? NCCL_SPLIT_NOCOLOR : color, key, &c, nullptr);
  if (rc != ncclSuccess) throw_nccl(rc, "ncclCommSplit", __FILE__, __LINE__);
  NcclComm out;
  if (c == nullptr) return out;
  out.comm_ = c;
  out.device_ = device_;
  if (ncclCommUserRank(c, &out.rank_) != ncclSuccess ||
      ncclCommCount(c, &out.size_) != ncclSuccess) {
    out.abort();
    MQ_THROW(NcclError, "NcclComm::split: cannot query the new communicator");
  }
  return out;
}

void NcclComm::synchronize() {
  MQ_CHECK(valid(), "NcclComm::synchronize: null communicator");
  MQ_NCCL_CUDA_CHECK(cudaStreamSynchronize(current_stream(device_)));
  ncclResult_t async = ncclSuccess;
  MQ_NCCL_CHECK(ncclCommGetAsyncError(as_nccl(comm_), &async));
  MQ_NCCL_CHECK(async);
}

void NcclComm::check(const at::Tensor& t, const char* what) const {
  MQ_CHECK(valid(), what, ": null communicator");
  MQ_CHECK(t.defined(), what, ": tensor is undefined");
  MQ_CHECK(t.is_cuda() && t.device().index() == device_, what, ": tensor must be on cuda:", device_,
           ", got ", t.device());
  MQ_CHECK(t.is_contiguous(), what, ": tensor must be contiguous");
  nccl_type(t.scalar_type());
}

void NcclComm::all_reduce(at::Tensor& t, ReduceOp op) {
  check(t, "NcclComm::all_reduce");
  const ncclRedOp_t o = nccl_op(t.scalar_type(), op, "NcclComm::all_reduce");
  MQ_NCCL_CHECK(ncclAllReduce(t.data_ptr(), t.data_ptr(), t.numel(), nccl_type(t.scalar_type()), o,
                              as_nccl(comm_), current_stream(device_)));
}

void NcclComm::broadcast(at::Tensor& t, int root) {
  check(t, "NcclComm::broadcast");
  MQ_CHECK(root >= 0 && root < size_, "NcclComm::broadcast: root ", root, " is outside [0, ", size_,
           ")");
  MQ_NCCL_CHECK(ncclBroadcast(t.data_ptr(), t.data_ptr(), t.numel(), nccl_type(t.scalar_type()),
                              root, as_nccl(comm_), current_stream(device_)));
}

void NcclComm::reduce(at::Tensor& t, ReduceOp op, int root) {
  check(t, "NcclComm::reduce");
  MQ_CHECK(root >= 0 && root < size_, "NcclComm::reduce: root ", root, " is outside [0, ", size_,
           ")");
  const ncclRedOp_t o = nccl_op(t.scalar_type(), op, "NcclComm::reduce");
  MQ_NCCL_CHECK(ncclReduce(t.data_ptr(), t.data_ptr(), t.numel(), nccl_type(t.scalar_type()), o,
                           root, as_nccl(comm_), current_stream(device_)));
}

at::Tensor NcclComm::all_gather(const at::Tensor& t) {
  check(t, "NcclComm::all_gather");
  std::vector<int64_t> shape{size_};
  shape.insert(shape.end(), t.sizes().begin(), t.sizes().end());
  at::Tensor out = at::empty(shape, t.options());
  MQ_NCCL_CHECK(ncclAllGather(t.data_ptr(), out.data_ptr(), t.numel(), nccl_type(t.scalar_type()),
                              as_nccl(comm_), current_stream(device_)));
  return out;
}

std::vector<at::Tensor> NcclComm::all_gather_v(const at::Tensor& t,
                                               const std::vector<int64_t>& rows) {
  check(t, "NcclComm::all_gather_v");
  MQ_CHECK(t.dim() >= 1 && static_cast<int>(rows.size()) == size_ && rows[rank_] == t.size(0),
           "NcclComm::all_gather_v: rows must list every rank's dim 0 (this rank's is ",
           t.dim() ? t.size(0) : -1, ")");
  const int64_t re = row_numel(t);
  int64_t total = 0;
  for (int64_t r : rows) total += r;
  at::Tensor out = empty_rows(t, total);
  const ncclDataType_t dt = nccl_type(t.scalar_type());
  const cudaStream_t s = current_stream(device_);
  const size_t es = t.element_size();
  MQ_NCCL_CHECK(ncclGroupStart());
  int64_t off = 0;
  for (int i = 0; i < size_; ++i) {
    if (rows[i] > 0)
      MQ_NCCL_CHECK(ncclBroadcast(t.data_ptr(), static_cast<char*>(out.data_ptr()) + off * re * es,
                                  rows[i] * re, dt, i, as_nccl(comm_), s));
    off += rows[i];
  }
  MQ_NCCL_CHECK(ncclGroupEnd());
  return split_rows(out, rows);
}

at::Tensor NcclComm::all_to_all(const at::Tensor& t) {
  check(t, "NcclComm::all_to_all");
  MQ_CHECK(t.dim() >= 1 && t.size(0) % size_ == 0,
           "NcclComm::all_to_all: dim 0 must be a multiple of ", size_, ", got ", t.sizes());
  at::Tensor out = at::empty_like(t);
  const int64_t c = t.numel() / size_;
  const size_t bytes = static_cast<size_t>(c) * t.element_size();
  const ncclDataType_t dt = nccl_type(t.scalar_type());
  const cudaStream_t s = current_stream(device_);
  MQ_NCCL_CHECK(ncclGroupStart());
  for (int j = 0; j < size_; ++j) {
    MQ_NCCL_CHECK(
        ncclSend(static_cast<const char*>(t.data_ptr()) + j * bytes, c, dt, j, as_nccl(comm_), s));
    MQ_NCCL_CHECK(
        ncclRecv(static_cast<char*>(out.data_ptr()) + j * bytes, c, dt, j, as_nccl(comm_), s));
  }
  MQ_NCCL_CHECK(ncclGroupEnd());
  return out;
}

std::vector<at::Tensor> NcclComm::all_to_all_v(const std::vector<at::Tensor>& send,
                                               const std::vector<int64_t>& recv_rows) {
  MQ_CHECK(static_cast<int>(send.size()) == size_ && static_cast<int>(recv_rows.size()) == size_,
           "NcclComm::all_to_all_v: need one send tensor and one receive count per rank (", size_,
           ")");
  for (const auto& t : send) check(t, "NcclComm::all_to_all_v");
  const int64_t re = row_numel(send[0]);
  int64_t total = 0;
  for (int64_t r : recv_rows) total += r;
  at::Tensor out = empty_rows(send[0], total);
  const ncclDataType_t dt = nccl_type(send[0].scalar_type());
  const cudaStream_t s = current_stream(device_);
  const size_t es = send[0].element_size();
  MQ_NCCL_CHECK(ncclGroupStart());
  int64_t off = 0;
  for (int j = 0; j < size_; ++j) {
    if (send[j].numel() > 0)
      MQ_NCCL_CHECK(ncclSend(send[j].data_ptr(), send[j].numel(), dt, j, as_nccl(comm_), s));
    if (recv_rows[j] > 0)
      MQ_NCCL_CHECK(ncclRecv(static_cast<char*>(out.data_ptr()) + off * re * es, recv_rows[j] * re,
                             dt, j, as_nccl(comm_), s));
    off += recv_rows[j];
  }
  MQ_NCCL_CHECK(ncclGroupEnd());
  return split_rows(out, recv_rows);
}

#else  // no NCCL in this build: the class exists so that callers need no #if, and says why it
       // cannot work.

namespace {
[[noreturn]] void no_nccl(const char* what) {
  MQ_THROW(NcclError, what,
           ": this build has no NCCL (configure with MQ_CUDA=ON where nccl.h is installed)");
}
}  // namespace

bool NcclComm::built() { return false; }
int NcclComm::device_count() { return 0; }
int NcclComm::select_device(const MpiComm&) { no_nccl("NcclComm::select_device"); }
NcclComm NcclComm::bootstrap(const MpiComm&, int) { no_nccl("NcclComm::bootstrap"); }
NcclComm::~NcclComm() = default;
NcclComm::NcclComm(NcclComm&&) noexcept {}
NcclComm& NcclComm::operator=(NcclComm&&) noexcept { return *this; }
void NcclComm::abort() noexcept {}
NcclComm NcclComm::split(int, int) const { no_nccl("NcclComm::split"); }
void NcclComm::synchronize() { no_nccl("NcclComm::synchronize"); }
void NcclComm::check(const at::Tensor&, const char* what) const { no_nccl(what); }
void NcclComm::all_reduce(at::Tensor&, ReduceOp) { no_nccl("NcclComm::all_reduce"); }
void NcclComm::broadcast(at::Tensor&, int) { no_nccl("NcclComm::broadcast"); }
void NcclComm::reduce(at::Tensor&, ReduceOp, int) { no_nccl("NcclComm::reduce"); }
at::Tensor NcclComm::all_gather(const at::Tensor&) { no_nccl("NcclComm::all_gather"); }
std::vector<at::Tensor> NcclComm::all_gather_v(const at::Tensor&, const std::vector<int64_t>&) {
  no_nccl("NcclComm::all_gather_v");
}
at::Tensor NcclComm::all_to_all(const at::Tensor&) { no_nccl("NcclComm::all_to_all"); }
std::vector<at::Tensor> NcclComm::all_to_all_v(const std::vector<at::Tensor>&,
                                               const std::vector<int64_t>&) {
  no_nccl("NcclComm::all_to_all_v");
}

#endif

}  // namespace mq::dist
