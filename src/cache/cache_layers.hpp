// Walks the layers of a composed engine cache: kiln wraps stores in
// SigningEngineCache and stacks them in a TieredEngineCache, and code that
// needs one kind of layer (a signing layer's refusals, the disk and Redis
// stores' entry headers) finds it here instead of unwrapping by hand.
#pragma once

#include <functional>

#include "kiln/engine_cache.hpp"

namespace kiln::cache {

// Calls `fn` on `cache`, then on every cache inside it, depth first, in tier
// order (a signing layer's inner cache, a tiered cache's tiers).
void for_each_layer(EngineCache& cache, const std::function<void(EngineCache&)>& fn);

}  // namespace kiln::cache
