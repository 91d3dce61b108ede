// Executor: runs a whole ir::Graph on the reference kernels.
//
// Construction checks every node up front, so an unsupported op, attribute
// or dtype is reported before any work is done, naming each offending node.
// run() is const and keeps no state between calls, so one Executor may be
// used from several threads at once. The Executor borrows the graph: the
// graph must outlive it.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "ir/graph.hpp"

namespace kiln::ref {

struct UnsupportedNode {
  ir::NodeId node;
  std::string op_type;
  std::string reason;
};

// Every node the reference backend cannot run, with the reason. Uses the
// dtypes that static inference recorded on the graph's values.
std::vector<UnsupportedNode> find_unsupported(const ir::Graph& graph);

class Executor {
 public:
  // Throws kiln::Error(unsupported) naming the first unsupported nodes.
  explicit Executor(const ir::Graph& graph);

  // `inputs` are in graph.inputs() order. Returns graph.outputs() in order.
  // Throws kiln::Error(invalid_argument) naming the input whose dtype or
  // shape does not match the model.
  // With `node_ms`, also writes each node's time in milliseconds, in
  // execution order (the profiling mode).
  std::vector<Tensor> run(std::span<const Tensor> inputs) const { return run(inputs, nullptr); }
  std::vector<Tensor> run(std::span<const Tensor> inputs,
                          std::vector<std::pair<ir::NodeId, double>>* node_ms) const;

 private:
  const ir::Graph& m_graph;
  std::vector<ir::NodeId> m_order;
  std::vector<int> m_use_counts;  // per value: readers in m_order plus graph outputs
};

// Checks `tensor` against the declared type of graph input `id`.
void check_input(const ir::Graph& graph, ir::ValueId id, const Tensor& tensor);

}  // namespace kiln::ref
