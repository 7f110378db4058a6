#include "mq/core/version.hpp"

#include <torch/version.h>

namespace mq {
std::string version_string() {
  std::string s = "mqdist 0.1.0 (LibTorch " TORCH_VERSION ", CUDA kernels: ";
#ifdef MQ_HAVE_CUDA
  s += "yes)";
#else
  s += "no)";
#endif
  return s;
}
}  // namespace mq
