// The conformance suite's "initializer" variant: ONNX node tests feed every
// operand as a graph input, weights included, while exported models hold
// weights as initializers, and the cpu backend runs Conv, Gemm, MatMul and
// LayerNormalization on oneDNN only when their weights are constant. This
// turns each graph input that an op reads in a weight position into an
// initializer holding the test data set's value, so the same case exercises
// the engine's weight path.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <vector>

#include "ir/graph.hpp"

namespace kiln::conformance {

// The inputs of `node` that a model holds as constants: kernels and biases
// (Conv, ConvTranspose, Gemm B and C, a 2-D MatMul B), normalization
// scale/bias/mean/variance, the PRelu slope, Clip bounds and the recurrent
// ops' W, R and B. Derived from the op type and, for MatMul, the rank of B
// (a 2-D B is a linear layer's weight; a batched B is a second activation,
// as in attention, and stays an input).
std::vector<size_t> weight_positions(const ir::Graph& graph, const ir::Node& node);

// The graph inputs that a top-level node of `graph` reads in a weight
// position, each once, in graph-input order.
std::vector<ir::ValueId> weight_inputs(const ir::Graph& graph);

// `graph` with every graph input read in a weight position (by a top-level
// node) turned into an initializer holding `inputs[i]`, the value the test
// data set feeds it. `remaining` gets the inputs the new graph still takes,
// in its order. Returns nullopt when no input is in a weight position (the
// variant would be the case itself). Value and node ids are unchanged; the
// new initializers share storage with `inputs`.
struct WeightsAsInitializers {
  ir::Graph graph;
  std::vector<Tensor> remaining;
  std::vector<std::string> converted;  // the graph inputs now initializers, by name
};
std::optional<WeightsAsInitializers> weights_as_initializers(const ir::Graph& graph,
                                                             std::span<const Tensor> inputs);

}  // namespace kiln::conformance
