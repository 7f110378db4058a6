#include "mq/dist/mpi_comm.hpp"

#include <ATen/Functions.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "collective_check_impl.hpp"
#include "row_blocks_impl.hpp"

namespace mq::dist {

const char* reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return "sum";
    case ReduceOp::kAvg:
      return "avg";
    case ReduceOp::kMax:
      return "max";
    case ReduceOp::kMin:
      return "min";
  }
  return "?";
}

void throw_mpi_error(int code, const char* call, const char* file, int line) {
  char text[MPI_MAX_ERROR_STRING] = {0};
  int len = 0;
  if (MPI_Error_string(code, text, &len) != MPI_SUCCESS) len = 0;
  MQ_THROW(MpiError, "MPI error ", code, " (", std::string(text, static_cast<size_t>(len)), ") in ",
           call, " at ", file, ":", line);
}

namespace {

bool mpi_live() {
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  return init && !fin;
}

// Elements per round of a chunked collective: keeps every MPI count and displacement far below
// INT_MAX and bounds the temporary buffers.
constexpr int64_t kChunk = int64_t{1} << 24;

MPI_Datatype mpi_type(at::ScalarType st) {
  switch (st) {
    case at::kFloat:
      return MPI_FLOAT;
    case at::kDouble:
      return MPI_DOUBLE;
    case at::kBFloat16:
    case at::kHalf:
      return MPI_UINT16_T;  // moved as bits; reduced by fold_reduce in fp32
    case at::kLong:
      return MPI_INT64_T;
    case at::kInt:
      return MPI_INT32_T;
    case at::kShort:
      return MPI_INT16_T;
    case at::kChar:
      return MPI_INT8_T;
    case at::kByte:
    case at::kBool:
      return MPI_UINT8_T;
    default:
      MQ_THROW(Error, "mq::dist: unsupported dtype ", st);
  }
}

bool is_floating(at::ScalarType st) {
  return st == at::kFloat || st == at::kDouble || st == at::kBFloat16 || st == at::kHalf;
}

MPI_Op mpi_int_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return MPI_SUM;
    case ReduceOp::kMax:
      return MPI_MAX;
    case ReduceOp::kMin:
      return MPI_MIN;
    case ReduceOp::kAvg:
      break;
  }
  MQ_ASSERT(false);
  return MPI_SUM;
}

int to_int(int64_t v, const char* what) {
  MQ_CHECK(v <= INT_MAX, what, ": ", v, " elements exceed the MPI count limit (", INT_MAX, ")");
  return static_cast<int>(v);
}

// f(off, m) for the consecutive pieces [off, off + m) of [0, n), `piece` long but the last.
template <typename F>
void for_each_piece(int64_t n, int64_t piece, F&& f) {
  for (int64_t off = 0; off < n; off += piece) f(off, static_cast<int>(std::min(piece, n - off)));
}

// MPI counts and displacements (elements) of consecutive blocks of rows, row_elems elements a row.
struct RowCounts {
  std::vector<int> cnt, displ;
  int64_t total = 0;  // rows so far

  void add(int64_t rows, int64_t row_elems, const char* what) {
    cnt.push_back(to_int(rows * row_elems, what));
    displ.push_back(to_int(total * row_elems, what));
    total += rows;
  }
};

template <typename A>
A combine(A a, A b, ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAvg:
      return a + b;
    case ReduceOp::kMax:
      if (std::isnan(a)) return a;
      if (std::isnan(b)) return b;
      return a < b ? b : a;
    case ReduceOp::kMin:
      if (std::isnan(a)) return a;
      if (std::isnan(b)) return b;
      return b < a ? b : a;
  }
  return a;
}

// out[e] = fold over i of in[i * stride + e], i = 0..w-1, left to right, accumulated in A.
template <typename T, typename A>
void fold(const void* in_v, void* out_v, int64_t n, int w, int64_t stride, ReduceOp op) {
  const T* in = static_cast<const T*>(in_v);
  T* out = static_cast<T*>(out_v);
  for (int64_t e = 0; e < n; ++e) {
    A acc = static_cast<A>(in[e]);
    for (int i = 1; i < w; ++i) acc = combine<A>(acc, static_cast<A>(in[i * stride + e]), op);
    if (op == ReduceOp::kAvg) acc = acc / static_cast<A>(w);
    out[e] = static_cast<T>(acc);
  }
}

void fold_dispatch(at::ScalarType st, const void* in, void* out, int64_t n, int w, int64_t stride,
                   ReduceOp op) {
  switch (st) {
    case at::kFloat:
      return fold<float, float>(in, out, n, w, stride, op);
    case at::kDouble:
      return fold<double, double>(in, out, n, w, stride, op);
    case at::kBFloat16:
      return fold<c10::BFloat16, float>(in, out, n, w, stride, op);
    case at::kHalf:
      return fold<c10::Half, float>(in, out, n, w, stride, op);
    default:
      MQ_ASSERT(false);
  }
}

void check_reduce_dtype(at::ScalarType st, ReduceOp op, const char* what) {
  if (st == at::kBool)
    MQ_CHECK(op == ReduceOp::kMax || op == ReduceOp::kMin, what,
             ": bool tensors support max (any) and min (all), not ", reduce_op_name(op));
  else if (!is_floating(st))
    MQ_CHECK(op != ReduceOp::kAvg, what, ": avg needs a floating dtype, got ", st);
}

std::string validate_host(const at::Tensor& t, const char* what) {
  try {
    MQ_CHECK(t.defined(), what, ": tensor is undefined");
    MQ_CHECK(t.device().is_cpu(), what, ": MpiComm takes host tensors, got one on ", t.device(),
             " (device tensors go through NcclComm / ProcessGroup)");
    MQ_CHECK(t.is_contiguous(), what, ": tensor must be contiguous");
    mpi_type(t.scalar_type());
  } catch (const Error& e) {
    return e.what();
  }
  return {};
}

// This rank's error in the arguments of a reduction ("" when none): the tensor, op for its dtype
// and, for a rooted one (root >= 0 asked by has_root), the root among `size` ranks.
std::string reduction_error(const at::Tensor& t, ReduceOp op, const char* what, bool has_root,
                            int root, int size) {
  std::string err = validate_host(t, what);
  if (err.empty()) {
    try {
      check_reduce_dtype(t.scalar_type(), op, what);
      if (has_root)
        MQ_CHECK(root >= 0 && root < size, what, ": root ", root, " is outside [0, ", size, ")");
    } catch (const Error& e) {
      err = e.what();
    }
  }
  return err;
}

// A contiguous host tensor's storage as the chunked reductions walk it.
struct HostBuffer {
  at::ScalarType st;
  MPI_Datatype dt;
  int64_t n;  // elements
  size_t es;  // bytes per element
  char* base;

  explicit HostBuffer(at::Tensor& t)
      : st(t.scalar_type()),
        dt(mpi_type(st)),
        n(t.numel()),
        es(t.element_size()),
        base(static_cast<char*>(t.data_ptr())) {}
  char* at(int64_t off) const { return base + off * es; }
};

// A duplicate of `base` (MPI_COMM_WORLD / MPI_COMM_SELF), which needs MPI initialised.
MPI_Comm dup_of(MPI_Comm base, const char* what) {
  MQ_CHECK(mpi_live(), what,
           ": MPI is not initialised (create mq::dist::MpiRuntime in main first)");
  MPI_Comm c = MPI_COMM_NULL;
  MQ_MPI_CHECK(MPI_Comm_dup(base, &c));
  return c;
}

std::string hostname() {
  char buf[256] = {0};
  if (gethostname(buf, sizeof(buf) - 1) != 0) return "?";
  return buf;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------
// Runtime, abort

MpiRuntime::MpiRuntime(int* argc, char*** argv) {
  int init = 0;
  MQ_MPI_CHECK(MPI_Initialized(&init));
  if (!init) {
    int provided = 0;
    MQ_MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided));
    owns_ = true;
  }
}

MpiRuntime::~MpiRuntime() {
  if (owns_ && mpi_live()) MPI_Finalize();
}

std::string rank_prefix() {
  std::string r = "?";
  if (mpi_live()) {
    int rank = -1;
    if (MPI_Comm_rank(MPI_COMM_WORLD, &rank) == MPI_SUCCESS) r = std::to_string(rank);
  }
  return "rank " + r + " (" + hostname() + ")";
}

void abort_all(std::string_view message, int code) {
  static std::atomic<bool> printed{false};
  if (!printed.exchange(true)) {
    std::fprintf(stderr, "%s: %.*s\n", rank_prefix().c_str(), static_cast<int>(message.size()),
                 message.data());
    std::fflush(stderr);
  }
  if (mpi_live()) MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

// ---------------------------------------------------------------------------------------------------------
// Lifetime

MpiComm::MpiComm(MPI_Comm comm, bool owned) : comm_(comm), owned_(owned) {
  if (comm_ == MPI_COMM_NULL) return;
  MQ_MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
  MQ_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
  MQ_MPI_CHECK(MPI_Comm_size(comm_, &size_));
}

MpiComm MpiComm::world() { return MpiComm(dup_of(MPI_COMM_WORLD, "MpiComm::world"), true); }

MpiComm MpiComm::self() { return MpiComm(dup_of(MPI_COMM_SELF, "MpiComm::self"), true); }

void MpiComm::reset() noexcept {
  if (owned_ && comm_ != MPI_COMM_NULL && mpi_live()) MPI_Comm_free(&comm_);
  comm_ = MPI_COMM_NULL;
  owned_ = false;
  rank_ = size_ = -1;
}

MpiComm::~MpiComm() { reset(); }

MpiComm::MpiComm(MpiComm&& o) noexcept
    : comm_(o.comm_), owned_(o.owned_), rank_(o.rank_), size_(o.size_) {
  o.comm_ = MPI_COMM_NULL;
  o.owned_ = false;
  o.rank_ = o.size_ = -1;
}

MpiComm& MpiComm::operator=(MpiComm&& o) noexcept {
  if (this != &o) {
    reset();
    std::swap(comm_, o.comm_);
    std::swap(owned_, o.owned_);
    std::swap(rank_, o.rank_);
    std::swap(size_, o.size_);
  }
  return *this;
}

void MpiComm::check_valid(const char* what) const {
  MQ_CHECK(valid(), "MpiComm::", what, ": null communicator (this rank is not a member)");
}

std::string MpiComm::host() { return hostname(); }

MpiComm MpiComm::split(int color, int key) const {
  check_valid("split");
  MPI_Comm c = MPI_COMM_NULL;
  MQ_MPI_CHECK(MPI_Comm_split(comm_, color < 0 ? MPI_UNDEFINED : color, key, &c));
  return MpiComm(c, true);
}

MpiComm MpiComm::split_shared() const {
  check_valid("split_shared");
  MPI_Comm c = MPI_COMM_NULL;
  MQ_MPI_CHECK(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &c));
  return MpiComm(c, true);
}

std::vector<int> MpiComm::world_ranks() const {
  check_valid("world_ranks");
  MPI_Group mine = MPI_GROUP_NULL, world = MPI_GROUP_NULL;
  MQ_MPI_CHECK(MPI_Comm_group(comm_, &mine));
  MQ_MPI_CHECK(MPI_Comm_group(MPI_COMM_WORLD, &world));
  std::vector<int> in(size_), out(size_);
  for (int i = 0; i < size_; ++i) in[i] = i;
  const int rc = MPI_Group_translate_ranks(mine, size_, in.data(), world, out.data());
  MPI_Group_free(&mine);
  MPI_Group_free(&world);
  MQ_MPI_CHECK(rc);
  return out;
}

void MpiComm::barrier() const {
  check_valid("barrier");
  MQ_MPI_CHECK(MPI_Barrier(comm_));
}

// ---------------------------------------------------------------------------------------------------------
// Small exchanges

std::vector<int64_t> MpiComm::all_gather_int64(int64_t value) const {
  check_valid("all_gather_int64");
  std::vector<int64_t> out(size_);
  MQ_MPI_CHECK(MPI_Allgather(&value, 1, MPI_INT64_T, out.data(), 1, MPI_INT64_T, comm_));
  return out;
}

std::vector<bool> MpiComm::all_gather_bool(bool value) const {
  const std::vector<int64_t> v = all_gather_int64(value ? 1 : 0);
  return std::vector<bool>(v.begin(), v.end());
}

int64_t MpiComm::all_reduce_int64(int64_t value, ReduceOp op) const {
  check_valid("all_reduce_int64");
  MQ_CHECK(op != ReduceOp::kAvg, "MpiComm::all_reduce_int64: avg is not an integer reduction");
  int64_t out = 0;
  MQ_MPI_CHECK(MPI_Allreduce(&value, &out, 1, MPI_INT64_T, mpi_int_op(op), comm_));
  return out;
}

bool MpiComm::any(bool value) const { return all_reduce_int64(value ? 1 : 0, ReduceOp::kMax) != 0; }
bool MpiComm::all(bool value) const { return all_reduce_int64(value ? 1 : 0, ReduceOp::kMin) != 0; }

// ---------------------------------------------------------------------------------------------------------
// Tensor collectives

void MpiComm::all_reduce(at::Tensor& t, ReduceOp op) const {
  check_valid("all_reduce");
  const char* what = "MpiComm::all_reduce";
  const std::string err = reduction_error(t, op, what, false, -1, size_);
  agree_on_signature(*this, what, err,
                     make_signature(err.empty() ? &t : nullptr, static_cast<int>(op), -1, false));

  const HostBuffer b(t);
  const MPI_Datatype dt = b.dt;
  if (!is_floating(b.st)) {
    for_each_piece(b.n, kChunk, [&](int64_t off, int m) {
      MQ_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, b.at(off), m, dt, mpi_int_op(op), comm_));
    });
    return;
  }
  // Slice j of each chunk goes to rank j, which folds the size_ copies in rank order; the folded
  // slices are then gathered back in place.
  const int w = size_;
  std::vector<int> cnt(w), displ(w), rcnt(w), rdispl(w);
  std::vector<char> recv;
  for_each_piece(b.n, kChunk, [&](int64_t off, int m) {
    for (int j = 0, acc = 0; j < w; ++j) {
      cnt[j] = m / w + (j < m % w ? 1 : 0);
      displ[j] = acc;
      acc += cnt[j];
    }
    const int mine = cnt[rank_];
    for (int i = 0; i < w; ++i) {
      rcnt[i] = mine;
      rdispl[i] = i * mine;
    }
    recv.resize(static_cast<size_t>(mine) * w * b.es);
    char* chunk = b.at(off);
    MQ_MPI_CHECK(MPI_Alltoallv(chunk, cnt.data(), displ.data(), dt, recv.data(), rcnt.data(),
                               rdispl.data(), dt, comm_));
    fold_dispatch(b.st, recv.data(), chunk + static_cast<size_t>(displ[rank_]) * b.es, mine, w,
                  mine, op);
    MQ_MPI_CHECK(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, chunk, cnt.data(), displ.data(),
                                dt, comm_));
  });
}

void MpiComm::reduce(at::Tensor& t, ReduceOp op, int root) const {
  check_valid("reduce");
  const char* what = "MpiComm::reduce";
  const std::string err = reduction_error(t, op, what, true, root, size_);
  agree_on_signature(*this, what, err,
                     make_signature(err.empty() ? &t : nullptr, static_cast<int>(op), root, false));

  const HostBuffer b(t);
  const MPI_Datatype dt = b.dt;
  if (!is_floating(b.st)) {
    for_each_piece(b.n, kChunk, [&](int64_t off, int m) {
      void* p = b.at(off);
      MQ_MPI_CHECK(
          MPI_Reduce(rank_ == root ? MPI_IN_PLACE : p, p, m, dt, mpi_int_op(op), root, comm_));
    });
    return;
  }
  const int w = size_;
  std::vector<char> recv;
  for_each_piece(b.n, std::max<int64_t>(1, kChunk / w), [&](int64_t off, int m) {
    char* p = b.at(off);
    if (rank_ == root) recv.resize(static_cast<size_t>(m) * w * b.es);
    MQ_MPI_CHECK(MPI_Gather(p, m, dt, rank_ == root ? recv.data() : nullptr, m, dt, root, comm_));
    if (rank_ == root) fold_dispatch(b.st, recv.data(), p, m, w, m, op);
  });
}

void MpiComm::broadcast(at::Tensor& t, int root) const {
  check_valid("broadcast");
  const char* what = "MpiComm::broadcast";
  std::string err = validate_host(t, what);
  if (err.empty() && (root < 0 || root >= size_))
    err = detail::cat(what, ": root ", root, " is outside [0, ", size_, ")");
  agree_on_signature(*this, what, err, make_signature(err.empty() ? &t : nullptr, -1, root, false));
  const int64_t bytes = t.numel() * static_cast<int64_t>(t.element_size());
  char* base = static_cast<char*>(t.data_ptr());
  for_each_piece(bytes, int64_t{1} << 30, [&](int64_t off, int m) {
    MQ_MPI_CHECK(MPI_Bcast(base + off, m, MPI_BYTE, root, comm_));
  });
}

at::Tensor MpiComm::all_gather(const at::Tensor& t) const {
  check_valid("all_gather");
  const char* what = "MpiComm::all_gather";
  std::string err = validate_host(t, what);
  if (err.empty() && t.numel() > INT_MAX)
    err = detail::cat(what, ": ", t.numel(), " elements exceed the MPI count limit");
  agree_on_signature(*this, what, err, make_signature(err.empty() ? &t : nullptr, -1, -1, false));
  std::vector<int64_t> shape{size_};
  shape.insert(shape.end(), t.sizes().begin(), t.sizes().end());
  at::Tensor out = at::empty(shape, t.options());
  const MPI_Datatype dt = mpi_type(t.scalar_type());
  const int n = static_cast<int>(t.numel());
  MQ_MPI_CHECK(MPI_Allgather(t.data_ptr(), n, dt, out.data_ptr(), n, dt, comm_));
  return out;
}

std::vector<at::Tensor> MpiComm::all_gather_v(const at::Tensor& t) const {
  check_valid("all_gather_v");
  const char* what = "MpiComm::all_gather_v";
  std::string err = validate_host(t, what);
  if (err.empty() && t.dim() == 0) err = detail::cat(what, ": tensor needs at least one dimension");
  agree_on_signature(*this, what, err, make_signature(err.empty() ? &t : nullptr, -1, -1, true));
  const std::vector<int64_t> rows = all_gather_int64(t.size(0));
  const int64_t row_elems = row_numel(t);
  RowCounts c;
  for (int i = 0; i < size_; ++i) c.add(rows[i], row_elems, what);
  at::Tensor out = empty_rows(t, c.total);
  const MPI_Datatype dt = mpi_type(t.scalar_type());
  MQ_MPI_CHECK(MPI_Allgatherv(t.data_ptr(), c.cnt[rank_], dt, out.data_ptr(), c.cnt.data(),
                              c.displ.data(), dt, comm_));
  return split_rows(out, rows);
}

at::Tensor MpiComm::all_to_all(const at::Tensor& t) const {
  check_valid("all_to_all");
  const char* what = "MpiComm::all_to_all";
  std::string err = validate_host(t, what);
  if (err.empty() && (t.dim() == 0 || t.size(0) % size_ != 0))
    err = detail::cat(what, ": dim 0 must be a multiple of the group size ", size_, ", got shape ",
                      t.sizes());
  if (err.empty() && t.numel() / size_ > INT_MAX)
    err =
        detail::cat(what, ": ", t.numel() / size_, " elements per rank exceed the MPI count limit");
  agree_on_signature(*this, what, err, make_signature(err.empty() ? &t : nullptr, -1, -1, false));
  at::Tensor out = at::empty_like(t);
  const MPI_Datatype dt = mpi_type(t.scalar_type());
  const int c = static_cast<int>(t.numel() / size_);
  MQ_MPI_CHECK(MPI_Alltoall(t.data_ptr(), c, dt, out.data_ptr(), c, dt, comm_));
  return out;
}

std::vector<at::Tensor> MpiComm::all_to_all_v(const std::vector<at::Tensor>& send) const {
  check_valid("all_to_all_v");
  const char* what = "MpiComm::all_to_all_v";
  std::string err;
  if (static_cast<int>(send.size()) != size_)
    err = detail::cat(what, ": expected one tensor per rank (", size_, "), got ", send.size());
  for (size_t j = 0; err.empty() && j < send.size(); ++j) {
    err = validate_host(send[j], what);
    if (err.empty() && send[j].dim() == 0)
      err = detail::cat(what, ": tensors need at least one dimension");
    if (err.empty() &&
        (send[j].scalar_type() != send[0].scalar_type() || send[j].dim() != send[0].dim() ||
         send[j].sizes().slice(1) != send[0].sizes().slice(1)))
      err = detail::cat(what, ": send[", j, "] is ", send[j].scalar_type(), " ", send[j].sizes(),
                        " but send[0] is ", send[0].scalar_type(), " ", send[0].sizes(),
                        " (only dim 0 may differ)");
  }
  agree_on_signature(*this, what, err,
                     make_signature(err.empty() ? &send[0] : nullptr, -1, -1, true));

  std::vector<int64_t> srows(size_), rrows(size_);
  for (int j = 0; j < size_; ++j) srows[j] = send[j].size(0);
  MQ_MPI_CHECK(MPI_Alltoall(srows.data(), 1, MPI_INT64_T, rrows.data(), 1, MPI_INT64_T, comm_));
  const int64_t row_elems = row_numel(send[0]);
  RowCounts sc, rc;
  for (int j = 0; j < size_; ++j) {
    sc.add(srows[j], row_elems, what);
    rc.add(rrows[j], row_elems, what);
  }
  const at::Tensor packed = at::cat(send, 0);
  at::Tensor out = empty_rows(send[0], rc.total);
  const MPI_Datatype dt = mpi_type(send[0].scalar_type());
  MQ_MPI_CHECK(MPI_Alltoallv(packed.data_ptr(), sc.cnt.data(), sc.displ.data(), dt, out.data_ptr(),
                             rc.cnt.data(), rc.displ.data(), dt, comm_));
  return split_rows(out, rrows);
}

// ---- point to point

namespace {

// Header of a point-to-point message: kind, then for tensors dtype, ndim, shape...; then bytes.
constexpr int64_t kTensorMessage = 0x6d7154656e736f72;  // "mqTensor"
constexpr int64_t kStringMessage = 0x6d71537472696e67;  // "mqString"
constexpr int64_t kPieceBytes = int64_t{1} << 30;

void send_payload(const char* p, int64_t bytes, int dest, int tag, MPI_Comm comm) {
  for_each_piece(bytes, kPieceBytes, [&](int64_t off, int m) {
    MQ_MPI_CHECK(MPI_Send(p + off, m, MPI_BYTE, dest, tag, comm));
  });
}

void recv_payload(char* p, int64_t bytes, int source, int tag, MPI_Comm comm) {
  for_each_piece(bytes, kPieceBytes, [&](int64_t off, int m) {
    MQ_MPI_CHECK(MPI_Recv(p + off, m, MPI_BYTE, source, tag, comm, MPI_STATUS_IGNORE));
  });
}

std::vector<int64_t> recv_header(int source, int tag, MPI_Comm comm, const char* what) {
  MPI_Status st;
  MQ_MPI_CHECK(MPI_Probe(source, tag, comm, &st));
  int n = 0;
  MQ_MPI_CHECK(MPI_Get_count(&st, MPI_INT64_T, &n));
  MQ_CHECK(n >= 2 && n <= 64, what, ": the message from rank ", source, " tag ", tag,
           " is not a header (", n, " int64 values)");
  std::vector<int64_t> h(static_cast<size_t>(n));
  MQ_MPI_CHECK(MPI_Recv(h.data(), n, MPI_INT64_T, source, tag, comm, MPI_STATUS_IGNORE));
  return h;
}

// Receives and drops the payload of a message of the other kind, so that a wrong recv leaves no
// message behind and no sender blocked.
void drain_payload(const std::vector<int64_t>& h, int source, int tag, MPI_Comm comm) {
  int64_t bytes = 0;
  if (h[0] == kStringMessage && h.size() == 2) bytes = h[1];
  if (h[0] == kTensorMessage && h.size() >= 4) bytes = h.back();
  std::vector<char> sink(
      static_cast<size_t>(std::min<int64_t>(std::max<int64_t>(bytes, 0), kPieceBytes)));
  for_each_piece(bytes, kPieceBytes, [&](int64_t, int m) {
    MQ_MPI_CHECK(MPI_Recv(sink.data(), m, MPI_BYTE, source, tag, comm, MPI_STATUS_IGNORE));
  });
}

// A receive whose header `h` is not of the kind it expects (ok false) drains the payload and fails.
void expect_message(const std::vector<int64_t>& h, bool ok, const char* kind, int source, int tag,
                    MPI_Comm comm, const char* what) {
  if (ok) return;
  drain_payload(h, source, tag, comm);
  MQ_THROW(Error, what, ": the message from rank ", source, " tag ", tag, " is not ", kind);
}

void check_peer(int peer, int size, const char* what, const char* role) {
  MQ_CHECK(peer >= 0 && peer < size, what, ": ", role, " ", peer, " is outside [0, ", size, ")");
}

}  // namespace

void MpiComm::send(const at::Tensor& t, int dest, int tag) const {
  check_valid("send");
  check_peer(dest, size_, "MpiComm::send", "dest");
  MQ_CHECK(t.defined(), "MpiComm::send: tensor is undefined");
  MQ_CHECK(t.device().is_cpu(), "MpiComm::send: MpiComm takes host tensors, got one on ",
           t.device());
  const at::Tensor c = t.contiguous();
  const int64_t bytes = c.numel() * static_cast<int64_t>(c.element_size());
  std::vector<int64_t> h{kTensorMessage, static_cast<int64_t>(c.scalar_type()), c.dim()};
  h.insert(h.end(), c.sizes().begin(), c.sizes().end());
  h.push_back(bytes);
  MQ_CHECK(h.size() <= 64, "MpiComm::send: ", c.dim(), " dimensions are too many");
  MQ_MPI_CHECK(MPI_Send(h.data(), static_cast<int>(h.size()), MPI_INT64_T, dest, tag, comm_));
  send_payload(static_cast<const char*>(c.data_ptr()), bytes, dest, tag, comm_);
}

at::Tensor MpiComm::recv(int source, int tag) const {
  check_valid("recv");
  const char* what = "MpiComm::recv";
  check_peer(source, size_, what, "source");
  const std::vector<int64_t> h = recv_header(source, tag, comm_, what);
  expect_message(h,
                 h[0] == kTensorMessage && h.size() >= 4 && h[2] >= 0 &&
                     static_cast<int64_t>(h.size()) == 4 + h[2],
                 "a tensor", source, tag, comm_, what);
  MQ_CHECK(h[1] >= 0 && h[1] < static_cast<int64_t>(at::ScalarType::NumOptions), what, ": rank ",
           source, " announced an unknown dtype code ", h[1]);
  const auto st = static_cast<at::ScalarType>(h[1]);
  const std::vector<int64_t> shape(h.begin() + 3, h.end() - 1);
  at::Tensor out = at::empty(shape, at::TensorOptions().dtype(st));
  const int64_t bytes = out.numel() * static_cast<int64_t>(out.element_size());
  MQ_CHECK(bytes == h.back(), what, ": rank ", source, " announced ", h.back(), " bytes for ", st,
           " ", out.sizes(), " (", bytes, " expected)");
  recv_payload(static_cast<char*>(out.data_ptr()), bytes, source, tag, comm_);
  return out;
}

void MpiComm::send_string(std::string_view s, int dest, int tag) const {
  check_valid("send_string");
  check_peer(dest, size_, "MpiComm::send_string", "dest");
  int64_t h[2] = {kStringMessage, static_cast<int64_t>(s.size())};
  MQ_MPI_CHECK(MPI_Send(h, 2, MPI_INT64_T, dest, tag, comm_));
  send_payload(s.data(), static_cast<int64_t>(s.size()), dest, tag, comm_);
}

std::string MpiComm::recv_string(int source, int tag) const {
  check_valid("recv_string");
  const char* what = "MpiComm::recv_string";
  check_peer(source, size_, what, "source");
  const std::vector<int64_t> h = recv_header(source, tag, comm_, what);
  expect_message(h, h[0] == kStringMessage && h.size() == 2 && h[1] >= 0, "a string", source, tag,
                 comm_, what);
  std::string s(static_cast<size_t>(h[1]), '\0');
  recv_payload(s.data(), h[1], source, tag, comm_);
  return s;
}

}  // namespace mq::dist
