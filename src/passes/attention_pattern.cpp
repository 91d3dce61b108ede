#include "passes/attention_pattern.hpp"

#include <algorithm>

namespace kiln::passes {

using ir::k_no_node;
using ir::k_no_value;
using ir::NodeId;
using ir::ValueId;

std::vector<int> attention_reader_counts(const ir::Graph& g) {
  std::vector<int> readers(g.num_values(), 0);
  for (const ir::Node& n : g.nodes()) {
    for (ValueId in : n.inputs) {
      if (in != k_no_value) ++readers[static_cast<size_t>(in)];
    }
  }
  for (ValueId out : g.outputs()) ++readers[static_cast<size_t>(out)];
  return readers;
}

namespace {

bool is_weight(const ir::Graph& g, ValueId v) {
  return v != k_no_value && g.value(v).recipe.has_value() && g.value(v).producer == k_no_node;
}

bool default_domain(const ir::Node& n) { return n.domain.empty() || n.domain == "ai.onnx"; }

std::optional<size_t> rank_of(const ir::Graph& g, ValueId v) {
  const ir::ValueType& t = g.value(v).type;
  if (!t.shape) return std::nullopt;
  return t.shape->size();
}

bool is_float(const ir::Graph& g, ValueId v) {
  return v != k_no_value && g.value(v).type.dtype == DType::float32;
}

// One float element whose value the engine holds: a constant, or a weight
// (refit may change it; the layer reads it at run time).
bool is_scalar_constant(const ir::Graph& g, ValueId v) {
  if (!is_float(g, v)) return false;
  const ir::Value& value = g.value(v);
  const bool held = is_weight(g, v) || (value.initializer && !value.recipe) || value.inferred_value;
  if (!held || !value.type.shape) return false;
  for (const ir::Dim& d : *value.type.shape) {
    if (!d.is_static() || d.value() != 1) return false;
  }
  return true;
}

// A node with one data input (returned) and one output, scaling it by a
// scalar constant: Mul(x, c), Mul(c, x) or Div(x, c).
std::optional<std::pair<ValueId, ScaleFactor>> as_scale(const ir::Graph& g, const ir::Node& n) {
  if (!default_domain(n) || n.inputs.size() != 2 || n.outputs.size() != 1) return std::nullopt;
  if (n.op_type == "Div" && is_scalar_constant(g, n.inputs[1]) && !is_scalar_constant(g, n.inputs[0])) {
    return std::pair{n.inputs[0], ScaleFactor{n.inputs[1], true}};
  }
  if (n.op_type != "Mul") return std::nullopt;
  for (size_t i = 0; i < 2; ++i) {
    if (is_scalar_constant(g, n.inputs[1 - i]) && !is_scalar_constant(g, n.inputs[i])) {
      return std::pair{n.inputs[i], ScaleFactor{n.inputs[1 - i], false}};
    }
  }
  return std::nullopt;
}

// The node producing `v` when `v` is read only once (by the node being
// matched) and is no graph output; k_no_node otherwise.
NodeId private_producer(const ir::Graph& g, const std::vector<int>& readers, ValueId v) {
  if (v == k_no_value || readers[static_cast<size_t>(v)] != 1) return k_no_node;
  return g.value(v).producer;
}

// Walks back through scale nodes from `v`; appends them (last first) to
// `nodes` and their factors to `scales`. Returns the unscaled value.
ValueId strip_scales(const ir::Graph& g, const std::vector<int>& readers, ValueId v,
                     std::vector<NodeId>& nodes, std::vector<ScaleFactor>& scales) {
  for (;;) {
    const NodeId p = private_producer(g, readers, v);
    if (p == k_no_node) return v;
    auto scale = as_scale(g, g.node(p));
    if (!scale || !is_float(g, scale->first)) return v;
    nodes.push_back(p);
    scales.push_back(scale->second);
    v = scale->first;
  }
}

bool is_matmul(const ir::Node& n) {
  return default_domain(n) && n.op_type == "MatMul" && n.inputs.size() == 2 && n.outputs.size() == 1 &&
         n.inputs[0] != k_no_value && n.inputs[1] != k_no_value;
}

// The only node reading `v`, or k_no_node.
NodeId sole_reader(const ir::Graph& g, const std::vector<int>& readers, ValueId v) {
  if (readers[static_cast<size_t>(v)] != 1) return k_no_node;
  for (size_t n = 0; n < g.num_nodes(); ++n) {
    const auto& ins = g.node(static_cast<NodeId>(n)).inputs;
    if (std::find(ins.begin(), ins.end(), v) != ins.end()) return static_cast<NodeId>(n);
  }
  return k_no_node;
}

}  // namespace

std::optional<AttentionMatch> match_attention(const ir::Graph& g, NodeId softmax,
                                              const std::vector<int>& readers, std::string* why) {
  auto no = [&](const char* reason) -> std::optional<AttentionMatch> {
    if (why) *why = reason;
    return std::nullopt;
  };
  const ir::Node& sm = g.node(softmax);
  if (!default_domain(sm) || sm.op_type != "Softmax" || sm.inputs.size() != 1 || sm.outputs.size() != 1)
    return no("not a Softmax");
  const ValueId s_out = sm.outputs[0];
  const auto rank = rank_of(g, sm.inputs[0]);
  if (!rank || *rank < 2 || !is_float(g, sm.inputs[0]) || !is_float(g, s_out))
    return no("scores rank or type");
  int64_t axis = sm.attrs.get_int("axis", sm.opset >= 13 ? -1 : 1);
  if (axis < 0) axis += static_cast<int64_t>(*rank);
  if (axis != static_cast<int64_t>(*rank) - 1) return no("Softmax is not over the last axis");

  AttentionMatch m;
  m.softmax = softmax;
  // Forward: an optional trivial Identity, then the product with V.
  std::vector<NodeId> after;
  ValueId p = s_out;
  NodeId reader = sole_reader(g, readers, p);
  if (reader != k_no_node && g.node(reader).op_type == "Identity" && default_domain(g.node(reader)) &&
      g.node(reader).outputs.size() == 1) {
    after.push_back(reader);
    p = g.node(reader).outputs[0];
    reader = sole_reader(g, readers, p);
  }
  if (reader == k_no_node || !is_matmul(g.node(reader)) || g.node(reader).inputs[0] != p ||
      g.node(reader).inputs[1] == p) {
    return no("the probabilities are not only the left operand of a MatMul");
  }
  m.pv_matmul = reader;
  after.push_back(reader);
  m.v = g.node(reader).inputs[1];
  m.output = g.node(reader).outputs[0];

  // Backward: mask, scales, the QK product and the scales of its operands.
  std::vector<NodeId> before;  // last first
  ValueId s = sm.inputs[0];
  NodeId prod = private_producer(g, readers, s);
  if (prod != k_no_node && g.node(prod).op_type == "Add" && default_domain(g.node(prod)) &&
      g.node(prod).inputs.size() == 2 && g.node(prod).outputs.size() == 1) {
    // The scores side leads back (through scales) to a MatMul; the other is the mask.
    const ir::Node& add = g.node(prod);
    for (size_t i = 0; i < 2 && m.mask_add == k_no_node; ++i) {
      std::vector<NodeId> n;
      std::vector<ScaleFactor> sc;
      const ValueId base = strip_scales(g, readers, add.inputs[i], n, sc);
      const NodeId mm = private_producer(g, readers, base);
      if (mm == k_no_node || !is_matmul(g.node(mm))) continue;
      const ValueId mask = add.inputs[1 - i];
      if (!is_float(g, mask) || !rank_of(g, mask) || *rank_of(g, mask) > *rank) continue;
      m.mask_add = prod;
      m.mask = mask;
      before.push_back(prod);
      s = add.inputs[i];
    }
    if (m.mask_add == k_no_node)
      return no("an Add before the Softmax that is not a float mask onto the scores");
  }
  s = strip_scales(g, readers, s, before, m.scales);
  m.qk_matmul = private_producer(g, readers, s);
  if (m.qk_matmul == k_no_node || !is_matmul(g.node(m.qk_matmul)))
    return no("the scores are not a MatMul read only by the attention");
  const ir::Node& qk = g.node(m.qk_matmul);
  std::vector<NodeId> q_scales, k_scales;
  m.q = strip_scales(g, readers, qk.inputs[0], q_scales, m.scales);
  m.k_t = strip_scales(g, readers, qk.inputs[1], k_scales, m.scales);
  if (qk.inputs[0] == qk.inputs[1]) return no("Q and K are one value");
  for (ValueId v : {m.q, m.k_t, m.v}) {
    if (!is_float(g, v) || rank_of(g, v) != rank)
      return no("Q, K and V are not float tensors of the scores' rank");
  }
  const Tensor* q_known = g.value(m.q).known_value();
  if (q_known || is_weight(g, m.q)) return no("Q is constant");
  if (!is_float(g, m.output) || rank_of(g, m.output) != rank) return no("output rank or type");

  for (auto it = q_scales.rbegin(); it != q_scales.rend(); ++it) m.nodes.push_back(*it);
  for (auto it = k_scales.rbegin(); it != k_scales.rend(); ++it) m.nodes.push_back(*it);
  m.nodes.push_back(m.qk_matmul);
  for (auto it = before.rbegin(); it != before.rend(); ++it) m.nodes.push_back(*it);
  m.nodes.push_back(softmax);
  m.nodes.insert(m.nodes.end(), after.begin(), after.end());
  // A value computed inside must not feed the pattern from outside (V being
  // the scores, say): every operand must be produced elsewhere.
  for (ValueId v : {m.q, m.k_t, m.v, m.mask}) {
    if (v == k_no_value) continue;
    const NodeId made_by = g.value(v).producer;
    if (made_by != k_no_node && std::find(m.nodes.begin(), m.nodes.end(), made_by) != m.nodes.end())
      return no("an operand computed inside the pattern");
  }
  return m;
}

std::optional<AttentionMatch> match_attention_layer(const ir::Graph& g, const std::vector<NodeId>& nodes,
                                                    std::string* why) {
  NodeId softmax = k_no_node;
  for (NodeId n : nodes) {
    if (n < 0 || static_cast<size_t>(n) >= g.num_nodes()) {
      if (why) *why = "a node out of range";
      return std::nullopt;
    }
    if (g.node(n).op_type == "Softmax") softmax = n;
  }
  if (softmax == k_no_node) {
    if (why) *why = "no Softmax";
    return std::nullopt;
  }
  auto m = match_attention(g, softmax, attention_reader_counts(g), why);
  if (!m) return std::nullopt;
  if (m->nodes != nodes) {
    if (why) *why = "the layer's nodes are not the matched attention";
    return std::nullopt;
  }
  return m;
}

}  // namespace kiln::passes
