// Identity forwarding: readers of an Identity's output read its input instead.
//
// Exporters emit Identity nodes as aliases: torch.onnx.export stores each
// distinct initializer once and gives every other parameter with the same
// bytes an Identity of it (a BatchNorm-folded network with untrained
// statistics has many identical zero biases). A Conv whose bias is such an
// alias sees a computed value, not a weight, and could not become a native
// layer; forwarding makes it read the weight itself. An Identity that feeds
// a graph output stays, so the output keeps its name.
//
// A Pad that pads nothing is an identity too: torch.onnx.export writes one
// before every AveragePool that has a padding argument, zero or not
// (DenseNet's transitions), and as a reference kernel inside the engine it
// was a full copy of the feature map (6% of DenseNet-121's run time).
//
// So is a Dropout that cannot drop: inference mode, or a ratio of 0.
// torch.onnx.export writes `F.dropout(x, p, training=self.training)` in an
// eval-mode module as Dropout(x, p, training_mode=...) and torchvision's
// Swin passes p=0.0 with training=True; as a reference kernel each one was a
// copy plus a mask write (15% of Swin-T's run time).
#include <algorithm>

#include "passes/lowering_passes.hpp"

namespace kiln::passes {

namespace {

bool default_domain(const ir::Node& node) { return node.domain.empty() || node.domain == "ai.onnx"; }

// Readers of `n`'s only output read `source` instead, and `n` goes; nothing
// changes when the output is a graph output (it keeps its name).
void forward(GraphRewriter& rewriter, ir::NodeId n, ir::ValueId source) {
  const ir::ValueId alias = rewriter.graph().node(n).outputs[0];
  if (alias == ir::k_no_value || source == ir::k_no_value || rewriter.is_graph_output(alias)) return;
  const std::vector<ir::NodeId> readers = rewriter.users(alias);  // a copy: rewiring changes the list
  for (ir::NodeId reader : readers) {
    const std::vector<ir::ValueId>& inputs = rewriter.graph().node(reader).inputs;
    for (size_t i = 0; i < inputs.size(); ++i) {
      if (inputs[i] == alias) rewriter.set_input(reader, i, source);
    }
  }
  rewriter.remove_node(n);
}

// Whether Pad `node` adds nothing: every pad amount is a known zero (the
// mode and value then do not matter).
bool pads_nothing(const ir::Graph& g, const ir::Node& node) {
  const auto zero = [](int64_t p) { return p == 0; };
  if (node.opset < 11) {
    const auto pads = node.attrs.find_ints("pads");
    return pads && std::all_of(pads->begin(), pads->end(), zero);
  }
  if (node.inputs.size() < 2 || node.inputs[1] == ir::k_no_value) return false;
  const Tensor* pads = structural_value(g, node.inputs[1]);
  if (!pads) return false;
  const std::vector<int64_t> amounts = pads->to_int_vector();
  return std::all_of(amounts.begin(), amounts.end(), zero);
}

// Whether Dropout `node` passes its input through unchanged and nobody reads
// its mask: before opset 12 inference always is; from 12 on, training_mode
// must be absent or a known false, or the ratio a known 0.
bool drops_nothing(GraphRewriter& rewriter, const ir::Node& node) {
  if (node.outputs.size() > 1 && node.outputs[1] != ir::k_no_value) {
    const ir::ValueId mask = node.outputs[1];
    if (rewriter.is_graph_output(mask) || !rewriter.users(mask).empty()) return false;
  }
  if (node.opset < 12) return true;
  const ir::Graph& g = rewriter.graph();
  const auto known_scalar = [&](size_t i) -> const Tensor* {
    if (node.inputs.size() <= i || node.inputs[i] == ir::k_no_value) return nullptr;
    const Tensor* t = structural_value(g, node.inputs[i]);
    return t && t->numel() == 1 ? t : nullptr;
  };
  const bool has_training = node.inputs.size() > 2 && node.inputs[2] != ir::k_no_value;
  if (!has_training) return true;
  if (const Tensor* training = known_scalar(2); training && training->int_at(0) == 0) return true;
  const Tensor* ratio = known_scalar(1);
  return ratio && ratio->float_at(0) == 0.0;
}

}  // namespace

void forward_identities(GraphRewriter& rewriter) {
  for (ir::NodeId n : rewriter.live_order()) {
    const ir::Node& node = rewriter.graph().node(n);
    if (node.op_type != "Identity" || !default_domain(node)) continue;
    if (node.inputs.size() != 1 || node.outputs.size() != 1) continue;
    forward(rewriter, n, node.inputs[0]);
  }
}

void forward_noop_pads(GraphRewriter& rewriter) {
  for (ir::NodeId n : rewriter.live_order()) {
    const ir::Node& node = rewriter.graph().node(n);
    if (node.op_type != "Pad" || !default_domain(node) || node.inputs.empty() || node.outputs.size() != 1)
      continue;
    if (pads_nothing(rewriter.graph(), node)) forward(rewriter, n, node.inputs[0]);
  }
}

void forward_noop_dropouts(GraphRewriter& rewriter) {
  for (ir::NodeId n : rewriter.live_order()) {
    const ir::Node& node = rewriter.graph().node(n);
    if (node.op_type != "Dropout" || !default_domain(node) || node.inputs.empty()) continue;
    if (drops_nothing(rewriter, node)) forward(rewriter, n, node.inputs[0]);
  }
}

}  // namespace kiln::passes
