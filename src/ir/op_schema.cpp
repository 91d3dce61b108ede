#include "ir/op_schema.hpp"

#include <algorithm>
#include <stdexcept>

#include "ir/op_versions.hpp"

namespace kiln::ir {

InferContext::InferContext(const Node& node, std::span<const ValueType> input_types,
                           std::span<const Tensor* const> input_values)
    : m_node(node),
      m_input_types(input_types),
      m_input_values(input_values),
      m_outputs(node.outputs.size()),
      m_output_values(node.outputs.size()) {}

bool InferContext::has_input(size_t i) const {
  return i < m_input_types.size() && m_input_types[i].dtype != DType::undefined;
}

const ValueType& InferContext::input(size_t i) const {
  if (!has_input(i)) fail("missing input " + std::to_string(i));
  return m_input_types[i];
}

const Tensor* InferContext::input_value(size_t i) const {
  return i < m_input_values.size() ? m_input_values[i] : nullptr;
}

void InferContext::set_output(size_t i, ValueType type) {
  if (i >= m_outputs.size()) return;  // optional output that the model does not use
  m_outputs[i] = std::move(type);
}

void InferContext::set_output_value(size_t i, Tensor value) {
  if (i >= m_outputs.size()) return;
  m_outputs[i] = ValueType::of(value);
  m_output_values[i] = std::move(value);
}

void InferContext::fail(const std::string& message) const { throw Error(ErrorCode::invalid_model, message); }

void InferContext::unsupported(const std::string& message) const {
  throw Error(ErrorCode::unsupported, message);
}

int64_t InferContext::normalize_axis(int64_t axis, int64_t rank) const {
  int64_t normalized = axis < 0 ? axis + rank : axis;
  if (normalized < 0 || normalized >= rank) {
    fail("axis " + std::to_string(axis) + " is out of range for rank " + std::to_string(rank));
  }
  return normalized;
}

void OpRegistry::add(std::string op_type, InferFn infer) {
  m_schemas.push_back({std::move(op_type), std::move(infer)});
}

const OpSchema* OpRegistry::find(std::string_view op_type) const {
  for (const OpSchema& s : m_schemas) {
    if (s.op_type == op_type) return &s;
  }
  return nullptr;
}

std::vector<std::string> OpRegistry::op_types() const {
  std::vector<std::string> names;
  for (const OpSchema& s : m_schemas) names.push_back(s.op_type);
  std::sort(names.begin(), names.end());
  return names;
}

namespace {
const OpRegistry& registry() {
  static const OpRegistry instance = [] {
    OpRegistry r;
    register_elementwise_ops(r);
    register_nn_ops(r);
    register_tensor_ops(r);
    register_reduction_ops(r);
    return r;
  }();
  return instance;
}
}  // namespace

const OpSchema* find_schema(std::string_view domain, std::string_view op_type) {
  if (!domain.empty() && domain != "ai.onnx") return nullptr;
  return registry().find(op_type);
}

std::vector<std::string> known_op_types() { return registry().op_types(); }

InferResult infer_node(const Node& node, std::span<const ValueType> input_types,
                       std::span<const Tensor* const> input_values) {
  const OpSchema* schema = find_schema(node.domain, node.op_type);
  if (!schema) {
    throw Error(ErrorCode::unsupported, node.describe() + ": op is not supported by kiln");
  }
  if (auto problem = op_version_problem(node))
    throw Error(ErrorCode::unsupported, node.describe() + ": " + *problem);
  InferContext ctx(node, input_types, input_values);
  try {
    schema->infer(ctx);
  } catch (const Error& e) {
    throw e.with_context(node.describe() + ": ");
  } catch (const std::length_error& e) {
    // A hostile shape (a rank or size past what a vector can hold) is a bad model, not a crash.
    throw Error(ErrorCode::invalid_model, node.describe() + ": shape too large (" + e.what() + ")");
  }
  return {ctx.outputs(), std::move(ctx.output_values())};
}

void infer_shapes(Graph& graph) {
  for (NodeId n : graph.topological_order()) {
    const Node& node = graph.node(n);
    std::vector<ValueType> types;
    std::vector<const Tensor*> values;
    for (ValueId in : node.inputs) {
      if (in == k_no_value) {
        types.emplace_back();
        values.push_back(nullptr);
        continue;
      }
      const Value& v = graph.value(in);
      types.push_back(v.type);
      values.push_back(v.known_value());
    }
    // A node that cannot be inferred keeps its declared output types, plus
    // whatever dtypes follow from its op and the input dtypes known, so
    // that the nodes after it are still typed and analysed.
    auto keep_declared = [&] {
      std::vector<DType> in_dtypes;
      for (const ValueType& t : types) in_dtypes.push_back(t.dtype);
      std::vector<DType> dtypes = fallback_output_dtypes(node, in_dtypes);
      for (size_t i = 0; i < node.outputs.size(); ++i) {
        if (node.outputs[i] == k_no_value) continue;
        Value& out = graph.value(node.outputs[i]);
        if (out.type.dtype == DType::undefined) out.type.dtype = dtypes[i];
      }
    };
    // An input whose type is unknown (its producer could not be inferred)
    // leaves this node's shapes unknown too.
    bool inputs_known = true;
    for (size_t i = 0; i < node.inputs.size(); ++i) {
      if (node.inputs[i] != k_no_value && types[i].dtype == DType::undefined) inputs_known = false;
    }
    if (!inputs_known) {
      keep_declared();
      continue;
    }
    InferResult result;
    try {
      result = infer_node(node, types, values);
    } catch (const Error& e) {
      // An op kiln cannot run keeps its declared output types, so the rest of
      // the graph is still analysed and the op can be reported (or later
      // fall back); a malformed model is an error.
      if (e.code() != ErrorCode::unsupported) throw e.with_context(graph.source + ": ");
      keep_declared();
      continue;
    }
    for (size_t i = 0; i < node.outputs.size(); ++i) {
      if (node.outputs[i] == k_no_value) continue;
      Value& out = graph.value(node.outputs[i]);
      ValueType inferred = result.types[i];
      // A declared shape (the model's value_info or graph output) fills in
      // what inference cannot tell, dim by dim.
      if (!inferred.has_rank()) {
        inferred.shape = out.type.shape;
      } else if (out.type.has_rank() && out.type.shape->size() == inferred.shape->size()) {
        for (size_t d = 0; d < inferred.shape->size(); ++d) {
          if ((*inferred.shape)[d].is_unknown()) (*inferred.shape)[d] = (*out.type.shape)[d];
        }
      }
      if (inferred.dtype == DType::undefined) inferred.dtype = out.type.dtype;
      out.type = std::move(inferred);
      out.inferred_value = std::move(result.values[i]);
    }
  }
}

}  // namespace kiln::ir
