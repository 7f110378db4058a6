#pragma once
// Argument agreement for collectives: before moving data, every rank all-gathers a fixed-size
// signature of its arguments (plus a flag for a local precondition failure). All ranks then see the
// same table and throw the same error, so a bad argument on one rank can neither hang the others
// nor exchange garbage.
#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <string>

#include "mq/dist/mpi_comm.hpp"

namespace mq::dist {

constexpr int kSigDims = 8;
// [0] local error flag, [1] dtype, [2] device type, [3] dim, [4] numel (-1 when dim 0 is free),
// [5] op, [6] root, [7..] sizes (dim 0 is -1 when free; sizes beyond kSigDims are folded into
// numel).
using Signature = std::array<int64_t, 7 + kSigDims>;

/// t == nullptr: this rank failed its local checks (only the flag is meaningful).
Signature make_signature(const at::Tensor* t, int op, int root, bool free_dim0);

/// Collective over `comm`. Throws on every rank when any rank flagged a local error (that rank
/// throws its own message) or when the signatures differ.
void agree_on_signature(const MpiComm& comm, const char* what, const std::string& local_error,
                        const Signature& sig);

/// Elements per index of dim 0 (product of the other sizes).
int64_t row_numel(const at::Tensor& t);

}  // namespace mq::dist
