#include "backends/cuda/cuda_layers.hpp"

#include <algorithm>
#include <limits>
#include <map>

#include "backends/cuda/host_shapes.hpp"
#include "passes/lowering_passes.hpp"
#include "passes/passes.hpp"

namespace kiln::cuda {

namespace {

const std::map<std::string, Act, std::less<>>& unary_ops() {
  static const std::map<std::string, Act, std::less<>> ops{{"Relu", Act::relu},
                                                           {"Sigmoid", Act::sigmoid},
                                                           {"Tanh", Act::tanh},
                                                           {"Gelu", Act::gelu_erf},
                                                           {"HardSwish", Act::hardswish},
                                                           {"HardSigmoid", Act::hardsigmoid},
                                                           {"LeakyRelu", Act::leaky_relu},
                                                           {"Clip", Act::clip},
                                                           {"Elu", Act::elu},
                                                           {"Softplus", Act::softplus},
                                                           {"Abs", Act::abs},
                                                           {"Neg", Act::neg},
                                                           {"Exp", Act::exp},
                                                           {"Log", Act::log},
                                                           {"Sqrt", Act::sqrt},
                                                           {"Reciprocal", Act::reciprocal},
                                                           {"Erf", Act::erf}};
  return ops;
}

const std::map<std::string, BinaryOp, std::less<>>& binary_ops() {
  static const std::map<std::string, BinaryOp, std::less<>> ops{
      {"Add", BinaryOp::add}, {"Sub", BinaryOp::sub}, {"Mul", BinaryOp::mul}, {"Div", BinaryOp::div},
      {"Max", BinaryOp::max}, {"Min", BinaryOp::min}, {"Pow", BinaryOp::pow}};
  return ops;
}

bool is_view(std::string_view op) {
  return op == "Reshape" || op == "Flatten" || op == "Squeeze" || op == "Unsqueeze" || op == "Identity";
}

std::optional<int64_t> rank_of(const ir::Graph& g, ir::ValueId v) {
  if (v == ir::k_no_value || !g.value(v).type.shape) return std::nullopt;
  return static_cast<int64_t>(g.value(v).type.shape->size());
}

// Why a MatMul cannot run as one (possibly batched) cuBLASLt matmul: its
// second input is a constant or activation matrix (rows of the first input
// stack into M), or both inputs have the same rank >= 3 with the same batch
// dims, dim by dim (static or the same symbol), as attention's Q·Kᵀ and P·V.
// A dim static inference cannot tell (after a Reshape whose target shape
// layers compute) is checked when an instance is made (instance_problem):
// refusing it would send every dynamic-shape transformer's attention to the
// host.
std::optional<std::string> batched_matmul_reason(const ir::Graph& g, const ir::Node& n) {
  const auto x_rank = rank_of(g, n.inputs[0]), w_rank = rank_of(g, n.inputs[1]);
  if (!x_rank || !w_rank || *x_rank < 2 || *w_rank < 2) return "MatMul of a vector or of unknown rank";
  if (*w_rank == 2) return std::nullopt;
  if (*x_rank != *w_rank) return "MatMul broadcasting a matrix over batches of different rank";
  const ir::Dims& x = *g.value(n.inputs[0]).type.shape;
  const ir::Dims& w = *g.value(n.inputs[1]).type.shape;
  for (size_t d = 0; d + 2 < x.size(); ++d) {
    if (x[d].is_unknown() || w[d].is_unknown()) continue;
    if (!(x[d] == w[d])) return "MatMul whose batch dims differ or broadcast";
  }
  return std::nullopt;
}

// A fused chain's activation, as the conv/matmul layer applies it.
bool fusable_activation(const ir::Graph& g, ir::NodeId n) {
  return n != ir::k_no_node && activation_of(g, g.node(n)).has_value();
}

}  // namespace

bool is_constant(const ir::Graph& graph, ir::ValueId v) {
  if (v == ir::k_no_value) return false;
  const ir::Value& value = graph.value(v);
  return value.producer == ir::k_no_node && (value.recipe.has_value() || value.initializer.has_value());
}

std::optional<ActParams> activation_of(const ir::Graph& graph, const ir::Node& node) {
  auto it = unary_ops().find(node.op_type);
  if (it == unary_ops().end()) return std::nullopt;
  ActParams p{it->second, 0, 0};
  const ir::Attributes& a = node.attrs;
  switch (p.kind) {
    case Act::gelu_erf:
      if (a.get_string("approximate", "none") == "tanh") p.kind = Act::gelu_tanh;
      break;
    case Act::hardsigmoid:
      p.alpha = a.get_float("alpha", 0.2f);
      p.beta = a.get_float("beta", 0.5f);
      break;
    case Act::leaky_relu:
      p.alpha = a.get_float("alpha", 0.01f);
      break;
    case Act::elu:
      p.alpha = a.get_float("alpha", 1.0f);
      break;
    case Act::clip: {
      // Opset 11+: bounds are optional inputs, which must be constants here.
      // No bound: infinite, so an infinite input stays infinite.
      p.alpha = -std::numeric_limits<float>::infinity();
      p.beta = std::numeric_limits<float>::infinity();
      if (node.opset < 11) {
        p.alpha = a.get_float("min", p.alpha);
        p.beta = a.get_float("max", p.beta);
        break;
      }
      for (size_t i = 1; i < node.inputs.size() && i < 3; ++i) {
        if (node.inputs[i] == ir::k_no_value) continue;
        auto bound = passes::scalar_constant(graph, node.inputs[i]);
        if (!bound) return std::nullopt;
        (i == 1 ? p.alpha : p.beta) = static_cast<float>(*bound);
      }
      break;
    }
    default:
      break;
  }
  return p;
}

LayerKind layer_kind(const ir::Graph& graph, ir::NodeId id, const std::vector<bool>& host_nodes) {
  if (host_nodes[static_cast<size_t>(id)]) return LayerKind::shape;
  const std::string& op = graph.node(id).op_type;
  if (op == "Conv") return LayerKind::conv;
  if (op == "MatMul" || op == "Gemm") return LayerKind::matmul;
  if (unary_ops().count(op)) return LayerKind::unary;
  if (binary_ops().count(op)) return LayerKind::binary;
  if (op == "MaxPool" || op == "AveragePool") return LayerKind::pool;
  if (op == "GlobalAveragePool" || op == "GlobalMaxPool") return LayerKind::reduce;
  if (op == "Softmax" || op == "LogSoftmax") return LayerKind::softmax;
  if (op == "LayerNormalization") return LayerKind::layer_norm;
  if (op == "Transpose") return LayerKind::transpose;
  if (op == "Concat") return LayerKind::concat;
  // Gather of one constant index is the window at that index.
  if (op == "Slice" || op == "Split" || op == "Gather") return LayerKind::slice;
  if (op == "Expand") return LayerKind::expand;
  return LayerKind::view;
}

namespace {

// Why the GPU cannot run node `id` as a layer of its own; its shape
// arguments may read the values marked in `host_value` (empty: none but
// constants).
std::optional<std::string> gpu_reason(const ir::Graph& g, ir::NodeId id,
                                      const std::vector<bool>& host_value) {
  const ir::Node& n = g.node(id);
  // A shape argument the engine knows when it makes an instance: a
  // constant, or a value its shape layers compute on the host.
  auto known_on_host = [&](ir::ValueId v) {
    return g.value(v).known_value() || (!host_value.empty() && host_value[static_cast<size_t>(v)]);
  };
  const std::string& op = n.op_type;
  if (!n.domain.empty() && n.domain != "ai.onnx") return "op domain '" + n.domain + "'";
  const bool known =
      op == "Conv" || op == "MatMul" || op == "Gemm" || unary_ops().count(op) || binary_ops().count(op) ||
      op == "MaxPool" || op == "AveragePool" || op == "GlobalAveragePool" || op == "GlobalMaxPool" ||
      op == "Softmax" || op == "LogSoftmax" || op == "LayerNormalization" || op == "Transpose" ||
      op == "Concat" || op == "Slice" || op == "Split" || op == "Expand" || op == "Gather" || is_view(op);
  if (!known) return "no cuda kernel for " + op;
  // Every data input and output is fp32 (shape inputs of views are int64).
  const size_t data_inputs =
      is_view(op) || op == "Slice" || op == "Split" || op == "Expand" || op == "Gather" ? 1 : n.inputs.size();
  for (size_t i = 0; i < n.inputs.size() && i < data_inputs; ++i) {
    if (n.inputs[i] == ir::k_no_value) continue;
    if (op == "Clip" && i > 0) continue;
    if (g.value(n.inputs[i]).type.dtype != DType::float32) {
      return "input " + std::to_string(i) + " is " +
             std::string(dtype_name(g.value(n.inputs[i]).type.dtype)) + " (the cuda backend runs float32)";
    }
  }
  if (n.outputs.size() != 1 && op != "Split")
    return op + " with " + std::to_string(n.outputs.size()) + " outputs";
  const auto out_rank = rank_of(g, n.outputs[0]);
  if (!out_rank) return "output rank unknown";
  if (*out_rank > k_max_rank) return "rank " + std::to_string(*out_rank) + " (at most 6)";
  for (ir::ValueId out : n.outputs) {
    if (out == ir::k_no_value) return op + " with an omitted output";
  }
  const ir::Attributes& a = n.attrs;
  if (op == "Conv") {
    if (rank_of(g, n.inputs[0]) != 4) return "Conv that is not 2-D";
    if (!is_constant(g, n.inputs[1])) return "Conv weight computed at run time";
    if (n.inputs.size() > 2 && n.inputs[2] != ir::k_no_value && !is_constant(g, n.inputs[2]))
      return "Conv bias computed at run time";
    const std::string pad = a.get_string("auto_pad", "NOTSET");
    if (pad != "NOTSET" && pad != "VALID") return "Conv auto_pad " + pad;
  } else if (op == "MatMul") {
    if (auto why = batched_matmul_reason(g, n)) return why;
  } else if (op == "Gemm") {
    if (!is_constant(g, n.inputs[1]) || rank_of(g, n.inputs[1]) != 2)
      return op + " whose second input is not a constant matrix";
    if (a.get_int("transA", 0) != 0) return "Gemm with transA";
    if (a.get_float("alpha", 1.0f) != 1.0f || a.get_float("beta", 1.0f) != 1.0f)
      return "Gemm with alpha or beta other than 1";
    if (n.inputs.size() > 2 && n.inputs[2] != ir::k_no_value &&
        (!is_constant(g, n.inputs[2]) || rank_of(g, n.inputs[2]) != 1))
      return "Gemm whose C is not a constant vector";
  } else if (unary_ops().count(op)) {
    if (!activation_of(g, n)) return op + " with bounds computed at run time";
  } else if (op == "MaxPool" || op == "AveragePool") {
    if (rank_of(g, n.inputs[0]) != 4) return op + " that is not 2-D";
    if (a.get_string("auto_pad", "NOTSET") != "NOTSET" && a.get_string("auto_pad", "NOTSET") != "VALID")
      return op + " auto_pad";
    if (a.get_int("storage_order", 0) != 0) return "MaxPool storage_order";
    // The average kernel counts padding at the start only; a ceil_mode window
    // past the end padding would be divided wrongly.
    if (op == "AveragePool" && a.get_int("ceil_mode", 0) && a.get_int("count_include_pad", 0))
      return "AveragePool with ceil_mode and count_include_pad";
  } else if (op == "GlobalAveragePool" || op == "GlobalMaxPool") {
    if (rank_of(g, n.inputs[0]).value_or(0) < 3) return op + " of rank < 3";
  } else if (op == "Softmax" || op == "LogSoftmax") {
    const int64_t axis = a.get_int("axis", n.opset >= 13 ? -1 : 1);
    if (axis != -1 && axis != *out_rank - 1) return op + " over an axis other than the last";
  } else if (op == "LayerNormalization") {
    const int64_t axis = a.get_int("axis", -1);
    if (axis != -1 && axis != *out_rank - 1) return "LayerNormalization over more than the last axis";
    if (!is_constant(g, n.inputs[1])) return "LayerNormalization scale computed at run time";
    if (n.inputs.size() > 2 && n.inputs[2] != ir::k_no_value && !is_constant(g, n.inputs[2]))
      return "LayerNormalization bias computed at run time";
  } else if (op == "Slice") {
    for (size_t i = 1; i < n.inputs.size(); ++i) {
      if (n.inputs[i] != ir::k_no_value && !known_on_host(n.inputs[i]))
        return "Slice whose starts, ends, axes or steps are not known when an instance is made";
    }
    // Steps computed from shapes are checked when an instance is made.
    if (n.inputs.size() > 4 && n.inputs[4] != ir::k_no_value && g.value(n.inputs[4]).known_value()) {
      const Tensor& steps = *g.value(n.inputs[4]).known_value();
      for (int64_t i = 0; i < steps.numel(); ++i) {
        if (steps.int_at(i) < 1) return "Slice with a step below 1";
      }
    }
  } else if (op == "Gather") {
    // x[:, 0] of a class token: one constant index, a window of the input.
    const Tensor* index = g.value(n.inputs[1]).known_value();
    if (!index || index->numel() != 1 || index->shape().size() > 1)
      return "Gather of indices that are not one constant";
    const auto in_rank = rank_of(g, n.inputs[0]);
    if (!in_rank) return "Gather of an input of unknown rank";
    int64_t axis = a.get_int("axis", 0);
    if (axis < 0) axis += *in_rank;
    if (axis < 0 || axis >= *in_rank) return "Gather axis out of range";
    const ir::Dim& dim = (*g.value(n.inputs[0]).type.shape)[static_cast<size_t>(axis)];
    const int64_t i = index->int_at(0);
    if (!dim.is_static() || i < -dim.value() || i >= dim.value())
      return "Gather whose index may fall outside its axis";
  } else if (op == "Expand") {
    // The output shape follows from the target, which the instance knows.
    if (!known_on_host(n.inputs[1])) return "Expand whose shape input is not known when an instance is made";
    if (*out_rank == 0) return "Expand to a scalar";
  } else if (op == "Split") {
    if (n.inputs.size() > 1 && n.inputs[1] != ir::k_no_value && !known_on_host(n.inputs[1]))
      return "Split whose sizes are not known when an instance is made";
  } else if (is_view(op) && op != "Identity" && op != "Flatten") {
    // The output shape must follow from the input shapes and the instance's
    // host values alone.
    if (n.inputs.size() > 1 && n.inputs[1] != ir::k_no_value && !known_on_host(n.inputs[1]))
      return op + " whose shape input is not known when an instance is made";
  }
  return std::nullopt;
}

HostShapes host_shapes(const ir::Graph& g) {
  return analyse_host_shapes(
      g, [&g](ir::NodeId id, const std::vector<bool>& host_value) { return gpu_reason(g, id, host_value); });
}

}  // namespace

std::optional<std::string> unsupported_reason(const ir::Graph& g, ir::NodeId id) {
  // Most nodes read float32 activations only: no shape value is involved,
  // and the whole-graph analysis is not needed.
  if (!involves_shape_values(g, g.node(id))) return gpu_reason(g, id, {});
  const HostShapes shapes = host_shapes(g);
  const auto n = static_cast<size_t>(id);
  if (shapes.taken[n]) return std::nullopt;
  if (shapes.refused[n]) return shapes.refused[n];
  return gpu_reason(g, id, shapes.host_value);
}

std::vector<bool> host_shape_nodes(const ir::Graph& graph) { return host_shapes(graph).taken; }

namespace {

// Every Transpose layer whose input is a slice layer's output, directly or
// through view layers, where no other node and no graph output reads the
// slice's output or the views: the chain becomes one gather layer, a
// strided copy from the slice's input, instead of a copy per op. (The
// attention heads of Q, K and V: Split → Reshape → Transpose.)
std::vector<Layer> fuse_gathers(const ir::Graph& g, std::vector<Layer> layers) {
  std::vector<int> readers(g.num_values(), 0);
  for (ir::NodeId id = 0; id < static_cast<ir::NodeId>(g.num_nodes()); ++id) {
    for (ir::ValueId in : g.node(id).inputs) {
      if (in != ir::k_no_value) ++readers[static_cast<size_t>(in)];
    }
  }
  for (ir::ValueId out : g.outputs()) readers[static_cast<size_t>(out)] += 2;  // never fused away
  std::map<ir::ValueId, size_t> producer;  // layer index by the value it writes
  for (size_t i = 0; i < layers.size(); ++i) producer[layers[i].output] = i;
  std::vector<bool> fused(layers.size(), false);
  for (size_t t = 0; t < layers.size(); ++t) {
    if (layers[t].kind != LayerKind::transpose) continue;
    std::vector<size_t> chain;  // the views, last first
    ir::ValueId v = g.node(layers[t].anchor()).inputs[0];
    for (;;) {
      auto p = producer.find(v);
      if (p == producer.end() || readers[static_cast<size_t>(v)] != 1 || fused[p->second]) break;
      const Layer& from = layers[p->second];
      if (from.kind == LayerKind::view) {
        chain.push_back(p->second);
        v = g.node(from.anchor()).inputs[0];
        continue;
      }
      // A Gather's window drops its axis: its walks keep to Slice and Split.
      if (from.kind != LayerKind::slice || g.node(from.anchor()).op_type == "Gather") break;
      Layer gather;
      gather.kind = LayerKind::gather;
      gather.nodes.push_back(from.anchor());
      for (auto it = chain.rbegin(); it != chain.rend(); ++it) gather.nodes.push_back(layers[*it].anchor());
      gather.nodes.push_back(layers[t].anchor());
      gather.output = layers[t].output;
      fused[p->second] = true;
      for (size_t c : chain) fused[c] = true;
      layers[t] = std::move(gather);
      break;
    }
  }
  std::vector<Layer> out;
  for (size_t i = 0; i < layers.size(); ++i) {
    if (!fused[i]) out.push_back(std::move(layers[i]));
  }
  return out;
}

}  // namespace

std::vector<Layer> partition_layers(const ir::Graph& g) {
  std::vector<Layer> layers;
  std::vector<bool> taken(g.num_nodes(), false);
  std::map<ir::NodeId, passes::FusionGroup> groups;
  for (const passes::FusionGroup& group : passes::find_fusions(g)) groups[group.anchor] = group;
  const std::vector<bool> host_nodes = host_shape_nodes(g);
  for (ir::NodeId id : g.topological_order()) {
    if (taken[static_cast<size_t>(id)]) continue;
    if (host_nodes[static_cast<size_t>(id)]) {
      // Evaluated on the host when an instance is made; no GPU work.
      Layer layer;
      layer.kind = LayerKind::shape;
      layer.nodes = {id};
      layer.output = g.node(id).outputs[0];
      taken[static_cast<size_t>(id)] = true;
      layers.push_back(std::move(layer));
      continue;
    }
    if (g.node(id).op_type == "Split") {
      // One slice layer per output: a layer writes one value.
      for (ir::ValueId out : g.node(id).outputs) {
        Layer part;
        part.kind = LayerKind::slice;
        part.nodes = {id};
        part.output = out;
        layers.push_back(std::move(part));
      }
      taken[static_cast<size_t>(id)] = true;
      continue;
    }
    Layer layer;
    layer.kind = layer_kind(g, id, host_nodes);
    layer.nodes = {id};
    layer.output = g.node(id).outputs[0];
    auto group = groups.find(id);
    if (group != groups.end() && (layer.kind == LayerKind::conv || layer.kind == LayerKind::matmul)) {
      const passes::FusionGroup& f = group->second;
      auto take = [&](ir::NodeId n) {
        layer.nodes.push_back(n);
        layer.output = g.node(n).outputs[0];
      };
      if (f.bias_add != ir::k_no_node && layer.kind == LayerKind::matmul) {
        layer.bias_add = f.bias_add;
        take(f.bias_add);
      }
      // A residual of exactly the output's shape is read by the epilogue;
      // the activation after it only comes along with it.
      bool chain_open = true;
      if (f.residual_add != ir::k_no_node) {
        const ir::Node& add = g.node(f.residual_add);
        const ir::ValueId other = add.inputs[static_cast<size_t>(f.residual_input)];
        const ir::ValueType& o = g.value(other).type;
        const ir::ValueType& y = g.value(add.outputs[0]).type;
        // Equal shapes, dim by dim, static or the same symbol (an unknown
        // dim may differ at run time).
        const bool known_dims =
            o.shape && y.shape &&
            std::none_of(o.shape->begin(), o.shape->end(), [](const ir::Dim& d) { return d.is_unknown(); });
        if (known_dims && *o.shape == *y.shape && o.dtype == DType::float32) {
          layer.residual_add = f.residual_add;
          layer.residual_input = f.residual_input;
          take(f.residual_add);
        } else {
          chain_open = false;
        }
      }
      if (chain_open && fusable_activation(g, f.activation)) {
        layer.activation = f.activation;
        take(f.activation);
      }
    }
    for (ir::NodeId n : layer.nodes) taken[static_cast<size_t>(n)] = true;
    layers.push_back(std::move(layer));
  }
  return fuse_gathers(g, std::move(layers));
}

std::optional<std::string> instance_problem(const ir::Graph& graph, const Layer& layer,
                                            const std::vector<std::optional<std::vector<int64_t>>>& shapes) {
  if (layer.kind != LayerKind::matmul) return std::nullopt;
  const ir::Node& n = graph.node(layer.anchor());
  const auto& x = shapes[static_cast<size_t>(n.inputs[0])];
  const auto& w = shapes[static_cast<size_t>(n.inputs[1])];
  if (!x || !w) return n.describe() + ": input shapes unknown at these input shapes";
  if (w->size() == 2) return std::nullopt;
  if (x->size() != w->size() || !std::equal(x->begin(), x->end() - 2, w->begin()))
    return n.describe() + ": batch dims differ or broadcast at these input shapes [" + shape_to_string(*x) +
           "] · [" + shape_to_string(*w) + "], which one strided cuBLASLt call cannot express";
  return std::nullopt;
}

BinaryOp binary_op_of(const ir::Node& node) { return binary_ops().at(node.op_type); }

const char* layer_kind_name(LayerKind kind) {
  switch (kind) {
    case LayerKind::conv:
      return "conv";
    case LayerKind::matmul:
      return "matmul";
    case LayerKind::unary:
      return "unary";
    case LayerKind::binary:
      return "binary";
    case LayerKind::pool:
      return "pool";
    case LayerKind::reduce:
      return "reduce";
    case LayerKind::softmax:
      return "softmax";
    case LayerKind::layer_norm:
      return "layer_norm";
    case LayerKind::transpose:
      return "transpose";
    case LayerKind::view:
      return "view";
    case LayerKind::concat:
      return "concat";
    case LayerKind::slice:
      return "slice";
    case LayerKind::shape:
      return "shape";
    case LayerKind::expand:
      return "expand";
    case LayerKind::gather:
      return "gather";
    case LayerKind::attention:
      return "attention";
  }
  return "unknown";
}

}  // namespace kiln::cuda
