# Sourced by the device scripts (run_gpu_suite.sh, run_dist_gpu.sh, tests/bench/run_gpu_bench.sh,
# tests/bench/run_cpu_bench.sh): the compiler choice and the libstdc++ preload the GPU machines need.

# MQ_CC: CMake arguments choosing the compiler. The device's default /opt/gcc has only a static
# libstdc++ (cmake/MqDeps.cmake refuses it): use the system GCC when the default compiler has no
# libstdc++.so.
MQ_CC=()
case $("${CXX:-c++}" -print-file-name=libstdc++.so) in
  /*) ;;
  *) [ -x /usr/bin/g++ ] && MQ_CC=(-DCMAKE_C_COMPILER=/usr/bin/gcc -DCMAKE_CXX_COMPILER=/usr/bin/g++
                                   -DCMAKE_CUDA_HOST_COMPILER=/usr/bin/g++) ;;
esac

# mq_libstdcxx_preload BINARY: prints the system libstdc++ to LD_PRELOAD when BINARY lacks
# libstdc++.so.6 in its DT_NEEDED (on the device even /usr/bin/g++ builds end up so, with libstdc++
# symbols from LibTorch's exports and a static copy, and crash with SIGSEGV; preloading gives one copy
# again), else nothing.
mq_libstdcxx_preload() {
  if ! readelf -d "$1" 2>/dev/null | grep -q 'libstdc++'; then
    ldconfig -p | sed -n 's/.*libstdc++.so.6 (libc6,x86-64) => //p' | head -n 1
  fi
}
