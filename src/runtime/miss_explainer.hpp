// Explains a cache miss: finds the cached entry whose key shares the most
// parts with the wanted key and names the parts that differ ("graph",
// "inputs", "settings", "fingerprint"). This is the answer to "why did my
// compile not hit?" that the anchors cannot give.
#pragma once

#include <string>

#include "cache/disk_engine_cache.hpp"
#include "key/engine_key.hpp"

namespace kiln::runtime {

// "not in cache; nearest entry 1a2b3c4d5e6f7a8b (3 parts equal) differs in:
// settings" — or "not in cache (the cache is empty)". Reads only entry
// headers (at most the 256 most recently used entries) and leaves recency
// untouched.
std::string explain_miss(cache::DiskEngineCache& cache, const key::EngineKey& wanted);

// The same over every disk and Redis store inside `cache` (through signing
// and tier wrappers): the nearest entry of any of them. A Redis store is
// read with a SCAN and one GETRANGE per entry (at most 256). "not in cache"
// when `cache` holds neither (a RAM tier, a user's cache) or Redis is
// unreachable.
std::string explain_miss(EngineCache& cache, const key::EngineKey& wanted);

// What a compile of `graph` with these specs and settings would find in the
// disk cache, without building anything (`kiln cache explain`).
struct Explanation {
  std::string key;
  key::KeyParts parts;
  bool would_hit = false;
  std::string detail;  // "entry present and valid" or why it would miss
};
Explanation explain_compile(const ir::Graph& graph, std::span<const InputSpec> specs,
                            const CompileSettings& settings);

}  // namespace kiln::runtime
