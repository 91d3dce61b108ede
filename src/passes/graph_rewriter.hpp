// GraphRewriter: the editing surface that lowering passes share.
//
// ir::Graph can only grow, so passes edit a private copy here: they mark
// nodes removed, rewire inputs and outputs, and add nodes "in place of" an
// existing one (which fixes where the new node sorts). finish() then builds a
// fresh ir::Graph from the live nodes, in a deterministic topological order,
// with only the values they use, drops nodes whose results nobody reads, and
// re-runs shape inference. Ids in the finished graph are new; tensors share
// storage with the input graph.
//
// Not thread-safe; one rewriter per lowering.
#pragma once

#include <set>
#include <string>
#include <vector>

#include "ir/graph.hpp"

namespace kiln::passes {

class GraphRewriter {
 public:
  explicit GraphRewriter(const ir::Graph& graph);

  ir::Graph& graph() { return m_graph; }
  const ir::Graph& graph() const { return m_graph; }

  bool alive(ir::NodeId node) const { return m_alive.at(static_cast<size_t>(node)); }
  // Live nodes in topological order.
  std::vector<ir::NodeId> live_order() const;
  // Live nodes reading `value`, once per read (a node reading it twice is listed twice).
  const std::vector<ir::NodeId>& users(ir::ValueId value) const;
  bool is_graph_output(ir::ValueId value) const;
  // The live node producing `value`, or k_no_node.
  ir::NodeId producer(ir::ValueId value) const;
  // The one live node that reads `value`, if it has exactly one read and is
  // not a graph output; k_no_node otherwise. Removing what computes such a
  // value cannot affect anything else.
  ir::NodeId sole_user(ir::ValueId value) const;

  void remove_node(ir::NodeId node);
  // Adds `node`, sorting it where `placed_at` sorts.
  ir::NodeId add_node(ir::Node node, ir::NodeId placed_at);
  void set_input(ir::NodeId node, size_t index, ir::ValueId value);
  void set_output(ir::NodeId node, size_t index, ir::ValueId value);
  // A new initializer whose name no other value has.
  ir::ValueId add_initializer(const std::string& base_name, Tensor tensor);
  std::string unique_name(const std::string& base);

  ir::Graph finish() const;

 private:
  void mark_dirty() { m_users_valid = false; }
  void rebuild_users() const;

  ir::Graph m_graph;
  std::vector<bool> m_alive;
  std::vector<ir::NodeId> m_position;  // sort key per node
  std::set<std::string> m_names;
  mutable bool m_users_valid = false;
  mutable std::vector<std::vector<ir::NodeId>> m_users;
  std::vector<bool> m_is_output;
};

}  // namespace kiln::passes
