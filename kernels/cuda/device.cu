// Device queries and the launch-check helper shared by the kernels.
#include <cuda_runtime.h>

#include "mqk/cuda.hpp"

namespace mqk {

int cuda_device_count() {
  // cudaGetDeviceCount leaves the out-parameter untouched when it fails (no driver, no device).
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error so later calls are unaffected
    return 0;
  }
  return n;
}

}  // namespace mqk
