#include "cache/tiered_engine_cache.hpp"

#include <variant>

#include "format/envelope.hpp"
#include "kiln/error.hpp"
#include "util/log.hpp"

namespace kiln::cache {

namespace {

// Why `blob` cannot be served for `key`, or empty.
std::string envelope_problem(std::span<const std::byte> blob, const std::string& key) {
  auto opened = format::open(blob);
  if (auto* rejected = std::get_if<format::Rejection>(&opened)) return rejected->reason;
  if (std::get<format::OpenedBlob>(opened).header.key.hex() != key) return "key mismatch";
  return {};
}

std::vector<std::shared_ptr<Store>> stores_of(const std::vector<CacheTier>& tiers) {
  std::vector<std::shared_ptr<Store>> stores;
  for (const auto& tier : tiers) stores.push_back(tier.cache);
  return stores;
}

}  // namespace

TieredEngineCache::TieredEngineCache(std::vector<CacheTier> tiers)
    : CompositeStore(stores_of(tiers)), m_tiers(std::move(tiers)), m_counts(m_tiers.size()) {
  if (m_tiers.empty())
    throw Error(ErrorCode::invalid_argument, "a tiered engine cache needs at least one tier");
  for (const auto& tier : m_tiers) {
    if (!tier.cache)
      throw Error(ErrorCode::invalid_argument, "engine cache tier '" + tier.name + "' is null");
  }
}

std::string TieredEngineCache::name() const {
  std::string text = "tiers";
  for (size_t i = 0; i < m_tiers.size(); ++i) text += (i ? ", " : ": ") + m_tiers[i].name;
  return text;
}

Fetched TieredEngineCache::get_from(size_t tier, const std::string& key) {
  try {
    return m_tiers[tier].cache->get(key);
  } catch (const std::exception& e) {
    // A store must not throw, but if it does, it is only a miss there.
    log::warn_once("tier-load:" + m_tiers[tier].name, "engine cache tier " + m_tiers[tier].name +
                                                          ": load failed, treated as a miss: " + e.what());
    return Fetched::miss(Status::unavailable, std::string("load failed: ") + e.what());
  }
}

Fetched TieredEngineCache::get(const std::string& key) {
  Fetched result;
  for (size_t i = 0; i < m_tiers.size(); ++i) {
    Fetched found = get_from(i, key);
    if (!found.hit()) {
      // The first refusal or failure is the lookup's reason, unless a lower tier serves.
      if (result.reason.empty() && found.status != Status::absent) {
        result.status = found.status;
        result.reason = found.reason;
      }
      result.asked.push_back(std::move(found));
      continue;
    }
    if (std::string problem = envelope_problem(found.blob, key); !problem.empty()) {
      log::warn("engine cache tier " + m_tiers[i].name + ": entry " + key.substr(0, 16) + " is unusable (" +
                problem + "); trying the next tier");
      m_tiers[i].cache->quarantine(key, problem);
      {
        std::lock_guard lock(m_mutex);
        ++m_counts[i].rejected;
      }
      found.status = Status::corrupt;
      found.reason = problem;
      found.blob.clear();
      result.asked.push_back(std::move(found));
      continue;
    }
    for (size_t above = 0; above < i; ++above) {
      try {
        m_tiers[above].cache->put(key, found.blob);
      } catch (const std::exception& e) {
        log::warn_once("tier-save:" + m_tiers[above].name,
                       "engine cache tier " + m_tiers[above].name + ": backfill failed: " + e.what());
        continue;
      }
      std::lock_guard lock(m_mutex);
      ++m_counts[above].backfilled;
    }
    {
      std::lock_guard lock(m_mutex);
      ++m_counts[i].served;
    }
    result.status = Status::hit;
    result.reason.clear();
    result.blob = std::move(found.blob);
    found.blob.clear();
    result.asked.push_back(std::move(found));
    return result;
  }
  return result;
}

std::vector<TierReport> TieredEngineCache::tier_stats() {
  std::vector<TierReport> reports;
  for (size_t i = 0; i < m_tiers.size(); ++i) {
    TierReport r;
    r.name = m_tiers[i].name;
    r.stats = m_tiers[i].cache->counters();
    std::lock_guard lock(m_mutex);
    r.served = m_counts[i].served;
    r.backfilled = m_counts[i].backfilled;
    r.rejected = m_counts[i].rejected;
    reports.push_back(std::move(r));
  }
  return reports;
}

}  // namespace kiln::cache
