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

#include "cache/store.hpp"

namespace kiln::cache {

class RamEngineCache final : public Store {
 public:
  explicit RamEngineCache(uint64_t max_bytes) : m_max_bytes(max_bytes) {}

  std::string name() const override { return "ram"; }
  void put(const std::string& key, std::span<const std::byte> blob) override;
  // A hit makes the entry the most recently used; counts nothing.
  Fetched get(const std::string& key) override;
  // Counts a hit (and the build time it saved) or a miss.
  void record_outcome(const std::string& key, const Fetched& lookup, Outcome outcome,
                      uint64_t build_ms_saved) override;
  bool remove(const std::string& key) override;

  // hits, misses, saves, evictions, refused_too_large, entries and bytes.
  CacheStats stats() const;
  std::optional<CacheStats> counters() override { return stats(); }
  std::optional<EntryHeaders> entry_headers(size_t max_entries) override;

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
