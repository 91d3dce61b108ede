// EngineCache: where built engines are kept between compiles.
//
// The interface is the tutorial's BaseEngineCache: save and load only. A user
// class implementing it (a RAM map, S3, a shared store) can be passed as
// CompileSettings::custom_engine_cache and replaces the disk cache.
//
// Contract for implementations:
// - save() stores `blob` under `key`, replacing any previous blob; it must not
//   throw for I/O trouble (log and drop the entry instead).
// - load() returns exactly the bytes saved under `key`, or nullopt. It may
//   return stale or corrupted bytes: kiln verifies every blob (envelope
//   checksum, key, versions) before use and treats a bad one as a miss.
// - Both may be called from several threads at once.
//
// The key is a 64-character lowercase hex SHA-256 (EngineKey::hex()).
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace kiln {

class EngineCache {
 public:
  virtual ~EngineCache() = default;
  virtual void save(const std::string& key, std::span<const std::byte> blob) = 0;
  virtual std::optional<std::vector<std::byte>> load(const std::string& key) = 0;
};

// Counters a cache keeps about itself; `kiln cache stats` prints them.
// For compiles, a hit is an engine served and a miss is a build; an entry
// that was found but could not serve (the three "unusable" counters) is a
// miss. For direct load() calls, a hit is bytes found.
struct CacheStats {
  uint64_t hits = 0;
  uint64_t misses = 0;
  // Misses whose entry was found but unusable:
  uint64_t unusable_corrupt = 0;       // bad envelope or plan: quarantined, rebuilt
  uint64_t unusable_incompatible = 0;  // built for another backend fingerprint (ISA, library)
  uint64_t unusable_refit_failed = 0;  // the new weights did not fit the plan
  uint64_t build_ms_saved = 0;         // sum over usable hits of the entry's build time
  uint64_t saves = 0;
  uint64_t evictions = 0;
  uint64_t refused_too_large = 0;
  uint64_t quarantined = 0;
  uint64_t refused_unauthenticated = 0;  // unsigned or bad-signature entries, refused as misses
  uint64_t entries = 0;
  uint64_t bytes = 0;
};

// The built-in on-disk cache: atomic publish, true LRU by mtime, a byte cap
// enforced from what the disk holds, per-key single flight across processes,
// and degradation to "no cache" with one warning on a read-only, full or
// missing folder. See docs/engine-cache.md.
std::shared_ptr<EngineCache> make_disk_engine_cache(const std::filesystem::path& dir, uint64_t max_bytes);

// An in-process LRU cache bounded by `max_bytes`.
std::shared_ptr<EngineCache> make_ram_engine_cache(uint64_t max_bytes);

}  // namespace kiln
