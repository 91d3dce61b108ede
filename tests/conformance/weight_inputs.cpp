#include "weight_inputs.hpp"

#include <set>

#include "kiln/error.hpp"

namespace kiln::conformance {

std::vector<size_t> weight_positions(const ir::Graph& graph, const ir::Node& node) {
  if (!node.domain.empty() && node.domain != "ai.onnx") return {};
  const std::string& op = node.op_type;
  if (op == "Conv" || op == "ConvTranspose" || op == "Gemm") return {1, 2};
  if (op == "MatMul") {
    if (node.inputs.size() < 2 || node.inputs[1] == ir::k_no_value) return {};
    const auto& shape = graph.value(node.inputs[1]).type.shape;
    return shape && shape->size() == 2 ? std::vector<size_t>{1} : std::vector<size_t>{};
  }
  if (op == "BatchNormalization") return {1, 2, 3, 4};
  if (op == "InstanceNormalization" || op == "LayerNormalization" || op == "GroupNormalization")
    return {1, 2};
  if (op == "PRelu") return {1};
  // ReLU6 and friends: exporters write the bounds as constants.
  if (op == "Clip") return {1, 2};
  if (op == "RNN" || op == "GRU" || op == "LSTM") return {1, 2, 3};
  return {};
}

std::vector<ir::ValueId> weight_inputs(const ir::Graph& graph) {
  std::set<ir::ValueId> read_as_weight;
  for (const ir::Node& node : graph.nodes()) {
    for (size_t i : weight_positions(graph, node)) {
      if (i < node.inputs.size() && node.inputs[i] != ir::k_no_value) read_as_weight.insert(node.inputs[i]);
    }
  }
  std::vector<ir::ValueId> out;
  for (ir::ValueId id : graph.inputs()) {
    if (read_as_weight.count(id)) out.push_back(id);
  }
  return out;
}

std::optional<WeightsAsInitializers> weights_as_initializers(const ir::Graph& graph,
                                                             std::span<const Tensor> inputs) {
  const std::vector<ir::ValueId> list = weight_inputs(graph);
  if (list.empty()) return std::nullopt;
  if (inputs.size() != graph.inputs().size()) {
    throw Error(ErrorCode::invalid_argument, graph.source + ": " + std::to_string(inputs.size()) +
                                                 " input tensors for " +
                                                 std::to_string(graph.inputs().size()) + " graph inputs");
  }
  const std::set<ir::ValueId> weights(list.begin(), list.end());

  WeightsAsInitializers out;
  out.graph.source = graph.source;
  // Same values in the same order, so every id stays valid.
  for (size_t v = 0; v < graph.num_values(); ++v) {
    const ir::Value& value = graph.value(static_cast<ir::ValueId>(v));
    ir::ValueId id = out.graph.add_value(value.name, value.type);
    out.graph.value(id) = value;
  }
  for (const ir::Node& node : graph.nodes()) out.graph.add_node(node);
  for (size_t i = 0; i < graph.inputs().size(); ++i) {
    ir::ValueId id = graph.inputs()[i];
    if (!weights.count(id)) {
      out.graph.add_input(id);
      out.remaining.push_back(inputs[i]);
      continue;
    }
    ir::Value& value = out.graph.value(id);
    value.type = ir::ValueType::of(inputs[i]);
    value.initializer = inputs[i];
    out.converted.push_back(value.name);
  }
  for (ir::ValueId id : graph.outputs()) out.graph.add_output(id);
  return out;
}

}  // namespace kiln::conformance
