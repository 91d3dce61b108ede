// Which engine cache a compile uses, chosen from its settings and the
// environment (docs/fleet-cache.md):
//
//   custom_engine_cache                  the user's cache, as is
//   engine_cache_tiers / $KILN_ENGINE_CACHE
//                                        "ram[:SIZE]", "disk", "redis://...",
//                                        "unix://..." fastest first; several
//                                        make a TieredEngineCache
//   neither                              the disk cache (engine_cache_dir)
//
// With a secret (engine_cache_secret_file, $KILN_ENGINE_CACHE_SECRET_FILE or
// $KILN_ENGINE_CACHE_SECRET) every tier but RAM, and a custom cache, is
// wrapped in a SigningEngineCache. Without one, a Redis tier warns once that
// its entries are unauthenticated.
//
// RAM tiers and Redis clients live for the whole process (one per size or
// URI), so consecutive compiles share the RAM tier, the Redis connections
// and the Redis outage state; disk caches are opened per compile, as before.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "kiln/engine_cache.hpp"
#include "kiln/settings.hpp"

namespace kiln::runtime {

// Throws kiln::Error(invalid_argument) for a bad tier list, URI or secret.
std::shared_ptr<EngineCache> open_engine_cache(const CompileSettings& settings);

// The tier list a compile with `settings` uses: engine_cache_tiers, else
// $KILN_ENGINE_CACHE split at commas, else {"disk"}.
std::vector<std::string> engine_cache_tiers(const CompileSettings& settings);

// "a,b,c" → {"a","b","c"} (blanks dropped).
std::vector<std::string> split_tier_list(const std::string& text);

}  // namespace kiln::runtime
