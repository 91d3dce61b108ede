// Explains a cache miss: finds the cached entry whose key shares the most
// parts with the wanted key and names the parts that differ ("graph",
// "inputs", "settings", "fingerprint"). This is the answer to "why did my
// compile not hit?" that the anchors cannot give.
#pragma once

#include <string>

#include "cache/store.hpp"
#include "key/engine_key.hpp"

namespace kiln::cache {

// At most this many entries' headers are read per store.
constexpr size_t k_max_entries_examined = 256;

// "not in cache; nearest entry 1a2b3c4d5e6f7a8b (3 of 4 key parts equal)
// differs in: settings" — or "not in cache (the cache is empty)". Asks every
// store in the tree under `store` for its entry headers (Store::
// entry_headers(): disk, RAM, Redis, an artifact's engines) and compares
// with the nearest of all. Reads only headers and leaves recency untouched.
// "not in cache" when no store in the tree can show its entries (a user's
// cache, an unreachable Redis).
std::string explain_miss(Store& store, const key::EngineKey& wanted);

}  // namespace kiln::cache
