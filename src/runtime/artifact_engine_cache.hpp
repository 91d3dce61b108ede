// The engine cache an AOT artifact's engines form when it is loaded.
#pragma once

#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "cache/managed_cache.hpp"

namespace kiln::runtime {

// The artifact's engines, by key, in front of the configured cache (if any):
// loads look in the artifact first; saves (rebuilt engines) go behind it.
class ArtifactEngineCache final : public cache::ManagedCache {
 public:
  // Engines whose envelope does not open are left out with a warning naming
  // `source`: they are rebuilt through `behind`.
  ArtifactEngineCache(std::span<const std::vector<std::byte>> engines, std::shared_ptr<EngineCache> behind,
                      const std::string& source);

  void save(const std::string& key, std::span<const std::byte> blob) override {
    if (m_behind) m_behind->save(key, blob);
  }
  std::optional<std::vector<std::byte>> load(const std::string& key) override {
    if (auto it = m_engines.find(key); it != m_engines.end()) return it->second;
    return m_behind ? m_behind->load(key) : std::nullopt;
  }
  std::optional<std::vector<std::byte>> fetch(const std::string& key) override {
    if (auto it = m_engines.find(key); it != m_engines.end()) return it->second;
    if (m_managed) return m_managed->fetch(key);
    return m_behind ? m_behind->load(key) : std::nullopt;
  }
  std::unique_ptr<cache::BuildLease> acquire_build_lease(const std::string& key) override {
    return m_managed ? m_managed->acquire_build_lease(key) : nullptr;
  }
  bool quarantine(const std::string& key, const std::string& reason) override {
    bool in_artifact = m_engines.erase(key) > 0;
    return (m_managed && m_managed->quarantine(key, reason)) || in_artifact;
  }
  bool degraded() const override { return m_managed && m_managed->degraded(); }
  void record_outcome(const std::string& key, Outcome outcome, uint64_t build_ms_saved) override {
    if (m_managed && !m_engines.contains(key)) m_managed->record_outcome(key, outcome, build_ms_saved);
  }

 private:
  std::map<std::string, std::vector<std::byte>> m_engines;
  std::shared_ptr<EngineCache> m_behind;
  cache::ManagedCache* m_managed;
};

}  // namespace kiln::runtime
