#include "backends/cuda/strided_walk.hpp"

#include <cstddef>

namespace kiln::cuda {

StridedWalk StridedWalk::contiguous(std::span<const int64_t> shape) {
  StridedWalk w;
  w.shape.assign(shape.begin(), shape.end());
  w.strides.resize(shape.size());
  int64_t stride = 1;
  for (size_t d = shape.size(); d-- > 0;) {
    w.strides[d] = stride;
    stride *= shape[d];
  }
  return w;
}

void StridedWalk::slice(std::span<const int64_t> starts, std::span<const int64_t> steps,
                        std::span<const int64_t> out) {
  for (size_t d = 0; d < shape.size(); ++d) {
    offset += starts[d] * strides[d];
    strides[d] *= steps[d];
    shape[d] = out[d];
  }
}

bool StridedWalk::reshape(std::span<const int64_t> target) {
  // Size-1 dimensions carry no stride that matters: drop them first.
  std::vector<int64_t> dims, steps;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 0) return false;  // nothing to walk: no gather either
    if (shape[d] != 1) {
      dims.push_back(shape[d]);
      steps.push_back(strides[d]);
    }
  }
  // Runs of source dimensions that are contiguous among themselves (each
  // stride the next one's times its size) walk as one dimension; a target
  // dimension must not straddle two runs. Within a run, the target's strides
  // follow from the run's innermost stride.
  std::vector<int64_t> result(target.size(), 0);
  size_t t = target.size();
  size_t d = dims.size();
  while (d > 0) {
    // The run ending at source dimension d - 1.
    size_t first = d - 1;
    int64_t run = dims[first];
    while (first > 0 && steps[first - 1] == steps[first] * dims[first]) {
      --first;
      run *= dims[first];
    }
    int64_t covered = 1;
    const int64_t inner = steps[d - 1];
    while (t > 0 && (covered < run || target[t - 1] == 1)) {
      result[t - 1] = covered * inner;
      covered *= target[t - 1];
      --t;
    }
    if (covered != run) return false;
    d = first;
  }
  while (t > 0) {  // leading size-1 target dimensions
    if (target[t - 1] != 1) return false;
    --t;
  }
  shape.assign(target.begin(), target.end());
  strides = std::move(result);
  return true;
}

void StridedWalk::transpose(std::span<const int64_t> perm) {
  std::vector<int64_t> s(perm.size()), st(perm.size());
  for (size_t d = 0; d < perm.size(); ++d) {
    s[d] = shape[static_cast<size_t>(perm[d])];
    st[d] = strides[static_cast<size_t>(perm[d])];
  }
  shape = std::move(s);
  strides = std::move(st);
}

}  // namespace kiln::cuda
