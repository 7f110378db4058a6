// mqdist entry point: every error ends here as one line on stderr and exit code 1.
#include <cstdio>
#include <exception>

#include "cli.hpp"

int main(int argc, char** argv) {
  try {
    return mq::launch::run_cli(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mqdist: %s\n", e.what());
  } catch (...) {
    std::fprintf(stderr, "mqdist: unknown error\n");
  }
  return 1;
}
