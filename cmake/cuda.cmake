# Decides KILN_CUDA_ENABLED from KILN_WITH_CUDA (AUTO, ON, OFF) and, when on,
# enables the CUDA language and defines the imported targets the cuda
# backend links: CUDA::cudart_static, CUDA::cublasLt and kiln::cudnn.
set(KILN_CUDA_ENABLED OFF)
if(KILN_WITH_CUDA STREQUAL "OFF")
  return()
endif()

set(kiln_cuda_missing "")
include(CheckLanguage)
check_language(CUDA)
if(NOT CMAKE_CUDA_COMPILER)
  set(kiln_cuda_missing "nvcc")
else()
  # Hopper (sm_90) machine code plus compute_90 PTX for later GPUs. CUDA 13
  # has no target below sm_75, so CMake's own default cannot be used.
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    set(CMAKE_CUDA_ARCHITECTURES 90)
  endif()
  enable_language(CUDA)
  # CMake 3.25 (Debian 12's) does not know that nvcc 12+ takes -std=c++20, so a
  # target with CUDA_STANDARD 20 fails to generate; tell it the flag.
  if(NOT CMAKE_CUDA20_STANDARD_COMPILE_OPTION AND CMAKE_CUDA_COMPILER_VERSION VERSION_GREATER_EQUAL 12.0)
    set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
    set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
  endif()
  find_package(CUDAToolkit)
  if(NOT CUDAToolkit_FOUND OR NOT TARGET CUDA::cublasLt)
    set(kiln_cuda_missing "the CUDA toolkit with cuBLASLt")
  else()
    find_library(KILN_CUDNN_LIBRARY cudnn HINTS ${CUDAToolkit_LIBRARY_DIR})
    find_path(KILN_CUDNN_INCLUDE_DIR cudnn_graph.h HINTS ${CUDAToolkit_INCLUDE_DIRS})
    if(NOT KILN_CUDNN_LIBRARY OR NOT KILN_CUDNN_INCLUDE_DIR)
      set(kiln_cuda_missing "cuDNN 9 (libcudnn and cudnn_graph.h)")
    endif()
  endif()
endif()

if(kiln_cuda_missing)
  if(KILN_WITH_CUDA STREQUAL "ON")
    message(FATAL_ERROR "KILN_WITH_CUDA=ON, but ${kiln_cuda_missing} was not found")
  endif()
  message(STATUS "kiln: the cuda backend is not built (${kiln_cuda_missing} not found)")
  return()
endif()

add_library(kiln::cudnn SHARED IMPORTED)
set_target_properties(kiln::cudnn PROPERTIES IMPORTED_LOCATION ${KILN_CUDNN_LIBRARY}
                                             INTERFACE_INCLUDE_DIRECTORIES ${KILN_CUDNN_INCLUDE_DIR})
set(KILN_CUDA_ENABLED ON)
message(STATUS "kiln: the cuda backend is built (CUDA ${CUDAToolkit_VERSION}, ${KILN_CUDNN_LIBRARY})")
