#include "cache/disk_engine_cache.hpp"

#include <algorithm>
#include <cerrno>
#include <utility>
#include <variant>

#include "cache/stats_file.hpp"
#include "format/envelope.hpp"
#include "util/log.hpp"

namespace kiln::cache {

namespace {

constexpr auto k_evict_lock_timeout = std::chrono::seconds(30);
constexpr uint64_t k_loads_per_flush = 64;
constexpr size_t k_quarantine_keep = 8;
// A temp file this old belongs to a writer that crashed.
constexpr int64_t k_stale_temp_ns = int64_t{3600} * 1'000'000'000;

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::span<const std::byte> as_bytes(const std::string& text) {
  return std::as_bytes(std::span(text.data(), text.size()));
}

// Two lowercase hex digits: the first byte of the keys it holds.
bool is_shard_name(const std::string& name) {
  auto hex = [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); };
  return name.size() == 2 && hex(name[0]) && hex(name[1]);
}

}  // namespace

DiskEngineCache::DiskEngineCache(std::filesystem::path dir, uint64_t max_bytes, std::shared_ptr<CacheFs> fs)
    : m_layout(std::move(dir)), m_max_bytes(max_bytes), m_fs(std::move(fs)) {}

DiskEngineCache::~DiskEngineCache() { flush_stats(); }

void DiskEngineCache::degrade(const std::string& reason) {
  m_degraded = true;
  log::warn_once("disk-cache-degraded:" + m_layout.root().string(),
                 "engine cache " + m_layout.root().string() + " is not writable (" + reason +
                     "); continuing without saving engines");
}

bool DiskEngineCache::ensure_writable(const std::filesystem::path& shard) {
  if (m_degraded) return false;
  if (!m_dirs_ready) {
    for (const auto& dir : {m_layout.entries_dir(), m_layout.locks_dir()}) {
      auto status = m_fs->create_directories(dir);
      if (!status.ok()) {
        degrade(status.message);
        return false;
      }
    }
    m_dirs_ready = true;
  }
  if (shard.empty()) return true;
  auto status = m_fs->create_directories(shard);
  if (!status.ok()) degrade(status.message);
  return status.ok();
}

void DiskEngineCache::count(uint64_t CacheStats::*counter, uint64_t n) {
  std::lock_guard lock(m_stats_mutex);
  m_pending.*counter += n;
}

void DiskEngineCache::save(const std::string& key, std::span<const std::byte> blob) {
  if (!is_valid_key(key)) {
    log::warn_once("disk-cache-invalid-key", "engine cache: ignoring a save under '" + key +
                                                 "', which is not a 64-character lowercase hex key");
    return;
  }
  if (blob.size() > m_max_bytes) {
    log::warn("engine cache: not caching engine " + key.substr(0, 16) + "… (" + std::to_string(blob.size()) +
              " bytes), larger than the cache's cap of " + std::to_string(m_max_bytes) + " bytes");
    count(&CacheStats::refused_too_large);
    flush_stats();
    return;
  }
  if (!ensure_writable(m_layout.shard_dir(key))) return;
  auto status = m_fs->write_file_atomic(m_layout.entry_path(key), blob);
  if (!status.ok()) {
    degrade(status.message);
    return;
  }
  count(&CacheStats::saves);
  evict_to(m_max_bytes, key);
  flush_stats();
}

std::optional<std::vector<std::byte>> DiskEngineCache::read_entry(const std::string& key) {
  if (!is_valid_key(key)) return std::nullopt;
  std::vector<std::byte> bytes;
  auto path = m_layout.entry_path(key);
  auto status = m_fs->read_file(path, bytes);
  if (!status.ok()) {
    if (status.error != ENOENT && status.error != ENOTDIR) {
      log::warn_once("disk-cache-read:" + m_layout.root().string(), "engine cache: " + status.message);
    }
    return std::nullopt;
  }
  // Recency is best effort: a read-only cache still serves its entries.
  (void)m_fs->set_mtime_now(path);
  return bytes;
}

std::optional<std::vector<std::byte>> DiskEngineCache::fetch(const std::string& key) {
  return read_entry(key);
}

std::optional<std::vector<std::byte>> DiskEngineCache::load(const std::string& key) {
  auto bytes = read_entry(key);
  bool flush = false;
  {
    std::lock_guard lock(m_stats_mutex);
    ++(bytes ? m_pending.hits : m_pending.misses);
    flush = ++m_pending_loads >= k_loads_per_flush;
  }
  if (flush) flush_stats();
  return bytes;
}

std::optional<LockFile> DiskEngineCache::acquire_build_lock(const std::string& key,
                                                            std::chrono::milliseconds timeout) {
  if (!is_valid_key(key) || !ensure_writable({})) return std::nullopt;
  LockFile lock(m_layout.key_lock_path(key));
  if (!lock.acquire(timeout)) {
    log::warn_once("disk-cache-build-lock:" + m_layout.root().string(),
                   "engine cache: building without the build lock: " + lock.error());
    return std::nullopt;
  }
  return lock;
}

void DiskEngineCache::record_outcome(const std::string& key, Outcome outcome, uint64_t build_ms_saved) {
  (void)key;
  bool flush = false;
  {
    std::lock_guard lock(m_stats_mutex);
    ++(outcome == Outcome::usable ? m_pending.hits : m_pending.misses);
    switch (outcome) {
      case Outcome::usable:
        m_pending.build_ms_saved += build_ms_saved;
        break;
      case Outcome::absent:
        break;
      case Outcome::corrupt:
        ++m_pending.unusable_corrupt;
        break;
      case Outcome::incompatible:
        ++m_pending.unusable_incompatible;
        break;
      case Outcome::refit_failed:
        ++m_pending.unusable_refit_failed;
        break;
    }
    flush = ++m_pending_loads >= k_loads_per_flush;
  }
  if (flush) flush_stats();
}

namespace {
class LockFileLease final : public BuildLease {
 public:
  explicit LockFileLease(LockFile lock) : m_lock(std::move(lock)) {}

 private:
  LockFile m_lock;
};
}  // namespace

std::unique_ptr<BuildLease> DiskEngineCache::acquire_build_lease(const std::string& key) {
  auto lock = acquire_build_lock(key);
  if (!lock) return nullptr;
  return std::make_unique<LockFileLease>(std::move(*lock));
}

std::vector<DiskEngineCache::ScannedEntry> DiskEngineCache::scan(TempFiles temp_files) {
  std::vector<ScannedEntry> entries;
  std::vector<DirEntry> shards;
  if (!m_fs->list_dir(m_layout.entries_dir(), shards).ok()) return entries;
  int64_t stale_before = now_ns() - k_stale_temp_ns;
  std::vector<DirEntry> files;
  for (const auto& shard : shards) {
    if (!shard.is_dir || !is_shard_name(shard.name)) continue;
    auto shard_dir = m_layout.entries_dir() / shard.name;
    if (!m_fs->list_dir(shard_dir, files).ok()) continue;
    for (auto& file : files) {
      if (!file.is_regular) continue;
      if (is_temp_name(file.name)) {
        bool remove = temp_files == TempFiles::remove_all ||
                      (temp_files == TempFiles::remove_stale && file.mtime_ns < stale_before);
        if (remove) (void)m_fs->remove_file(shard_dir / file.name);
        continue;
      }
      auto key = key_from_entry_name(file.name);
      // An entry in the wrong shard is not where load() looks: not ours.
      if (!key || key->compare(0, 2, shard.name) != 0) continue;
      entries.push_back({std::move(*key), shard_dir / file.name, file.size, file.mtime_ns});
    }
  }
  return entries;
}

PruneResult DiskEngineCache::evict_to(uint64_t cap, const std::string& keep) {
  PruneResult result;
  if (!ensure_writable({})) return result;
  LockFile lock(m_layout.evict_lock_path());
  if (!lock.acquire(k_evict_lock_timeout)) {
    // The next save enforces the cap again.
    log::warn_once("disk-cache-evict-lock:" + m_layout.root().string(),
                   "engine cache: skipping eviction: " + lock.error());
    return result;
  }
  auto entries = scan(TempFiles::remove_stale);
  std::sort(entries.begin(), entries.end(), [](const ScannedEntry& a, const ScannedEntry& b) {
    return a.mtime_ns != b.mtime_ns ? a.mtime_ns < b.mtime_ns : a.key < b.key;
  });
  uint64_t total = 0;
  for (const auto& entry : entries) total += entry.size;
  result.entries = entries.size();
  for (const auto& entry : entries) {
    if (total <= cap) break;
    if (entry.key == keep) continue;
    auto status = m_fs->remove_file(entry.path);
    if (!status.ok() && status.error != ENOENT) {
      log::warn_once("disk-cache-evict:" + m_layout.root().string(), "engine cache: " + status.message);
      continue;
    }
    total -= entry.size;
    --result.entries;
    // Someone else's removal (ENOENT) is theirs to count.
    if (status.ok()) {
      ++result.removed_entries;
      result.removed_bytes += entry.size;
    }
  }
  result.bytes = total;
  if (result.removed_entries > 0) count(&CacheStats::evictions, result.removed_entries);
  return result;
}

bool DiskEngineCache::quarantine(const std::string& key, const std::string& reason) {
  if (!is_valid_key(key)) return false;
  auto entry = m_layout.entry_path(key);
  auto stem = m_layout.quarantine_stem(key, now_ns() / 1'000'000);
  auto moved = m_fs->create_directories(m_layout.quarantine_dir());
  if (moved.ok()) moved = m_fs->rename_file(entry, stem.string() + ".kiln");
  if (moved.error == ENOENT) return false;
  if (!moved.ok()) {
    // It must not be served again, whether or not it can be kept.
    auto removed = m_fs->remove_file(entry);
    if (removed.error == ENOENT) return false;
    log::warn("engine cache: deleting corrupt entry " + key + " (" + reason +
              ") instead of quarantining it: " + moved.message);
    if (!removed.ok()) {
      log::warn("engine cache: cannot delete corrupt entry: " + removed.message);
      return false;
    }
    count(&CacheStats::quarantined);
    return true;
  }
  log::warn("engine cache: quarantined entry " + key + ": " + reason);
  (void)m_fs->write_file_atomic(stem.string() + ".reason", as_bytes(reason + "\n"));
  count(&CacheStats::quarantined);
  trim_quarantine();
  return true;
}

void DiskEngineCache::trim_quarantine() {
  std::vector<DirEntry> files;
  if (!m_fs->list_dir(m_layout.quarantine_dir(), files).ok()) return;
  std::erase_if(files, [](const DirEntry& f) { return !f.is_regular || !f.name.ends_with(".kiln"); });
  if (files.size() <= k_quarantine_keep) return;
  std::sort(files.begin(), files.end(),
            [](const DirEntry& a, const DirEntry& b) { return a.mtime_ns > b.mtime_ns; });
  for (size_t i = k_quarantine_keep; i < files.size(); ++i) {
    auto path = m_layout.quarantine_dir() / files[i].name;
    (void)m_fs->remove_file(path);
    (void)m_fs->remove_file(path.replace_extension(".reason"));
  }
}

void DiskEngineCache::flush_stats() {
  CacheStats delta;
  {
    std::lock_guard lock(m_stats_mutex);
    delta = std::exchange(m_pending, CacheStats{});
    m_pending_loads = 0;
  }
  if (!has_counts(delta)) return;
  IoStatus status = ensure_writable({}) ? add_to_counters_file(*m_fs, m_layout, delta)
                                        : IoStatus{EROFS, "the cache folder is not writable"};
  if (!status.ok()) {
    // Kept for the next flush; a degraded cache's counts stay in memory.
    std::lock_guard lock(m_stats_mutex);
    add_counters(m_pending, delta);
  }
}

CacheStats DiskEngineCache::stats() {
  flush_stats();
  CacheStats result = read_counters(*m_fs, m_layout);
  {
    // Counts that could not be written (degraded folder) still show.
    std::lock_guard lock(m_stats_mutex);
    add_counters(result, m_pending);
  }
  for (const auto& entry : scan(TempFiles::keep)) {
    ++result.entries;
    result.bytes += entry.size;
  }
  return result;
}

void DiskEngineCache::zero_stats() {
  {
    std::lock_guard lock(m_stats_mutex);
    m_pending = CacheStats{};
    m_pending_loads = 0;
  }
  auto status = zero_counters_file(*m_fs, m_layout);
  if (!status.ok()) log::warn("engine cache: cannot zero the counters: " + status.message);
}

std::vector<EntryInfo> DiskEngineCache::list() {
  std::vector<EntryInfo> result;
  for (auto& entry : scan(TempFiles::keep))
    result.push_back({std::move(entry.key), entry.size, entry.mtime_ns});
  std::sort(result.begin(), result.end(), [](const EntryInfo& a, const EntryInfo& b) {
    return a.mtime_ns != b.mtime_ns ? a.mtime_ns > b.mtime_ns : a.key < b.key;
  });
  return result;
}

bool DiskEngineCache::remove(const std::string& key) {
  return is_valid_key(key) && m_fs->remove_file(m_layout.entry_path(key)).ok();
}

PruneResult DiskEngineCache::prune(uint64_t max_bytes) {
  auto result = evict_to(max_bytes, {});
  flush_stats();
  return result;
}

uint64_t DiskEngineCache::clear() {
  uint64_t removed = 0;
  LockFile lock(m_layout.evict_lock_path());
  if (!ensure_writable({}) || !lock.acquire(k_evict_lock_timeout)) return 0;
  for (const auto& entry : scan(TempFiles::remove_all)) {
    if (m_fs->remove_file(entry.path).ok()) ++removed;
  }
  std::vector<DirEntry> files;
  if (m_fs->list_dir(m_layout.quarantine_dir(), files).ok()) {
    for (const auto& file : files) {
      if (file.is_regular) (void)m_fs->remove_file(m_layout.quarantine_dir() / file.name);
    }
  }
  // A held key lock belongs to a build in progress. Deleting an unheld one
  // can at worst let two later waiters lock different inodes and build the
  // same key twice: wasted time, never a wrong entry.
  if (m_fs->list_dir(m_layout.locks_dir(), files).ok()) {
    for (const auto& file : files) {
      if (!is_key_lock_name(file.name)) continue;
      LockFile key_lock(m_layout.locks_dir() / file.name);
      if (key_lock.try_acquire()) (void)m_fs->remove_file(key_lock.path());
    }
  }
  return removed;
}

std::optional<VerifyResult> DiskEngineCache::verify_entry(const std::string& key) {
  if (!is_valid_key(key)) return std::nullopt;
  std::vector<std::byte> bytes;
  auto status = m_fs->read_file(m_layout.entry_path(key), bytes);
  if (status.error == ENOENT || status.error == ENOTDIR) return std::nullopt;  // no entry (evicted meanwhile)
  VerifyResult result{key, bytes.size(), false, {}};
  if (!status.ok()) {
    result.reason = status.message;
  } else {
    auto opened = format::open(bytes);
    if (auto* rejection = std::get_if<format::Rejection>(&opened)) {
      result.reason = rejection->reason;
    } else if (auto hex = std::get<format::OpenedBlob>(opened).header.key.hex(); hex != key) {
      result.reason = "stored under the wrong key (the blob's key is " + hex + ")";
    }
  }
  result.ok = result.reason.empty();
  if (!result.ok) quarantine(key, result.reason);
  return result;
}

std::vector<VerifyResult> DiskEngineCache::verify() {
  std::vector<VerifyResult> results;
  for (const auto& entry : scan(TempFiles::keep)) {
    if (auto result = verify_entry(entry.key)) results.push_back(std::move(*result));
  }
  flush_stats();
  return results;
}

}  // namespace kiln::cache

namespace kiln {

std::shared_ptr<EngineCache> make_disk_engine_cache(const std::filesystem::path& dir, uint64_t max_bytes) {
  return std::make_shared<cache::DiskEngineCache>(dir, max_bytes);
}

}  // namespace kiln
