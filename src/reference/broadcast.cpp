#include "reference/broadcast.hpp"

#include "kiln/tensor.hpp"

namespace kiln::ref {

std::vector<int64_t> broadcast_strides(std::span<const int64_t> shape, size_t rank) {
  std::vector<int64_t> strides(rank, 0);
  int64_t stride = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    size_t out_axis = rank - shape.size() + i;
    strides[out_axis] = shape[i] == 1 ? 0 : stride;
    stride *= shape[i];
  }
  return strides;
}

BroadcastWalker::BroadcastWalker(std::span<const int64_t> out_shape,
                                 std::vector<std::vector<int64_t>> input_shapes)
    : m_out_shape(out_shape.begin(), out_shape.end()),
      m_index(out_shape.size(), 0),
      m_offsets(input_shapes.size(), 0),
      m_size(shape_numel(out_shape)) {
  for (const auto& s : input_shapes) m_strides.push_back(broadcast_strides(s, out_shape.size()));
}

const std::vector<int64_t>& BroadcastWalker::offsets_for(int64_t i) {
  if (i != m_next) throw Error(ErrorCode::internal, "BroadcastWalker must be walked in order");
  if (i > 0) {
    // Increment the multi-index like an odometer and adjust offsets.
    for (size_t axis = m_out_shape.size(); axis-- > 0;) {
      ++m_index[axis];
      for (size_t k = 0; k < m_offsets.size(); ++k) m_offsets[k] += m_strides[k][axis];
      if (m_index[axis] < m_out_shape[axis]) break;
      for (size_t k = 0; k < m_offsets.size(); ++k) m_offsets[k] -= m_strides[k][axis] * m_index[axis];
      m_index[axis] = 0;
    }
  }
  ++m_next;
  return m_offsets;
}

}  // namespace kiln::ref
