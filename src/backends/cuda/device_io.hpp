// The CUDA pieces of a cuda engine's device I/O (CudaEngine::run_device):
// events that join the engine's stream to a caller's, the check that a
// caller's pointer is device memory of the engine's GPU, and a captured
// CUDA graph of one instance's layer launches.
//
// Why the engine joins streams instead of launching on the caller's: its
// cuDNN and cuBLASLt handles are bound to its own stream once, its CUDA
// graphs are captured on it, and its arenas are reused run after run,
// which is safe because every run's work goes on that one stream in order.
// Two event records and two waits per run cost microseconds and no host
// synchronisation.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <string>

namespace kiln::cuda {

// One CUDA event without timing (the cheapest kind to record and wait on).
class Event {
 public:
  Event();
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  ~Event();

  cudaEvent_t get() const { return m_event; }

 private:
  cudaEvent_t m_event = nullptr;
};

// Makes `device` current on this thread for its lifetime, restoring the
// previous one after: a caller's thread may have another device current.
class ScopedDevice {
 public:
  explicit ScopedDevice(int device);
  ScopedDevice(const ScopedDevice&) = delete;
  ScopedDevice& operator=(const ScopedDevice&) = delete;
  ~ScopedDevice();

 private:
  int m_previous = -1;
};

// `stream` waits, on the GPU, for the work enqueued on `on` so far.
void stream_wait(cudaStream_t stream, cudaStream_t on, const Event& event);

// Throws kiln::Error(invalid_argument) naming `what` unless `data` is
// device (or managed) memory of `device` (or `bytes` is 0). A host pointer
// given as a device one would otherwise be an illegal address inside a
// kernel, reported at some later synchronisation.
void check_device_pointer(const void* data, size_t bytes, int device, const std::string& what);

// Whether device runs replay CUDA graphs: on, unless the environment sets
// KILN_CUDA_GRAPHS=0 (read once per process).
bool cuda_graphs_enabled();

// An instantiated CUDA graph of one instance's launches. Empty until
// capture() succeeds.
class CapturedGraph {
 public:
  CapturedGraph() = default;
  CapturedGraph(const CapturedGraph&) = delete;
  CapturedGraph& operator=(const CapturedGraph&) = delete;
  ~CapturedGraph();

  // Captures what `enqueue(context)` launches on `stream` (nothing runs)
  // and instantiates it. Returns false, leaving the graph empty and the
  // stream usable, when a launch cannot be captured or instantiation
  // fails; `why` then says why. Exceptions from `enqueue` are caught the
  // same way: a failed capture is never an error of the run.
  bool capture(cudaStream_t stream, void (*enqueue)(void*), void* context, std::string& why);
  // Launches the graph on `stream`. REQUIRES: captured().
  void launch(cudaStream_t stream) const;
  bool captured() const { return m_exec != nullptr; }
  void reset();

 private:
  cudaGraphExec_t m_exec = nullptr;
};

}  // namespace kiln::cuda
