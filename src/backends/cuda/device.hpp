// The GPU the cuda backend runs on, and the per-engine CUDA objects: a
// stream with its cuDNN and cuBLASLt handles, and device memory.
//
// probe_gpu() never throws: a machine without a GPU or without a driver
// (cudaGetDeviceCount reports "CUDA driver version is insufficient") is a
// reason, which make_cuda_backend() turns into a clean kiln::Error.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime_api.h>
#include <cudnn_graph.h>

#include <cstddef>
#include <optional>
#include <string>

namespace kiln::cuda {

struct GpuInfo {
  int device = 0;
  std::string name;  // "NVIDIA H100 80GB HBM3"
  int sm_major = 0, sm_minor = 0;
  int sm_count = 0;
  size_t memory_bytes = 0;
  int runtime_version = 0;   // cudaRuntimeGetVersion: 13000
  size_t cudnn_version = 0;  // cudnnGetVersion: 91900
  size_t cublaslt_version = 0;

  std::string sm() const { return "sm_" + std::to_string(sm_major) + std::to_string(sm_minor); }
};

struct GpuProbe {
  std::optional<GpuInfo> gpu;  // device 0, when usable
  std::string reason;          // why not, when not
};

// Probed once per process; thread-safe.
const GpuProbe& probe_gpu();

// Device memory; moves, never copies.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes);
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer();

  void* data() const { return m_data; }
  size_t size() const { return m_size; }

 private:
  void* m_data = nullptr;
  size_t m_size = 0;
};

// One engine's stream and library handles, bound to that stream.
class DeviceContext {
 public:
  DeviceContext();
  DeviceContext(const DeviceContext&) = delete;
  DeviceContext& operator=(const DeviceContext&) = delete;
  ~DeviceContext();

  cudaStream_t stream() const { return m_stream; }
  cudnnHandle_t cudnn() const { return m_cudnn; }
  cublasLtHandle_t cublaslt() const { return m_cublaslt; }
  void synchronize() const;

 private:
  cudaStream_t m_stream = nullptr;
  cudnnHandle_t m_cudnn = nullptr;
  cublasLtHandle_t m_cublaslt = nullptr;
};

// Times `fn` (which enqueues work on `stream`) with CUDA events, in ms.
template <typename Fn>
double time_on_stream(cudaStream_t stream, Fn&& fn);

double elapsed_ms(cudaStream_t stream, void (*enqueue)(void*), void* context);

template <typename Fn>
double time_on_stream(cudaStream_t stream, Fn&& fn) {
  return elapsed_ms(
      stream, [](void* f) { (*static_cast<Fn*>(f))(); }, &fn);
}

}  // namespace kiln::cuda
