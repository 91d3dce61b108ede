// A chain of data-movement ops (Slice, Reshape-like views, Transpose) as one
// strided walk over the chain's first input: the output shape, the input
// element stride of each output dimension and the input element where the
// walk starts. A chain that is one walk runs as one gather, instead of one
// copy per op (attention's Split → Reshape → Transpose of Q, K and V).
//
// Stateless; thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

namespace kiln::cuda {

struct StridedWalk {
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;  // input elements per step of each dimension
  int64_t offset = 0;            // input element of the walk's first output element

  // The walk of a whole contiguous tensor.
  static StridedWalk contiguous(std::span<const int64_t> shape);

  // Every dimension d keeps the elements start[d], start[d] + step[d], ...
  // (`out` of them). REQUIRES: the box lies inside the walk, steps >= 1.
  void slice(std::span<const int64_t> starts, std::span<const int64_t> steps, std::span<const int64_t> out);

  // The same elements, in the same order, as `shape`: false (and the walk
  // unchanged) when they are not one walk (a reshape that merges dimensions
  // whose strides do not chain, as after a transpose). REQUIRES: the same
  // element count.
  bool reshape(std::span<const int64_t> shape);

  // Output dimension d is the walk's dimension perm[d].
  void transpose(std::span<const int64_t> perm);
};

}  // namespace kiln::cuda
