// Index arithmetic for numpy-style broadcasting in the reference kernels.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace kiln::ref {

// Row-major strides of `shape`, padded on the left to `rank` with zeros; a
// dimension of size 1 gets stride 0, so it repeats across the output.
std::vector<int64_t> broadcast_strides(std::span<const int64_t> shape, size_t rank);

// Walks every flat index of `out_shape` and yields, for each broadcast
// input, the flat index it reads. Plain and slow by design.
class BroadcastWalker {
 public:
  BroadcastWalker(std::span<const int64_t> out_shape, std::vector<std::vector<int64_t>> input_shapes);
  int64_t size() const { return m_size; }
  // Input offsets for output index `i`, which must increase by one per call.
  const std::vector<int64_t>& offsets_for(int64_t i);

 private:
  std::vector<int64_t> m_out_shape;
  std::vector<std::vector<int64_t>> m_strides;
  std::vector<int64_t> m_index;
  std::vector<int64_t> m_offsets;
  int64_t m_size;
  int64_t m_next = 0;
};

}  // namespace kiln::ref
