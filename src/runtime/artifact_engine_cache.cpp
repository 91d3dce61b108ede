#include "runtime/artifact_engine_cache.hpp"

#include "format/envelope.hpp"
#include "util/log.hpp"

namespace kiln::runtime {

ArtifactEngineCache::ArtifactEngineCache(std::span<const std::vector<std::byte>> engines,
                                         std::shared_ptr<EngineCache> behind, const std::string& source)
    : m_behind(std::move(behind)), m_managed(dynamic_cast<cache::ManagedCache*>(m_behind.get())) {
  for (const auto& blob : engines) {
    auto opened = format::open(blob);
    if (auto* rejected = std::get_if<format::Rejection>(&opened)) {
      log::warn(source + ": an engine in the artifact is unusable (" + rejected->reason +
                "); it will be rebuilt");
      continue;
    }
    m_engines.emplace(std::get<format::OpenedBlob>(opened).header.key.hex(), blob);
  }
}

}  // namespace kiln::runtime
