// Greedy offset allocation of activation buffers over one arena.
//
// Each block has a size and a lifetime [first, last] in layer indices; two
// blocks whose lifetimes overlap never overlap in memory. Blocks are placed
// largest first, each at the lowest aligned offset that fits between the
// already placed blocks it is live with (the classic greedy-by-size
// heuristic: within a few percent of the optimum on CNNs, and linear-time
// enough for graphs of a few thousand values).
//
// Stateless; thread-safe.
#pragma once

#include <cstddef>
#include <vector>

namespace kiln::cpu {

struct MemoryBlock {
  size_t size = 0;
  int first = 0;
  int last = 0;
  size_t offset = 0;  // output
};

constexpr size_t k_arena_alignment = 64;

// Assigns every block's offset; returns the arena size.
size_t plan_memory(std::vector<MemoryBlock>& blocks);

}  // namespace kiln::cpu
