// TimingCache: measured tactic timings, keyed by a layer signature, shared
// across builds, models and processes.
//
// A backend forms the key from everything that affects a layer's timing (op
// and attributes, shapes, dtypes, post-ops, ISA and library version); the
// cache treats keys as opaque strings. A second model with the same layer
// shapes reuses the timings instead of measuring again.
//
// Persistence: open() loads the file if present; a missing file is an empty
// cache, and a corrupt or foreign one is ignored with one warning. save()
// takes an exclusive lock file ("<path>.lock", left in place), merges in
// whatever other processes saved since (no lost updates; ours win on
// conflict), and atomically replaces the file (temp file, fsync, rename). It
// replaces a corrupt cache but never a foreign file or a newer format's. A
// failed save is a warning, never an exception: timings are an optimization.
// The format (versioned binary, XXH3 checksum) is described in timing_cache.cpp.
//
// Thread-safety: all methods may be called concurrently.
#pragma once

#include <cstdint>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace kiln::builder {

struct TacticTiming {
  std::string tactic;  // the backend's name for the candidate
  double time_ms = 0;
};

class TimingCache {
 public:
  TimingCache() = default;  // in memory only: save() does nothing
  static TimingCache open(const std::filesystem::path& path);

  TimingCache(TimingCache&& other) noexcept;
  TimingCache& operator=(TimingCache&& other) noexcept;

  // Every candidate timed for this layer, or nullopt when it was never timed.
  std::optional<std::vector<TacticTiming>> find(const std::string& layer_key) const;
  void insert(const std::string& layer_key, std::vector<TacticTiming> timings);

  // Returns false (after logging a warning) when the file cannot be written.
  bool save();

  // Every layer key held, sorted (for reports and tests).
  std::vector<std::string> keys() const;
  size_t size() const;
  uint64_t hits() const;
  uint64_t misses() const;
  const std::filesystem::path& path() const { return m_path; }

 private:
  mutable std::mutex m_mutex;
  std::filesystem::path m_path;
  std::unordered_map<std::string, std::vector<TacticTiming>> m_entries;
  mutable uint64_t m_hits = 0;
  mutable uint64_t m_misses = 0;
};

}  // namespace kiln::builder
