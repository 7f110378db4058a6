#include "cli.hpp"

#include <cstdio>

#include "mq/core/version.hpp"

namespace mq::launch {
int run_cli(int, char**) {
  std::printf("%s\n", mq::version_string().c_str());
  return 0;
}
}  // namespace mq::launch
