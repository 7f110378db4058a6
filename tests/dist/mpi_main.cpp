// gtest main for the multi-rank binaries: MPI is initialised around RUN_ALL_TESTS, only rank 0
// prints the usual report, other ranks print their failures prefixed with "rank N (host)", and the
// exit code is the worst over all ranks, so `mpirun -np 4 test_dist_mpi` fails when any rank fails.
#include <gtest/gtest.h>

#include <cstdio>

#include "mq/dist/mpi_comm.hpp"

namespace {

class RankFailurePrinter : public ::testing::EmptyTestEventListener {
  void OnTestPartResult(const ::testing::TestPartResult& r) override {
    if (!r.failed()) return;
    std::fprintf(stderr, "%s: %s:%d: Failure\n%s\n", mq::dist::rank_prefix().c_str(),
                 r.file_name() ? r.file_name() : "?", r.line_number(), r.summary());
  }
};

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  mq::dist::MpiRuntime mpi(&argc, &argv);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new RankFailurePrinter);
  }
  int rc = RUN_ALL_TESTS();
  int worst = 0;
  MPI_Allreduce(&rc, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  return worst;
}
