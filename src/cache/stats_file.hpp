// The disk cache's persisted counters: hits, misses, saves, evictions,
// refused_too_large and quarantined, summed over every process that ever used
// the folder.
//
// Like ccache, processes count in memory and add their counts to one small
// text file ("hits 12\n" lines) under an exclusive lock: read, add, write
// atomically. Adding (rather than writing a process's totals) is what makes
// concurrent processes and restarts add up. Unknown lines are ignored, so a
// later version may add counters; a corrupt file reads as zeros with a warning.
//
// Thread-safety: free functions; the lock makes concurrent callers safe.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "cache/cache_fs.hpp"
#include "cache/cache_layout.hpp"
#include "kiln/engine_cache.hpp"

namespace kiln::cache {

// Only the counters of CacheStats are persisted; entries and bytes are
// measured by a scan, never persisted.
void add_counters(CacheStats& into, const CacheStats& delta);
bool has_counts(const CacheStats& stats);

std::string format_counters(const CacheStats& counters);
// Nullopt for text that is not "name value" lines.
std::optional<CacheStats> parse_counters(std::string_view text);

// Zeros when the file is missing or unreadable.
CacheStats read_counters(CacheFs& fs, const CacheLayout& layout);
// Adds `delta` to the file under layout.stats_lock_path(). Fails (nothing
// written) when the lock or the write fails; the caller keeps its counts.
IoStatus add_to_counters_file(CacheFs& fs, const CacheLayout& layout, const CacheStats& delta);
// Removes the counts, under the lock.
IoStatus zero_counters_file(CacheFs& fs, const CacheLayout& layout);

}  // namespace kiln::cache
