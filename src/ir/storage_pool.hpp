// Storage for owned tensors, with large blocks recycled instead of returned
// to the operating system at once.
//
// Why: an engine hands back freshly allocated output tensors on every run.
// A large allocation (glibc: from 128 KiB up) is fresh pages from mmap, and
// freeing it unmaps them, so the next run's output was new pages again: the
// kernel zero-filled every 4 KiB page on first touch, inside the final
// reorder (measured on DeepLabV3's 1x21x224x224 output: 7.3 ms first-touch
// against 0.26 ms for the same reorder into warm memory, half the run).
// madvise or MAP_POPULATE only move that zeroing; reusing the pages avoids
// it. So a freed large block is kept, by size class, for the next tensor of
// that class, up to a bounded total; beyond the bound the least recently
// freed blocks go back to the OS. Small blocks stay with malloc, whose own
// free lists already reuse them warm.
//
// Bound: 256 MiB by default, or the environment's KILN_TENSOR_POOL_BYTES (a
// size such as 1G or 0, parsed by parse_byte_size) read once per process;
// set_storage_pool_limit() overrides both; 0 turns recycling off. A recycled
// block is not zeroed (Tensor::zeros zeroes what it hands out; an
// uninitialized tensor's bytes are unspecified either way). Under
// AddressSanitizer the cached blocks are poisoned, so a stale pointer into
// one is reported as a use after free would be.
//
// Thread-safety: every function may be called from any thread; a block may
// be allocated on one thread and released (its shared_ptr dropped) on
// another. The pool lives until the process exits, so tensors in static
// storage may outlive main().
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

namespace kiln {

// Blocks of this size or more go through the pool.
constexpr size_t k_pooled_storage_min_bytes = size_t{256} << 10;

// A block of at least `bytes` bytes (at least one), 64-byte aligned, freed
// (or recycled) when the last copy of the pointer goes. Throws
// std::bad_alloc when memory is exhausted.
std::shared_ptr<std::byte> allocate_storage(size_t bytes);

struct StoragePoolStats {
  uint64_t cached_bytes = 0;  // held for reuse now
  uint64_t cached_blocks = 0;
  uint64_t reused = 0;  // large allocations served from the pool, ever
  uint64_t fresh = 0;   // large allocations that mapped new memory, ever
};
StoragePoolStats storage_pool_stats();

uint64_t storage_pool_limit();
// Sets the bound; blocks above it are returned to the OS now.
void set_storage_pool_limit(uint64_t bytes);

}  // namespace kiln
