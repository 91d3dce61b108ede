// Pattern rewrites: op chains that exporters emit for ops older opsets lack,
// turned back into the single ONNX op, so engines can pick one kernel.
//
// Every node a rewrite removes computes a value with exactly one reader (or,
// for LayerNorm's centred input, exactly the two readers the chain has) that
// is not a graph output, so nothing outside the chain can observe the change.
#include <algorithm>
#include <cmath>

#include "passes/lowering_passes.hpp"

namespace kiln::passes {

using ir::k_no_node;
using ir::k_no_value;
using ir::NodeId;
using ir::ValueId;

namespace {

bool is_op(const ir::Graph& graph, NodeId n, const char* op) {
  if (n == k_no_node) return false;
  const ir::Node& node = graph.node(n);
  return node.op_type == op && (node.domain.empty() || node.domain == "ai.onnx") && node.outputs.size() == 1;
}

bool near(std::optional<double> v, double want, double rel) {
  return v && std::abs(*v - want) <= rel * std::abs(want);
}

// For a two-input node reading `v`: the other input, or k_no_value.
ValueId other_operand(const ir::Node& node, ValueId v) {
  if (node.inputs.size() != 2) return k_no_value;
  if (node.inputs[0] == v) return node.inputs[1];
  if (node.inputs[1] == v) return node.inputs[0];
  return k_no_value;
}

ValueId out_of(const ir::Graph& graph, NodeId n) { return graph.node(n).outputs[0]; }

// The single node reading the output of `n`, if it is `op`.
NodeId next(const GraphRewriter& rw, NodeId n, const char* op) {
  NodeId u = rw.sole_user(out_of(rw.graph(), n));
  return is_op(rw.graph(), u, op) ? u : k_no_node;
}

void replace_chain(GraphRewriter& rw, const std::vector<NodeId>& chain, ir::Node node) {
  const NodeId last = chain.back();
  node.outputs = {out_of(rw.graph(), last)};
  for (NodeId n : chain) rw.remove_node(n);
  NodeId id = rw.add_node(std::move(node), last);
  rw.set_output(id, 0, rw.graph().node(id).outputs[0]);
}

// x * 0.5 * (1 + Erf(x / sqrt 2)) in its usual association orders.
void match_gelu(GraphRewriter& rw, NodeId erf) {
  const ir::Graph& g = rw.graph();
  NodeId scale = rw.producer(g.node(erf).inputs[0]);
  if (rw.sole_user(g.node(erf).inputs[0]) == k_no_node) return;
  ValueId x = k_no_value;
  if (is_op(g, scale, "Div") && near(scalar_constant(g, g.node(scale).inputs[1]), std::sqrt(2.0), 1e-4)) {
    x = g.node(scale).inputs[0];
  } else if (is_op(g, scale, "Mul")) {
    const ir::Node& mul = g.node(scale);
    for (int i = 0; i < 2 && mul.inputs.size() == 2; ++i) {
      if (near(scalar_constant(g, mul.inputs[static_cast<size_t>(1 - i)]), std::sqrt(0.5), 1e-4)) {
        x = mul.inputs[static_cast<size_t>(i)];
      }
    }
  }
  if (x == k_no_value) return;
  NodeId plus_one = next(rw, erf, "Add");
  if (plus_one == k_no_node ||
      !near(scalar_constant(g, other_operand(g.node(plus_one), out_of(g, erf))), 1.0, 1e-6)) {
    return;
  }
  NodeId m1 = next(rw, plus_one, "Mul");
  if (m1 == k_no_node) return;
  ValueId other = other_operand(g.node(m1), out_of(g, plus_one));
  if (other == k_no_value) return;
  std::vector<NodeId> chain = {scale, erf, plus_one};
  auto is_half = [&](ValueId v) { return near(scalar_constant(g, v), 0.5, 1e-6); };
  if (other == x || is_half(other)) {
    // (x * (1 + erf)) * 0.5, or ((1 + erf) * 0.5) * x.
    NodeId m2 = next(rw, m1, "Mul");
    if (m2 == k_no_node) return;
    ValueId last = other_operand(g.node(m2), out_of(g, m1));
    if (!(other == x ? is_half(last) : last == x)) return;
    chain.push_back(m1);
    chain.push_back(m2);
  } else {
    // (x * 0.5) * (1 + erf)
    NodeId half = rw.producer(other);
    if (!is_op(g, half, "Mul") || rw.sole_user(other) == k_no_node) return;
    ValueId hx = other_operand(g.node(half), x);
    if (hx == k_no_value || !is_half(hx)) return;
    chain.insert(chain.begin(), half);
    chain.push_back(m1);
  }
  ir::Node gelu;
  gelu.name = g.node(chain.back()).name.empty() ? "Gelu" : g.node(chain.back()).name + "/Gelu";
  gelu.op_type = "Gelu";
  gelu.opset = 20;
  gelu.inputs = {x};
  gelu.attrs.set("approximate", std::string("none"));
  replace_chain(rw, chain, std::move(gelu));
}

// ReduceMean's axes (attribute, or input 1 from opset 18), normalized; nullopt if unknown.
std::optional<std::vector<int64_t>> reduce_axes(const ir::Graph& g, const ir::Node& node, size_t rank) {
  std::vector<int64_t> axes;
  if (node.opset < 18) {
    auto a = node.attrs.find_ints("axes");
    if (!a) return std::nullopt;  // every axis
    axes = *a;
  } else if (node.inputs.size() > 1 && node.inputs[1] != k_no_value) {
    const Tensor* t = structural_value(g, node.inputs[1]);
    if (!t) return std::nullopt;
    axes = t->to_int_vector();
  } else {
    return std::nullopt;
  }
  for (int64_t& a : axes) {
    if (a < 0) a += static_cast<int64_t>(rank);
  }
  if (node.attrs.get_int("keepdims", 1) != 1) return std::nullopt;
  return axes;
}

bool reduces_last_axis(const ir::Graph& g, const ir::Node& node, size_t rank) {
  auto axes = reduce_axes(g, node, rank);
  return axes && axes->size() == 1 && (*axes)[0] == static_cast<int64_t>(rank) - 1;
}

// A per-feature vector for LayerNormalization: a known 1-D float tensor of `size`.
bool is_feature_vector(const ir::Graph& g, ValueId v, int64_t size) {
  if (v == k_no_value) return false;
  const ir::Value& value = g.value(v);
  const Tensor* t = value.initializer ? &*value.initializer : nullptr;
  return t && t->rank() == 1 && t->numel() == size && t->dtype() == DType::float32;
}

// (x - mean) / sqrt(mean((x - mean)^2) + eps) * gamma + beta, over the last axis.
void match_layer_norm(GraphRewriter& rw, NodeId mean1) {
  const ir::Graph& g = rw.graph();
  const ValueId x = g.node(mean1).inputs[0];
  const ir::ValueType& xt = g.value(x).type;
  if (xt.dtype != DType::float32 || !xt.shape || xt.shape->empty() || !xt.shape->back().is_static()) return;
  const size_t rank = xt.shape->size();
  const int64_t features = xt.shape->back().value();
  if (!reduces_last_axis(g, g.node(mean1), rank)) return;
  NodeId sub = next(rw, mean1, "Sub");
  if (sub == k_no_node || g.node(sub).inputs[0] != x || g.node(sub).inputs[1] != out_of(g, mean1)) return;
  const ValueId centred = out_of(g, sub);
  const auto& readers = rw.users(centred);
  if (rw.is_graph_output(centred) || readers.size() != 2) return;
  NodeId pow = is_op(g, readers[0], "Pow") ? readers[0] : readers[1];
  NodeId div = pow == readers[0] ? readers[1] : readers[0];
  if (!is_op(g, pow, "Pow") || !is_op(g, div, "Div")) return;
  if (g.node(pow).inputs[0] != centred || !near(scalar_constant(g, g.node(pow).inputs[1]), 2.0, 0)) return;
  NodeId mean2 = next(rw, pow, "ReduceMean");
  if (mean2 == k_no_node || !reduces_last_axis(g, g.node(mean2), rank)) return;
  NodeId add_eps = next(rw, mean2, "Add");
  if (add_eps == k_no_node) return;
  auto eps = scalar_constant(g, other_operand(g.node(add_eps), out_of(g, mean2)));
  if (!eps || *eps < 0) return;
  NodeId sqrt = next(rw, add_eps, "Sqrt");
  if (sqrt == k_no_node || next(rw, sqrt, "Div") != div || g.node(div).inputs[0] != centred) return;
  NodeId mul = next(rw, div, "Mul");
  if (mul == k_no_node) return;
  ValueId gamma = other_operand(g.node(mul), out_of(g, div));
  NodeId add = next(rw, mul, "Add");
  if (add == k_no_node) return;
  ValueId beta = other_operand(g.node(add), out_of(g, mul));
  if (!is_feature_vector(g, gamma, features) || !is_feature_vector(g, beta, features)) return;

  ir::Node ln;
  ln.name = g.node(add).name.empty() ? "LayerNormalization" : g.node(add).name + "/LayerNormalization";
  ln.op_type = "LayerNormalization";
  ln.opset = 17;
  ln.inputs = {x, gamma, beta};
  ln.attrs.set("axis", int64_t{-1});
  ln.attrs.set("epsilon", static_cast<float>(*eps));
  replace_chain(rw, {mean1, sub, pow, mean2, add_eps, sqrt, div, mul, add}, std::move(ln));
}

template <typename Match>
void for_each_live(GraphRewriter& rw, const char* op, Match match) {
  for (NodeId n : rw.live_order()) {
    if (rw.alive(n) && is_op(rw.graph(), n, op)) match(rw, n);
  }
}

// The pads of Pad `node` when it pads a rank-4 tensor with zeros on H and W
// only: {top, left, bottom, right}; nullopt otherwise.
std::optional<std::vector<int64_t>> spatial_zero_pads(const ir::Graph& g, const ir::Node& node) {
  if (node.attrs.get_string("mode", "constant") != "constant") return std::nullopt;
  std::vector<int64_t> pads;
  if (node.opset < 11) {
    if (node.attrs.get_float("value", 0.0f) != 0.0f) return std::nullopt;
    pads = node.attrs.get_ints("pads", {});
  } else {
    // Opset 18's axes input changes what the pads mean: not handled.
    if (node.inputs.size() < 2 || node.inputs.size() > 3 || node.inputs[1] == k_no_value) return std::nullopt;
    const Tensor* amounts = structural_value(g, node.inputs[1]);
    if (!amounts) return std::nullopt;
    pads = amounts->to_int_vector();
    if (node.inputs.size() == 3 && node.inputs[2] != k_no_value) {
      const auto value = scalar_constant(g, node.inputs[2]);
      if (!value || *value != 0.0) return std::nullopt;
    }
  }
  if (pads.size() != 8 || pads[0] || pads[1] || pads[4] || pads[5]) return std::nullopt;
  for (int64_t p : pads) {
    if (p < 0) return std::nullopt;
  }
  return std::vector<int64_t>{pads[2], pads[3], pads[6], pads[7]};
}

// Pad(zeros on H, W) -> AveragePool(no pads) is AveragePool(pads,
// count_include_pad=1): torch.onnx.export writes the pair for avg_pool2d
// with count_include_pad (Inception's branches), and the explicit Pad was a
// full copy of the feature map on a reference kernel.
void match_padded_average_pool(GraphRewriter& rw, NodeId pool) {
  ir::Graph& g = rw.graph();
  const ir::Node& p = g.node(pool);
  if (p.inputs.empty() || p.attrs.get_string("auto_pad", "NOTSET") != "NOTSET" ||
      p.attrs.get_int("ceil_mode", 0) != 0 || p.attrs.get_ints("kernel_shape", {}).size() != 2) {
    return;
  }
  const auto own = p.attrs.get_ints("pads", {0, 0, 0, 0});
  if (own.size() != 4 || std::any_of(own.begin(), own.end(), [](int64_t v) { return v != 0; })) return;
  const NodeId pad = rw.producer(p.inputs[0]);
  if (!is_op(g, pad, "Pad") || rw.sole_user(p.inputs[0]) != pool || rw.is_graph_output(p.inputs[0])) return;
  const auto pads = spatial_zero_pads(g, g.node(pad));
  if (!pads) return;
  const ValueId source = g.node(pad).inputs[0];
  g.node(pool).attrs.set("pads", *pads);
  g.node(pool).attrs.set("count_include_pad", int64_t{1});
  rw.set_input(pool, 0, source);
  rw.remove_node(pad);
}

// ReduceMean over H and W of a rank-4 float tensor is GlobalAveragePool
// (then a Flatten when the dims are not kept): torch.onnx.export writes
// `x.mean([2, 3])` (ShuffleNetV2's head, many squeeze-excitation blocks) as
// ReduceMean, which had no oneDNN layer and ran on a reference kernel.
void match_spatial_mean(GraphRewriter& rw, NodeId mean) {
  ir::Graph& g = rw.graph();
  const ir::Node& n = g.node(mean);
  if (n.inputs.empty() || n.inputs[0] == k_no_value) return;
  const ValueId x = n.inputs[0];
  const ir::ValueType& type = g.value(x).type;
  if (type.dtype != DType::float32 || !type.shape || type.shape->size() != 4) return;
  std::vector<int64_t> axes;
  if (n.opset < 18) {
    axes = n.attrs.get_ints("axes", {});
  } else if (n.inputs.size() == 2 && n.inputs[1] != k_no_value) {
    const Tensor* t = structural_value(g, n.inputs[1]);
    if (!t) return;
    axes = t->to_int_vector();
  }
  for (int64_t& a : axes) a = a < 0 ? a + 4 : a;
  std::sort(axes.begin(), axes.end());
  if (axes != std::vector<int64_t>{2, 3}) return;
  const bool keep = n.attrs.get_int("keepdims", 1) != 0;
  const ValueId y = n.outputs[0];
  const std::string name = n.name;
  ir::Node pool;
  pool.op_type = "GlobalAveragePool";
  pool.name = name;
  pool.opset = 1;
  pool.inputs = {x};
  if (keep) {
    pool.outputs = {y};
    rw.remove_node(mean);
    rw.set_output(rw.add_node(std::move(pool), mean), 0, y);
    return;
  }
  ir::ValueType pooled = type;
  (*pooled.shape)[2] = 1;
  (*pooled.shape)[3] = 1;
  const ValueId p = g.add_value(rw.unique_name(name + "/pooled"), pooled);
  pool.outputs = {p};
  ir::Node flatten;
  flatten.op_type = "Flatten";
  flatten.name = name + "/flatten";
  flatten.opset = 13;
  flatten.inputs = {p};
  flatten.outputs = {y};
  flatten.attrs.set("axis", int64_t{1});
  rw.remove_node(mean);
  const NodeId pool_id = rw.add_node(std::move(pool), mean);
  rw.set_output(pool_id, 0, p);
  rw.set_output(rw.add_node(std::move(flatten), mean), 0, y);
}

}  // namespace

void recognize_spatial_mean(GraphRewriter& rewriter) {
  for_each_live(rewriter, "ReduceMean", match_spatial_mean);
}

void fold_pad_into_average_pool(GraphRewriter& rewriter) {
  for_each_live(rewriter, "AveragePool", match_padded_average_pool);
}

void recognize_gelu(GraphRewriter& rewriter) { for_each_live(rewriter, "Erf", match_gelu); }
void recognize_layer_norm(GraphRewriter& rewriter) {
  for_each_live(rewriter, "ReduceMean", match_layer_norm);
}

}  // namespace kiln::passes
