#include "backends/cuda/host_shapes.hpp"

#include <algorithm>

#include "ir/op_schema.hpp"
#include "ir/op_versions.hpp"
#include "ir/ops/tensor_params.hpp"
#include "reference/kernel.hpp"

namespace kiln::cuda {

using ir::k_no_node;
using ir::k_no_value;
using ir::NodeId;
using ir::ValueId;

namespace {

// A value every instance knows before any GPU work: an initializer that is
// not a refittable weight (a weight's value changes at refit, which an
// instance's host values would miss), or a value static inference computed.
bool structural_constant(const ir::Graph& g, ValueId v) {
  const ir::Value& value = g.value(v);
  if (value.inferred_value) return true;
  return value.producer == k_no_node && value.initializer.has_value() && !value.recipe;
}

bool shape_like_dtype(DType d) { return d == DType::int64 || d == DType::int32 || d == DType::boolean; }

// Whether `node`'s outputs may be shape values: integer or bool tensors of
// rank 0 or 1 (shape vectors, indices, axes, sizes). Larger tensors made
// from shapes (a position-id range, a mask) are data, not shape arguments.
bool shape_like_outputs(const ir::Graph& g, const ir::Node& node) {
  if (node.outputs.empty() || node.outputs[0] == k_no_value) return false;
  for (ValueId out : node.outputs) {
    if (out == k_no_value) continue;
    const ir::ValueType& t = g.value(out).type;
    if (!shape_like_dtype(t.dtype) || !t.shape || t.shape->size() > 1) return false;
  }
  return true;
}

// Whether the host can evaluate `node`: a default-domain op at a version
// kiln computes, with a deterministic reference kernel that takes these
// input dtypes and attributes.
bool host_computable(const ir::Graph& g, const ir::Node& node) {
  if (!node.domain.empty() && node.domain != "ai.onnx") return false;
  if (node.op_type.rfind("Random", 0) == 0 || node.op_type == "Multinomial") return false;
  if (ir::op_version_problem(node)) return false;
  const ref::KernelDef* kernel = ref::kernels().find(node.op_type);
  if (!kernel || !ir::find_schema(node.domain, node.op_type)) return false;
  if (!kernel->check) return true;
  std::vector<DType> dtypes;
  for (ValueId in : node.inputs)
    dtypes.push_back(in == k_no_value ? DType::undefined : g.value(in).type.dtype);
  return !kernel->check(node, dtypes);
}

}  // namespace

std::vector<size_t> shape_arguments(const ir::Node& node) {
  const std::string& op = node.op_type;
  if (op == "Reshape" || op == "Squeeze" || op == "Unsqueeze" || op == "Split" || op == "Expand") return {1};
  if (op == "Slice") return {1, 2, 3, 4};
  return {};
}

bool involves_shape_values(const ir::Graph& graph, const ir::Node& node) {
  if (node.op_type == "Shape" || node.op_type == "Size" || node.op_type == "Constant") return true;
  for (ValueId in : node.inputs) {
    if (in != k_no_value && graph.value(in).type.dtype != DType::float32) return true;
  }
  return false;
}

HostShapes analyse_host_shapes(const ir::Graph& g, const GpuReason& gpu_reason) {
  const size_t n_nodes = g.num_nodes(), n_values = g.num_values();
  const std::vector<NodeId> order = g.topological_order();
  HostShapes out;
  out.taken.assign(n_nodes, false);
  out.refused.assign(n_nodes, std::nullopt);
  // Shape nodes, forward: Shape/Size, or nodes of constants and shape values.
  std::vector<bool> candidate(n_nodes, false), derived(n_values, false);
  for (size_t v = 0; v < n_values; ++v) derived[v] = structural_constant(g, static_cast<ValueId>(v));
  for (NodeId id : order) {
    const ir::Node& n = g.node(id);
    if (!host_computable(g, n) || !shape_like_outputs(g, n)) continue;
    bool ok = n.op_type == "Shape" || n.op_type == "Size";
    if (!ok) {
      ok = true;
      for (ValueId in : n.inputs) {
        if (in != k_no_value && !derived[static_cast<size_t>(in)]) ok = false;
      }
    }
    if (!ok) continue;
    candidate[static_cast<size_t>(id)] = true;
    for (ValueId o : n.outputs) {
      if (o != k_no_value) derived[static_cast<size_t>(o)] = true;
    }
  }
  // Readers of each value: (node, input index).
  std::vector<std::vector<std::pair<NodeId, size_t>>> readers(n_values);
  for (size_t n = 0; n < n_nodes; ++n) {
    const ir::Node& node = g.node(static_cast<NodeId>(n));
    for (size_t i = 0; i < node.inputs.size(); ++i) {
      if (node.inputs[i] != k_no_value)
        readers[static_cast<size_t>(node.inputs[i])].emplace_back(static_cast<NodeId>(n), i);
    }
  }
  std::vector<bool> is_output(n_values, false);
  for (ValueId v : g.outputs()) is_output[static_cast<size_t>(v)] = true;

  // Taken, backward to a fixed point: refusing a shape node can refuse the
  // GPU node whose shape argument it computes, and so the shape nodes that
  // feed only that node's other arguments.
  out.taken = candidate;
  for (bool changed = true; changed;) {
    changed = false;
    out.host_value.assign(n_values, false);
    for (size_t v = 0; v < n_values; ++v) out.host_value[v] = structural_constant(g, static_cast<ValueId>(v));
    for (size_t n = 0; n < n_nodes; ++n) {
      if (!out.taken[n]) continue;
      for (ValueId o : g.node(static_cast<NodeId>(n)).outputs) {
        if (o != k_no_value) out.host_value[static_cast<size_t>(o)] = true;
      }
    }
    for (auto it = order.rbegin(); it != order.rend(); ++it) {
      const auto n = static_cast<size_t>(*it);
      if (!out.taken[n]) continue;
      std::optional<std::string> why;
      // Its inputs are known on the host: constants, or values of taken
      // nodes (a refused producer leaves it to the fallback too). Shape and
      // Size read only their input's shape.
      const ir::Node& node = g.node(*it);
      if (node.op_type != "Shape" && node.op_type != "Size") {
        for (ValueId in : node.inputs) {
          if (in != k_no_value && !out.host_value[static_cast<size_t>(in)]) {
            why = "it reads '" + g.value(in).name + "', which the cuda engine does not compute on the host";
            break;
          }
        }
      }
      for (ValueId o : node.outputs) {
        if (o == k_no_value || why) continue;
        const std::string value = "'" + g.value(o).name + "'";
        if (is_output[static_cast<size_t>(o)]) {
          why =
              "shape value " + value + " is an output of the engine (its outputs are float32 device tensors)";
          continue;
        }
        for (const auto& [reader, slot] : readers[static_cast<size_t>(o)]) {
          const ir::Node& r = g.node(reader);
          const std::string where = "'" + r.name + "' (" + r.op_type + ")";
          if (candidate[static_cast<size_t>(reader)]) {
            if (!out.taken[static_cast<size_t>(reader)])
              why = "shape value " + value + " feeds " + where + ", which the cuda engine does not run";
          } else {
            const std::vector<size_t> args = shape_arguments(r);
            if (std::find(args.begin(), args.end(), slot) == args.end()) {
              why = "shape value " + value + " is read as data by " + where +
                    " (the cuda kernels run float32 tensors; shape values only set shape arguments)";
            } else if (auto gpu = gpu_reason(reader, out.host_value)) {
              why = "shape value " + value + " sets a shape argument of " + where +
                    ", which the cuda engine does not run: " + *gpu;
            }
          }
          if (why) break;
        }
      }
      if (why) {
        out.taken[n] = false;
        out.refused[n] = std::move(why);
        changed = true;
      }
    }
  }
  return out;
}

InstanceValues instance_values(const ir::Graph& g, std::span<const InputSpec> specs,
                               const std::vector<std::vector<int64_t>>& input_shapes,
                               std::span<const Layer> layers) {
  const size_t nv = g.num_values();
  std::vector<ir::ValueType> types(nv);
  InstanceValues out;
  out.host.resize(nv);
  for (size_t v = 0; v < nv; ++v) {
    const ir::Value& value = g.value(static_cast<ValueId>(v));
    if (value.producer != k_no_node) continue;
    types[v] = value.type;
    if (structural_constant(g, static_cast<ValueId>(v))) {
      out.host[v] = *value.known_value();
      types[v] = ir::ValueType::of(*out.host[v]);
    }
  }
  for (size_t i = 0; i < g.inputs().size() && i < specs.size() && i < input_shapes.size(); ++i)
    types[static_cast<size_t>(g.inputs()[i])] = ir::ValueType::of_static(specs[i].dtype, input_shapes[i]);
  // Nodes in the graph's topological order (a fused layer's nodes may read
  // values of layers placed after its anchor); shape layers' nodes are
  // evaluated, every other node's outputs only typed.
  std::vector<bool> evaluated(g.num_nodes(), false);
  for (const Layer& layer : layers) {
    if (layer.kind != LayerKind::shape) continue;
    for (NodeId id : layer.nodes) evaluated[static_cast<size_t>(id)] = true;
  }
  for (NodeId id : g.topological_order()) {
    const ir::Node& node = g.node(id);
    std::vector<ir::ValueType> in_types;
    std::vector<const Tensor*> in_values;
    for (ValueId in : node.inputs) {
      in_types.push_back(in == k_no_value ? ir::ValueType{} : types[static_cast<size_t>(in)]);
      in_values.push_back(in == k_no_value || !out.host[static_cast<size_t>(in)]
                              ? nullptr
                              : &*out.host[static_cast<size_t>(in)]);
    }
    try {
      ir::InferResult inferred = ir::infer_node(node, in_types, in_values);
      for (size_t o = 0; o < node.outputs.size(); ++o) {
        const ValueId v = node.outputs[o];
        if (v == k_no_value) continue;
        types[static_cast<size_t>(v)] = inferred.types[o];
        auto& host = out.host[static_cast<size_t>(v)];
        if (evaluated[static_cast<size_t>(id)]) {
          host = ref::evaluate_output(node, in_values, inferred, o);
        } else if (g.value(v).inferred_value) {
          host = *g.value(v).inferred_value;  // known before any instance
        }
      }
    } catch (const Error& e) {
      throw e.with_context("cuda engine: " + node.describe() + ": ");
    }
  }
  out.shapes.resize(nv);
  for (size_t v = 0; v < nv; ++v) {
    if (types[v].is_static()) out.shapes[v] = types[v].static_shape();
  }
  return out;
}

SliceParts slice_parts(const ir::Graph& g, const Layer& layer,
                       const std::vector<std::optional<std::vector<int64_t>>>& shapes,
                       const std::vector<std::optional<Tensor>>& host) {
  const ir::Node& n = g.node(layer.anchor());
  auto shape = [&](ValueId v) -> const std::vector<int64_t>& {
    const auto& s = shapes[static_cast<size_t>(v)];
    if (!s)
      throw Error(ErrorCode::internal, "cuda engine: " + n.describe() + ": a shape unknown at these shapes");
    return *s;
  };
  const auto& x = shape(n.inputs[0]);
  SliceParts p{std::vector<int64_t>(x.size(), 0), std::vector<int64_t>(x.size(), 1)};
  if (n.op_type == "Split") {
    // This layer's output starts where the outputs before it end.
    int64_t axis = n.attrs.get_int("axis", 0);
    if (axis < 0) axis += static_cast<int64_t>(x.size());
    for (ValueId out : n.outputs) {
      if (out == layer.output) break;
      p.starts[static_cast<size_t>(axis)] += shape(out)[static_cast<size_t>(axis)];
    }
    return p;
  }
  if (n.op_type == "Gather") {
    // One constant index (gpu_reason): the window of one element along the
    // axis, which a scalar index drops from the output.
    int64_t axis = n.attrs.get_int("axis", 0);
    if (axis < 0) axis += static_cast<int64_t>(x.size());
    const Tensor& index = *g.value(n.inputs[1]).known_value();
    const int64_t dim = x[static_cast<size_t>(axis)];
    const int64_t i = index.int_at(0);
    p.starts[static_cast<size_t>(axis)] = i < 0 ? i + dim : i;
    if (index.shape().empty()) p.dropped_axis = axis;
    return p;
  }
  std::vector<const Tensor*> values;
  for (ValueId in : n.inputs) {
    const Tensor* known = in == k_no_value ? nullptr : g.value(in).known_value();
    if (in != k_no_value && !known && host[static_cast<size_t>(in)]) known = &*host[static_cast<size_t>(in)];
    values.push_back(known);
  }
  const auto args = ir::slice_args(n, values, static_cast<int64_t>(x.size()));
  if (!args) throw Error(ErrorCode::internal, "cuda engine: " + n.describe() + ": slice arguments unknown");
  for (size_t i = 0; i < args->axes.size(); ++i) {
    const auto d = static_cast<size_t>(args->axes[i]);
    if (args->steps[i] < 1)
      throw Error(ErrorCode::unsupported,
                  "cuda engine: " + n.describe() + ": a step below 1 at these input shapes");
    const ir::SliceRange r = ir::clamp_slice(args->starts[i], args->ends[i], args->steps[i], x[d]);
    p.starts[d] = r.start;
    p.steps[d] = r.step;
  }
  return p;
}

std::vector<int64_t> expand_strides(std::span<const int64_t> in, std::span<const int64_t> out) {
  std::vector<int64_t> strides(out.size(), 0);
  int64_t stride = 1;
  // Right-aligned, as ONNX broadcasting: a missing or size-1 input dim
  // repeats (stride 0).
  for (size_t k = 0; k < in.size() && k < out.size(); ++k) {
    const int64_t dim = in[in.size() - 1 - k];
    if (dim != 1) strides[out.size() - 1 - k] = stride;
    stride *= dim;
  }
  return strides;
}

}  // namespace kiln::cuda
