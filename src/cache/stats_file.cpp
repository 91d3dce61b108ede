#include "cache/stats_file.hpp"

#include <cerrno>
#include <charconv>
#include <chrono>
#include <utility>

#include "util/lock_file.hpp"
#include "util/log.hpp"

namespace kiln::cache {

namespace {

constexpr auto k_lock_timeout = std::chrono::seconds(10);

// The persisted names; frozen, since they are part of the on-disk format.
constexpr std::pair<const char*, uint64_t CacheStats::*> k_counters[] = {
    {"hits", &CacheStats::hits},
    {"misses", &CacheStats::misses},
    {"saves", &CacheStats::saves},
    {"evictions", &CacheStats::evictions},
    {"refused_too_large", &CacheStats::refused_too_large},
    {"quarantined", &CacheStats::quarantined},
    {"unusable_corrupt", &CacheStats::unusable_corrupt},
    {"unusable_incompatible", &CacheStats::unusable_incompatible},
    {"unusable_refit_failed", &CacheStats::unusable_refit_failed},
    {"build_ms_saved", &CacheStats::build_ms_saved},
};

std::string as_text(const std::vector<std::byte>& bytes) {
  return std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

}  // namespace

void add_counters(CacheStats& into, const CacheStats& delta) {
  for (const auto& [name, field] : k_counters) into.*field += delta.*field;
}

bool has_counts(const CacheStats& stats) {
  for (const auto& [name, field] : k_counters) {
    if (stats.*field != 0) return true;
  }
  return false;
}

std::string format_counters(const CacheStats& counters) {
  std::string text;
  for (const auto& [name, field] : k_counters)
    text += std::string(name) + " " + std::to_string(counters.*field) + "\n";
  return text;
}

std::optional<CacheStats> parse_counters(std::string_view text) {
  CacheStats counters;
  while (!text.empty()) {
    auto end = text.find('\n');
    if (end == std::string_view::npos) return std::nullopt;  // a complete file ends with a newline
    auto line = text.substr(0, end);
    text.remove_prefix(end + 1);
    auto space = line.find(' ');
    if (space == std::string_view::npos) return std::nullopt;
    auto name = line.substr(0, space);
    auto digits = line.substr(space + 1);
    uint64_t value = 0;
    auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
    if (ec != std::errc() || ptr != digits.data() + digits.size()) return std::nullopt;
    for (const auto& [known, field] : k_counters) {
      if (name == known) counters.*field = value;
    }
  }
  return counters;
}

CacheStats read_counters(CacheFs& fs, const CacheLayout& layout) {
  std::vector<std::byte> bytes;
  auto status = fs.read_file(layout.stats_path(), bytes);
  if (!status.ok()) {
    // A missing folder (ENOTDIR: a path below a file) is no counters yet.
    if (status.error != ENOENT && status.error != ENOTDIR)
      log::warn_once("cache-stats-read:" + layout.root().string(), status.message);
    return {};
  }
  auto counters = parse_counters(as_text(bytes));
  if (!counters) {
    log::warn_once(
        "cache-stats-corrupt:" + layout.root().string(),
        "engine cache counters " + layout.stats_path().string() + " are corrupt; counting from zero");
    return {};
  }
  return *counters;
}

IoStatus add_to_counters_file(CacheFs& fs, const CacheLayout& layout, const CacheStats& delta) {
  LockFile lock(layout.stats_lock_path());
  if (!lock.acquire(k_lock_timeout)) return IoStatus{EAGAIN, lock.error()};
  CacheStats total = read_counters(fs, layout);
  add_counters(total, delta);
  auto text = format_counters(total);
  return fs.write_file_atomic(layout.stats_path(), std::as_bytes(std::span(text.data(), text.size())));
}

IoStatus zero_counters_file(CacheFs& fs, const CacheLayout& layout) {
  LockFile lock(layout.stats_lock_path());
  if (!lock.acquire(k_lock_timeout)) return IoStatus{EAGAIN, lock.error()};
  auto status = fs.remove_file(layout.stats_path());
  return status.error == ENOENT ? IoStatus::success() : status;
}

}  // namespace kiln::cache
