#include "runtime/miss_explainer.hpp"

#include <cstring>
#include <fstream>

#include "backends/cpu/cpu_backend.hpp"
#include "cache/disk_engine_cache.hpp"
#include "cache/miss_explainer.hpp"
#include "cache/open.hpp"
#include "format/envelope.hpp"
#include "passes/passes.hpp"
#include "runtime/compiled_model.hpp"

namespace kiln::runtime {

Explanation explain_compile(const ir::Graph& graph, std::span<const InputSpec> specs,
                            const CompileSettings& settings) {
  auto backend = make_cpu_backend();
  ir::Graph lowered = passes::lower(graph);
  key::EngineKey key = key::compute_engine_key(lowered, specs, settings, backend->fingerprint());
  Explanation e;
  e.key = key.hex();
  e.parts = key.parts;
  cache::DiskEngineCache cache(cache::cache_dir(settings), settings.engine_cache_size);
  auto path = cache.layout().entry_path(e.key);
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    e.detail = cache::explain_miss(cache, key);
    return e;
  }
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), {});
  std::vector<std::byte> blob(bytes.size());
  std::memcpy(blob.data(), bytes.data(), bytes.size());
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
