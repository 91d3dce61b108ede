#include "backends/registry/backend_plugin_loader.hpp"

#include <dlfcn.h>

#include <algorithm>
#include <system_error>

#include "kiln/error.hpp"

namespace kiln {

namespace {

// Any object of this library: dladdr of its address names the file the
// dynamic loader mapped it from.
const char kAnchor = 0;

std::string dlerror_text() {
  const char* why = dlerror();
  return why ? why : "unknown dlopen error";
}

}  // namespace

std::vector<std::filesystem::path> backend_plugin_dirs(const std::filesystem::path& install_libdir) {
  std::vector<std::filesystem::path> dirs;
  Dl_info info{};
  if (dladdr(&kAnchor, &info) != 0 && info.dli_fname != nullptr && *info.dli_fname != '\0') {
    // The loader reports the name it opened the library by; a relative one
    // (a library dlopen'ed by a relative path) is taken from the current
    // folder, which is where the loader resolved it.
    std::error_code ec;
    const std::filesystem::path self = std::filesystem::absolute(info.dli_fname, ec);
    if (!ec) dirs.push_back(self.parent_path().lexically_normal());
  }
  if (!install_libdir.empty()) {
    const std::filesystem::path libdir = install_libdir.lexically_normal();
    if (std::find(dirs.begin(), dirs.end(), libdir) == dirs.end()) dirs.push_back(libdir);
  }
  return dirs;
}

BackendPlugin BackendPlugin::open(std::string_view backend, std::string_view library,
                                  std::span<const std::filesystem::path> dirs) {
  const std::string what =
      "backend '" + std::string(backend) + "': cannot load its plugin " + std::string(library);
  std::string tried;
  for (const std::filesystem::path& dir : dirs) {
    const std::filesystem::path path = dir / library;
    // RTLD_NOW: a missing symbol or library is this error, not a crash at the
    // first call. RTLD_LOCAL: nothing else resolves against the plugin.
    void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
      std::string why = dlerror_text();
      std::error_code ec;
      if (std::filesystem::exists(path, ec)) {
        // dlerror names the path only when the plugin itself is at fault (not
        // an ELF file), not when a library it needs is missing: say it once.
        const std::string prefix = path.string() + ": ";
        if (why.rfind(prefix, 0) == 0) why.erase(0, prefix.size());
        throw Error(ErrorCode::unsupported, what + ": " + path.string() + ": " + why);
      }
      tried += (tried.empty() ? "" : "; ") + why;
      continue;
    }
    // A plugin's handle is never closed: engines, CUDA's runtime state and
    // static objects of the plugin live as long as the process.
    dlerror();  // clears any earlier error, so a null symbol is told apart from a failure
    void* entry = dlsym(handle, kBackendPluginEntry);
    if (entry == nullptr) {
      // Not a plugin: let it go again (for a library already loaded for
      // another reason, this only drops the count dlopen added).
      const std::string why = dlerror_text();
      dlclose(handle);
      throw Error(ErrorCode::unsupported,
                  what + ": " + path.string() + " has no " + kBackendPluginEntry + " (" + why + ")");
    }
    return BackendPlugin(path, reinterpret_cast<Entry>(entry));
  }
  if (tried.empty()) tried = "no folder to look in";
  throw Error(ErrorCode::unsupported, what + ": " + tried);
}

std::unique_ptr<Backend> BackendPlugin::make() const { return std::unique_ptr<Backend>(m_entry()); }

}  // namespace kiln
