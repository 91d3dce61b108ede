#include "backends/cpu/memory_plan.hpp"

#include <algorithm>
#include <numeric>

namespace kiln::cpu {

namespace {

size_t align_up(size_t n) { return (n + k_arena_alignment - 1) / k_arena_alignment * k_arena_alignment; }

}  // namespace

size_t plan_memory(std::vector<MemoryBlock>& blocks) {
  std::vector<size_t> order(blocks.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return blocks[a].size > blocks[b].size; });
  std::vector<size_t> placed;
  size_t total = 0;
  for (size_t i : order) {
    MemoryBlock& blk = blocks[i];
    // Live neighbours, by offset; take the first gap that fits.
    std::vector<const MemoryBlock*> live;
    for (size_t p : placed) {
      const MemoryBlock& o = blocks[p];
      if (o.first <= blk.last && blk.first <= o.last) live.push_back(&o);
    }
    std::sort(live.begin(), live.end(),
              [](const MemoryBlock* a, const MemoryBlock* b) { return a->offset < b->offset; });
    size_t offset = 0;
    const size_t need = align_up(blk.size);
    for (const MemoryBlock* o : live) {
      if (offset + need <= o->offset) break;
      offset = std::max(offset, align_up(o->offset + o->size));
    }
    blk.offset = offset;
    total = std::max(total, offset + need);
    placed.push_back(i);
  }
  return total;
}

}  // namespace kiln::cpu
