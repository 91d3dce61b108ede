// DiskEngineCache: the built-in engine cache, one file per engine under a
// folder that several processes may share (layout in cache_layout.hpp).
//
// - Publish: an entry is written to a temp file, fsynced and renamed into
//   place (CacheFs::write_file_atomic), so readers never see a partial entry.
// - Recency: an entry's mtime is its last use: a save stamps it and a hit
//   refreshes it, so LRU order is mtime order, shared by all processes.
// - Size: after every save, under locks/evict.lock, the entries folder is
//   scanned and the least recently used entries are deleted until the total
//   is within the cap. The scan is the truth, not process memory, so the cap
//   holds after restarts, with several processes and when a key is saved
//   again. The timing cache (<dir>/timing), locks, quarantine, counters and
//   temp files are never entries: not counted, never evicted. A blob larger
//   than the cap is refused with a warning and counted.
// - Single flight: acquire_build_lock(key) is an exclusive per-key lock
//   around check → build → publish; the holder loads again before building,
//   so processes that wait for one build then hit.
// - Degraded disk: a folder that cannot be created or written (read-only,
//   full, missing and uncreatable) gives one warning per process and folder;
//   from then on saves are dropped, while loads still serve whatever the
//   folder holds (a read-only shared cache stays useful) and miss otherwise.
//   save() and load() never throw for I/O trouble.
// - Corrupt entries: the cache stores bytes and never parses plans on the
//   load path; whoever finds a bad blob calls quarantine(), which moves it to
//   quarantine/ with a .reason file. verify() opens every entry's envelope.
// - Counters (stats()) persist across processes: each process counts in
//   memory and adds its counts to <dir>/v1/stats under a lock (stats_file.hpp)
//   after saves, every 64 loads, from stats() and on destruction.
//
// Thread-safety: every method may be called from several threads at once,
// and several processes may use one folder.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "cache/cache_fs.hpp"
#include "cache/cache_layout.hpp"
#include "cache/managed_cache.hpp"
#include "util/lock_file.hpp"

namespace kiln::cache {

struct EntryInfo {
  std::string key;
  uint64_t size = 0;
  int64_t mtime_ns = 0;  // last use, since the Unix epoch
};

struct PruneResult {
  uint64_t removed_entries = 0;
  uint64_t removed_bytes = 0;
  uint64_t entries = 0;  // left afterwards
  uint64_t bytes = 0;
};

struct VerifyResult {
  std::string key;
  uint64_t size = 0;
  bool ok = false;
  std::string reason;  // why it was quarantined; empty when ok
};

class DiskEngineCache final : public ManagedCache {
 public:
  DiskEngineCache(std::filesystem::path dir, uint64_t max_bytes,
                  std::shared_ptr<CacheFs> fs = posix_cache_fs());
  ~DiskEngineCache() override;  // adds this process's pending counts to the file
  DiskEngineCache(const DiskEngineCache&) = delete;
  DiskEngineCache& operator=(const DiskEngineCache&) = delete;

  void save(const std::string& key, std::span<const std::byte> blob) override;
  std::optional<std::vector<std::byte>> load(const std::string& key) override;

  // The per-key build lock, held until the LockFile dies. The pipeline does:
  // load (no lock) → on a miss acquire_build_lock → load again → build →
  // save → release. Nullopt when the lock cannot be taken (degraded folder,
  // timeout, invalid key): the caller builds without single flight, which
  // costs time, not correctness.
  [[nodiscard]] std::optional<LockFile> acquire_build_lock(
      const std::string& key, std::chrono::milliseconds timeout = std::chrono::minutes(10));

  // acquire_build_lock as a ManagedCache lease.
  std::unique_ptr<BuildLease> acquire_build_lease(const std::string& key) override;

  // Moves the entry to quarantine/ with `reason` beside it, so it is never
  // served again and can be inspected. The 8 newest quarantined entries are
  // kept. False when there was no entry (already gone). If the move fails the
  // entry is deleted instead.
  bool quarantine(const std::string& key, const std::string& reason) override;

  std::optional<std::vector<std::byte>> fetch(const std::string& key) override;
  void record_outcome(const std::string& key, Outcome outcome, uint64_t build_ms_saved) override;

  // Persisted counters plus entries and bytes from a scan.
  CacheStats stats();
  // Adds pending counts to the counters file now.
  void flush_stats();
  void zero_stats();

  // Entries, most recently used first.
  std::vector<EntryInfo> list();
  bool remove(const std::string& key);
  // Deletes least recently used entries until at most `max_bytes` remain
  // (counted as evictions).
  PruneResult prune(uint64_t max_bytes);
  // Deletes every entry, temp file, quarantined file and unheld key lock; the
  // counters and the timing cache stay. Returns the number of entries deleted.
  uint64_t clear();
  // Opens the entry's envelope and checks that its key is `key`; a bad entry
  // is quarantined. Nullopt when there is no such entry.
  std::optional<VerifyResult> verify_entry(const std::string& key);
  // verify_entry() for every entry.
  std::vector<VerifyResult> verify();

  bool degraded() const override { return m_degraded.load(); }
  const CacheLayout& layout() const { return m_layout; }
  uint64_t max_bytes() const { return m_max_bytes; }

 private:
  struct ScannedEntry {
    std::string key;
    std::filesystem::path path;
    uint64_t size = 0;
    int64_t mtime_ns = 0;
  };
  enum class TempFiles { keep, remove_stale, remove_all };

  // Creates the folders a write needs; false (and degraded) when it cannot.
  bool ensure_writable(const std::filesystem::path& shard);
  void degrade(const std::string& reason);
  std::vector<ScannedEntry> scan(TempFiles temp_files);
  // Under the eviction lock; `keep` (may be empty) is never deleted.
  PruneResult evict_to(uint64_t cap, const std::string& keep);
  void count(uint64_t CacheStats::*counter, uint64_t n = 1);
  // Reads an entry and refreshes its recency; counts nothing.
  std::optional<std::vector<std::byte>> read_entry(const std::string& key);
  void trim_quarantine();

  CacheLayout m_layout;
  uint64_t m_max_bytes;
  std::shared_ptr<CacheFs> m_fs;
  std::atomic<bool> m_degraded{false};
  std::atomic<bool> m_dirs_ready{false};

  std::mutex m_stats_mutex;
  CacheStats m_pending;          // guarded by m_stats_mutex
  uint64_t m_pending_loads = 0;  // guarded by m_stats_mutex
};

}  // namespace kiln::cache
