#include "backends/cuda/device_io.hpp"

#include <cstdlib>
#include <cstring>
#include <exception>

#include "backends/cuda/cuda_check.hpp"
#include "kiln/error.hpp"

namespace kiln::cuda {

Event::Event() { check(cudaEventCreateWithFlags(&m_event, cudaEventDisableTiming), "cudaEventCreate"); }

Event::~Event() {
  if (m_event) cudaEventDestroy(m_event);
}

ScopedDevice::ScopedDevice(int device) {
  check(cudaGetDevice(&m_previous), "cudaGetDevice");
  if (m_previous != device) {
    check(cudaSetDevice(device), "cudaSetDevice");
  } else {
    m_previous = -1;  // nothing to restore
  }
}

ScopedDevice::~ScopedDevice() {
  if (m_previous >= 0) cudaSetDevice(m_previous);
}

void stream_wait(cudaStream_t stream, cudaStream_t on, const Event& event) {
  check(cudaEventRecord(event.get(), on), "cudaEventRecord");
  check(cudaStreamWaitEvent(stream, event.get(), 0), "cudaStreamWaitEvent");
}

void check_device_pointer(const void* data, size_t bytes, int device, const std::string& what) {
  if (bytes == 0) return;
  if (data == nullptr) throw Error(ErrorCode::invalid_argument, what + ": a NULL device pointer");
  cudaPointerAttributes attrs{};
  if (cudaError_t status = cudaPointerGetAttributes(&attrs, data); status != cudaSuccess) {
    (void)cudaGetLastError();  // not sticky, but keep the next check clean
    throw Error(ErrorCode::invalid_argument,
                what + ": not a CUDA pointer (" + cudaGetErrorString(status) + ")");
  }
  if (attrs.type != cudaMemoryTypeDevice && attrs.type != cudaMemoryTypeManaged) {
    throw Error(ErrorCode::invalid_argument,
                what + ": host memory where device memory is needed (use the host run for host tensors)");
  }
  if (attrs.device != device) {
    throw Error(ErrorCode::invalid_argument, what + ": memory of CUDA device " +
                                                 std::to_string(attrs.device) +
                                                 ", the engine runs on device " + std::to_string(device));
  }
}

bool cuda_graphs_enabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("KILN_CUDA_GRAPHS");
    return v == nullptr || std::strcmp(v, "0") != 0;
  }();
  return enabled;
}

CapturedGraph::~CapturedGraph() { reset(); }

void CapturedGraph::reset() {
  if (m_exec) cudaGraphExecDestroy(m_exec);
  m_exec = nullptr;
}

bool CapturedGraph::capture(cudaStream_t stream, void (*enqueue)(void*), void* context, std::string& why) {
  reset();
  // Thread-local mode: other threads of the process (another model's runs,
  // a cudaMalloc) are not disturbed by this capture.
  if (cudaError_t s = cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal); s != cudaSuccess) {
    why = std::string("cudaStreamBeginCapture: ") + cudaGetErrorString(s);
    (void)cudaGetLastError();
    return false;
  }
  std::string failed;
  try {
    enqueue(context);
  } catch (const std::exception& e) {
    failed = e.what();
  }
  cudaGraph_t graph = nullptr;
  const cudaError_t ended = cudaStreamEndCapture(stream, &graph);
  (void)cudaGetLastError();  // an invalidated capture leaves its error behind
  if (failed.empty() && ended != cudaSuccess) failed = std::string("capture: ") + cudaGetErrorString(ended);
  if (failed.empty() && graph == nullptr) failed = "capture produced no graph";
  if (failed.empty()) {
    if (cudaError_t s = cudaGraphInstantiate(&m_exec, graph, 0); s != cudaSuccess) {
      failed = std::string("cudaGraphInstantiate: ") + cudaGetErrorString(s);
      (void)cudaGetLastError();
      m_exec = nullptr;
    }
  }
  if (graph) cudaGraphDestroy(graph);
  why = failed;
  return failed.empty();
}

void CapturedGraph::launch(cudaStream_t stream) const {
  check(cudaGraphLaunch(m_exec, stream), "cudaGraphLaunch");
}

}  // namespace kiln::cuda
