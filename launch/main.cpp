// mqdist entry point: any error ends here as one line `mqdist: <message>` on stderr and exit code 1.
// (With MPI, this is where rank/host are prefixed and MPI_Abort is called.)
#include <cstdio>
#include <exception>
#include <string>

#include "cli.hpp"

namespace {
// Library messages are single lines; third-party ones (LibTorch) may carry a backtrace after the first.
std::string first_line(const char* s) {
  std::string m(s);
  auto nl = m.find('\n');
  return nl == std::string::npos ? m : m.substr(0, nl);
}
}  // namespace

int main(int argc, char** argv) {
  try {
    return mq::launch::run_cli(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mqdist: %s\n", first_line(e.what()).c_str());
  } catch (...) {
    std::fprintf(stderr, "mqdist: unknown error\n");
  }
  return 1;
}
