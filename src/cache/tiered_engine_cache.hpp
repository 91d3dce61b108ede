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
//   side, with how many lookups each tier served and backfilled. A
//   compile's outcome goes to the tier that served it; the tiers above it
//   count a miss, the tiers below were not asked (Fetched::asked says which).
//
// Thread-safety: every method may be called from several threads at once if
// the tiers allow it (all of kiln's do).
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "cache/store.hpp"

namespace kiln::cache {

struct CacheTier {
  std::string name;  // "ram", "disk", "redis://host:6379/0 (prefix kiln)"
  std::shared_ptr<Store> cache;
};

class TieredEngineCache final : public CompositeStore {
 public:
  // Throws kiln::Error(invalid_argument) when `tiers` is empty.
  explicit TieredEngineCache(std::vector<CacheTier> tiers);

  std::string name() const override;
  Fetched get(const std::string& key) override;
  // Writes through to every tier; a tier that throws is warned about once.
  // Leases, quarantine, degraded() (every tier drops saves) and outcomes
  // are CompositeStore's.

  const std::vector<CacheTier>& tiers() const { return m_tiers; }
  std::vector<TierReport> tier_stats() override;

 private:
  struct TierCounts {
    uint64_t served = 0;
    uint64_t backfilled = 0;
    uint64_t rejected = 0;
  };
  Fetched get_from(size_t tier, const std::string& key);

  std::vector<CacheTier> m_tiers;
  mutable std::mutex m_mutex;
  std::vector<TierCounts> m_counts;  // guarded by m_mutex
};

}  // namespace kiln::cache
