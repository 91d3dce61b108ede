// The engine backends this build of kiln has, by name: "cpu" (oneDNN) and,
// when built with KILN_WITH_CUDA, "cuda" (cuDNN and cuBLASLt). The compile
// setting `backend` names one; the reference interpreter ("ref") is not an
// engine backend and is chosen by the CLI and the C API before compiling.
//
// "cuda" is a plugin, libkiln_backend_cuda.so, opened with dlopen on the
// first make_backend("cuda") (backends/backend_plugin.hpp says why): until
// then neither it nor cuDNN and cuBLASLt are loaded. It is looked for beside
// the library holding the registry, then in the configured install lib
// folder (backend_plugin_loader.hpp).
//
// Thread-safe.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "backends/backend.hpp"

namespace kiln {

// The built backends, in a fixed order ("cpu" first).
std::vector<std::string> backend_names();

// Throws kiln::Error(invalid_argument) for a name this build lacks, listing
// the built ones, and kiln::Error(unsupported) for a built backend that cannot
// run on this machine (cuda without a usable GPU), with the reason, or whose
// plugin cannot be loaded, naming the library and dlerror()'s reason.
std::unique_ptr<Backend> make_backend(std::string_view name);

}  // namespace kiln
