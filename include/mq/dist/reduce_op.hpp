#pragma once
/// Reduction operators of the collectives, and the typed errors of the communication layer.
#include "mq/core/error.hpp"

namespace mq::dist {

/// kAvg is SUM / group size (floating dtypes only). On host tensors every floating reduction is a
/// left fold in rank order, ((x0 op x1) op x2) ..., accumulated in fp32 (fp64 for fp64 tensors) and
/// rounded once to the tensor's dtype, identical bits on every rank (see MpiComm::all_reduce).
/// kMax/kMin propagate NaN, as torch.maximum does. Integer reductions are exact; bool supports kMax
/// (any) and kMin (all).
enum class ReduceOp { kSum, kAvg, kMax, kMin };

/// "sum", "avg", "max", "min".
const char* reduce_op_name(ReduceOp op);

/// An MPI call failed; what() is "MPI error <code> (<MPI_Error_string>) in <call> at
/// <file>:<line>".
class MpiError : public Error {
 public:
  using Error::Error;
};
/// An NCCL or CUDA call of the NCCL layer failed; what() names the call and ncclGetErrorString.
class NcclError : public Error {
 public:
  using Error::Error;
};

}  // namespace mq::dist
