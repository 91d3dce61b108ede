// ArtifactEngineCache: the engines of an AOT artifact (.kiln file), by key,
// in front of the configured store (if any): lookups look in the artifact
// first; saves (rebuilt engines) go behind it.
//
// Trust: the artifact is a file the user chose to load, like the model it
// embeds, so its engines are served without the signing secret that guards
// shared stores (docs/fleet-cache.md, "Signing and AOT artifacts"). They are
// still checked: an engine whose envelope does not open (checksum, key) is
// left out with a warning and rebuilt through the store behind, which signs
// the rebuilt engine when a secret is configured. This store therefore sits
// outside any signing layer, never inside one.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "cache/store.hpp"

namespace kiln::cache {

class ArtifactEngineCache final : public CompositeStore {
 public:
  // Engines whose envelope does not open are left out with a warning naming
  // `source`: they are rebuilt through `behind` (may be null: no store).
  ArtifactEngineCache(std::span<const std::vector<std::byte>> engines, std::shared_ptr<Store> behind,
                      const std::string& source);

  std::string name() const override { return "artifact " + m_source; }
  Fetched get(const std::string& key) override;
  // Takes the engine out of the artifact's set (for this process) and
  // quarantines the key behind.
  bool quarantine(const std::string& key, const std::string& reason) override;
  std::optional<EntryHeaders> entry_headers(size_t max_entries) override;

  size_t engines() const;

 private:
  std::string m_source;
  mutable std::mutex m_mutex;
  std::map<std::string, std::vector<std::byte>> m_engines;  // guarded by m_mutex
};

}  // namespace kiln::cache
