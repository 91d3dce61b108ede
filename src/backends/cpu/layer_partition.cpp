#include "backends/cpu/layer_partition.hpp"

#include <algorithm>
#include <map>

#include "backends/cpu/attention_fusion.hpp"
#include "backends/cpu/dnnl_util.hpp"
#include "backends/cpu/resample_layer.hpp"
#include "backends/cpu/spatial_pads.hpp"
#include "ir/op_schema.hpp"
#include "ir/op_versions.hpp"
#include "passes/passes.hpp"
#include "reference/kernel.hpp"

namespace kiln::cpu {

using ir::k_no_node;
using ir::k_no_value;
using ir::NodeId;
using ir::ValueId;

namespace {

bool default_domain(const ir::Node& n) { return n.domain.empty() || n.domain == "ai.onnx"; }

bool is_constant(const ir::Graph& g, ValueId v) {
  const ir::Value& value = g.value(v);
  return (value.initializer && !value.recipe) || value.inferred_value.has_value();
}

// A weight or constant: something an engine can hold, not an activation.
bool is_fixed(const ir::Graph& g, ValueId v) { return is_weight(g, v) || is_constant(g, v); }

std::optional<size_t> rank_of(const ir::Graph& g, ValueId v) {
  const ir::ValueType& t = g.value(v).type;
  if (!t.shape) return std::nullopt;
  return t.shape->size();
}

bool float_data(const ir::Graph& g, const ir::Node& n, std::string* why) {
  for (ValueId v : n.inputs) {
    if (v == k_no_value) continue;
    DType d = g.value(v).type.dtype;
    if (d != DType::float32 && !is_constant(g, v)) {
      if (why) *why = "input type " + std::string(dtype_name(d));
      return false;
    }
  }
  for (ValueId v : n.outputs) {
    if (v != k_no_value && g.value(v).type.dtype != DType::float32) {
      if (why) *why = "output type " + std::string(dtype_name(g.value(v).type.dtype));
      return false;
    }
  }
  return true;
}

bool all_float_inputs(const ir::Graph& g, const ir::Node& n) {
  for (ValueId v : n.inputs) {
    if (v != k_no_value && g.value(v).type.dtype != DType::float32) return false;
  }
  return true;
}

bool single_output(const ir::Node& n) {
  for (size_t i = 1; i < n.outputs.size(); ++i) {
    if (n.outputs[i] != k_no_value) return false;
  }
  return !n.outputs.empty() && n.outputs[0] != k_no_value;
}

std::optional<LayerKind> check_native(const ir::Graph& g, const ir::Node& n, std::string* why,
                                      const std::vector<bool>* shape_only) {
  auto no = [&](const std::string& reason) -> std::optional<LayerKind> {
    if (why) *why = reason;
    return std::nullopt;
  };
  // Known when the engine builds an instance: a constant, or computed from
  // the input shapes alone.
  auto known_at_build = [&](ValueId v) {
    return is_constant(g, v) || (shape_only && (*shape_only)[static_cast<size_t>(v)]);
  };
  if (!default_domain(n)) return no("domain '" + n.domain + "'");
  const std::string& op = n.op_type;
  if (op == "Identity" || op == "Reshape" || op == "Flatten" || op == "Squeeze" || op == "Unsqueeze" ||
      op == "Transpose") {
    if (n.inputs.empty() || n.inputs[0] == k_no_value || g.value(n.inputs[0]).type.dtype != DType::float32) {
      return no("view of a non-float tensor");
    }
    if (!single_output(n)) return no("extra outputs");
    return LayerKind::view;
  }
  if (op == "Split") {
    // Windows of a float tensor along one axis, each like a Slice's
    // (torch.split exports as Split; a reference kernel copied each part).
    if (n.opset < 2 || n.inputs.empty() || n.inputs[0] == k_no_value ||
        g.value(n.inputs[0]).type.dtype != DType::float32 || !rank_of(g, n.inputs[0]) ||
        *rank_of(g, n.inputs[0]) == 0) {
      return no("Split of this kind");
    }
    if (n.inputs.size() > 1 && n.inputs[1] != k_no_value && !known_at_build(n.inputs[1]))
      return no("Split sizes are not constant");
    return LayerKind::view;
  }
  // LayerNormalization's Mean and InvStdDev are oneDNN's statistics.
  if (!single_output(n) && op != "LayerNormalization") return no("optional outputs are requested");
  if (op == "Slice") {
    // A strided window of a float tensor, copied by one reorder (ViT's q,
    // k and v out of the fused in-projection) instead of a reference kernel.
    if (n.opset < 10 || n.inputs.size() < 3 || n.inputs[0] == k_no_value ||
        g.value(n.inputs[0]).type.dtype != DType::float32 || !rank_of(g, n.inputs[0]) ||
        *rank_of(g, n.inputs[0]) == 0) {
      return no("Slice of this kind");
    }
    for (size_t i = 1; i < n.inputs.size(); ++i) {
      if (n.inputs[i] != k_no_value && !known_at_build(n.inputs[i]))
        return no("Slice bounds are not constant");
    }
    if (n.inputs.size() > 4 && n.inputs[4] != k_no_value) {
      // Positive steps are strides of the window (Swin's patch merging
      // takes every second row and column).
      const Tensor* steps = g.value(n.inputs[4]).known_value();
      if (!steps) return no("Slice steps are not known");
      for (int64_t s : steps->to_int_vector()) {
        if (s < 1) return no("Slice steps below 1");
      }
    }
    return LayerKind::view;
  }
  if (op == "Gather") {
    // One constant index: a window of the data with that axis dropped (qkv[0]).
    if (n.inputs.size() != 2 || n.inputs[0] == k_no_value ||
        g.value(n.inputs[0]).type.dtype != DType::float32 || !rank_of(g, n.inputs[0]) ||
        *rank_of(g, n.inputs[0]) == 0) {
      return no("Gather of this kind");
    }
    const Tensor* index = g.value(n.inputs[1]).known_value();
    if (!index || index->numel() != 1 || index->shape().size() > 1)
      return no("Gather indices are not one constant");
    return LayerKind::view;
  }
  if (op == "Pad") {
    // Constant padding: the source copied into the interior of a filled
    // destination (or a view where every amount is zero).
    if (n.opset < 11 || n.inputs.size() < 2 || n.inputs[0] == k_no_value ||
        g.value(n.inputs[0]).type.dtype != DType::float32 || !rank_of(g, n.inputs[0]) ||
        *rank_of(g, n.inputs[0]) == 0) {
      return no("Pad of this kind");
    }
    if (n.attrs.get_string("mode", "constant") != "constant")
      return no("Pad mode " + n.attrs.get_string("mode"));
    if (n.inputs[1] == k_no_value || !known_at_build(n.inputs[1])) return no("Pad amounts are not constant");
    if (n.inputs.size() > 2 && n.inputs[2] != k_no_value && !is_constant(g, n.inputs[2]))
      return no("Pad value is not constant");
    if (n.inputs.size() > 3 && n.inputs[3] != k_no_value) return no("Pad axes");
    return LayerKind::view;
  }
  if (op == "Resize" || op == "Upsample") {
    // Before the float check: scales and sizes may be computed from shapes.
    if (auto reason = resample_mismatch(g, n)) return no(*reason);
    return LayerKind::resample;
  }
  if (!float_data(g, n, why)) return std::nullopt;
  if (op == "Conv") {
    if (n.inputs.size() < 2 || !rank_of(g, n.inputs[0]) || *rank_of(g, n.inputs[0]) < 3u ||
        *rank_of(g, n.inputs[0]) > 5u) {
      return no("only 1-d, 2-d and 3-d convolutions");
    }
    if (!is_fixed(g, n.inputs[1])) return no("weights are not constant");
    if (n.inputs.size() > 2 && n.inputs[2] != k_no_value && !is_fixed(g, n.inputs[2])) {
      return no("bias is not constant");
    }
    // auto_pad resolves to explicit pads per instance (conv_layer.cpp).
    return LayerKind::conv;
  }
  if (op == "ConvTranspose") {
    // oneDNN's deconvolution (conv_layer.cpp), with pads it can take: known
    // spatial sizes and no negative pad.
    auto r = rank_of(g, n.inputs[0]);
    if (n.inputs.size() < 2 || !r || *r < 3u || *r > 5u) return no("only 1-d, 2-d and 3-d ConvTranspose");
    if (!is_fixed(g, n.inputs[1])) return no("weights are not constant");
    if (n.inputs.size() > 2 && n.inputs[2] != k_no_value && !is_fixed(g, n.inputs[2]))
      return no("bias is not constant");
    // The dims after batch and channels (the batch may be symbolic).
    auto spatial = [&](ValueId v) {
      std::vector<int64_t> dims;
      const ir::ValueType& t = g.value(v).type;
      if (!t.shape || t.shape->size() != *r) return dims;
      for (size_t i = 2; i < t.shape->size(); ++i) {
        if (!(*t.shape)[i].is_static()) return std::vector<int64_t>{};
        dims.push_back((*t.shape)[i].value());
      }
      return dims;
    };
    const std::vector<int64_t> in = spatial(n.inputs[0]), out = spatial(n.outputs[0]),
                               k = spatial(n.inputs[1]);
    if (in.size() != *r - 2 || out.size() != in.size() || k.size() != in.size())
      return no("ConvTranspose spatial sizes are not known");
    if (!conv_transpose_pads(n.attrs, in, out, k))
      return no("ConvTranspose output size needs a negative pad");
    return LayerKind::conv;
  }
  if (op == "MatMul") {
    if (n.inputs.size() != 2) return no("MatMul arity");
    auto ra = rank_of(g, n.inputs[0]);
    auto rb = rank_of(g, n.inputs[1]);
    if (!ra || !rb || *ra < 2 || *rb < 2 || *ra > 6 || *rb > 6) return no("MatMul operand ranks");
    if (is_fixed(g, n.inputs[0])) return no("constant left operand");
    return LayerKind::matmul;
  }
  if (op == "Gemm") {
    // alpha, beta and a C that broadcasts are post-ops (matmul_layer.cpp).
    bool has_c = n.inputs.size() > 2 && n.inputs[2] != k_no_value;
    if (has_c) {
      if (!is_fixed(g, n.inputs[2])) return no("Gemm C is not constant");
      const ir::ValueType& c = g.value(n.inputs[2]).type;
      if (!c.shape || c.shape->size() > 2) return no("Gemm C of unknown rank or rank > 2");
    }
    if (!is_fixed(g, n.inputs[1])) return no("Gemm B is not constant");
    if (is_fixed(g, n.inputs[0])) return no("Gemm A is constant");
    return LayerKind::matmul;
  }
  if (op == "MaxPool" || op == "AveragePool") {
    // auto_pad resolves to explicit pads per instance (pool_layer.cpp).
    if (!rank_of(g, n.inputs[0]) || *rank_of(g, n.inputs[0]) < 3u || *rank_of(g, n.inputs[0]) > 5u)
      return no("only 1-d, 2-d and 3-d pooling");
    if (op == "MaxPool" && n.attrs.get_int("storage_order", 0) != 0) return no("storage_order");
    if (op == "AveragePool" && n.attrs.get_int("ceil_mode", 0) && n.attrs.get_int("count_include_pad", 0)) {
      return no("ceil_mode with count_include_pad");
    }
    return LayerKind::pool;
  }
  if (op == "GlobalAveragePool" || op == "GlobalMaxPool") {
    if (!rank_of(g, n.inputs[0]) || *rank_of(g, n.inputs[0]) < 3u || *rank_of(g, n.inputs[0]) > 5u)
      return no("only 1-d, 2-d and 3-d pooling");
    return LayerKind::pool;
  }
  if (op == "Add" || op == "Sub" || op == "Mul" || op == "Div") {
    // Which operand broadcasts is often unknown statically (dims after a
    // Reshape): the layer decides per shape set, and runs the reference
    // kernel when oneDNN cannot broadcast that way.
    if (n.inputs.size() != 2) return no("arity");
    if (!all_float_inputs(g, n)) return no("non-float operand");
    auto r = rank_of(g, n.outputs[0]);
    if (r && *r > 6) return no("rank");
    if (is_fixed(g, n.inputs[0]) && is_fixed(g, n.inputs[1])) return no("constant operands");
    return LayerKind::binary;
  }
  if (op == "Softmax") {
    auto r = rank_of(g, n.inputs[0]);
    if (!r || *r == 0) return no("rank");
    int64_t axis = n.attrs.get_int("axis", n.opset >= 13 ? -1 : 1);
    if (axis < 0) axis += static_cast<int64_t>(*r);
    if (n.opset < 13 && axis != static_cast<int64_t>(*r) - 1) return no("pre-13 Softmax over several axes");
    return LayerKind::softmax;
  }
  if (op == "LayerNormalization") {
    if (!rank_of(g, n.inputs[0])) return no("rank");
    for (size_t i = 1; i < n.inputs.size(); ++i) {
      if (n.inputs[i] != k_no_value && !is_fixed(g, n.inputs[i])) return no("scale/bias not constant");
    }
    if (n.inputs.size() < 2) return no("no scale");
    return LayerKind::layer_norm;
  }
  if (op == "InstanceNormalization") {
    // A layer normalization over the spatial dims (norm_layer.cpp).
    auto r = rank_of(g, n.inputs[0]);
    if (!r || *r < 3) return no("rank");
    if (n.inputs.size() != 3) return no("InstanceNormalization arity");
    for (size_t i = 1; i < 3; ++i) {
      if (n.inputs[i] == k_no_value || !is_fixed(g, n.inputs[i])) return no("scale/B not constant");
    }
    return LayerKind::layer_norm;
  }
  if (op == "BatchNormalization") {
    // Inference with the stored statistics: a BatchNorm right after a Conv
    // is folded into it by lowering; this is one after anything else
    // (DenseNet's BN -> ReLU -> Conv after every Concat).
    auto r = rank_of(g, n.inputs[0]);
    if (!r || *r < 2 || *r > 5) return no("rank");
    if (n.inputs.size() != 5) return no("BatchNormalization arity");
    for (size_t i = 1; i < 5; ++i) {
      if (n.inputs[i] == k_no_value || !is_fixed(g, n.inputs[i])) return no("statistics are not constant");
      if (rank_of(g, n.inputs[i]) != 1u) return no("statistics are not vectors");
    }
    if (n.attrs.get_int("training_mode", 0) != 0) return no("training_mode");
    return LayerKind::batch_norm;
  }
  if (op == "Concat") {
    if (!all_float_inputs(g, n)) return no("non-float operand");
    for (ValueId v : n.inputs) {
      if (v == k_no_value || !rank_of(g, v) || *rank_of(g, v) == 0) return no("rank");
    }
    return LayerKind::concat;
  }
  if (op == "PRelu") {
    // oneDNN's prelu primitive (prelu_layer.cpp), in the eltwise layer.
    if (n.inputs.size() != 2 || n.inputs[1] == k_no_value || !is_fixed(g, n.inputs[1]))
      return no("PRelu slope is not constant");
    if (!rank_of(g, n.inputs[0]) || !rank_of(g, n.inputs[1]) ||
        *rank_of(g, n.inputs[1]) > *rank_of(g, n.inputs[0]))
      return no("PRelu slope rank");
    return LayerKind::eltwise;
  }
  std::string reason;
  if (eltwise_for(g, n, &reason)) return LayerKind::eltwise;
  return no(reason);
}

}  // namespace

std::optional<LayerKind> native_kind(const ir::Graph& graph, NodeId node, std::string* why,
                                     const std::vector<bool>* shape_only) {
  try {
    return check_native(graph, graph.node(node), why, shape_only);
  } catch (const Error& e) {  // a malformed attribute: leave it to the reference kernel's checks
    if (why) *why = e.what();
    return std::nullopt;
  }
}

namespace {

// Inputs that decide an op's output shape. An engine knows every shape once
// the input shapes are known, so these must depend on shapes only.
std::vector<size_t> shape_inputs(const ir::Node& n) {
  const std::string& op = n.op_type;
  if (op == "NonZero" || op == "Unique" || op == "NonMaxSuppression" || op == "Compress")
    return {0, 1, 2, 3, 4};
  if (op == "Reshape" || op == "Expand" || op == "Tile" || op == "TopK" || op == "OneHot" ||
      op == "Upsample" || op == "Squeeze" || op == "Unsqueeze" || op == "Split" ||
      op.rfind("Reduce", 0) == 0) {
    return {1};
  }
  if (op == "Slice") return {1, 2, 3, 4};
  if (op == "Range") return {0, 1, 2};
  if (op == "ConstantOfShape") return {0};
  if (op == "Pad" || op == "Resize") return {1, 2, 3};
  return {};
}

}  // namespace

std::optional<std::string> unsupported_reason(const ir::Graph& graph, NodeId node) {
  const ir::Node& n = graph.node(node);
  if (!default_domain(n)) return "domain '" + n.domain + "' is not supported";
  if (auto problem = ir::op_version_problem(n)) return problem;
  if (n.op_type == "NonZero" || n.op_type == "Unique" || n.op_type == "NonMaxSuppression" ||
      n.op_type == "Compress") {
    return n.op_type + ": its output shape depends on input values";
  }
  if (std::vector<size_t> which = shape_inputs(n); !which.empty()) {
    std::vector<bool> shape_only = shape_only_values(graph);
    for (size_t i : which) {
      if (i < n.inputs.size() && n.inputs[i] != k_no_value && !shape_only[static_cast<size_t>(n.inputs[i])]) {
        return n.op_type + ": input " + std::to_string(i) +
               " decides the output shape and depends on input values";
      }
    }
  }
  if (n.op_type == "Dropout" && n.inputs.size() > 2 && n.inputs[2] != k_no_value) {
    // Training mode draws a random mask: only a constant "off", or a
    // constant ratio of 0 (what exporters write for p=0 with training=True),
    // is an identity.
    const Tensor* training = graph.value(n.inputs[2]).known_value();
    const Tensor* ratio = n.inputs[1] != k_no_value ? graph.value(n.inputs[1]).known_value() : nullptr;
    const bool no_drop = ratio && ratio->numel() == 1 && ratio->float_at(0) == 0.0;
    if (!no_drop && (!training || training->numel() != 1 || training->int_at(0) != 0)) {
      return "Dropout: training_mode may be on, and a random mask cannot be reproduced";
    }
  }
  if (native_kind(graph, node)) return std::nullopt;
  const ref::KernelDef* kernel = ref::kernels().find(n.op_type);
  if (!kernel || !ir::find_schema(n.domain, n.op_type)) return "no kernel for op " + n.op_type;
  if (kernel->check) {
    std::vector<DType> dtypes;
    for (ValueId in : n.inputs)
      dtypes.push_back(in == k_no_value ? DType::undefined : graph.value(in).type.dtype);
    if (auto reason = kernel->check(n, dtypes)) return n.op_type + ": " + *reason;
  }
  return std::nullopt;
}

std::vector<bool> shape_only_values(const ir::Graph& graph) {
  std::vector<bool> known(graph.num_values(), false);
  for (size_t v = 0; v < graph.num_values(); ++v) known[v] = is_constant(graph, static_cast<ValueId>(v));
  for (NodeId id : graph.topological_order()) {
    const ir::Node& n = graph.node(id);
    bool all = n.op_type == "Shape" || n.op_type == "Size";
    if (!all) {
      all = true;
      for (ValueId in : n.inputs) {
        if (in != k_no_value && !known[static_cast<size_t>(in)]) all = false;
      }
    }
    if (!all) continue;
    for (ValueId out : n.outputs) {
      if (out != k_no_value) known[static_cast<size_t>(out)] = true;
    }
  }
  return known;
}

namespace {

// The static dims of `v`'s shape, or empty when any is unknown.
std::vector<int64_t> static_dims(const ir::Graph& g, ValueId v) {
  const ir::ValueType& t = g.value(v).type;
  std::vector<int64_t> dims;
  if (!t.shape) return dims;
  for (const ir::Dim& d : *t.shape) {
    if (!d.is_static()) return {};
    dims.push_back(d.value());
  }
  return dims;
}

bool all_equal(const std::vector<int64_t>& v, int64_t x) {
  return std::all_of(v.begin(), v.end(), [x](int64_t e) { return e == x; });
}

// A 2-D Conv with group 1, a 1x1 kernel, stride 1 and no padding: what
// oneDNN 2.6 can extend with a depthwise post-op.
bool is_pointwise_conv(const ir::Graph& g, const ir::Node& n) {
  const std::vector<int64_t> w = static_dims(g, n.inputs[1]);
  if (w.size() != 4 || w[2] != 1 || w[3] != 1 || n.attrs.get_int("group", 1) != 1) return false;
  const std::string pad = n.attrs.get_string("auto_pad", "NOTSET");
  return (pad == "NOTSET" || pad == "VALID") && all_equal(n.attrs.get_ints("strides", {1, 1}), 1) &&
         all_equal(n.attrs.get_ints("dilations", {1, 1}), 1) &&
         all_equal(n.attrs.get_ints("pads", {0, 0, 0, 0}), 0);
}

// A depthwise 3x3 Conv over `channels` channels with a bias, stride 1 or 2
// in both dims and padding 1 all around: oneDNN 2.6's depthwise post-op.
bool is_fusable_depthwise(const ir::Graph& g, const ir::Node& n, int64_t channels) {
  if (n.inputs.size() < 3 || n.inputs[2] == k_no_value) return false;
  const std::vector<int64_t> w = static_dims(g, n.inputs[1]);
  if (w.size() != 4 || w[0] != channels || w[1] != 1 || w[2] != 3 || w[3] != 3) return false;
  if (n.attrs.get_int("group", 1) != channels || n.attrs.get_string("auto_pad", "NOTSET") != "NOTSET")
    return false;
  const std::vector<int64_t> strides = n.attrs.get_ints("strides", {1, 1});
  return strides.size() == 2 && strides[0] == strides[1] && (strides[0] == 1 || strides[0] == 2) &&
         all_equal(n.attrs.get_ints("dilations", {1, 1}), 1) &&
         n.attrs.get_ints("pads", {0, 0, 0, 0}).size() == 4 &&
         all_equal(n.attrs.get_ints("pads", {0, 0, 0, 0}), 1);
}

}  // namespace

bool can_attach_depthwise(const ir::Graph& g, NodeId pointwise, NodeId depthwise) {
  const ir::Node& a = g.node(pointwise);
  const ir::Node& d = g.node(depthwise);
  if (a.op_type != "Conv" || d.op_type != "Conv" || a.inputs.size() < 2 || d.inputs.empty()) return false;
  if (!is_pointwise_conv(g, a)) return false;
  const std::vector<int64_t> w = static_dims(g, a.inputs[1]);
  return !w.empty() && is_fusable_depthwise(g, d, w[0]);
}

namespace {

// Per value: how many node inputs read it, plus one for a graph output.
std::vector<int> reader_counts(const ir::Graph& g) {
  std::vector<int> readers(g.num_values(), 0);
  for (size_t n = 0; n < g.num_nodes(); ++n) {
    for (ValueId in : g.node(static_cast<NodeId>(n)).inputs) {
      if (in != k_no_value) ++readers[static_cast<size_t>(in)];
    }
  }
  for (ValueId out : g.outputs()) ++readers[static_cast<size_t>(out)];
  return readers;
}

// The one node reading `v` (once), or k_no_node.
NodeId sole_reader(const ir::Graph& g, const std::vector<int>& readers, ValueId v) {
  if (v == k_no_value || readers[static_cast<size_t>(v)] != 1) return k_no_node;
  for (size_t n = 0; n < g.num_nodes(); ++n) {
    for (ValueId in : g.node(static_cast<NodeId>(n)).inputs) {
      if (in == v) return static_cast<NodeId>(n);
    }
  }
  return k_no_node;
}

}  // namespace

bool has_swish(const ir::Graph& g, const LayerDesc& layer) {
  if (layer.activation == k_no_node || g.node(layer.activation).op_type != "Sigmoid") return false;
  const ir::Node& sigmoid = g.node(layer.activation);
  for (NodeId m : layer.nodes) {
    const ir::Node& mul = g.node(m);
    if (mul.op_type == "Mul" && mul.inputs.size() == 2 && !sigmoid.inputs.empty() &&
        ((mul.inputs[0] == sigmoid.inputs[0] && mul.inputs[1] == sigmoid.outputs[0]) ||
         (mul.inputs[1] == sigmoid.inputs[0] && mul.inputs[0] == sigmoid.outputs[0]))) {
      return true;
    }
  }
  return false;
}

namespace {

// Attaches each depthwise conv layer to the pointwise conv layer whose
// result only it reads (MobileNet's expand 1x1 -> depthwise 3x3). The
// depthwise layer runs earlier than before, right after its only input.
void attach_depthwise(const ir::Graph& g, std::vector<LayerDesc>& layers) {
  const std::vector<int> readers = reader_counts(g);
  std::map<ValueId, size_t> conv_reading;  // conv layers by their data input
  for (size_t i = 0; i < layers.size(); ++i) {
    if (layers[i].kind == LayerKind::conv) conv_reading[g.node(layers[i].anchor()).inputs[0]] = i;
  }
  std::vector<bool> absorbed(layers.size(), false);
  for (size_t i = 0; i < layers.size(); ++i) {
    LayerDesc& pw = layers[i];
    if (absorbed[i] || pw.kind != LayerKind::conv || pw.residual_add != k_no_node) continue;
    if (readers[static_cast<size_t>(pw.output)] != 1) continue;
    auto it = conv_reading.find(pw.output);
    if (it == conv_reading.end() || it->second <= i || absorbed[it->second]) continue;
    const LayerDesc& dw = layers[it->second];
    if (dw.residual_add != k_no_node || dw.dw_conv != k_no_node) continue;
    if (!can_attach_depthwise(g, pw.anchor(), dw.anchor())) continue;
    // A swish (Sigmoid + Mul) stays with its own conv: the depthwise post-op
    // chain describes plain activations only.
    if (has_swish(g, pw) || has_swish(g, dw)) continue;
    pw.dw_conv = dw.anchor();
    pw.dw_activation = dw.activation;
    pw.nodes.insert(pw.nodes.end(), dw.nodes.begin(), dw.nodes.end());
    pw.output = dw.output;
    absorbed[it->second] = true;
  }
  std::vector<LayerDesc> kept;
  kept.reserve(layers.size());
  for (size_t i = 0; i < layers.size(); ++i) {
    if (!absorbed[i]) kept.push_back(std::move(layers[i]));
  }
  layers = std::move(kept);
}

}  // namespace

std::vector<LayerDesc> partition_layers(const ir::Graph& g, bool fuse_attention) {
  std::map<NodeId, passes::FusionGroup> groups;
  for (passes::FusionGroup& f : passes::find_fusions(g)) groups[f.anchor] = std::move(f);
  std::vector<bool> shape_only = shape_only_values(g);
  const std::vector<int> readers = reader_counts(g);
  std::vector<bool> consumed(g.num_nodes(), false);
  std::vector<LayerDesc> layers;
  for (NodeId n : g.topological_order()) {
    if (consumed[static_cast<size_t>(n)]) continue;
    const ir::Node& node = g.node(n);
    LayerDesc layer;
    layer.nodes = {n};
    layer.output = node.outputs.empty() ? k_no_value : node.outputs[0];
    bool outputs_shape_only = !node.outputs.empty();
    for (ValueId out : node.outputs) {
      if (out != k_no_value && !shape_only[static_cast<size_t>(out)]) outputs_shape_only = false;
    }
    if (outputs_shape_only) {
      layer.kind = LayerKind::shape;
    } else if (auto kind = native_kind(g, n, nullptr, &shape_only)) {
      layer.kind = *kind;
      auto it = groups.find(n);
      if (it != groups.end() && (layer.kind == LayerKind::conv || layer.kind == LayerKind::matmul)) {
        const passes::FusionGroup& f = it->second;
        // Fused nodes run as post-ops; an activation without an oneDNN
        // equivalent ends the group instead.
        layer.bias_add = f.bias_add;
        layer.residual_add = f.residual_add;
        layer.residual_input = f.residual_input;
        layer.output = f.output;
        if (f.activation != k_no_node) {
          // A Gemm's beta is a linear post-op, and oneDNN 2.6 mixes up two
          // of them in one chain (matmul_layer.cpp): a linear activation
          // (HardSigmoid) after it stays a layer of its own.
          const ir::Node& anchor = g.node(n);
          const auto act = eltwise_for(g, g.node(f.activation));
          const bool gemm_beta = anchor.op_type == "Gemm" && anchor.attrs.get_float("beta", 1.0f) != 1.0f &&
                                 anchor.inputs.size() > 2 && anchor.inputs[2] != k_no_value;
          if (act && !(gemm_beta && act->alg == dnnl::algorithm::eltwise_linear)) {
            layer.activation = f.activation;
          } else {
            layer.output = g.node(f.activation).inputs[0];
          }
        }
        for (NodeId m : f.nodes) {
          if (m == n || ((m == f.activation || m == f.swish_mul) && layer.activation == k_no_node)) continue;
          layer.nodes.push_back(m);
        }
      }
      if (layer.kind == LayerKind::batch_norm) {
        // oneDNN fuses a Relu into the normalization (fuse_norm_relu).
        const NodeId relu = sole_reader(g, readers, layer.output);
        if (relu != k_no_node && g.node(relu).op_type == "Relu" && default_domain(g.node(relu)) &&
            g.node(relu).inputs.size() == 1 && single_output(g.node(relu))) {
          layer.activation = relu;
          layer.nodes.push_back(relu);
          layer.output = g.node(relu).outputs[0];
        }
      }
    } else {
      layer.kind = LayerKind::aux;
    }
    for (NodeId m : layer.nodes) consumed[static_cast<size_t>(m)] = true;
    layers.push_back(std::move(layer));
  }
  attach_depthwise(g, layers);
  if (fuse_attention) fuse_attention_layers(g, layers);
  return layers;
}

const char* layer_kind_name(LayerKind kind) {
  switch (kind) {
    case LayerKind::conv:
      return "conv";
    case LayerKind::matmul:
      return "matmul";
    case LayerKind::pool:
      return "pool";
    case LayerKind::eltwise:
      return "eltwise";
    case LayerKind::binary:
      return "binary";
    case LayerKind::softmax:
      return "softmax";
    case LayerKind::layer_norm:
      return "layer_norm";
    case LayerKind::concat:
      return "concat";
    case LayerKind::view:
      return "view";
    case LayerKind::aux:
      return "aux";
    case LayerKind::shape:
      return "shape";
    case LayerKind::batch_norm:
      return "batch_norm";
    case LayerKind::resample:
      return "resample";
    case LayerKind::attention:
      return "attention";
  }
  return "?";
}

}  // namespace kiln::cpu
