// TieredEngineCache: an ordered list of caches, fastest first (for example
// RAM → disk → Redis), used as one.
//
// - Lookup goes down the tiers; the first tier holding a good entry serves
//   it, and the entry is copied into every tier above (backfill), so the
//   next lookup is served by the fastest tier. "Good" means its envelope
//   opens and names the key: a corrupt lower-tier entry is quarantined in
//   its tier and never copied up, and the lookup goes on down. (Tiers hold
//   kiln blobs; this is the cache layer's envelope check, not plan parsing.)
// - Saves write through to every tier.
// - Build leases are taken in every managed tier, top to bottom (one order,
//   so two processes never wait on each other crosswise): the disk flock
//   serialises a host's processes, the Redis lease the fleet's hosts.
// - Each tier keeps its own counters; tier_stats() reports them side by
//   side, with how many lookups each tier served and backfilled.
//
// Thread-safety: every method may be called from several threads at once if
// the tiers allow it (all of kiln's do).
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "cache/managed_cache.hpp"

namespace kiln::cache {

struct CacheTier {
  std::string name;  // "ram", "disk", "redis://host:6379/0 (prefix kiln)"
  std::shared_ptr<EngineCache> cache;
};

struct TierReport {
  std::string name;
  std::optional<CacheStats> stats;  // the tier's own counters, when it keeps any
  uint64_t served = 0;              // lookups this tier answered (in this process)
  uint64_t backfilled = 0;          // entries copied into it from a lower tier
  uint64_t rejected = 0;            // entries it held that failed the envelope check
};

class TieredEngineCache final : public ManagedCache {
 public:
  // Throws kiln::Error(invalid_argument) when `tiers` is empty.
  explicit TieredEngineCache(std::vector<CacheTier> tiers);

  void save(const std::string& key, std::span<const std::byte> blob) override;
  std::optional<std::vector<std::byte>> load(const std::string& key) override;
  std::optional<std::vector<std::byte>> fetch(const std::string& key) override;
  void record_outcome(const std::string& key, Outcome outcome, uint64_t build_ms_saved) override;
  std::unique_ptr<BuildLease> acquire_build_lease(const std::string& key) override;
  bool quarantine(const std::string& key, const std::string& reason) override;
  // Every tier drops saves.
  bool degraded() const override;

  const std::vector<CacheTier>& tiers() const { return m_tiers; }
  std::vector<TierReport> tier_stats() const;

 private:
  struct TierCounts {
    uint64_t served = 0;
    uint64_t backfilled = 0;
    uint64_t rejected = 0;
  };
  std::optional<std::vector<std::byte>> fetch_from(size_t tier, const std::string& key);

  std::vector<CacheTier> m_tiers;
  mutable std::mutex m_mutex;
  std::vector<TierCounts> m_counts;           // guarded by m_mutex
  std::map<std::string, size_t> m_served_by;  // key → tier of the last fetch; guarded by m_mutex
};

// A cache's own counters, for kiln's cache types (disk: persisted counters
// and a scan; RAM; Redis: the fleet's counters; signing: its inner cache's,
// plus its refusals). Nullopt for a user cache or an unreachable Redis.
std::optional<CacheStats> stats_of(EngineCache& cache);

}  // namespace kiln::cache
