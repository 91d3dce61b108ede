// The cuda backend's plugin entry point: the backend registry opens this
// library with dlopen the first time "cuda" is asked for and calls it
// (backends/backend_plugin.hpp says why the backend is a plugin).
#include "backends/backend_plugin.hpp"
#include "backends/cuda/cuda_backend.hpp"

extern "C" __attribute__((visibility("default"))) kiln::Backend* kiln_backend_plugin_create() {
  return kiln::make_cuda_backend().release();
}
