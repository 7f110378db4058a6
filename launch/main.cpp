// mqdist entry point. One process: any error ends here as one line `mqdist: <message>` on stderr
// and exit code 1. Under a launcher (mpirun, srun --mpi=pmix): MPI is initialised here, and an
// error on any rank prints `rank N (host): <message>` once and aborts every rank (MPI_Abort), so no
// rank is left waiting in a collective; the export is written to a temp dir and renamed last, so an
// aborted run leaves nothing that looks complete.
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <optional>
#include <string>

#include "cli.hpp"
#include "mq/dist/mpi_comm.hpp"

namespace {
// Library messages are single lines; third-party ones (LibTorch) may carry a backtrace after the
// first.
std::string first_line(const char* s) {
  std::string m(s);
  auto nl = m.find('\n');
  return nl == std::string::npos ? m : m.substr(0, nl);
}

// Started by an MPI launcher (Open MPI's mpirun, or PMIx / PMI under srun)? MQ_MPI=0/1 forces it.
bool launched_by_mpi() {
  if (const char* f = std::getenv("MQ_MPI")) return std::string(f) != "0";
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"})
    if (std::getenv(v)) return true;
  return false;
}
}  // namespace

int main(int argc, char** argv) {
  std::optional<mq::dist::MpiRuntime> mpi;
  try {
    if (launched_by_mpi()) mpi.emplace(&argc, &argv);
    int rc = 0;
    {
      std::optional<mq::dist::MpiComm> world;
      if (mpi) world.emplace(mq::dist::MpiComm::world());
      rc = mq::launch::run_cli(argc, argv, world ? &*world : nullptr);
    }
    return rc;
  } catch (const std::exception& e) {
    if (mpi) mq::dist::abort_all(first_line(e.what()), 1);
    std::fprintf(stderr, "mqdist: %s\n", first_line(e.what()).c_str());
  } catch (...) {
    if (mpi) mq::dist::abort_all("unknown error", 1);
    std::fprintf(stderr, "mqdist: unknown error\n");
  }
  return 1;
}
