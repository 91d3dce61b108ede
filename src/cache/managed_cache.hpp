// ManagedCache: what kiln's own caches offer beyond the tutorial's save/load.
//
// A user's EngineCache only stores bytes. kiln's built-in caches (disk, RAM,
// Redis, tiers of them) also coordinate builds of one key, take bad entries
// out of service and say when they have stopped storing (the miss explainer
// in src/runtime reads entry headers of the disk cache directly). The compile
// pipeline discovers these with a dynamic_cast and falls back to plain
// save/load for a user cache, so a custom cache never needs to know of them.
#pragma once

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kiln/engine_cache.hpp"

namespace kiln::cache {

// Held while one process (or host) builds a key; releasing it lets waiters
// look again. Released by destruction.
class BuildLease {
 public:
  virtual ~BuildLease() = default;
};

class ManagedCache : public EngineCache {
 public:
  // Blocks until the caller may build `key`: either nobody else is building
  // it, or the builder finished (the caller then loads again and usually
  // hits). Null when coordination is unavailable (degraded store, timeout):
  // the caller builds without single flight, which costs time, not
  // correctness.
  virtual std::unique_ptr<BuildLease> acquire_build_lease(const std::string& key) = 0;

  // Takes a bad entry out of service so it is never served again. False when
  // there was no such entry.
  virtual bool quarantine(const std::string& key, const std::string& reason) = 0;

  // True when saves are being dropped (full or read-only store).
  virtual bool degraded() const { return false; }

  // load() without counting a hit or a miss: a compile looks up a key up to
  // twice (before and after waiting for another builder) and then reports
  // one outcome, so the counters count compiles, not reads.
  virtual std::optional<std::vector<std::byte>> fetch(const std::string& key) = 0;

  // How a compile's lookup ended: `usable` is a hit that saved
  // `build_ms_saved`; the others are misses, by reason.
  enum class Outcome { usable, absent, corrupt, incompatible, refit_failed };
  virtual void record_outcome(const std::string& key, Outcome outcome, uint64_t build_ms_saved) = 0;
};

}  // namespace kiln::cache
