#include "backends/registry/backend_registry.hpp"

#include "backends/cpu/cpu_backend.hpp"
#ifdef KILN_HAS_CUDA
#include "backends/cuda/cuda_backend.hpp"
#endif
#include "kiln/error.hpp"

namespace kiln {

std::vector<std::string> backend_names() {
#ifdef KILN_HAS_CUDA
  return {"cpu", "cuda"};
#else
  return {"cpu"};
#endif
}

std::unique_ptr<Backend> make_backend(std::string_view name) {
  if (name == "cpu") return make_cpu_backend();
#ifdef KILN_HAS_CUDA
  if (name == "cuda") return make_cuda_backend();
#endif
  std::string built;
  for (const std::string& b : backend_names()) built += (built.empty() ? "" : ", ") + b;
  std::string why = "unknown backend '" + std::string(name) + "' (this kiln has: " + built + ")";
  if (name == "cuda")
    why = "backend 'cuda': this kiln was built without it (KILN_WITH_CUDA; it has: " + built + ")";
  throw Error(ErrorCode::invalid_argument, why);
}

}  // namespace kiln
