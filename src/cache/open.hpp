// Opens the store tree a compile uses, from its settings and the
// environment (docs/fleet-cache.md):
//
//   custom_engine_cache                  the user's cache (adapt())
//   engine_cache_tiers / $KILN_ENGINE_CACHE
//                                        "ram[:SIZE]", "disk", "redis://...",
//                                        "unix://..." fastest first; several
//                                        make a TieredEngineCache
//   neither                              the disk cache (engine_cache_dir)
//
// With a secret (engine_cache_secret_file, $KILN_ENGINE_CACHE_SECRET_FILE or
// $KILN_ENGINE_CACHE_SECRET) every tier but RAM, and a custom cache, is
// wrapped in a SigningEngineCache. Without one, a Redis tier warns once that
// its entries are unauthenticated. An AOT artifact's engines go in front of
// all of it, outside the signing layer (open_artifact()).
//
// A bad tier in settings is an error; a bad tier in $KILN_ENGINE_CACHE is a
// warning and the compile goes on without it (a cache never fails a
// compile), with the disk cache when no tier is left.
//
// RAM tiers and Redis clients live for the whole process (one per size or
// URI), so consecutive compiles share the RAM tier, the Redis connections
// and the Redis outage state; disk caches are opened per compile.
#pragma once

#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "cache/store.hpp"
#include "kiln/settings.hpp"

namespace kiln::cache {

// The store tree for `settings`. Throws kiln::Error(invalid_argument) for a
// bad tier list, URI or secret in settings, or an empty engine_cache_dir.
std::shared_ptr<Store> open(const CompileSettings& settings);

// One tier from its spec ("ram:512M", "disk", "redis://..."), signed when
// `secret` is set (RAM never is). Throws kiln::Error(invalid_argument) for
// a spec it does not know.
std::shared_ptr<Store> open_tier(const std::string& spec, const CompileSettings& settings,
                                 const std::optional<std::vector<std::byte>>& secret);

// An AOT artifact's engines in front of the store tree for `settings`
// (none when `behind_too` is false). See artifact_engine_cache.hpp for the
// trust an artifact carries.
std::shared_ptr<Store> open_artifact(std::span<const std::vector<std::byte>> engines,
                                     const CompileSettings& settings, bool behind_too,
                                     const std::string& source);

// The tier list a compile with `settings` uses: engine_cache_tiers, else
// $KILN_ENGINE_CACHE split at commas, else {"disk"}.
std::vector<std::string> engine_cache_tiers(const CompileSettings& settings);

// "a,b,c" → {"a","b","c"} (blanks dropped).
std::vector<std::string> split_tier_list(const std::string& text);

// The disk cache's folder: engine_cache_dir; throws kiln::Error
// (invalid_argument) when it is empty, which would otherwise silently mean
// the shared default folder.
std::filesystem::path cache_dir(const CompileSettings& settings);

// Where the timing cache lives for `settings`: timing_cache_path if set ("-"
// means none), else CacheLayout's timing file inside the engine cache dir,
// so it never counts as a cache entry.
std::filesystem::path timing_cache_path(const CompileSettings& settings);

}  // namespace kiln::cache
