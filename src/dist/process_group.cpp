#include "mq/dist/process_group.hpp"

#include <sstream>

#include "collective_check_impl.hpp"

namespace mq::dist {

ProcessGroup::ProcessGroup(std::string name, std::shared_ptr<MpiComm> mpi,
                           std::shared_ptr<NcclComm> nccl, int device)
    : name_(std::move(name)), mpi_(std::move(mpi)), nccl_(std::move(nccl)), device_(device) {
  MQ_CHECK(mpi_ != nullptr && mpi_->valid(), "ProcessGroup ", name_,
           ": needs a valid MPI communicator");
  MQ_CHECK(nccl_ == nullptr || !nccl_->valid() || nccl_->size() == mpi_->size(), "ProcessGroup ",
           name_, ": NCCL communicator of size ", nccl_ ? nccl_->size() : 0,
           " for an MPI group of size ", mpi_->size());
  world_ranks_ = mpi_->world_ranks();
}

int ProcessGroup::device() const { return has_nccl() ? nccl_->device() : device_; }

const MpiComm& ProcessGroup::mpi() const {
  MQ_CHECK(is_initialized(), "ProcessGroup ", name_, ": not initialised");
  return *mpi_;
}

NcclComm& ProcessGroup::nccl() const {
  MQ_CHECK(has_nccl(), "ProcessGroup ", name_.empty() ? "(unnamed)" : name_,
           ": no NCCL communicator (device tensors need groups made with nccl = true)");
  return *nccl_;
}

NcclComm& ProcessGroup::device_comm(const char* what, const at::Tensor* t,
                                    const std::string& local_error, int op, int root,
                                    bool free_dim0) const {
  std::string err = local_error;
  if (err.empty() && !has_nccl())
    err = detail::cat(what, " on group ", name_, ": device tensor but no NCCL communicator");
  agree_on_signature(*mpi_, what, err,
                     make_signature(err.empty() ? t : nullptr, op, root, free_dim0));
  return *nccl_;
}

void ProcessGroup::barrier() const { mpi().barrier(); }

namespace {
bool on_device(const at::Tensor& t) { return t.defined() && !t.device().is_cpu(); }
// Device tensors of a group without NCCL travel through host memory over MPI.
at::Tensor to_host(const at::Tensor& t) { return t.cpu().contiguous(); }
std::vector<at::Tensor> to_device(std::vector<at::Tensor> v, const at::Tensor& like) {
  for (auto& x : v) x = x.to(like.device());
  return v;
}
std::string device_error(const at::Tensor& t, const char* what) {
  if (!t.is_cuda())
    return detail::cat(what, ": tensors must be on the CPU or a CUDA device, got ", t.device());
  if (!t.is_contiguous()) return detail::cat(what, ": tensor must be contiguous");
  return {};
}
}  // namespace

void ProcessGroup::all_reduce(at::Tensor& t, ReduceOp op) const {
  const MpiComm& m = mpi();
  if (!on_device(t)) return m.all_reduce(t, op);
  if (!has_nccl()) {
    at::Tensor h = to_host(t);
    m.all_reduce(h, op);
    t.copy_(h);
    return;
  }
  device_comm("ProcessGroup::all_reduce", &t, device_error(t, "ProcessGroup::all_reduce"),
              static_cast<int>(op), -1, false)
      .all_reduce(t, op);
}

void ProcessGroup::broadcast(at::Tensor& t, int root) const {
  const MpiComm& m = mpi();
  if (!on_device(t)) return m.broadcast(t, root);
  if (!has_nccl()) {
    at::Tensor h = to_host(t);
    m.broadcast(h, root);
    t.copy_(h);
    return;
  }
  device_comm("ProcessGroup::broadcast", &t, device_error(t, "ProcessGroup::broadcast"), -1, root,
              false)
      .broadcast(t, root);
}

void ProcessGroup::reduce(at::Tensor& t, ReduceOp op, int root) const {
  const MpiComm& m = mpi();
  if (!on_device(t)) return m.reduce(t, op, root);
  if (!has_nccl()) {
    at::Tensor h = to_host(t);
    m.reduce(h, op, root);
    t.copy_(h);
    return;
  }
  device_comm("ProcessGroup::reduce", &t, device_error(t, "ProcessGroup::reduce"),
              static_cast<int>(op), root, false)
      .reduce(t, op, root);
}

at::Tensor ProcessGroup::all_gather(const at::Tensor& t) const {
  const MpiComm& m = mpi();
  if (!on_device(t)) return m.all_gather(t);
  if (!has_nccl()) return m.all_gather(to_host(t)).to(t.device());
  return device_comm("ProcessGroup::all_gather", &t, device_error(t, "ProcessGroup::all_gather"),
                     -1, -1, false)
      .all_gather(t);
}

std::vector<at::Tensor> ProcessGroup::all_gather_v(const at::Tensor& t) const {
  const MpiComm& m = mpi();
  if (!on_device(t)) return m.all_gather_v(t);
  if (!has_nccl()) return to_device(m.all_gather_v(to_host(t)), t);
  std::string err = device_error(t, "ProcessGroup::all_gather_v");
  if (err.empty() && t.dim() == 0)
    err = "ProcessGroup::all_gather_v: tensor needs at least one dimension";
  NcclComm& n = device_comm("ProcessGroup::all_gather_v", &t, err, -1, -1, true);
  return n.all_gather_v(t, m.all_gather_int64(t.size(0)));
}

at::Tensor ProcessGroup::all_to_all(const at::Tensor& t) const {
  const MpiComm& m = mpi();
  if (!on_device(t)) return m.all_to_all(t);
  if (!has_nccl()) return m.all_to_all(to_host(t)).to(t.device());
  std::string err = device_error(t, "ProcessGroup::all_to_all");
  if (err.empty() && (t.dim() == 0 || t.size(0) % m.size() != 0))
    err = detail::cat("ProcessGroup::all_to_all: dim 0 must be a multiple of the group size ",
                      m.size());
  return device_comm("ProcessGroup::all_to_all", &t, err, -1, -1, false).all_to_all(t);
}

std::vector<at::Tensor> ProcessGroup::all_to_all_v(const std::vector<at::Tensor>& send) const {
  const MpiComm& m = mpi();
  const bool device = !send.empty() && on_device(send[0]);
  if (!device) return m.all_to_all_v(send);
  if (!has_nccl()) {
    std::vector<at::Tensor> host;
    for (const auto& x : send) host.push_back(on_device(x) ? to_host(x) : x);
    return to_device(m.all_to_all_v(host), send[0]);
  }
  const char* what = "ProcessGroup::all_to_all_v";
  std::string err;
  if (static_cast<int>(send.size()) != m.size())
    err = detail::cat(what, ": expected one tensor per rank (", m.size(), "), got ", send.size());
  for (size_t j = 0; err.empty() && j < send.size(); ++j) {
    err = device_error(send[j], what);
    if (err.empty() &&
        (send[j].dim() == 0 || send[j].device() != send[0].device() ||
         send[j].scalar_type() != send[0].scalar_type() || send[j].dim() != send[0].dim() ||
         send[j].sizes().slice(1) != send[0].sizes().slice(1)))
      err = detail::cat(what, ": send[", j,
                        "] does not match send[0] (same device, dtype, dims except dim 0)");
  }
  NcclComm& n = device_comm(what, err.empty() ? &send[0] : nullptr, err, -1, -1, true);
  std::vector<int64_t> srows(m.size()), rrows(m.size());
  for (int j = 0; j < m.size(); ++j) srows[j] = send[j].size(0);
  MQ_MPI_CHECK(
      MPI_Alltoall(srows.data(), 1, MPI_INT64_T, rrows.data(), 1, MPI_INT64_T, m.native()));
  return n.all_to_all_v(send, rrows);
}

std::vector<int64_t> ProcessGroup::all_gather_int64(int64_t value) const {
  return mpi().all_gather_int64(value);
}
std::vector<bool> ProcessGroup::all_gather_bool(bool value) const {
  return mpi().all_gather_bool(value);
}
int64_t ProcessGroup::all_reduce_int64(int64_t value, ReduceOp op) const {
  return mpi().all_reduce_int64(value, op);
}

std::string ProcessGroup::to_string() const {
  if (!is_initialized()) return name_.empty() ? "not initialised" : name_ + ": not initialised";
  std::ostringstream os;
  os << (name_.empty() ? "group" : name_) << ": ";
  os << "world ranks [";
  for (size_t i = 0; i < world_ranks_.size(); ++i) os << (i ? ", " : "") << world_ranks_[i];
  os << "]" << (has_nccl() ? " (nccl)" : "");
  return os.str();
}

}  // namespace mq::dist
