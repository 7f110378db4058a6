#pragma once
/// mqdist's version and the versions it was built against, for --version and run manifests.
#include <string>

namespace mq {
/// "mqdist 0.1.0 (LibTorch 2.11.0, CUDA kernels: yes|no)".
std::string version_string();
}  // namespace mq
