#include "backends/registry/backend_registry.hpp"

#include "backends/cpu/cpu_backend.hpp"
#ifdef KILN_HAS_CUDA
#include "backends/registry/backend_plugin_loader.hpp"
#endif
#include "kiln/error.hpp"

namespace kiln {

namespace {

#ifdef KILN_HAS_CUDA
// The cuda backend is a plugin (backends/backend_plugin.hpp says why): it is
// opened here, once, the first time it is asked for. A failed open is not
// remembered, so the next request says the same thing again.
const BackendPlugin& cuda_plugin() {
  static const BackendPlugin plugin =
      BackendPlugin::open("cuda", KILN_CUDA_BACKEND_PLUGIN, backend_plugin_dirs(KILN_INSTALL_LIBDIR));
  return plugin;
}
#endif

}  // namespace

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
  if (name == "cuda") return cuda_plugin().make();
#endif
  std::string built;
  for (const std::string& b : backend_names()) built += (built.empty() ? "" : ", ") + b;
  std::string why = "unknown backend '" + std::string(name) + "' (this kiln has: " + built + ")";
  if (name == "cuda")
    why = "backend 'cuda': this kiln was built without it (KILN_WITH_CUDA; it has: " + built + ")";
  throw Error(ErrorCode::invalid_argument, why);
}

}  // namespace kiln
