// A stand-in for mqdist in the launcher tests: an MPI program started the same way
// (launch/mqdist-rank in front, mqdist's arguments behind) that shows what each rank got. Every
// rank prints one line
//   mpi_probe: rank R of S local L cuda=<CUDA_VISIBLE_DEVICES|unset> omp=<OMP_NUM_THREADS|unset>
// and rank 0 then checks an all-reduce over the world and prints
//   mpi_probe: S ranks, allreduce ok
// `--exit-code C` makes the last rank exit with C (the launcher must return it); other arguments
// (--cfg job.json --set ...) are ignored. Plain MPI: no torch, so it starts in milliseconds.
#include <mpi.h>

#include <cstdio>
#include <cstdlib>
#include <string>

namespace {
std::string env_or_unset(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string("unset");
}

// OMPI_COMM_WORLD_LOCAL_RANK is set by Open MPI under mpirun and under srun --mpi=pmix alike.
std::string local_rank() {
  for (const char* name : {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID"})
    if (const char* v = std::getenv(name)) return v;
  return "unknown";
}
}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0;
  int size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);

  int exit_code = 0;
  for (int i = 1; i + 1 < argc; ++i)
    if (std::string(argv[i]) == "--exit-code") exit_code = std::atoi(argv[i + 1]);

  std::printf("mpi_probe: rank %d of %d local %s cuda=%s omp=%s\n", rank, size,
              local_rank().c_str(), env_or_unset("CUDA_VISIBLE_DEVICES").c_str(),
              env_or_unset("OMP_NUM_THREADS").c_str());
  std::fflush(stdout);

  // Sum of rank+1 over the world: catches ranks that came up as separate singletons (size 1 each).
  long mine = rank + 1;
  long sum = 0;
  MPI_Allreduce(&mine, &sum, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
  int rc = 0;
  if (rank == 0) {
    const long expected = static_cast<long>(size) * (size + 1) / 2;
    if (sum == expected) {
      std::printf("mpi_probe: %d ranks, allreduce ok\n", size);
    } else {
      std::fprintf(stderr, "mpi_probe: allreduce gave %ld, expected %ld\n", sum, expected);
      rc = 1;
    }
    std::fflush(stdout);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  MPI_Finalize();
  if (rank == size - 1 && exit_code != 0) return exit_code;
  return rc;
}
