#include "backends/cuda/layer_parts.hpp"

#include <algorithm>
#include <string>

#include "backends/cuda/cuda_instance.hpp"
#include "backends/cuda/cuda_layers.hpp"
#include "backends/cuda/precision.hpp"

namespace kiln::cuda {

using ir::k_no_node;
using ir::k_no_value;
using ir::ValueId;

namespace {

// The value of input `i` of the layer's bias Add that is not the chain.
ValueId other_input(const ir::Graph& g, ir::NodeId add, ValueId chain) {
  const ir::Node& n = g.node(add);
  return n.inputs[0] == chain ? n.inputs[1] : n.inputs[0];
}

// Strides of a rank-3 ([batch·heads, rows, cols]) or rank-4 view as the
// kernel's [batch, heads, rows, cols].
std::array<int64_t, 4> as_bhrc(std::span<const int64_t> strides) {
  if (strides.size() == 4) return {strides[0], strides[1], strides[2], strides[3]};
  return {strides[0], 0, strides[1], strides[2]};
}

AttentionOperandExec attention_operand(const ir::Graph& g, const std::vector<ir::NodeId>& chain,
                                       ValueId operand, const Instance& inst,
                                       const std::vector<std::optional<Tensor>>& host, ElemType type) {
  AttentionOperandExec o;
  const auto& shape = inst.shape(operand);
  StridedWalk walk = StridedWalk::contiguous(shape);
  o.source = operand;
  // [Slice or Split, views..., Transpose] (a gather) or a Transpose, then
  // further Transposes: the walk of the first part, transposed by the rest.
  auto rest = std::find_if(chain.begin(), chain.end(),
                           [&](ir::NodeId n) { return g.node(n).op_type == "Transpose"; });
  if (rest != chain.end()) ++rest;
  if (rest - chain.begin() == 1) {  // a Transpose
    const ir::Node& t = g.node(chain.front());
    o.source = t.inputs[0];
    walk = StridedWalk::contiguous(inst.shape(t.inputs[0]));
    walk.transpose(transpose_perm(t, walk.shape.size()));
  } else if (!chain.empty()) {  // a gather
    o.chain.kind = LayerKind::gather;
    o.chain.nodes.assign(chain.begin(), rest);
    o.chain.output = g.node(o.chain.nodes.back()).outputs[0];
    GatherParts p = gather_parts(g, o.chain, inst, host, type);
    if (p.one_walk) {
      o.source = g.node(chain.front()).inputs[0];
      walk = std::move(p.walk);
    } else {
      const auto& staged_shape = inst.shape(o.chain.output);
      o.staged_parts = std::move(p);
      o.staged.emplace(std::max<size_t>(static_cast<size_t>(numel(staged_shape)) * elem_size(type), 4));
      walk = StridedWalk::contiguous(staged_shape);
    }
  }
  for (auto it = rest; it != chain.end(); ++it)
    walk.transpose(transpose_perm(g.node(*it), walk.shape.size()));
  o.offset = walk.offset;
  o.strides = as_bhrc(walk.strides);
  return o;
}

}  // namespace

ActParams layer_activation(const ir::Graph& g, const Layer& layer) {
  if (layer.activation == k_no_node) return {};
  return *activation_of(g, g.node(layer.activation));
}

ValueId conv_bias(const ir::Graph& g, const Layer& layer) {
  const ir::Node& n = g.node(layer.anchor());
  return n.inputs.size() > 2 ? n.inputs[2] : k_no_value;
}

ValueId residual_of(const ir::Graph& g, const Layer& layer) {
  if (layer.residual_add == k_no_node) return k_no_value;
  return g.node(layer.residual_add).inputs[static_cast<size_t>(layer.residual_input)];
}

std::vector<int64_t> transpose_perm(const ir::Node& n, size_t rank) {
  std::vector<int64_t> perm = n.attrs.get_ints("perm", {});
  if (perm.empty()) {
    for (size_t d = rank; d-- > 0;) perm.push_back(static_cast<int64_t>(d));
  }
  return perm;
}

ValueId gather_part(const ir::Graph& g, const Layer& layer) { return g.node(layer.nodes[1]).inputs[0]; }

std::optional<ConvFusion> cudnn_fusion(const ir::Graph& g, const Layer& layer) {
  const ActParams act = layer_activation(g, layer);
  if (act.kind != Act::none && act.kind != Act::relu) return std::nullopt;
  ConvFusion f;
  f.bias = conv_bias(g, layer) != k_no_value;
  f.residual = layer.residual_add != k_no_node;
  f.relu = act.kind == Act::relu;
  if (!f.any()) return std::nullopt;
  return f;
}

ConvGeometry conv_geometry(const Plan& plan, const Layer& layer, const Instance& inst, Layout layout) {
  const ir::Graph& g = plan.graph;
  const ir::Node& n = g.node(layer.anchor());
  ConvGeometry geo;
  geo.type = plan.precision;
  geo.nhwc = layout == Layout::nhwc;
  const auto& x = inst.shape(n.inputs[0]);
  const auto& w = inst.shape(n.inputs[1]);
  const auto& y = inst.shape(n.outputs[0]);
  std::copy_n(x.begin(), 4, geo.x.begin());
  std::copy_n(w.begin(), 4, geo.w.begin());
  std::copy_n(y.begin(), 4, geo.y.begin());
  const auto strides = n.attrs.get_ints("strides", {1, 1});
  const auto dilations = n.attrs.get_ints("dilations", {1, 1});
  auto pads = n.attrs.get_ints("pads", {0, 0, 0, 0});
  if (n.attrs.get_string("auto_pad", "NOTSET") == "VALID") pads = {0, 0, 0, 0};
  if (strides.size() != 2 || dilations.size() != 2 || pads.size() != 4) {
    throw Error(ErrorCode::invalid_model, n.describe() + ": strides, dilations or pads of the wrong length");
  }
  geo.stride = {strides[0], strides[1]};
  geo.dilation = {dilations[0], dilations[1]};
  geo.pad_begin = {pads[0], pads[1]};
  geo.pad_end = {pads[2], pads[3]};
  return geo;
}

MatmulParts matmul_parts(const Plan& plan, const Layer& layer, const Instance& inst) {
  const ir::Graph& g = plan.graph;
  const ir::Node& n = g.node(layer.anchor());
  MatmulParts p;
  p.shape.type = plan.precision;
  p.x = n.inputs[0];
  const auto& x = inst.shape(p.x);
  const auto& w = inst.shape(n.inputs[1]);
  const bool trans_b = n.op_type == "Gemm" && n.attrs.get_int("transB", 0) != 0;
  p.shape.k = x.back();
  p.shape.n = trans_b ? w[0] : w.back();
  if (w.size() == 2) {
    // W is one matrix: every row of X, whatever its batch dims, is a row of M.
    p.shape.m = numel(x) / std::max<int64_t>(1, p.shape.k);
  } else {
    // Same-rank batches (the backend's support check): one product per batch.
    p.shape.m = x[x.size() - 2];
    p.shape.batch = numel(x) / std::max<int64_t>(1, p.shape.m * p.shape.k);
    p.shape.stride_x = p.shape.m * p.shape.k;
    p.shape.stride_w = p.shape.k * p.shape.n;
    p.shape.stride_y = p.shape.m * p.shape.n;
  }
  if (n.op_type == "Gemm" && n.inputs.size() > 2) p.bias = n.inputs[2];
  if (layer.bias_add != k_no_node) p.bias = other_input(g, layer.bias_add, n.outputs[0]);
  p.residual = residual_of(g, layer);
  const ActParams act = layer_activation(g, layer);
  if (p.shape.batch > 1) {
    // cuBLASLt's bias epilogue would want a bias per batch: the epilogue
    // kernel adds the one bias to every row instead.
    p.bias_in_post = p.bias != k_no_value;
    p.post = act;
    return p;
  }
  p.shape.bias = p.bias != k_no_value;
  if (p.residual != k_no_value && act.kind == Act::none) {
    p.shape.accumulate = true;  // the residual as cuBLASLt's C
  } else if (p.residual == k_no_value && act.kind == Act::relu) {
    p.shape.epilogue = LtEpilogue::relu;
  } else if (p.residual == k_no_value && act.kind == Act::gelu_tanh) {
    p.shape.epilogue = LtEpilogue::gelu_tanh;
  } else {
    p.post = act;
  }
  return p;
}

GatherParts gather_parts(const ir::Graph& g, const Layer& layer, const Instance& inst,
                         const std::vector<std::optional<Tensor>>& host, ElemType type) {
  const ValueId part = gather_part(g, layer);
  Layer slice;
  slice.kind = LayerKind::slice;
  slice.nodes = {layer.nodes.front()};
  slice.output = part;
  GatherParts p;
  p.slice = slice_parts(g, slice, inst.shapes, host);
  const auto& x = inst.shape(g.node(layer.nodes.front()).inputs[0]);
  p.extent = numel(x);
  p.walk = StridedWalk::contiguous(x);
  p.walk.slice(p.slice.starts, p.slice.steps, inst.shape(part));
  for (size_t k = 1; k + 1 < layer.nodes.size() && p.one_walk; ++k)
    p.one_walk = p.walk.reshape(inst.shape(g.node(layer.nodes[k]).outputs[0]));
  if (p.one_walk) {
    const ir::Node& t = g.node(layer.nodes.back());
    p.walk.transpose(transpose_perm(t, inst.shape(t.inputs[0]).size()));
  } else {
    p.scratch.emplace(std::max<size_t>(static_cast<size_t>(numel(inst.shape(part))) * elem_size(type), 4));
  }
  return p;
}

AttentionExec attention_exec(const ir::Graph& g, const Layer& layer, const Instance& inst,
                             const std::vector<std::optional<Tensor>>& host, ElemType type) {
  std::string why;
  auto nodes = attention_nodes(g, layer, &why);
  if (!nodes) throw Error(ErrorCode::internal, "cuda engine: an attention layer that does not hold: " + why);
  AttentionExec e;
  e.nodes = std::move(*nodes);
  const passes::AttentionMatch& m = e.nodes.match;
  const std::string where = g.node(m.softmax).describe();
  const auto& q = inst.shape(m.q);
  const auto& k_t = inst.shape(m.k_t);
  const auto& v = inst.shape(m.v);
  const size_t r = q.size();
  const bool fits = (r == 3 || r == 4) && k_t.size() == r && v.size() == r &&
                    std::equal(q.begin(), q.end() - 2, k_t.begin()) &&
                    std::equal(q.begin(), q.end() - 2, v.begin()) && k_t[r - 2] == q[r - 1] &&
                    v[r - 2] == k_t[r - 1];
  if (!fits) {
    throw Error(ErrorCode::unsupported, "cuda engine: attention at " + where + ": Q [" + shape_to_string(q) +
                                            "], Kᵀ [" + shape_to_string(k_t) + "], V [" + shape_to_string(v) +
                                            "] are no batched attention of equal batch dims");
  }
  AttentionArgs& a = e.args;
  a.batch = q[0];
  a.heads = r == 4 ? q[1] : 1;
  a.q_len = q[r - 2];
  a.head_dim = q[r - 1];
  a.kv_len = k_t[r - 1];
  a.v_dim = v[r - 1];
  if (!attention_supported(type, a.head_dim, a.v_dim))
    throw Error(ErrorCode::unsupported, "cuda engine: attention at " + where + ": head dims " +
                                            std::to_string(a.head_dim) + ", " + std::to_string(a.v_dim));
  const std::array<ValueId, 3> operands{m.q, m.k_t, m.v};
  for (size_t i = 0; i < 3; ++i)
    e.operands[i] = attention_operand(g, e.nodes.chains[i], operands[i], inst, host, type);
  a.q.strides = e.operands[0].strides;
  const auto& kt = e.operands[1].strides;
  a.k.strides = {kt[0], kt[1], kt[3], kt[2]};  // key j, feature d of Kᵀ's (d, j)
  a.v.strides = e.operands[2].strides;
  if (m.mask != k_no_value) {
    // Right-aligned broadcast onto the scores [..., Sq, Sk].
    const auto& ms = inst.shape(m.mask);
    const std::vector<int64_t> contiguous = StridedWalk::contiguous(ms).strides;
    std::vector<int64_t> strides(r, 0);
    for (size_t d = 0; d < r; ++d) {
      const int64_t j = static_cast<int64_t>(d) - static_cast<int64_t>(r - ms.size());
      if (j >= 0 && ms[static_cast<size_t>(j)] != 1) strides[d] = contiguous[static_cast<size_t>(j)];
    }
    a.mask.strides = as_bhrc(strides);
  }
  const auto& y = inst.shape(layer.output);
  std::vector<int64_t> out = StridedWalk::contiguous(y).strides;
  if (e.nodes.output_transpose != ir::k_no_node) {
    // Output dim perm[i] of the attention is dim i of the Transpose's output.
    const std::vector<int64_t> perm = transpose_perm(g.node(e.nodes.output_transpose), r);
    std::vector<int64_t> strides(r);
    for (size_t i = 0; i < r; ++i) strides[static_cast<size_t>(perm[i])] = out[i];
    out = std::move(strides);
  }
  a.out_strides = as_bhrc(out);
  a.n_scales = static_cast<int>(m.scales.size());
  for (size_t i = 0; i < m.scales.size(); ++i) a.divide_mask |= (m.scales[i].divide ? 1u : 0u) << i;
  return e;
}

}  // namespace kiln::cuda
