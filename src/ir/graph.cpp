#include "ir/graph.hpp"

#include <functional>
#include <queue>
#include <sstream>

namespace kiln::ir {

std::string Node::describe() const {
  std::string op = domain.empty() ? op_type : domain + "." + op_type;
  return "node '" + name + "' (" + op + ")";
}

ValueId Graph::add_value(std::string name, ValueType type) {
  Value v;
  v.name = std::move(name);
  v.type = std::move(type);
  m_values.push_back(std::move(v));
  return static_cast<ValueId>(m_values.size() - 1);
}

ValueId Graph::add_initializer(std::string name, Tensor tensor) {
  ValueId id = add_value(std::move(name), ValueType::of(tensor));
  m_values.back().initializer = std::move(tensor);
  return id;
}

NodeId Graph::add_node(Node node) {
  auto id = static_cast<NodeId>(m_nodes.size());
  for (size_t i = 0; i < node.outputs.size(); ++i) {
    if (node.outputs[i] == k_no_value) continue;
    Value& out = value(node.outputs[i]);
    out.producer = id;
    out.producer_output = static_cast<int32_t>(i);
  }
  m_nodes.push_back(std::move(node));
  return id;
}

std::optional<ValueId> Graph::find_value(const std::string& name) const {
  for (size_t i = 0; i < m_values.size(); ++i) {
    if (m_values[i].name == name) return static_cast<ValueId>(i);
  }
  return std::nullopt;
}

std::vector<NodeId> Graph::topological_order() const {
  // Kahn's algorithm with a min-heap on node id: deterministic, and the
  // identity order whenever the model is already sorted.
  std::vector<int> pending(m_nodes.size(), 0);
  std::vector<std::vector<NodeId>> users(m_nodes.size());
  for (size_t n = 0; n < m_nodes.size(); ++n) {
    for (ValueId in : m_nodes[n].inputs) {
      if (in == k_no_value) continue;
      NodeId p = value(in).producer;
      if (p == k_no_node) continue;
      ++pending[n];
      users[static_cast<size_t>(p)].push_back(static_cast<NodeId>(n));
    }
  }
  std::priority_queue<NodeId, std::vector<NodeId>, std::greater<>> ready;
  for (size_t n = 0; n < m_nodes.size(); ++n) {
    if (pending[n] == 0) ready.push(static_cast<NodeId>(n));
  }
  std::vector<NodeId> order;
  order.reserve(m_nodes.size());
  while (!ready.empty()) {
    NodeId n = ready.top();
    ready.pop();
    order.push_back(n);
    for (NodeId u : users[static_cast<size_t>(n)]) {
      if (--pending[static_cast<size_t>(u)] == 0) ready.push(u);
    }
  }
  if (order.size() != m_nodes.size()) {
    for (size_t n = 0; n < m_nodes.size(); ++n) {
      if (pending[n] > 0) {
        throw Error(ErrorCode::invalid_model,
                    source + ": graph has a cycle through " + m_nodes[n].describe());
      }
    }
  }
  return order;
}

size_t Graph::initializer_bytes() const {
  size_t total = 0;
  for (const Value& v : m_values) {
    if (v.initializer) total += v.initializer->byte_size();
  }
  return total;
}

std::string Graph::to_string() const {
  std::ostringstream os;
  auto ref = [&](ValueId id) { return id == k_no_value ? std::string("_") : "%" + value(id).name; };
  os << "graph " << source << "\n";
  for (ValueId id : m_inputs)
    os << "  input  %" << value(id).name << ": " << value(id).type.to_string() << "\n";
  for (const Value& v : m_values) {
    if (v.initializer) os << "  weight %" << v.name << ": " << v.type.to_string() << "\n";
  }
  for (NodeId n : topological_order()) {
    const Node& node = m_nodes[static_cast<size_t>(n)];
    os << "  ";
    for (size_t i = 0; i < node.outputs.size(); ++i) {
      os << (i ? ", " : "") << ref(node.outputs[i]);
      if (node.outputs[i] != k_no_value) os << ": " << value(node.outputs[i]).type.to_string();
    }
    os << " = " << node.op_type << "(";
    for (size_t i = 0; i < node.inputs.size(); ++i) os << (i ? ", " : "") << ref(node.inputs[i]);
    os << ")";
    if (!node.attrs.all().empty()) {
      os << " {";
      bool first = true;
      for (const auto& [name, attr] : node.attrs.all()) {
        os << (first ? "" : ", ") << name << "=" << attribute_to_string(attr);
        first = false;
      }
      os << "}";
    }
    os << "\n";
  }
  for (ValueId id : m_outputs)
    os << "  output %" << value(id).name << ": " << value(id).type.to_string() << "\n";
  return os.str();
}

}  // namespace kiln::ir
