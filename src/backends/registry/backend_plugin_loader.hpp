// Opens an engine backend built as a plugin (backends/backend_plugin.hpp) and
// makes backends from it. The registry opens each plugin the first time its
// backend is asked for, so its libraries are loaded only by processes that
// use it.
//
// Thread-safe: a BackendPlugin is immutable once open.
#pragma once

#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "backends/backend.hpp"
#include "backends/backend_plugin.hpp"

namespace kiln {

// The folders a plugin is looked for in, in order: the one holding the
// library that has this code (kiln's libraries stay together in the build
// tree's src/, an install's lib/, the Python package and the GPU archive's
// lib/, so a plugin is found wherever the kiln that asks for it is), then
// `install_libdir` (this build's configured install lib folder) when it is
// another folder.
std::vector<std::filesystem::path> backend_plugin_dirs(const std::filesystem::path& install_libdir);

class BackendPlugin {
 public:
  // Opens `library` (a file name) from the first of `dirs` where dlopen
  // succeeds. A file that exists but fails to load (a library it needs, such
  // as cuDNN, is missing; not an ELF file) stops the search: that is the
  // reason to report, not a later folder's absence. Throws
  // kiln::Error(unsupported) naming the backend, the library and each path
  // tried with dlerror()'s reason, or when it lacks kBackendPluginEntry.
  // The library stays loaded for the life of the process.
  static BackendPlugin open(std::string_view backend, std::string_view library,
                            std::span<const std::filesystem::path> dirs);

  // A new backend from the plugin's entry point; throws what it throws
  // (kiln::Error(unsupported) for a backend that cannot run on this machine).
  std::unique_ptr<Backend> make() const;

  // The file that was loaded.
  const std::filesystem::path& path() const { return m_path; }

 private:
  using Entry = decltype(&::kiln_backend_plugin_create);
  BackendPlugin(std::filesystem::path path, Entry entry) : m_path(std::move(path)), m_entry(entry) {}

  std::filesystem::path m_path;
  Entry m_entry;
};

}  // namespace kiln
