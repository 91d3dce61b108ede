// The largest entry any engine cache store accepts, saves or reads.
//
// Everything read from a shared store (a disk folder other users reach, a
// Redis server) is bounded by this before memory is allocated for it, so a
// hostile or damaged store can cost a warned miss, never an unbounded read.
// Engines are plans without weights (kilobytes to a few megabytes), so the
// bound is far above any real entry; a save of a larger blob is refused with
// a warning, as a blob above the disk cache's cap is.
#pragma once

#include <cstdint>

namespace kiln::cache {

constexpr uint64_t k_max_entry_bytes = uint64_t{1} << 30;  // 1 GiB

}  // namespace kiln::cache
