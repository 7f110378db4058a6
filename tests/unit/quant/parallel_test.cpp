// mq_core's own CPU loops run on LibTorch's intra-op threads (they silently ran on one thread when
// mq_core was built without OpenMP, since at::parallel_for is inline OpenMP code).
#include "mq/core/parallel.hpp"

#include <ATen/Parallel.h>
#include <gtest/gtest.h>

namespace {

TEST(IntraOpParallel, MqCoreParallelForUsesTheRequestedThreads) {
  const int before = at::get_num_threads();
  at::set_num_threads(2);
  EXPECT_EQ(mq::parallel_for_threads_used(), 2);
  at::set_num_threads(1);
  EXPECT_EQ(mq::parallel_for_threads_used(), 1);
  at::set_num_threads(before);
}

}  // namespace
