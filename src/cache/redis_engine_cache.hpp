// RedisEngineCache: engines shared by every host that reaches one Redis.
//
// Layout (P is the URI's prefix, K the engine key, G a random generation
// per save):
//   P:entry:K          manifest "kiln-redis 1 G size chunk_bytes xxh3"
//   P:chunk:K:G:i      the blob's i-th chunk (chunk_size bytes, 8 MiB default)
//   P:lease:K          the build lease (redis_build_lease.hpp)
//   P:quarantine:K     why an entry was taken out of service (7 days)
//   P:stats            fleet-wide counters (hits, misses, saves, ...)
//
// - Whole entries only: a save writes its chunks under a fresh generation,
//   then swaps the manifest in (one Lua script, so it is atomic and returns
//   the manifest it replaced). A reader follows one manifest to chunks that
//   never change; if one has gone (superseded long ago, evicted, expired)
//   the load is a miss, never a partial blob. The assembled blob is also
//   checked against the manifest's size and XXH3-64 before it is returned.
// - Chunks keep values far below Redis's 512 MiB proto-max-bulk-len and keep
//   each command short, so one large entry never blocks Redis for long.
// - Superseded chunks expire after a 60 s grace (readers still on the old
//   manifest finish); chunks of a save that died before its manifest expire
//   after 10 minutes.
// - TTL (optional): the manifest expires `ttl` after the last save or hit
//   (each hit refreshes it, so entries in use stay); chunks outlive it by the
//   grace. Without a TTL, entries stay until Redis's maxmemory policy evicts
//   them (allkeys-lru recommended; docs/fleet-cache.md).
// - Read-only: no command that writes is ever sent (no saves, leases,
//   TTL refreshes, counters or quarantine); loads work.
// - Failure: see redis_client.hpp. A Redis that is down, slow or restarting
//   turns loads into misses and drops saves, with one warning per outage,
//   and the next call after retry_ms reconnects.
//
// Thread-safety: every method may be called from several threads at once.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "cache/redis_client.hpp"
#include "cache/redis_options.hpp"
#include "cache/store.hpp"
#include "format/envelope.hpp"

namespace kiln::cache {

struct RedisEntryInfo {
  std::string key;
  uint64_t size = 0;
  int64_t ttl_ms = -1;  // -1: no expiry
};

class RedisEngineCache final : public Store {
 public:
  explicit RedisEngineCache(RedisOptions options);

  std::string name() const override { return options().describe(); }
  void put(const std::string& key, std::span<const std::byte> blob) override;
  // fetch() as a result: a miss while Redis is down is `unavailable`.
  Fetched get(const std::string& key) override;
  // The entry's bytes, or nullopt (absent, broken or unreachable); counts nothing.
  std::optional<std::vector<std::byte>> fetch(const std::string& key);
  void record_outcome(const std::string& key, const Fetched& lookup, Outcome outcome,
                      uint64_t build_ms_saved) override;

  // Waits (up to lease_wait_ms) while another host holds the key's lease;
  // returns the lease once taken, a NoBuildLease when the entry was
  // published meanwhile, or null when Redis is unreachable or the wait ran
  // out (build anyway). Read-only: waits for another host's build, never
  // takes a lease.
  std::unique_ptr<BuildLease> lease(const std::string& key) override;
  bool quarantine(const std::string& key, const std::string& reason) override;
  // Saves are being dropped: read-only, or Redis is down.
  bool degraded() const override { return m_client->options().read_only || m_client->down(); }

  // This process's counters (entries and bytes are not known locally).
  CacheStats stats() const;
  // The fleet's counters from P:stats, with entries and bytes from a SCAN of
  // the manifests. Nullopt when Redis is unreachable.
  std::optional<CacheStats> fleet_stats();
  std::optional<CacheStats> counters() override { return fleet_stats(); }
  std::optional<std::vector<RedisEntryInfo>> list();
  // The envelope headers of up to `max_entries` entries, read from the first
  // bytes of each entry's first chunk (GETRANGE), for explaining a miss.
  // Unverified (format/header_peek.hpp). Nullopt when unreachable.
  struct PeekedHeaders {
    size_t entries = 0;  // entries found (at most max_entries), readable or not
    std::vector<format::EnvelopeHeader> headers;
  };
  std::optional<PeekedHeaders> peek_headers(size_t max_entries);
  std::optional<EntryHeaders> entry_headers(size_t max_entries) override {
    auto peeked = peek_headers(max_entries);
    if (!peeked) return std::nullopt;
    return EntryHeaders{peeked->entries, std::move(peeked->headers)};
  }
  // Deletes every entry under the prefix (not leases or counters); nullopt
  // when unreachable or read-only.
  std::optional<uint64_t> clear();

  // A SigningEngineCache above refused one of our entries.
  void count_refused_unauthenticated() {
    count({{&CacheStats::refused_unauthenticated, "refused_unauthenticated"}});
  }
  // Counted fleet-wide, so every host's `cache stats` sees the refusals.
  bool count_refusal() override {
    count_refused_unauthenticated();
    return true;
  }

  uint64_t outages() const { return m_client->outages(); }
  uint64_t lease_waits() const { return m_lease_waits.load(); }
  const RedisOptions& options() const { return m_client->options(); }
  std::string entry_key(const std::string& key) const;
  std::string lease_key(const std::string& key) const;

 private:
  struct Count {
    uint64_t CacheStats::*counter;
    const char* field;  // in P:stats
    uint64_t n = 1;
  };
  // Adds to this process's counters and (unless read-only) the fleet's.
  void count(std::initializer_list<Count> counts);
  std::string chunk_key(const std::string& key, const std::string& generation, uint64_t index) const;

  std::shared_ptr<RedisClient> m_client;
  mutable std::mutex m_stats_mutex;
  CacheStats m_stats;  // guarded by m_stats_mutex
  std::atomic<uint64_t> m_lease_waits{0};
};

}  // namespace kiln::cache
