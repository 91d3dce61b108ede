#include "cache/artifact_engine_cache.hpp"

#include <variant>

#include "format/envelope.hpp"
#include "format/header_peek.hpp"
#include "util/log.hpp"

namespace kiln::cache {

namespace {

std::vector<std::shared_ptr<Store>> behind_of(std::shared_ptr<Store> behind) {
  if (!behind) return {};
  return {std::move(behind)};
}

}  // namespace

ArtifactEngineCache::ArtifactEngineCache(std::span<const std::vector<std::byte>> engines,
                                         std::shared_ptr<Store> behind, const std::string& source)
    : CompositeStore(behind_of(std::move(behind))), m_source(source) {
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

size_t ArtifactEngineCache::engines() const {
  std::lock_guard lock(m_mutex);
  return m_engines.size();
}

Fetched ArtifactEngineCache::get(const std::string& key) {
  {
    std::lock_guard lock(m_mutex);
    if (auto it = m_engines.find(key); it != m_engines.end()) return Fetched::found(it->second);
  }
  // Not ours: the lookup is the store behind's (asked[0]), or a plain miss.
  if (kids().empty()) return Fetched::miss(Status::absent);
  Fetched behind = kids().front()->get(key);
  Fetched result;
  result.status = behind.status;
  result.reason = behind.reason;
  result.blob = std::move(behind.blob);
  behind.blob.clear();
  result.asked.push_back(std::move(behind));
  return result;
}

bool ArtifactEngineCache::quarantine(const std::string& key, const std::string& reason) {
  bool in_artifact = false;
  {
    std::lock_guard lock(m_mutex);
    in_artifact = m_engines.erase(key) > 0;
  }
  return CompositeStore::quarantine(key, reason) || in_artifact;
}

std::optional<EntryHeaders> ArtifactEngineCache::entry_headers(size_t max_entries) {
  std::lock_guard lock(m_mutex);
  EntryHeaders found;
  found.entries = m_engines.size();
  for (const auto& [key, blob] : m_engines) {
    if (found.headers.size() >= max_entries) break;
    if (auto header = format::peek_header(blob)) found.headers.push_back(*header);
  }
  return found;
}

}  // namespace kiln::cache
