#include "passes/graph_rewriter.hpp"

#include <queue>
#include <tuple>

#include "ir/op_schema.hpp"

namespace kiln::passes {

using ir::k_no_node;
using ir::k_no_value;
using ir::NodeId;
using ir::ValueId;

GraphRewriter::GraphRewriter(const ir::Graph& graph)
    : m_graph(graph), m_alive(graph.num_nodes(), true), m_is_output(graph.num_values(), false) {
  for (size_t n = 0; n < graph.num_nodes(); ++n) m_position.push_back(static_cast<NodeId>(n));
  for (size_t v = 0; v < graph.num_values(); ++v) m_names.insert(graph.value(static_cast<ValueId>(v)).name);
  for (ValueId out : graph.outputs()) m_is_output[static_cast<size_t>(out)] = true;
}

void GraphRewriter::rebuild_users() const {
  m_users.assign(m_graph.num_values(), {});
  for (size_t n = 0; n < m_graph.num_nodes(); ++n) {
    if (!m_alive[n]) continue;
    for (ValueId in : m_graph.node(static_cast<NodeId>(n)).inputs) {
      if (in != k_no_value) m_users[static_cast<size_t>(in)].push_back(static_cast<NodeId>(n));
    }
  }
  m_users_valid = true;
}

const std::vector<NodeId>& GraphRewriter::users(ValueId value) const {
  if (!m_users_valid) rebuild_users();
  return m_users.at(static_cast<size_t>(value));
}

bool GraphRewriter::is_graph_output(ValueId value) const {
  return static_cast<size_t>(value) < m_is_output.size() && m_is_output[static_cast<size_t>(value)];
}

NodeId GraphRewriter::producer(ValueId value) const {
  if (value == k_no_value) return k_no_node;
  NodeId p = m_graph.value(value).producer;
  return p != k_no_node && alive(p) ? p : k_no_node;
}

NodeId GraphRewriter::sole_user(ValueId value) const {
  if (value == k_no_value || is_graph_output(value)) return k_no_node;
  const auto& u = users(value);
  return u.size() == 1 ? u[0] : k_no_node;
}

void GraphRewriter::remove_node(NodeId node) {
  m_alive.at(static_cast<size_t>(node)) = false;
  mark_dirty();
}

NodeId GraphRewriter::add_node(ir::Node node, NodeId placed_at) {
  NodeId id = m_graph.add_node(std::move(node));
  m_alive.push_back(true);
  m_position.push_back(m_position.at(static_cast<size_t>(placed_at)));
  mark_dirty();
  return id;
}

void GraphRewriter::set_input(NodeId node, size_t index, ValueId value) {
  auto& inputs = m_graph.node(node).inputs;
  if (inputs.size() <= index) inputs.resize(index + 1, k_no_value);
  inputs[index] = value;
  mark_dirty();
}

void GraphRewriter::set_output(NodeId node, size_t index, ValueId value) {
  m_graph.node(node).outputs.at(index) = value;
  ir::Value& v = m_graph.value(value);
  v.producer = node;
  v.producer_output = static_cast<int32_t>(index);
}

std::string GraphRewriter::unique_name(const std::string& base) {
  std::string name = base;
  for (int i = 1; m_names.count(name) != 0; ++i) name = base + "_" + std::to_string(i);
  m_names.insert(name);
  return name;
}

ValueId GraphRewriter::add_initializer(const std::string& base_name, Tensor tensor) {
  ValueId id = m_graph.add_initializer(unique_name(base_name), std::move(tensor));
  mark_dirty();
  return id;
}

std::vector<NodeId> GraphRewriter::live_order() const {
  // Kahn's algorithm keyed on (position, id): a node added in place of
  // another sorts where that one did, and the result is deterministic.
  const size_t count = m_graph.num_nodes();
  std::vector<int> pending(count, 0);
  std::vector<std::vector<NodeId>> next(count);
  for (size_t n = 0; n < count; ++n) {
    if (!m_alive[n]) continue;
    for (ValueId in : m_graph.node(static_cast<NodeId>(n)).inputs) {
      NodeId p = producer(in);
      if (p == k_no_node) continue;
      ++pending[n];
      next[static_cast<size_t>(p)].push_back(static_cast<NodeId>(n));
    }
  }
  using Key = std::tuple<NodeId, NodeId>;
  std::priority_queue<Key, std::vector<Key>, std::greater<>> ready;
  for (size_t n = 0; n < count; ++n) {
    if (m_alive[n] && pending[n] == 0) ready.emplace(m_position[n], static_cast<NodeId>(n));
  }
  std::vector<NodeId> order;
  while (!ready.empty()) {
    NodeId n = std::get<1>(ready.top());
    ready.pop();
    order.push_back(n);
    for (NodeId u : next[static_cast<size_t>(n)]) {
      if (--pending[static_cast<size_t>(u)] == 0) ready.emplace(m_position[static_cast<size_t>(u)], u);
    }
  }
  size_t live = 0;
  for (bool a : m_alive) live += a ? 1 : 0;
  if (order.size() != live) {
    throw Error(ErrorCode::internal, m_graph.source + ": lowering produced a cyclic graph");
  }
  return order;
}

ir::Graph GraphRewriter::finish() const {
  std::vector<NodeId> order = live_order();

  // Drop nodes whose results nobody reads, last to first.
  std::vector<int> reads(m_graph.num_values(), 0);
  for (ValueId out : m_graph.outputs()) ++reads[static_cast<size_t>(out)];
  for (NodeId n : order) {
    for (ValueId in : m_graph.node(n).inputs) {
      if (in != k_no_value) ++reads[static_cast<size_t>(in)];
    }
  }
  std::vector<bool> keep(m_graph.num_nodes(), false);
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    const ir::Node& node = m_graph.node(*it);
    bool used = false;
    for (ValueId out : node.outputs)
      used = used || (out != k_no_value && reads[static_cast<size_t>(out)] > 0);
    if (used) {
      keep[static_cast<size_t>(*it)] = true;
    } else {
      for (ValueId in : node.inputs) {
        if (in != k_no_value) --reads[static_cast<size_t>(in)];
      }
    }
  }

  ir::Graph out;
  out.source = m_graph.source;
  std::vector<ValueId> remap(m_graph.num_values(), k_no_value);
  auto map = [&](ValueId id) -> ValueId {
    if (id == k_no_value) return k_no_value;
    ValueId& slot = remap[static_cast<size_t>(id)];
    if (slot == k_no_value) {
      const ir::Value& v = m_graph.value(id);
      slot = out.add_value(v.name, v.type);
      ir::Value& copy = out.value(slot);
      copy.initializer = v.initializer;
      copy.inferred_value = v.inferred_value;
      copy.recipe = v.recipe;
      copy.placeholder = v.placeholder;
    }
    return slot;
  };
  for (ValueId in : m_graph.inputs()) out.add_input(map(in));
  for (NodeId n : order) {
    if (!keep[static_cast<size_t>(n)]) continue;
    ir::Node node = m_graph.node(n);
    for (ValueId& in : node.inputs) in = map(in);
    for (ValueId& o : node.outputs) o = map(o);
    out.add_node(std::move(node));
  }
  for (ValueId o : m_graph.outputs()) out.add_output(map(o));
  ir::infer_shapes(out);
  return out;
}

}  // namespace kiln::passes
