// The IR graph: Values (typed edges), Nodes (ops) and the Graph that owns both.
//
// Values and nodes are stored in vectors and referred to by index (ValueId,
// NodeId), so a graph is cheap to copy and its ids are stable for its whole
// life. Initializers are Values that carry a Tensor; when the graph comes from
// a loaded model that tensor borrows the model's bytes, so importing copies no
// weights.
//
// A Graph is not thread-safe to mutate; concurrent const use is fine.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ir/attributes.hpp"
#include "ir/shape.hpp"
#include "ir/weight_recipe.hpp"
#include "kiln/tensor.hpp"

namespace kiln::ir {

using ValueId = int32_t;
using NodeId = int32_t;
constexpr ValueId k_no_value = -1;  // an omitted optional input
constexpr NodeId k_no_node = -1;

struct Value {
  std::string name;
  ValueType type;
  NodeId producer = k_no_node;  // k_no_node for graph inputs and initializers
  int32_t producer_output = -1;
  std::optional<Tensor> initializer;  // a model weight or constant input
  // A value that static inference computed (Shape of a static input,
  // Constant); never a weight. Lets later shape ops see through such chains.
  std::optional<Tensor> inferred_value;
  // Set by lowering passes on weights that engines consume: how to recompute
  // `initializer` from the source weights when the engine is refitted.
  std::optional<WeightRecipe> recipe;
  // Set by lowering that deferred this weight's values (a cache hit refits
  // from the sources and never reads them): `initializer` has the recipe's
  // dtype and shape but not its values. passes::materialize_weights fills it.
  bool placeholder = false;

  const Tensor* known_value() const {
    if (initializer) return &*initializer;
    return inferred_value ? &*inferred_value : nullptr;
  }
};

struct Node {
  std::string name;
  std::string op_type;
  std::string domain;  // "" is the default ONNX domain
  int64_t opset = 0;   // the model's opset version for this node's domain
  std::vector<ValueId> inputs;
  std::vector<ValueId> outputs;
  Attributes attrs;

  // "node 'conv1' (Conv)", for error messages.
  std::string describe() const;
};

class Graph {
 public:
  ValueId add_value(std::string name, ValueType type = {});
  ValueId add_initializer(std::string name, Tensor tensor);
  // Sets each output value's producer. REQUIRES: every id in node is valid.
  NodeId add_node(Node node);
  void add_input(ValueId id) { m_inputs.push_back(id); }
  void add_output(ValueId id) { m_outputs.push_back(id); }

  const Value& value(ValueId id) const { return m_values.at(static_cast<size_t>(id)); }
  Value& value(ValueId id) { return m_values.at(static_cast<size_t>(id)); }
  const Node& node(NodeId id) const { return m_nodes.at(static_cast<size_t>(id)); }
  Node& node(NodeId id) { return m_nodes.at(static_cast<size_t>(id)); }
  size_t num_values() const { return m_values.size(); }
  size_t num_nodes() const { return m_nodes.size(); }
  const std::vector<Node>& nodes() const { return m_nodes; }

  // Graph inputs that the caller must feed (initializers excluded).
  const std::vector<ValueId>& inputs() const { return m_inputs; }
  const std::vector<ValueId>& outputs() const { return m_outputs; }
  std::optional<ValueId> find_value(const std::string& name) const;

  // Every node in an order where producers come before users. Ties are broken
  // by insertion order, so the result is the same on every run and machine.
  // Throws kiln::Error (invalid_model) on a cycle.
  std::vector<NodeId> topological_order() const;

  // Total bytes held by initializers.
  size_t initializer_bytes() const;

  // A readable listing for debugging: inputs, initializers, nodes in
  // topological order with types and attributes, outputs.
  std::string to_string() const;

  // Where the graph came from (a path or "<memory>"), for error messages.
  std::string source;

 private:
  std::vector<Value> m_values;
  std::vector<Node> m_nodes;
  std::vector<ValueId> m_inputs;
  std::vector<ValueId> m_outputs;
};

}  // namespace kiln::ir
