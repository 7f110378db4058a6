# Finds every dependency and exposes it as a target:
#   mq::torch   LibTorch (CPU: torch_cpu + c10; with MQ_TORCH_CUDA: the full TORCH_LIBRARIES)
#   MPI::MPI_CXX, mq::hdf5, Boost::program_options, nlohmann_json::nlohmann_json, GTest::gtest
#   mq::nccl, CUDA::cudart (when MQ_CUDA)
find_program(CCACHE_PROGRAM ccache)
if(CCACHE_PROGRAM)
  set(CMAKE_CXX_COMPILER_LAUNCHER ${CCACHE_PROGRAM})
  set(CMAKE_CUDA_COMPILER_LAUNCHER ${CCACHE_PROGRAM})
endif()

# LibTorch: the PyPI wheel unpacked by cmake/setup.sh. Found without flags through the default location.
if(NOT Torch_DIR AND NOT CMAKE_PREFIX_PATH)
  set(_mq_deps "$ENV{MQDIST_DEPS}")
  if(NOT _mq_deps)
    set(_mq_deps "$ENV{HOME}/.cache/mqdist")
  endif()
  list(APPEND CMAKE_PREFIX_PATH "${_mq_deps}/torch-2.11.0/torch/share/cmake")
endif()
# TorchConfig pulls Caffe2's CUDA setup, which prints noise about architectures; our kernels use CMake's
# CUDA language with CMAKE_CUDA_ARCHITECTURES and are unaffected.
# Pinning TORCH_CUDA_ARCH_LIST also skips its GPU auto-detection (a try_run that fails without a GPU).
set(_mq_saved_cuda_arch ${CMAKE_CUDA_ARCHITECTURES})
if(NOT DEFINED TORCH_CUDA_ARCH_LIST AND NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST})
  set(TORCH_CUDA_ARCH_LIST "9.0")
endif()
find_package(Torch REQUIRED)
set(CMAKE_CUDA_ARCHITECTURES ${_mq_saved_cuda_arch})
add_library(mq_torch INTERFACE)
add_library(mq::torch ALIAS mq_torch)
target_include_directories(mq_torch SYSTEM INTERFACE ${TORCH_INCLUDE_DIRS})
if(MQ_TORCH_CUDA)
  target_link_libraries(mq_torch INTERFACE ${TORCH_LIBRARIES})
  target_compile_definitions(mq_torch INTERFACE MQ_TORCH_CUDA=1)
else()
  # The CPU half of the wheel: a process that never touches device tensors need not load libtorch_cuda.
  target_link_libraries(mq_torch INTERFACE torch_cpu c10)
endif()

# LibTorch's libraries need the shared libstdc++. A GCC whose libstdc++ exists only as a static archive
# (the GPU machines' /opt/gcc) links its own copy into every binary, which then exports it to LibTorch:
# two libstdc++ in one process, and tests that use std::filesystem or iostreams crash (SIGSEGV, no
# stack). Refuse such a compiler at configure time instead.
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  execute_process(COMMAND ${CMAKE_CXX_COMPILER} -print-file-name=libstdc++.so
                  OUTPUT_VARIABLE _mq_libstdcxx OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT IS_ABSOLUTE "${_mq_libstdcxx}")
    message(FATAL_ERROR "${CMAKE_CXX_COMPILER} has no shared libstdc++ (libstdc++.so); LibTorch needs one. "
                        "Use another GCC, e.g. -DCMAKE_CXX_COMPILER=/usr/bin/g++ -DCMAKE_C_COMPILER=/usr/bin/gcc")
  endif()
  # PyPI's libtorch_cpu.so also exports parts of the libstdc++ it links statically (std::filesystem
  # among them). With --as-needed (Ubuntu's default) a binary that lists torch first binds those
  # symbols to torch's copy and may drop libstdc++ altogether: the same two-copies crash. Naming the
  # shared libstdc++ first, before any object or library, makes every binary use its own.
  add_link_options("LINKER:--push-state,--no-as-needed,-lstdc++,--pop-state")
endif()

find_package(MPI REQUIRED COMPONENTS CXX)
find_package(nlohmann_json 3.10 REQUIRED)
# Boost.ProgramOptions is needed by the mqdist executable only; a kernels-only build (e.g. on a GPU
# machine without Boost) still configures.
find_package(Boost 1.74 QUIET COMPONENTS program_options)
if(NOT Boost_PROGRAM_OPTIONS_FOUND)
  message(WARNING "Boost.ProgramOptions not found: the mqdist executable is not built")
endif()
find_package(HDF5 REQUIRED COMPONENTS C CXX)
add_library(mq_hdf5 INTERFACE)
add_library(mq::hdf5 ALIAS mq_hdf5)
target_include_directories(mq_hdf5 SYSTEM INTERFACE ${HDF5_INCLUDE_DIRS})
target_compile_definitions(mq_hdf5 INTERFACE ${HDF5_DEFINITIONS})
target_link_libraries(mq_hdf5 INTERFACE ${HDF5_LIBRARIES})
if(MQ_BUILD_TESTS)
  find_package(GTest REQUIRED)
  include(GoogleTest)
endif()

if(MQ_CUDA)
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    enable_language(CUDA)
    # CMake 3.25 knows no CUDA20 dialect for nvcc; the kernels and the headers they include
    # (kernels/include/mqk) are C++17.
    set(CMAKE_CUDA_STANDARD 17)
    set(CMAKE_CUDA_STANDARD_REQUIRED ON)
    find_package(CUDAToolkit REQUIRED)
    find_library(NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR} ${CUDAToolkit_LIBRARY_ROOT}/lib)
    find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS})
    if(NCCL_LIBRARY AND NCCL_INCLUDE_DIR)
      add_library(mq_nccl INTERFACE)
      add_library(mq::nccl ALIAS mq_nccl)
      target_include_directories(mq_nccl SYSTEM INTERFACE ${NCCL_INCLUDE_DIR})
      target_link_libraries(mq_nccl INTERFACE ${NCCL_LIBRARY})
    endif()
  else()
    message(WARNING "MQ_CUDA=ON but no CUDA compiler found: building without CUDA kernels")
    set(MQ_CUDA OFF)
  endif()
endif()
