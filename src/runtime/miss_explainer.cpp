#include "runtime/miss_explainer.hpp"

#include <cstring>
#include <fstream>

#include "backends/registry/backend_registry.hpp"
#include "cache/disk_engine_cache.hpp"
#include "cache/miss_explainer.hpp"
#include "cache/open.hpp"
#include "format/envelope.hpp"
#include "passes/passes.hpp"
#include "runtime/compiled_model.hpp"

namespace kiln::runtime {

Explanation explain_compile(const ir::Graph& graph, std::span<const InputSpec> specs,
                            const CompileSettings& settings) {
  auto backend = make_backend(settings.backend);
  ir::Graph lowered = passes::lower(graph);
  key::EngineKey key = key::compute_engine_key(lowered, specs, settings, backend->fingerprint());
  Explanation e;
  e.key = key.hex();
  e.parts = key.parts;
  cache::DiskEngineCache cache(cache::cache_dir(settings), settings.engine_cache_size);
  auto path = cache.layout().entry_path(e.key);
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    // Not on disk: compare with the entries of every tier the settings name
    // (RAM, Redis), as a compile's miss report does.
    std::shared_ptr<cache::Store> tiers = cache::open(settings);
    e.detail = cache::explain_miss(tiers ? *tiers : static_cast<cache::Store&>(cache), key);
    return e;
  }
  // Through CacheFs: a FIFO, folder, symlink or huge file at the entry's
  // path is reported, never blocked on, followed or read whole.
  std::vector<std::byte> blob;
  if (auto status = cache::posix_cache_fs()->read_file(path, blob); !status.ok()) {
    e.detail =
        "entry present but unusable (" + status.message + "): a compile would move it aside and rebuild";
    return e;
  }
  auto opened = format::open(std::span<const std::byte>(blob), key);
  if (auto* rejected = std::get_if<format::Rejection>(&opened)) {
    e.detail = "entry present but unusable (" + rejected->reason + "): a compile would rebuild it";
  } else if (std::get<format::OpenedBlob>(opened).header.fingerprint != backend->fingerprint().to_string()) {
    e.detail = "entry present but built by " + std::get<format::OpenedBlob>(opened).header.fingerprint;
  } else {
    e.would_hit = true;
    e.detail = "entry present and valid (" + std::to_string(blob.size()) + " bytes)";
  }
  return e;
}

}  // namespace kiln::runtime
