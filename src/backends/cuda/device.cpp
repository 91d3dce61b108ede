#include "backends/cuda/device.hpp"

#include <utility>

#include "backends/cuda/cuda_check.hpp"
#include "kiln/error.hpp"

namespace kiln::cuda {

namespace {

GpuProbe probe() {
  GpuProbe out;
  int count = 0;
  if (cudaError_t status = cudaGetDeviceCount(&count); status != cudaSuccess) {
    out.reason = std::string("no usable CUDA device: ") + cudaGetErrorString(status);
    (void)cudaGetLastError();  // clear the sticky error of this thread
    return out;
  }
  if (count == 0) {
    out.reason = "no CUDA device on this machine";
    return out;
  }
  cudaDeviceProp prop{};
  if (cudaError_t status = cudaGetDeviceProperties(&prop, 0); status != cudaSuccess) {
    out.reason = std::string("CUDA device 0: ") + cudaGetErrorString(status);
    return out;
  }
  GpuInfo gpu;
  gpu.device = 0;
  gpu.name = prop.name;
  gpu.sm_major = prop.major;
  gpu.sm_minor = prop.minor;
  gpu.sm_count = prop.multiProcessorCount;
  gpu.memory_bytes = prop.totalGlobalMem;
  cudaRuntimeGetVersion(&gpu.runtime_version);
  gpu.cudnn_version = cudnnGetVersion();
  gpu.cublaslt_version = cublasLtGetVersion();
  // kiln is built for sm_90 with compute_90 PTX: an older GPU cannot run it.
  if (gpu.sm_major < 9) {
    out.reason = gpu.name + " is " + gpu.sm() + "; this kiln's CUDA kernels need sm_90 or newer";
    return out;
  }
  out.gpu = std::move(gpu);
  return out;
}

}  // namespace

const GpuProbe& probe_gpu() {
  static const GpuProbe probed = probe();
  return probed;
}

DeviceBuffer::DeviceBuffer(size_t bytes) : m_size(bytes) {
  if (bytes) check(cudaMalloc(&m_data, bytes), "cudaMalloc(" + std::to_string(bytes) + " bytes)");
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : m_data(std::exchange(other.m_data, nullptr)), m_size(std::exchange(other.m_size, 0)) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    if (m_data) cudaFree(m_data);
    m_data = std::exchange(other.m_data, nullptr);
    m_size = std::exchange(other.m_size, 0);
  }
  return *this;
}

DeviceBuffer::~DeviceBuffer() {
  if (m_data) cudaFree(m_data);
}

DeviceContext::DeviceContext() {
  const GpuProbe& p = probe_gpu();
  if (!p.gpu) throw Error(ErrorCode::unsupported, "cuda backend: " + p.reason);
  check(cudaSetDevice(p.gpu->device), "cudaSetDevice");
  check(cudaStreamCreateWithFlags(&m_stream, cudaStreamNonBlocking), "cudaStreamCreate");
  check(cudnnCreate(&m_cudnn), "cudnnCreate");
  check(cudnnSetStream(m_cudnn, m_stream), "cudnnSetStream");
  check(cublasLtCreate(&m_cublaslt), "cublasLtCreate");
}

DeviceContext::~DeviceContext() {
  if (m_stream) cudaStreamSynchronize(m_stream);
  if (m_cublaslt) cublasLtDestroy(m_cublaslt);
  if (m_cudnn) cudnnDestroy(m_cudnn);
  if (m_stream) cudaStreamDestroy(m_stream);
}

void DeviceContext::synchronize() const { check(cudaStreamSynchronize(m_stream), "cudaStreamSynchronize"); }

double elapsed_ms(cudaStream_t stream, void (*enqueue)(void*), void* context) {
  cudaEvent_t start = nullptr, stop = nullptr;
  check(cudaEventCreate(&start), "cudaEventCreate");
  check(cudaEventCreate(&stop), "cudaEventCreate");
  float ms = 0;
  try {
    check(cudaEventRecord(start, stream), "cudaEventRecord");
    enqueue(context);
    check(cudaEventRecord(stop, stream), "cudaEventRecord");
    check(cudaEventSynchronize(stop), "cudaEventSynchronize");
    check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
  } catch (...) {
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    throw;
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return ms;
}

}  // namespace kiln::cuda
