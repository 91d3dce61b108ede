#include "builder/timing_cache.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <fstream>
#include <string_view>
#include <system_error>

#define XXH_INLINE_ALL  // header-only: no link dependency on libxxhash
#include <xxhash.h>

#include "util/atomic_file.hpp"
#include "util/lock_file.hpp"
#include "util/log.hpp"

// File format, version 2 (all integers little-endian):
//
//   file     := magic version entry_count entry* checksum
//   magic    := "KILNTC"                      6 bytes
//   version  := u16                           k_format_version
//   entry_count := u64
//   entry    := key:str timing_count:u32 timing*
//   timing   := tactic:str time_ms:f64        IEEE-754 bits as u64
//   str      := length:u32 bytes
//   checksum := u64                           XXH3-64 of every byte before it
//
// Entries are written sorted by key, so equal caches give equal files. A new
// layout, or a new way of forming keys, gets a new version; a file with
// another version is ignored on load and, if newer, left untouched by save.
// Version 2: keys name the thread count the timings ran with (layer_key in
// tactic_search.hpp); version 1 keys did not, so their timings are dropped.

namespace kiln::builder {

namespace {

constexpr std::string_view k_magic = "KILNTC";
constexpr uint16_t k_format_version = 2;
constexpr size_t k_header_size = 6 + 2 + 8;
constexpr size_t k_checksum_size = 8;
// Far beyond any real cache; bounds what a corrupt or foreign file can make
// us read into memory.
constexpr uintmax_t k_max_file_size = uintmax_t{1} << 30;

using Entries = std::unordered_map<std::string, std::vector<TacticTiming>>;

void put_u16(std::string& out, uint16_t v) {
  for (int i = 0; i < 2; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void put_u32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void put_u64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void put_str(std::string& out, std::string_view s) {
  put_u32(out, static_cast<uint32_t>(s.size()));
  out.append(s);
}

std::string serialize(const Entries& entries) {
  std::vector<const Entries::value_type*> sorted;
  sorted.reserve(entries.size());
  for (const auto& entry : entries) sorted.push_back(&entry);
  std::sort(sorted.begin(), sorted.end(), [](auto* a, auto* b) { return a->first < b->first; });

  std::string out(k_magic);
  put_u16(out, k_format_version);
  put_u64(out, sorted.size());
  for (const auto* entry : sorted) {
    put_str(out, entry->first);
    put_u32(out, static_cast<uint32_t>(entry->second.size()));
    for (const auto& timing : entry->second) {
      put_str(out, timing.tactic);
      put_u64(out, std::bit_cast<uint64_t>(timing.time_ms));
    }
  }
  put_u64(out, XXH3_64bits(out.data(), out.size()));
  return out;
}

// Bounds-checked reader over the file's bytes: every get fails rather than
// reading past the end, so truncation is detected wherever it cuts.
class Reader {
 public:
  explicit Reader(std::string_view bytes) : m_bytes(bytes) {}

  bool get_u16(uint16_t& v) { return get_le(v); }
  bool get_u32(uint32_t& v) { return get_le(v); }
  bool get_u64(uint64_t& v) { return get_le(v); }
  bool get_str(std::string& s) {
    uint32_t size = 0;
    if (!get_u32(size) || size > left()) return false;
    s.assign(m_bytes.substr(m_pos, size));
    m_pos += size;
    return true;
  }
  size_t left() const { return m_bytes.size() - m_pos; }

 private:
  template <typename T>
  bool get_le(T& v) {
    if (left() < sizeof(T)) return false;
    v = 0;
    for (size_t i = 0; i < sizeof(T); ++i)
      v |= static_cast<T>(static_cast<T>(static_cast<unsigned char>(m_bytes[m_pos + i])) << (8 * i));
    m_pos += sizeof(T);
    return true;
  }

  std::string_view m_bytes;
  size_t m_pos = 0;
};

enum class LoadStatus {
  ok,       // parsed (a missing or empty file is an empty cache)
  corrupt,  // kiln's magic, but truncated or failing the checksum: safe to replace
  foreign,  // not a kiln timing cache, or a newer format: never overwrite
  unreadable,
};

struct LoadResult {
  LoadStatus status = LoadStatus::ok;
  std::string reason;  // why it was not ok
  Entries entries;
};

LoadResult parse(std::string_view bytes) {
  LoadResult result;
  auto fail = [&](LoadStatus status, std::string reason) {
    result.status = status;
    result.reason = std::move(reason);
    result.entries.clear();
    return std::move(result);
  };
  if (bytes.empty()) return result;
  size_t magic_seen = std::min(bytes.size(), k_magic.size());
  if (bytes.substr(0, magic_seen) != k_magic.substr(0, magic_seen))
    return fail(LoadStatus::foreign, "not a kiln timing cache");
  if (bytes.size() < k_header_size + k_checksum_size) return fail(LoadStatus::corrupt, "truncated");

  Reader header(bytes.substr(k_magic.size()));
  uint16_t version = 0;
  (void)header.get_u16(version);
  if (version > k_format_version)
    return fail(LoadStatus::foreign, "format version " + std::to_string(version) +
                                         " is newer than this kiln's " + std::to_string(k_format_version));
  if (version != k_format_version)
    return fail(LoadStatus::corrupt, "old format version " + std::to_string(version));

  auto body = bytes.substr(0, bytes.size() - k_checksum_size);
  uint64_t stored = 0;
  Reader tail(bytes.substr(body.size()));
  (void)tail.get_u64(stored);
  if (stored != XXH3_64bits(body.data(), body.size()))
    return fail(LoadStatus::corrupt, "checksum mismatch (truncated or damaged)");

  Reader in(body.substr(k_magic.size() + 2));
  uint64_t count = 0;
  if (!in.get_u64(count)) return fail(LoadStatus::corrupt, "truncated header");
  // Each entry takes at least 8 bytes: refuses absurd counts before reserving.
  if (count > in.left() / 8) return fail(LoadStatus::corrupt, "bad entry count");
  result.entries.reserve(static_cast<size_t>(count));
  for (uint64_t i = 0; i < count; ++i) {
    std::string key;
    uint32_t n = 0;
    if (!in.get_str(key) || !in.get_u32(n) || n > in.left() / 12)
      return fail(LoadStatus::corrupt, "bad entry " + std::to_string(i));
    std::vector<TacticTiming> timings(n);
    for (auto& timing : timings) {
      uint64_t bits = 0;
      if (!in.get_str(timing.tactic) || !in.get_u64(bits))
        return fail(LoadStatus::corrupt, "bad timing in entry " + std::to_string(i));
      timing.time_ms = std::bit_cast<double>(bits);
      if (!std::isfinite(timing.time_ms) || timing.time_ms < 0)
        return fail(LoadStatus::corrupt, "bad time in entry " + std::to_string(i));
    }
    result.entries.insert_or_assign(std::move(key), std::move(timings));
  }
  if (in.left() != 0) return fail(LoadStatus::corrupt, "trailing bytes");
  return result;
}

LoadResult load(const std::filesystem::path& path) {
  LoadResult result;
  std::error_code ec;
  auto status = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(status)) return result;  // missing: empty cache
  if (!std::filesystem::is_regular_file(status)) {
    result.status = LoadStatus::foreign;
    result.reason = "not a regular file";
    return result;
  }
  auto size = std::filesystem::file_size(path, ec);
  if (ec) {
    result.status = LoadStatus::unreadable;
    result.reason = ec.message();
    return result;
  }
  if (size > k_max_file_size) {
    result.status = LoadStatus::foreign;
    result.reason = "too large (" + std::to_string(size) + " bytes) for a timing cache";
    return result;
  }
  std::ifstream file(path, std::ios::binary);
  std::string bytes(static_cast<size_t>(size), '\0');
  if (!file || !file.read(bytes.data(), static_cast<std::streamsize>(bytes.size()))) {
    // A shorter file than stat said (replaced meanwhile) reads as truncated.
    result.status = file.is_open() ? LoadStatus::corrupt : LoadStatus::unreadable;
    result.reason = "cannot read";
    return result;
  }
  return parse(bytes);
}

void warn_load(const std::filesystem::path& path, const LoadResult& loaded) {
  kiln::log::warn_once("timing-cache-load:" + path.string(),
                       "timing cache " + path.string() + " ignored: " + loaded.reason);
}

bool fail_save(const std::filesystem::path& path, const std::string& reason) {
  kiln::log::warn_once("timing-cache-save:" + path.string(),
                       "timing cache " + path.string() + " not saved: " + reason);
  return false;
}

}  // namespace

TimingCache::TimingCache(TimingCache&& other) noexcept {
  std::lock_guard lock(other.m_mutex);
  m_path = std::move(other.m_path);
  m_entries = std::move(other.m_entries);
  m_hits = other.m_hits;
  m_misses = other.m_misses;
}

TimingCache& TimingCache::operator=(TimingCache&& other) noexcept {
  if (this != &other) {
    std::scoped_lock lock(m_mutex, other.m_mutex);
    m_path = std::move(other.m_path);
    m_entries = std::move(other.m_entries);
    m_hits = other.m_hits;
    m_misses = other.m_misses;
  }
  return *this;
}

TimingCache TimingCache::open(const std::filesystem::path& path) {
  TimingCache cache;
  cache.m_path = path;
  auto loaded = load(path);
  if (loaded.status == LoadStatus::ok)
    cache.m_entries = std::move(loaded.entries);
  else
    warn_load(path, loaded);
  return cache;
}

std::optional<std::vector<TacticTiming>> TimingCache::find(const std::string& layer_key) const {
  std::lock_guard lock(m_mutex);
  auto it = m_entries.find(layer_key);
  if (it == m_entries.end()) {
    ++m_misses;
    return std::nullopt;
  }
  ++m_hits;
  return it->second;
}

void TimingCache::insert(const std::string& layer_key, std::vector<TacticTiming> timings) {
  std::lock_guard lock(m_mutex);
  m_entries.insert_or_assign(layer_key, std::move(timings));
}

bool TimingCache::save() {
  std::filesystem::path path;
  Entries snapshot;
  {
    // File I/O happens outside the mutex so that find/insert from other
    // threads are not held up by a slow disk; an insert racing this save is
    // simply saved next time.
    std::lock_guard lock(m_mutex);
    if (m_path.empty()) return true;
    path = m_path;
    snapshot = m_entries;
  }
  try {
    std::error_code ec;
    if (path.has_parent_path()) {
      std::filesystem::create_directories(path.parent_path(), ec);
      if (ec) return fail_save(path, "cannot create " + path.parent_path().string() + ": " + ec.message());
    }
    LockFile lock(path.string() + ".lock");
    if (!lock.acquire()) return fail_save(path, lock.error());

    // Under the lock: whatever other processes saved since we loaded is merged
    // in, ours winning on conflict (they are the newer measurements).
    auto on_disk = load(path);
    if (on_disk.status == LoadStatus::foreign || on_disk.status == LoadStatus::unreadable)
      return fail_save(path, "existing file left untouched: " + on_disk.reason);
    if (on_disk.status == LoadStatus::corrupt) warn_load(path, on_disk);  // replaced below
    Entries added;
    for (auto& [key, timings] : on_disk.entries) {
      if (!snapshot.contains(key)) {
        snapshot.emplace(key, timings);
        added.emplace(key, std::move(timings));
      }
    }

    AtomicFile file(path);
    file.write(serialize(snapshot));
    if (!file.commit()) return fail_save(path, file.error());

    std::lock_guard guard(m_mutex);
    for (auto& [key, timings] : added) m_entries.try_emplace(key, std::move(timings));
    return true;
  } catch (const std::exception& e) {
    // Only allocation or filesystem-library surprises land here: a save
    // failure must never take down a build.
    return fail_save(path, e.what());
  }
}

std::vector<std::string> TimingCache::keys() const {
  std::lock_guard lock(m_mutex);
  std::vector<std::string> keys;
  keys.reserve(m_entries.size());
  for (const auto& entry : m_entries) keys.push_back(entry.first);
  std::sort(keys.begin(), keys.end());
  return keys;
}

size_t TimingCache::size() const {
  std::lock_guard lock(m_mutex);
  return m_entries.size();
}

uint64_t TimingCache::hits() const {
  std::lock_guard lock(m_mutex);
  return m_hits;
}

uint64_t TimingCache::misses() const {
  std::lock_guard lock(m_mutex);
  return m_misses;
}

}  // namespace kiln::builder
