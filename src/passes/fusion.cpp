// passes::find_fusions: anchor (Conv, Gemm, MatMul) → bias Add → residual
// Add → activation chains in a lowered graph.
#include <algorithm>
#include <array>
#include <string_view>
#include <utility>

#include "passes/lowering_passes.hpp"
#include "passes/passes.hpp"

namespace kiln::passes {

using ir::k_no_node;
using ir::k_no_value;
using ir::NodeId;
using ir::ValueId;

namespace {

constexpr std::array<std::string_view, 9> k_activations = {
    "Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh", "HardSwish", "HardSigmoid", "Gelu", "Elu"};

bool is_default_domain(const ir::Node& node) { return node.domain.empty() || node.domain == "ai.onnx"; }

// Static shapes are equal when every dim is known (a size or a symbol) and matches.
bool same_shape(const ir::ValueType& a, const ir::ValueType& b) {
  if (!a.shape || !b.shape || a.dtype != b.dtype || a.shape->size() != b.shape->size()) return false;
  for (size_t i = 0; i < a.shape->size(); ++i) {
    const ir::Dim& x = (*a.shape)[i];
    if (x.is_unknown() || !(x == (*b.shape)[i])) return false;
  }
  return true;
}

class FusionFinder {
 public:
  explicit FusionFinder(const ir::Graph& graph) : m_graph(graph), m_order(graph.topological_order()) {
    m_reads.assign(graph.num_values(), {});
    m_position.assign(graph.num_nodes(), 0);
    for (size_t i = 0; i < m_order.size(); ++i) {
      NodeId n = m_order[i];
      m_position[static_cast<size_t>(n)] = static_cast<int>(i);
      for (ValueId in : graph.node(n).inputs) {
        if (in != k_no_value) m_reads[static_cast<size_t>(in)].push_back(n);
      }
    }
    m_is_output.assign(graph.num_values(), false);
    for (ValueId out : graph.outputs()) m_is_output[static_cast<size_t>(out)] = true;
  }

  std::vector<FusionGroup> run() {
    std::vector<FusionGroup> groups;
    for (NodeId n : m_order) {
      const ir::Node& node = m_graph.node(n);
      if (!is_default_domain(node) || node.outputs.empty() || node.outputs[0] == k_no_value) continue;
      if (node.op_type != "Conv" && node.op_type != "Gemm" && node.op_type != "MatMul") continue;
      groups.push_back(grow(n));
    }
    return groups;
  }

 private:
  NodeId sole_user(ValueId v) const {
    if (m_is_output[static_cast<size_t>(v)]) return k_no_node;
    const auto& r = m_reads[static_cast<size_t>(v)];
    return r.size() == 1 ? r[0] : k_no_node;
  }

  // The input of binary `node` that is not `v`; -1 unless exactly one is `v`.
  static int other_input(const ir::Node& node, ValueId v) {
    if (node.inputs.size() != 2) return -1;
    if (node.inputs[0] == v && node.inputs[1] != v) return 1;
    if (node.inputs[1] == v && node.inputs[0] != v) return 0;
    return -1;
  }

  bool is_bias(const ir::Node& add, ValueId bias, ValueId anchor_out) const {
    const ir::Value& b = m_graph.value(bias);
    const ir::ValueType& y = m_graph.value(anchor_out).type;
    if (!b.initializer || !b.recipe || b.initializer->rank() != 1 || !y.shape || y.shape->empty())
      return false;
    // A 1-D operand as long as the last dim broadcasts without growing the result.
    const ir::Dim& last = y.shape->back();
    return last.is_static() && last.value() == b.initializer->numel() &&
           m_graph.value(add.outputs[0]).type.dtype == y.dtype;
  }

  bool is_activation(const ir::Node& node) const {
    if (!is_default_domain(node) || node.inputs.empty() || node.outputs.size() != 1) return false;
    if (std::find(k_activations.begin(), k_activations.end(), node.op_type) == k_activations.end())
      return false;
    if (node.op_type == "Clip") {
      for (size_t i = 1; i < node.inputs.size(); ++i) {
        if (node.inputs[i] != k_no_value && !structural_value(m_graph, node.inputs[i])) return false;
      }
    }
    return true;
  }

  // y * Sigmoid(y) (SiLU, as exporters write it): the Sigmoid and the Mul,
  // when y is read by exactly those two and the Sigmoid only by the Mul.
  std::pair<NodeId, NodeId> swish_of(ValueId y) const {
    const std::pair<NodeId, NodeId> none{k_no_node, k_no_node};
    if (m_is_output[static_cast<size_t>(y)]) return none;
    const auto& r = m_reads[static_cast<size_t>(y)];
    if (r.size() != 2) return none;
    for (int i = 0; i < 2; ++i) {
      const ir::Node& sigmoid = m_graph.node(r[static_cast<size_t>(i)]);
      const ir::Node& mul = m_graph.node(r[static_cast<size_t>(1 - i)]);
      if (sigmoid.op_type != "Sigmoid" || !is_default_domain(sigmoid) || sigmoid.inputs.size() != 1 ||
          sigmoid.outputs.size() != 1 || mul.op_type != "Mul" || !is_default_domain(mul) ||
          mul.outputs.size() != 1 || other_input(mul, y) < 0) {
        continue;
      }
      const ValueId gate = sigmoid.outputs[0];
      if (mul.inputs[static_cast<size_t>(other_input(mul, y))] != gate || sole_user(gate) == k_no_node)
        continue;
      return {r[static_cast<size_t>(i)], r[static_cast<size_t>(1 - i)]};
    }
    return none;
  }

  // Available before the anchor runs: a graph input, a constant, or produced earlier.
  bool ready_before(ValueId v, NodeId anchor) const {
    NodeId p = m_graph.value(v).producer;
    return p == k_no_node || m_position[static_cast<size_t>(p)] < m_position[static_cast<size_t>(anchor)];
  }

  FusionGroup grow(NodeId anchor) const {
    FusionGroup g;
    g.anchor = anchor;
    g.nodes.push_back(anchor);
    const ir::Node& a = m_graph.node(anchor);
    ValueId cur = a.outputs[0];
    auto next_binary = [&](const char* op) -> NodeId {
      NodeId u = sole_user(cur);
      if (u == k_no_node) return k_no_node;
      const ir::Node& node = m_graph.node(u);
      if (node.op_type != op || !is_default_domain(node) || node.outputs.size() != 1) return k_no_node;
      return other_input(node, cur) >= 0 ? u : k_no_node;
    };

    if (a.op_type == "MatMul") {
      if (NodeId u = next_binary("Add"); u != k_no_node) {
        const ir::Node& add = m_graph.node(u);
        if (is_bias(add, add.inputs[static_cast<size_t>(other_input(add, cur))], cur)) {
          g.bias_add = u;
          g.nodes.push_back(u);
          cur = add.outputs[0];
        }
      }
    }
    if (NodeId u = next_binary("Add"); u != k_no_node) {
      const ir::Node& add = m_graph.node(u);
      const int other = other_input(add, cur);
      ValueId residual = add.inputs[static_cast<size_t>(other)];
      const ir::ValueType& cur_type = m_graph.value(cur).type;
      if (same_shape(m_graph.value(residual).type, cur_type) &&
          same_shape(m_graph.value(add.outputs[0]).type, cur_type) && ready_before(residual, anchor)) {
        g.residual_add = u;
        g.residual_input = other;
        g.nodes.push_back(u);
        cur = add.outputs[0];
      }
    }
    if (NodeId u = sole_user(cur);
        u != k_no_node && is_activation(m_graph.node(u)) && m_graph.node(u).inputs[0] == cur) {
      g.activation = u;
      g.nodes.push_back(u);
      cur = m_graph.node(u).outputs[0];
    } else if (auto [sigmoid, mul] = swish_of(cur); sigmoid != k_no_node) {
      g.activation = sigmoid;
      g.swish_mul = mul;
      g.nodes.push_back(sigmoid);
      g.nodes.push_back(mul);
      cur = m_graph.node(mul).outputs[0];
    }
    g.output = cur;
    return g;
  }

  const ir::Graph& m_graph;
  std::vector<NodeId> m_order;
  std::vector<int> m_position;
  std::vector<std::vector<NodeId>> m_reads;
  std::vector<bool> m_is_output;
};

}  // namespace

std::vector<FusionGroup> find_fusions(const ir::Graph& lowered) { return FusionFinder(lowered).run(); }

}  // namespace kiln::passes
