#include "backends/plan/layer_fields.hpp"

#include <flatbuffers/flatbuffers.h>

#include "backends/plan/plan_graph.hpp"

namespace kiln::plan {

LayerFieldReader::LayerFieldReader(const ir::Graph& graph, std::string_view what)
    : m_graph(graph), m_what(what), m_covered(graph.num_nodes(), false) {}

void LayerFieldReader::corrupt(const std::string& why) const { plan::corrupt(m_what, why); }

ir::NodeId LayerFieldReader::optional_node(int32_t id) const {
  if (id == ir::k_no_node || (id >= 0 && static_cast<size_t>(id) < m_graph.num_nodes())) return id;
  corrupt("node index " + std::to_string(id) + " out of range");
}

LayerFields LayerFieldReader::read(const flatbuffers::Vector<int32_t>* nodes, int32_t bias_add,
                                   int32_t residual_add, int32_t residual_input, int32_t activation,
                                   int32_t output, bool output_optional) {
  LayerFields f;
  if (!nodes || nodes->size() == 0) corrupt("a layer without nodes");
  for (int32_t n : *nodes) {
    if (n == ir::k_no_node) corrupt("node index " + std::to_string(n) + " out of range");
    optional_node(n);
    const auto i = static_cast<size_t>(n);
    if (m_covered[i] && !(i < m_shared.size() && m_shared[i])) corrupt("a node in two layers");
    m_covered[static_cast<size_t>(n)] = true;
    f.nodes.push_back(n);
  }
  f.bias_add = optional_node(bias_add);
  f.residual_add = optional_node(residual_add);
  f.activation = optional_node(activation);
  f.residual_input = residual_input;
  if (f.residual_input < -1 || f.residual_input > 1 ||
      (f.residual_add != ir::k_no_node &&
       (f.residual_input < 0 || m_graph.node(f.residual_add).inputs.size() != 2))) {
    corrupt("bad residual input");
  }
  const auto nv = static_cast<int64_t>(m_graph.num_values());
  if (output < (output_optional ? -1 : 0) || output >= nv) corrupt("bad layer output");
  f.output = output;
  return f;
}

void LayerFieldReader::check_every_node_covered() const {
  for (bool c : m_covered) {
    if (!c) corrupt("a node in no layer");
  }
}

}  // namespace kiln::plan
