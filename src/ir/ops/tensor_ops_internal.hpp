// Helpers shared by the tensor-op inference files (tensor_ops.cpp,
// tensor_spatial_ops.cpp, tensor_index_ops.cpp).
#pragma once

#include <optional>
#include <vector>

#include "ir/op_schema.hpp"

namespace kiln::ir {

// The input values the context knows now, one per input (null if unknown).
std::vector<const Tensor*> known_values(const InferContext& ctx);
// The length of 1-D input `i` when its shape is static.
std::optional<int64_t> static_length(const InferContext& ctx, size_t i);

// Pad, Resize, Upsample, DepthToSpace, SpaceToDepth, OneHot, NonZero,
// CumSum, Trilu, Einsum.
void register_tensor_spatial_ops(OpRegistry& registry);
// ScatterND, ScatterElements (Scatter), GatherND.
void register_tensor_index_ops(OpRegistry& registry);

}  // namespace kiln::ir
