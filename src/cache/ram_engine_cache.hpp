// RamEngineCache: an in-process engine cache, least recently used first out,
// bounded by the bytes it holds (leveldb::Cache's charge, with the blob size
// as the charge). A blob larger than the cap is refused with a warning; saving
// a key again replaces its blob and its charge; a hit makes the entry the
// most recently used.
//
// load() copies the blob out, so nothing a caller holds is ever freed under
// it. Thread-safety: every method may be called from several threads at once
// (one mutex; the cache is small and its operations are copies).
#pragma once

#include <cstdint>
#include <list>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "kiln/engine_cache.hpp"

namespace kiln::cache {

class RamEngineCache final : public EngineCache {
 public:
  explicit RamEngineCache(uint64_t max_bytes) : m_max_bytes(max_bytes) {}

  void save(const std::string& key, std::span<const std::byte> blob) override;
  std::optional<std::vector<std::byte>> load(const std::string& key) override;

  // hits, misses, saves, evictions, refused_too_large, entries and bytes.
  CacheStats stats() const;

 private:
  struct Entry {
    std::string key;
    std::vector<std::byte> blob;
  };
  using Lru = std::list<Entry>;  // most recently used first

  uint64_t m_max_bytes;
  mutable std::mutex m_mutex;
  Lru m_lru;                                               // guarded by m_mutex
  std::unordered_map<std::string, Lru::iterator> m_index;  // guarded by m_mutex
  CacheStats m_stats;                                      // guarded by m_mutex
};

}  // namespace kiln::cache
