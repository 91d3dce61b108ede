#include "cache/cache_layout.hpp"

#include <algorithm>

namespace kiln::cache {

namespace {

constexpr std::string_view k_entry_suffix = ".kiln";
constexpr std::string_view k_lock_suffix = ".lock";

bool ends_with(std::string_view text, std::string_view suffix) {
  return text.size() >= suffix.size() && text.substr(text.size() - suffix.size()) == suffix;
}

}  // namespace

bool is_valid_key(std::string_view key) {
  return key.size() == 64 && std::all_of(key.begin(), key.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

CacheLayout::CacheLayout(std::filesystem::path root)
    : m_root(std::move(root)), m_version_dir(m_root / ("v" + std::to_string(k_layout_version))) {}

std::filesystem::path CacheLayout::entries_dir() const { return m_version_dir / "entries"; }

std::filesystem::path CacheLayout::shard_dir(std::string_view key) const {
  return entries_dir() / std::string(key.substr(0, 2));
}

std::filesystem::path CacheLayout::entry_path(std::string_view key) const {
  return shard_dir(key) / (std::string(key) + std::string(k_entry_suffix));
}

std::filesystem::path CacheLayout::locks_dir() const { return m_version_dir / "locks"; }
std::filesystem::path CacheLayout::evict_lock_path() const { return locks_dir() / "evict.lock"; }
std::filesystem::path CacheLayout::stats_lock_path() const { return locks_dir() / "stats.lock"; }

std::filesystem::path CacheLayout::key_lock_path(std::string_view key) const {
  return locks_dir() / (std::string(key) + std::string(k_lock_suffix));
}

std::filesystem::path CacheLayout::quarantine_dir() const { return m_version_dir / "quarantine"; }

std::filesystem::path CacheLayout::quarantine_stem(std::string_view key, long long unix_ms) const {
  return quarantine_dir() / (std::string(key) + "." + std::to_string(unix_ms));
}

std::filesystem::path CacheLayout::stats_path() const { return m_version_dir / "stats"; }
std::filesystem::path CacheLayout::timing_dir() const { return m_root / "timing"; }

std::optional<std::string> key_from_entry_name(std::string_view file_name) {
  if (!ends_with(file_name, k_entry_suffix)) return std::nullopt;
  auto key = file_name.substr(0, file_name.size() - k_entry_suffix.size());
  if (!is_valid_key(key)) return std::nullopt;
  return std::string(key);
}

bool is_temp_name(std::string_view file_name) {
  return file_name.size() > 1 && file_name[0] == '.' && file_name.find(".tmp.") != std::string_view::npos;
}

bool is_key_lock_name(std::string_view file_name) {
  return ends_with(file_name, k_lock_suffix) &&
         is_valid_key(file_name.substr(0, file_name.size() - k_lock_suffix.size()));
}

}  // namespace kiln::cache
