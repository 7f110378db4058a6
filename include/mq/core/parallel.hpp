#pragma once
/// Intra-op parallelism of mq_core's own CPU loops (at::parallel_for). LibTorch's at::parallel_for
/// is header code: with an OpenMP LibTorch it is a `#pragma omp parallel` compiled into the caller,
/// so a translation unit built without -fopenmp silently runs it on one thread. mq_core is built
/// with OpenMP (src/CMakeLists.txt); this reports what a parallel_for of mq_core actually uses.
namespace mq {

/// Distinct threads that ran the chunks of an at::parallel_for over `tasks` tasks of grain 1 (at
/// most at::get_num_threads()). 1 means mq_core's loops are serial.
int parallel_for_threads_used(int tasks = 4096);

}  // namespace mq
