// Reading the fields every backend's plan layer has (its nodes, the fused
// bias Add, residual Add and activation, the residual's input, the output)
// and checking them against the plan's graph the same way for every
// backend: each index in range, each node in exactly one layer, a residual
// input that names one of its Add's two inputs. A failed check is
// kiln::Error(invalid_model) naming the plan kind.
//
// One reader per plan; not thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ir/graph.hpp"

namespace flatbuffers {
template <typename T>
class Vector;
}

namespace kiln::plan {

struct LayerFields {
  std::vector<ir::NodeId> nodes;  // anchor first
  ir::NodeId bias_add = ir::k_no_node;
  ir::NodeId residual_add = ir::k_no_node;
  int residual_input = -1;
  ir::NodeId activation = ir::k_no_node;
  ir::ValueId output = ir::k_no_value;

  // Moves the fields into a backend's layer record, which names them alike.
  template <typename Layer>
  void move_into(Layer& layer) && {
    layer.nodes = std::move(nodes);
    layer.bias_add = bias_add;
    layer.residual_add = residual_add;
    layer.residual_input = residual_input;
    layer.activation = activation;
    layer.output = output;
  }
};

class LayerFieldReader {
 public:
  LayerFieldReader(const ir::Graph& graph, std::string_view what);

  // The fields as a FlatBuffers layer table stores them.
  // `output_optional`: whether a layer may have no output value (-1).
  LayerFields read(const flatbuffers::Vector<int32_t>* nodes, int32_t bias_add, int32_t residual_add,
                   int32_t residual_input, int32_t activation, int32_t output, bool output_optional);
  // A further optional node index of a layer (k_no_node or in range).
  ir::NodeId optional_node(int32_t id) const;
  // After the last layer: every node of the graph is in one.
  void check_every_node_covered() const;
  // Nodes (indexed by node id) that may be in several layers, as a Split
  // whose outputs are a layer each; every other node is in one layer only.
  void allow_in_several_layers(std::vector<bool> nodes) { m_shared = std::move(nodes); }

 private:
  [[noreturn]] void corrupt(const std::string& why) const;

  const ir::Graph& m_graph;
  std::string m_what;
  std::vector<bool> m_covered;
  std::vector<bool> m_shared;
};

}  // namespace kiln::plan
