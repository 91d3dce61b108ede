// CacheLayout: every file name of the on-disk engine cache, in one place
// (like LevelDB's db/filename.h), so the layout is read in one file and no
// other code builds a cache path by hand.
//
//   <root>/v1/entries/<k0k1>/<key>.kiln   entries, sharded by the key's first byte
//   <root>/v1/entries/<k0k1>/.<key>.kiln.tmp.*   in-flight writes (AtomicFile)
//   <root>/v1/locks/evict.lock           held while enforcing the size cap
//   <root>/v1/locks/stats.lock           held while merging counters
//   <root>/v1/locks/<key>.lock           per-key single flight (build lock)
//   <root>/v1/quarantine/<key>.<ms>.kiln (+ .reason)  entries that failed to verify
//   <root>/v1/stats                      persisted counters (text)
//   <root>/timing/timing_cache.bin       the timing cache: not ours, never
//                                        counted, listed or evicted
//
// "v1" is k_layout_version: a future layout lives beside this one instead of
// misreading it. Only files named exactly "<64 lowercase hex>.kiln" inside a
// shard folder are entries; anything else found there is ignored.
//
// Thread-safety: immutable after construction; pure functions.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

namespace kiln::cache {

constexpr int k_layout_version = 1;

// True for a 64-character lowercase hex string (EngineKey::hex()).
bool is_valid_key(std::string_view key);

class CacheLayout {
 public:
  explicit CacheLayout(std::filesystem::path root);

  const std::filesystem::path& root() const { return m_root; }
  const std::filesystem::path& version_dir() const { return m_version_dir; }
  std::filesystem::path entries_dir() const;
  std::filesystem::path shard_dir(std::string_view key) const;
  std::filesystem::path entry_path(std::string_view key) const;
  std::filesystem::path locks_dir() const;
  std::filesystem::path evict_lock_path() const;
  std::filesystem::path stats_lock_path() const;
  std::filesystem::path key_lock_path(std::string_view key) const;
  std::filesystem::path quarantine_dir() const;
  // "<key>.<unix_ms>" under quarantine_dir(); add ".kiln" or ".reason".
  std::filesystem::path quarantine_stem(std::string_view key, long long unix_ms) const;
  std::filesystem::path stats_path() const;
  std::filesystem::path timing_dir() const;
  std::filesystem::path timing_cache_path() const;

 private:
  std::filesystem::path m_root;
  std::filesystem::path m_version_dir;
};

// The key of an entry file name ("<key>.kiln"), or nullopt for anything else
// (temp files, foreign files).
std::optional<std::string> key_from_entry_name(std::string_view file_name);
// True for an AtomicFile temp name (".<target>.tmp.<pid>.<n>.<salt>").
bool is_temp_name(std::string_view file_name);
// True for a per-key lock file name ("<key>.lock").
bool is_key_lock_name(std::string_view file_name);

}  // namespace kiln::cache
