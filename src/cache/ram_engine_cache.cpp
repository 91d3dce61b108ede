#include "cache/ram_engine_cache.hpp"

#include "format/header_peek.hpp"
#include "util/log.hpp"

namespace kiln::cache {

void RamEngineCache::put(const std::string& key, std::span<const std::byte> blob) {
  std::lock_guard lock(m_mutex);
  if (blob.size() > m_max_bytes) {
    ++m_stats.refused_too_large;
    log::warn("RAM engine cache: not caching a " + std::to_string(blob.size()) +
              "-byte engine, larger than the cache's cap of " + std::to_string(m_max_bytes) + " bytes");
    return;
  }
  if (auto found = m_index.find(key); found != m_index.end()) {
    m_stats.bytes -= found->second->blob.size();
    --m_stats.entries;
    m_lru.erase(found->second);
    m_index.erase(found);
  }
  m_lru.push_front(Entry{key, std::vector<std::byte>(blob.begin(), blob.end())});
  m_index.emplace(key, m_lru.begin());
  m_stats.bytes += blob.size();
  ++m_stats.entries;
  ++m_stats.saves;
  while (m_stats.bytes > m_max_bytes) {
    // The new entry is at the front and fits on its own: it is never evicted.
    const Entry& oldest = m_lru.back();
    m_stats.bytes -= oldest.blob.size();
    --m_stats.entries;
    ++m_stats.evictions;
    m_index.erase(oldest.key);
    m_lru.pop_back();
  }
}

Fetched RamEngineCache::get(const std::string& key) {
  std::lock_guard lock(m_mutex);
  auto found = m_index.find(key);
  if (found == m_index.end()) return Fetched::miss(Status::absent);
  m_lru.splice(m_lru.begin(), m_lru, found->second);
  return Fetched::found(found->second->blob);
}

void RamEngineCache::record_outcome(const std::string&, const Fetched&, Outcome outcome,
                                    uint64_t build_ms_saved) {
  std::lock_guard lock(m_mutex);
  if (outcome == Outcome::usable) {
    ++m_stats.hits;
    m_stats.build_ms_saved += build_ms_saved;
  } else {
    ++m_stats.misses;
  }
}

bool RamEngineCache::remove(const std::string& key) {
  std::lock_guard lock(m_mutex);
  auto found = m_index.find(key);
  if (found == m_index.end()) return false;
  m_stats.bytes -= found->second->blob.size();
  --m_stats.entries;
  m_lru.erase(found->second);
  m_index.erase(found);
  return true;
}

std::optional<EntryHeaders> RamEngineCache::entry_headers(size_t max_entries) {
  std::lock_guard lock(m_mutex);
  EntryHeaders found;
  found.entries = m_lru.size();
  for (auto it = m_lru.begin(); it != m_lru.end() && found.headers.size() < max_entries; ++it) {
    if (auto header = format::peek_header(it->blob)) found.headers.push_back(*header);
  }
  return found;
}

CacheStats RamEngineCache::stats() const {
  std::lock_guard lock(m_mutex);
  return m_stats;
}

}  // namespace kiln::cache

namespace kiln {

std::shared_ptr<EngineCache> make_ram_engine_cache(uint64_t max_bytes) {
  return std::make_shared<cache::RamEngineCache>(max_bytes);
}

}  // namespace kiln
