#include "cache/cache_layers.hpp"

#include "cache/signing_engine_cache.hpp"
#include "cache/tiered_engine_cache.hpp"

namespace kiln::cache {

void for_each_layer(EngineCache& cache, const std::function<void(EngineCache&)>& fn) {
  fn(cache);
  if (auto* signing = dynamic_cast<SigningEngineCache*>(&cache)) {
    for_each_layer(*signing->inner(), fn);
  } else if (auto* tiered = dynamic_cast<TieredEngineCache*>(&cache)) {
    for (const auto& tier : tiered->tiers()) for_each_layer(*tier.cache, fn);
  }
}

}  // namespace kiln::cache
