#include "reference/executor.hpp"

#include <chrono>

#include "ir/op_schema.hpp"
#include "ir/op_versions.hpp"
#include "reference/kernel.hpp"

namespace kiln::ref {

using ir::k_no_value;
using ir::NodeId;
using ir::ValueId;

std::vector<UnsupportedNode> find_unsupported(const ir::Graph& graph) {
  std::vector<UnsupportedNode> result;
  for (size_t n = 0; n < graph.num_nodes(); ++n) {
    const ir::Node& node = graph.node(static_cast<NodeId>(n));
    auto report = [&](std::string reason) {
      result.push_back({static_cast<NodeId>(n), node.op_type, std::move(reason)});
    };
    if (!node.domain.empty() && node.domain != "ai.onnx") {
      report("domain '" + node.domain + "' is not supported");
      continue;
    }
    const KernelDef* kernel = kernels().find(node.op_type);
    if (!kernel || !ir::find_schema(node.domain, node.op_type)) {
      report("no reference kernel");
      continue;
    }
    if (auto problem = ir::op_version_problem(node)) {
      report(*problem);
      continue;
    }
    if (kernel->check) {
      std::vector<DType> dtypes;
      for (ValueId in : node.inputs) {
        dtypes.push_back(in == k_no_value ? DType::undefined : graph.value(in).type.dtype);
      }
      if (auto reason = kernel->check(node, dtypes)) report(*reason);
    }
  }
  return result;
}

void check_input(const ir::Graph& graph, ValueId id, const Tensor& tensor) {
  const ir::Value& v = graph.value(id);
  auto fail = [&](const std::string& why) {
    throw Error(ErrorCode::invalid_argument, "input '" + v.name + "': " + why);
  };
  if (v.type.dtype != DType::undefined && tensor.dtype() != v.type.dtype) {
    fail("expected " + std::string(dtype_name(v.type.dtype)) + ", got " +
         std::string(dtype_name(tensor.dtype())));
  }
  if (!v.type.shape) return;
  const ir::Dims& dims = *v.type.shape;
  if (dims.size() != tensor.shape().size()) {
    fail("expected shape " + v.type.to_string() + ", got " + tensor.shape_string());
  }
  for (size_t i = 0; i < dims.size(); ++i) {
    if (dims[i].is_static() && dims[i].value() != tensor.shape()[i]) {
      fail("dim " + std::to_string(i) + " must be " + std::to_string(dims[i].value()) + ", got " +
           std::to_string(tensor.shape()[i]) + " (expected " + v.type.to_string() + ")");
    }
  }
}

Executor::Executor(const ir::Graph& graph) : m_graph(graph), m_order(graph.topological_order()) {
  auto unsupported = find_unsupported(graph);
  if (!unsupported.empty()) {
    std::string message = graph.source + ": the reference backend cannot run ";
    for (size_t i = 0; i < unsupported.size() && i < 5; ++i) {
      const auto& u = unsupported[i];
      message += (i ? "; " : "") + graph.node(u.node).describe() + ": " + u.reason;
    }
    if (unsupported.size() > 5) message += "; and " + std::to_string(unsupported.size() - 5) + " more";
    throw Error(ErrorCode::unsupported, message);
  }
  m_use_counts.assign(graph.num_values(), 0);
  for (NodeId n : m_order) {
    for (ValueId in : graph.node(n).inputs) {
      if (in != k_no_value) ++m_use_counts[static_cast<size_t>(in)];
    }
  }
  for (ValueId out : graph.outputs()) ++m_use_counts[static_cast<size_t>(out)];
}

std::vector<Tensor> Executor::run(std::span<const Tensor> inputs,
                                  std::vector<std::pair<ir::NodeId, double>>* node_ms) const {
  if (node_ms) node_ms->clear();
  const ir::Graph& g = m_graph;
  if (inputs.size() != g.inputs().size()) {
    throw Error(ErrorCode::invalid_argument, g.source + ": model takes " + std::to_string(g.inputs().size()) +
                                                 " inputs, got " + std::to_string(inputs.size()));
  }
  std::vector<std::optional<Tensor>> live(g.num_values());
  std::vector<int> remaining = m_use_counts;
  for (size_t i = 0; i < inputs.size(); ++i) {
    ValueId id = g.inputs()[i];
    check_input(g, id, inputs[i]);
    live[static_cast<size_t>(id)] = inputs[i];
  }
  auto fetch = [&](ValueId id) -> const Tensor* {
    if (id == k_no_value) return nullptr;
    const auto& slot = live[static_cast<size_t>(id)];
    if (slot) return &*slot;
    const ir::Value& v = g.value(id);
    if (v.initializer) return &*v.initializer;
    throw Error(ErrorCode::invalid_model, g.source + ": value '" + v.name + "' is used but never produced");
  };

  for (NodeId n : m_order) {
    const auto node_start = std::chrono::steady_clock::now();
    const ir::Node& node = g.node(n);
    std::vector<const Tensor*> in_tensors;
    std::vector<ir::ValueType> in_types;
    for (ValueId id : node.inputs) {
      const Tensor* t = fetch(id);
      in_tensors.push_back(t);
      in_types.push_back(t ? ir::ValueType::of(*t) : ir::ValueType{});
    }
    ir::InferResult inferred;
    std::vector<Tensor> outputs(node.outputs.size());
    try {
      inferred = ir::infer_node(node, in_types, in_tensors);
      KernelContext ctx(node, in_tensors, inferred, outputs);
      kernels().find(node.op_type)->run(ctx);
      for (size_t i = 0; i < outputs.size(); ++i) {
        if (node.outputs[i] == k_no_value) continue;
        Tensor& out = outputs[i];
        if (!out.defined()) ctx.output(i);  // a kernel may leave an output zero-filled
        const ir::ValueType& want = inferred.types[i];
        if (out.dtype() != want.dtype || !want.is_static() || out.shape() != want.static_shape()) {
          throw Error(ErrorCode::internal, "kernel produced " + std::string(dtype_name(out.dtype())) + "[" +
                                               out.shape_string() + "] for output " + std::to_string(i) +
                                               ", inference said " + want.to_string());
        }
      }
    } catch (const Error& e) {
      std::string where = g.source + ": ";
      throw e.with_context(std::string(e.what()).find(node.describe()) == std::string::npos
                               ? where + node.describe() + ": "
                               : where);
    }
    for (size_t i = 0; i < outputs.size(); ++i) {
      ValueId id = node.outputs[i];
      if (id != k_no_value) live[static_cast<size_t>(id)] = std::move(outputs[i]);
    }
    // Free each intermediate after its last reader.
    for (ValueId id : node.inputs) {
      if (id == k_no_value) continue;
      if (--remaining[static_cast<size_t>(id)] == 0) live[static_cast<size_t>(id)].reset();
    }
    if (node_ms) {
      node_ms->emplace_back(
          n,
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - node_start).count());
    }
  }

  std::vector<Tensor> results;
  for (ValueId id : g.outputs()) results.push_back(*fetch(id));
  return results;
}

}  // namespace kiln::ref
