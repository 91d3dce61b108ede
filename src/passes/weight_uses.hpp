// Internal to kiln_passes: how a node uses each of its inputs, which decides
// whether an initializer is a refittable weight or a structural constant.
// Pure functions over a const graph; safe to call concurrently.
#pragma once

#include <vector>

#include "ir/graph.hpp"

namespace kiln::passes {

enum class InputRole {
  data,        // the values flow into the result: weights, biases, operands
  structural,  // the values steer the computation: shapes, axes, pads, bounds, counts
  shape_only,  // only the input's shape is read (Shape, Size)
};

// The role of input `input` of `node`, by op type and input position.
InputRole input_role(const ir::Node& node, size_t input);

// Per value: whether it is a refittable weight (see passes::is_refittable).
// One pass over the graph, for callers that classify every value.
std::vector<bool> refittable_values(const ir::Graph& graph);

// Reads element `i` of a float tensor (float16, bfloat16, float32, float64)
// as a double. Throws kiln::Error(invalid_argument) for other dtypes.
double float_element(const Tensor& tensor, int64_t i);

}  // namespace kiln::passes
