// Identity forwarding: readers of an Identity's output read its input instead.
//
// Exporters emit Identity nodes as aliases: torch.onnx.export stores each
// distinct initializer once and gives every other parameter with the same
// bytes an Identity of it (a BatchNorm-folded network with untrained
// statistics has many identical zero biases). A Conv whose bias is such an
// alias sees a computed value, not a weight, and could not become a native
// layer; forwarding makes it read the weight itself. An Identity that feeds
// a graph output stays, so the output keeps its name.
#include "passes/lowering_passes.hpp"

namespace kiln::passes {

void forward_identities(GraphRewriter& rewriter) {
  for (ir::NodeId n : rewriter.live_order()) {
    const ir::Node& node = rewriter.graph().node(n);
    if (node.op_type != "Identity" || !(node.domain.empty() || node.domain == "ai.onnx")) continue;
    if (node.inputs.size() != 1 || node.outputs.size() != 1) continue;
    const ir::ValueId alias = node.outputs[0];
    const ir::ValueId source = node.inputs[0];
    if (alias == ir::k_no_value || source == ir::k_no_value || rewriter.is_graph_output(alias)) continue;
    const std::vector<ir::NodeId> readers = rewriter.users(alias);  // a copy: rewiring changes the list
    for (ir::NodeId reader : readers) {
      const std::vector<ir::ValueId>& inputs = rewriter.graph().node(reader).inputs;
      for (size_t i = 0; i < inputs.size(); ++i) {
        if (inputs[i] == alias) rewriter.set_input(reader, i, source);
      }
    }
    rewriter.remove_node(n);
  }
}

}  // namespace kiln::passes
