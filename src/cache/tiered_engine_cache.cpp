#include "cache/tiered_engine_cache.hpp"

#include <variant>

#include "cache/disk_engine_cache.hpp"
#include "cache/ram_engine_cache.hpp"
#include "cache/redis_engine_cache.hpp"
#include "cache/signing_engine_cache.hpp"
#include "format/envelope.hpp"
#include "kiln/error.hpp"
#include "util/log.hpp"

namespace kiln::cache {

namespace {

// Leases of several tiers, released bottom tier first.
class TieredLease final : public BuildLease {
 public:
  explicit TieredLease(std::vector<std::unique_ptr<BuildLease>> leases) : m_leases(std::move(leases)) {}
  ~TieredLease() override {
    while (!m_leases.empty()) m_leases.pop_back();
  }
  TieredLease(const TieredLease&) = delete;
  TieredLease& operator=(const TieredLease&) = delete;

 private:
  std::vector<std::unique_ptr<BuildLease>> m_leases;
};

// Why `blob` cannot be served for `key`, or empty.
std::string envelope_problem(std::span<const std::byte> blob, const std::string& key) {
  auto opened = format::open(blob);
  if (auto* rejected = std::get_if<format::Rejection>(&opened)) return rejected->reason;
  if (std::get<format::OpenedBlob>(opened).header.key.hex() != key) return "key mismatch";
  return {};
}

}  // namespace

TieredEngineCache::TieredEngineCache(std::vector<CacheTier> tiers)
    : m_tiers(std::move(tiers)), m_counts(m_tiers.size()) {
  if (m_tiers.empty())
    throw Error(ErrorCode::invalid_argument, "a tiered engine cache needs at least one tier");
  for (const auto& tier : m_tiers) {
    if (!tier.cache)
      throw Error(ErrorCode::invalid_argument, "engine cache tier '" + tier.name + "' is null");
  }
}

std::optional<std::vector<std::byte>> TieredEngineCache::fetch_from(size_t tier, const std::string& key) {
  EngineCache& cache = *m_tiers[tier].cache;
  try {
    if (auto* managed = dynamic_cast<ManagedCache*>(&cache)) return managed->fetch(key);
    return cache.load(key);
  } catch (const std::exception& e) {
    // A user tier must not throw, but if it does, it is only a miss there.
    log::warn_once("tier-load:" + m_tiers[tier].name, "engine cache tier " + m_tiers[tier].name +
                                                          ": load failed, treated as a miss: " + e.what());
    return std::nullopt;
  }
}

std::optional<std::vector<std::byte>> TieredEngineCache::fetch(const std::string& key) {
  for (size_t i = 0; i < m_tiers.size(); ++i) {
    auto blob = fetch_from(i, key);
    if (!blob) continue;
    if (std::string problem = envelope_problem(*blob, key); !problem.empty()) {
      log::warn("engine cache tier " + m_tiers[i].name + ": entry " + key.substr(0, 16) + " is unusable (" +
                problem + "); trying the next tier");
      if (auto* managed = dynamic_cast<ManagedCache*>(m_tiers[i].cache.get()))
        managed->quarantine(key, problem);
      std::lock_guard lock(m_mutex);
      ++m_counts[i].rejected;
      continue;
    }
    for (size_t above = 0; above < i; ++above) {
      try {
        m_tiers[above].cache->save(key, *blob);
      } catch (const std::exception& e) {
        log::warn_once("tier-save:" + m_tiers[above].name,
                       "engine cache tier " + m_tiers[above].name + ": backfill failed: " + e.what());
        continue;
      }
      std::lock_guard lock(m_mutex);
      ++m_counts[above].backfilled;
    }
    std::lock_guard lock(m_mutex);
    ++m_counts[i].served;
    m_served_by[key] = i;
    return blob;
  }
  std::lock_guard lock(m_mutex);
  m_served_by.erase(key);
  return std::nullopt;
}

std::optional<std::vector<std::byte>> TieredEngineCache::load(const std::string& key) {
  auto blob = fetch(key);
  record_outcome(key, blob ? Outcome::usable : Outcome::absent, 0);
  return blob;
}

void TieredEngineCache::record_outcome(const std::string& key, Outcome outcome, uint64_t build_ms_saved) {
  size_t served_by = m_tiers.size();  // none
  {
    std::lock_guard lock(m_mutex);
    if (auto found = m_served_by.find(key); found != m_served_by.end()) {
      served_by = found->second;
      m_served_by.erase(found);
    }
  }
  // Tiers above the one that answered missed; the one that answered gets
  // the outcome; tiers below were not asked.
  for (size_t i = 0; i < m_tiers.size() && i <= served_by; ++i) {
    auto* managed = dynamic_cast<ManagedCache*>(m_tiers[i].cache.get());
    if (!managed) continue;
    if (i == served_by)
      managed->record_outcome(key, outcome, build_ms_saved);
    else
      managed->record_outcome(key, Outcome::absent, 0);
  }
}

void TieredEngineCache::save(const std::string& key, std::span<const std::byte> blob) {
  for (const auto& tier : m_tiers) {
    try {
      tier.cache->save(key, blob);
    } catch (const std::exception& e) {
      log::warn_once("tier-save:" + tier.name,
                     "engine cache tier " + tier.name + ": save failed: " + e.what());
    }
  }
}

std::unique_ptr<BuildLease> TieredEngineCache::acquire_build_lease(const std::string& key) {
  std::vector<std::unique_ptr<BuildLease>> leases;
  for (const auto& tier : m_tiers) {
    if (auto* managed = dynamic_cast<ManagedCache*>(tier.cache.get())) {
      if (auto lease = managed->acquire_build_lease(key)) leases.push_back(std::move(lease));
    }
  }
  if (leases.empty()) return nullptr;
  return std::make_unique<TieredLease>(std::move(leases));
}

bool TieredEngineCache::quarantine(const std::string& key, const std::string& reason) {
  bool any = false;
  for (const auto& tier : m_tiers) {
    if (auto* managed = dynamic_cast<ManagedCache*>(tier.cache.get()))
      any = managed->quarantine(key, reason) || any;
  }
  return any;
}

bool TieredEngineCache::degraded() const {
  for (const auto& tier : m_tiers) {
    auto* managed = dynamic_cast<ManagedCache*>(tier.cache.get());
    if (!managed || !managed->degraded()) return false;
  }
  return true;
}

std::vector<TierReport> TieredEngineCache::tier_stats() const {
  std::vector<TierReport> reports;
  for (size_t i = 0; i < m_tiers.size(); ++i) {
    TierReport r;
    r.name = m_tiers[i].name;
    r.stats = stats_of(*m_tiers[i].cache);
    std::lock_guard lock(m_mutex);
    r.served = m_counts[i].served;
    r.backfilled = m_counts[i].backfilled;
    r.rejected = m_counts[i].rejected;
    reports.push_back(std::move(r));
  }
  return reports;
}

std::optional<CacheStats> stats_of(EngineCache& cache) {
  if (auto* disk = dynamic_cast<DiskEngineCache*>(&cache)) return disk->stats();
  if (auto* ram = dynamic_cast<RamEngineCache*>(&cache)) return ram->stats();
  if (auto* redis = dynamic_cast<RedisEngineCache*>(&cache)) return redis->fleet_stats();
  if (auto* signing = dynamic_cast<SigningEngineCache*>(&cache)) {
    auto stats = stats_of(*signing->inner());
    // Redis counts refusals fleet-wide (ours included); other stores do not.
    if (stats && !dynamic_cast<RedisEngineCache*>(signing->inner().get())) {
      stats->refused_unauthenticated += signing->refused_unauthenticated();
    }
    return stats;
  }
  return std::nullopt;
}

}  // namespace kiln::cache
