// The error path of a multi-rank main: rank 1 fails, prints "rank 1 (host): message" once and
// aborts every rank, so rank 0, waiting in a barrier, does not hang. ctest checks the line and that
// the run ends.
#include <stdexcept>

#include "mq/dist/mpi_comm.hpp"

int main(int argc, char** argv) {
  mq::dist::MpiRuntime mpi(&argc, &argv);
  try {
    mq::dist::MpiComm world = mq::dist::MpiComm::world();
    if (world.rank() == 1) throw std::runtime_error("abort_check: deliberate failure");
    world.barrier();
  } catch (const std::exception& e) {
    mq::dist::abort_all(e.what());
  }
  return 0;
}
