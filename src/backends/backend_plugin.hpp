// The contract between the backend registry and an engine backend built as a
// plugin: a shared library the registry opens with dlopen the first time its
// backend is asked for, rather than a link dependency of every kiln program.
// The cuda backend is one because its libraries are expensive to merely load
// (cuBLASLt's and cuDNN's loading and static initialisation are most of a
// CPU-only process's start-up time and memory), and a process that never asks
// for the GPU should not pay for them.
//
// A plugin defines kiln_backend_plugin_create() (this declaration, so the
// compiler checks the definition's signature) and exports it; the registry
// finds it by name with dlsym.
#pragma once

namespace kiln {
class Backend;
}  // namespace kiln

// Returns a new backend that the caller owns (delete through Backend's
// virtual destructor), or throws kiln::Error (unsupported: no usable device,
// with the reason). A C++ exception may cross this C-linkage boundary: the
// registry and its plugins are built from one tree by one compiler and share
// kiln::Error's type through libkiln_util.
extern "C" kiln::Backend* kiln_backend_plugin_create();

namespace kiln {

// The symbol every backend plugin exports.
inline constexpr const char* kBackendPluginEntry = "kiln_backend_plugin_create";

}  // namespace kiln
