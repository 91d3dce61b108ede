#include "runtime/cache_selection.hpp"

#include "cache/disk_engine_cache.hpp"
#include "runtime/compiled_model.hpp"

namespace kiln::runtime {

std::shared_ptr<EngineCache> open_engine_cache(const CompileSettings& settings) {
  if (settings.custom_engine_cache) return settings.custom_engine_cache;
  auto dir = settings.engine_cache_dir.empty() ? default_engine_cache_dir() : settings.engine_cache_dir;
  return std::make_shared<cache::DiskEngineCache>(dir, settings.engine_cache_size);
}

}  // namespace kiln::runtime
