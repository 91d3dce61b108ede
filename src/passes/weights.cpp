// Refittable weights, their canonical order, and recipe evaluation.
#include <algorithm>
#include <string>

#include "passes/passes.hpp"
#include "passes/weight_uses.hpp"

namespace kiln::passes {

using ir::k_no_value;
using ir::NodeId;
using ir::ValueId;
using ir::WeightRecipe;

namespace {

bool starts_with(const std::string& s, std::string_view prefix) {
  return s.size() >= prefix.size() && std::string_view(s).substr(0, prefix.size()) == prefix;
}

}  // namespace

InputRole input_role(const ir::Node& node, size_t input) {
  const std::string& op = node.op_type;
  if (!node.domain.empty() && node.domain != "ai.onnx") return InputRole::data;
  // Ops that read only their input's shape: refitting cannot change it.
  if (op == "Shape" || op == "Size") return InputRole::shape_only;
  if (op == "Range" || op == "ConstantOfShape") return InputRole::structural;
  if (input == 0) return InputRole::data;
  // From here on, input >= 1.
  if (op == "Reshape" || op == "Expand" || op == "Tile" || op == "Squeeze" || op == "Unsqueeze" ||
      op == "TopK" || op == "Split" || op == "CumSum" || op == "Trilu" || op == "Gather" ||
      op == "GatherElements" || op == "GatherND" || op == "OneHot" || starts_with(op, "Reduce")) {
    return InputRole::structural;
  }
  if (op == "Slice" || op == "Pad" || op == "Resize" || op == "Upsample" || op == "Clip" || op == "Dropout" ||
      op == "NonMaxSuppression") {
    return InputRole::structural;
  }
  if (op == "ScatterND" || op == "ScatterElements")
    return input == 1 ? InputRole::structural : InputRole::data;
  return InputRole::data;
}

std::vector<bool> refittable_values(const ir::Graph& graph) {
  // 0: unused so far, 1: some data use, 2: some structural use (wins).
  std::vector<uint8_t> use(graph.num_values(), 0);
  for (const ir::Node& node : graph.nodes()) {
    for (size_t i = 0; i < node.inputs.size(); ++i) {
      ValueId in = node.inputs[i];
      if (in == k_no_value) continue;
      auto& u = use[static_cast<size_t>(in)];
      switch (input_role(node, i)) {
        case InputRole::data:
          u = std::max<uint8_t>(u, 1);
          break;
        case InputRole::structural:
          u = 2;
          break;
        case InputRole::shape_only:
          break;
      }
    }
  }
  std::vector<bool> result(graph.num_values(), false);
  for (size_t v = 0; v < graph.num_values(); ++v) {
    const ir::Value& value = graph.value(static_cast<ValueId>(v));
    result[v] = value.initializer && is_floating(value.initializer->dtype()) &&
                value.initializer->numel() > 1 && use[v] == 1;
  }
  return result;
}

bool is_refittable(const ir::Graph& graph, ValueId value) {
  if (value < 0 || static_cast<size_t>(value) >= graph.num_values()) return false;
  const ir::Value& v = graph.value(value);
  if (!v.initializer || !is_floating(v.initializer->dtype()) || v.initializer->numel() <= 1) return false;
  return refittable_values(graph)[static_cast<size_t>(value)];
}

std::vector<ValueId> canonical_weights(const ir::Graph& graph) {
  std::vector<bool> refittable = refittable_values(graph);
  std::vector<bool> seen(graph.num_values(), false);
  std::vector<ValueId> order;
  for (NodeId n : graph.topological_order()) {
    for (ValueId in : graph.node(n).inputs) {
      if (in == k_no_value) continue;
      auto i = static_cast<size_t>(in);
      if (refittable[i] && !seen[i]) {
        seen[i] = true;
        order.push_back(in);
      }
    }
  }
  return order;
}

std::vector<Tensor> source_weights(const ir::Graph& graph) {
  std::vector<Tensor> result;
  for (ValueId id : canonical_weights(graph)) result.push_back(*graph.value(id).initializer);
  return result;
}

}  // namespace kiln::passes
