#include <sstream>
#include <vector>

#include "collective_check_impl.hpp"

namespace mq::dist {
namespace {

std::string describe(const Signature& s) {
  std::ostringstream os;
  os << static_cast<at::ScalarType>(s[1]) << " on "
     << (s[2] == static_cast<int64_t>(at::kCPU) ? "cpu" : "device") << " [";
  const int64_t dim = s[3];
  for (int64_t d = 0; d < dim && d < kSigDims; ++d)
    os << (d ? ", " : "") << (s[7 + d] < 0 ? "*" : std::to_string(s[7 + d]));
  if (dim > kSigDims) os << ", ...";
  os << "]";
  if (s[5] >= 0) os << " op " << reduce_op_name(static_cast<ReduceOp>(s[5]));
  if (s[6] >= 0) os << " root " << s[6];
  return os.str();
}

}  // namespace

Signature make_signature(const at::Tensor* t, int op, int root, bool free_dim0) {
  Signature s{};
  s.fill(0);
  if (t == nullptr) {
    s[0] = 1;
    return s;
  }
  s[1] = static_cast<int64_t>(t->scalar_type());
  s[2] = static_cast<int64_t>(t->device().type());
  s[3] = t->dim();
  s[4] = free_dim0 ? -1 : t->numel();
  s[5] = op;
  s[6] = root;
  for (int64_t d = 0; d < t->dim() && d < kSigDims; ++d) s[7 + d] = t->size(d);
  if (free_dim0 && t->dim() > 0) s[7] = -1;
  return s;
}

void agree_on_signature(const MpiComm& comm, const char* what, const std::string& local_error,
                        const Signature& sig) {
  const int n = static_cast<int>(sig.size());
  std::vector<int64_t> all(static_cast<size_t>(n) * comm.size());
  MQ_MPI_CHECK(
      MPI_Allgather(sig.data(), n, MPI_INT64_T, all.data(), n, MPI_INT64_T, comm.native()));
  auto row = [&](int r) {
    Signature s{};
    for (int i = 0; i < n; ++i) s[i] = all[static_cast<size_t>(r) * n + i];
    return s;
  };
  for (int r = 0; r < comm.size(); ++r) {
    if (row(r)[0] == 0) continue;
    if (r == comm.rank()) throw Error(local_error);
    MQ_THROW(Error, what, ": rank ", r,
             " of the group passed invalid arguments (its own error names them)");
  }
  const Signature s0 = row(0);
  for (int r = 1; r < comm.size(); ++r) {
    if (row(r) != s0)
      MQ_THROW(Error, what, ": ranks disagree on the arguments: rank 0 passed ", describe(s0),
               ", rank ", r, " passed ", describe(row(r)));
  }
}

int64_t row_numel(const at::Tensor& t) {
  int64_t n = 1;
  for (int64_t d = 1; d < t.dim(); ++d) n *= t.size(d);
  return n;
}

}  // namespace mq::dist
