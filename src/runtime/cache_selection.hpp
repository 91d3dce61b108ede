// Which engine cache a compile uses, chosen from its settings.
#pragma once

#include <memory>

#include "kiln/engine_cache.hpp"
#include "kiln/settings.hpp"

namespace kiln::runtime {

// The user's custom_engine_cache if set, else the disk cache at
// engine_cache_dir (default: temp dir / "kiln_engine_cache").
std::shared_ptr<EngineCache> open_engine_cache(const CompileSettings& settings);

}  // namespace kiln::runtime
