#pragma once
// The variable-size collectives (all_gather_v, all_to_all_v of MpiComm and NcclComm) receive one
// block of rows per rank, concatenated along dim 0 in rank order.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <cstdint>
#include <vector>

namespace mq::dist {

/// An uninitialised tensor with `like`'s dtype, device and sizes but dim 0 of `rows`.
inline at::Tensor empty_rows(const at::Tensor& like, int64_t rows) {
  std::vector<int64_t> shape(like.sizes().begin(), like.sizes().end());
  shape[0] = rows;
  return at::empty(shape, like.options());
}

/// Views of `out`'s consecutive dim-0 blocks of rows[0], rows[1], ... rows.
inline std::vector<at::Tensor> split_rows(const at::Tensor& out, const std::vector<int64_t>& rows) {
  std::vector<at::Tensor> parts;
  int64_t r0 = 0;
  for (const int64_t r : rows) {
    parts.push_back(out.narrow(0, r0, r));
    r0 += r;
  }
  return parts;
}

}  // namespace mq::dist
