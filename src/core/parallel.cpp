#include "mq/core/parallel.hpp"

#include <ATen/Parallel.h>

#include <mutex>
#include <set>
#include <thread>

namespace mq {

int parallel_for_threads_used(int tasks) {
  std::mutex mu;
  std::set<std::thread::id> seen;
  at::parallel_for(0, tasks, 1, [&](int64_t b, int64_t e) {
    // Enough work per chunk that every thread of the team gets one before the others finish.
    volatile double sink = 0;
    for (int64_t i = b; i < e; ++i)
      for (int k = 0; k < 2000; ++k) sink = sink + static_cast<double>(k);
    std::lock_guard<std::mutex> lock(mu);
    seen.insert(std::this_thread::get_id());
  });
  return static_cast<int>(seen.size());
}

}  // namespace mq
