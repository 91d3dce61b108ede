// Op schemas: per op type, the shape and dtype inference that both static
// graph analysis and the runtime use.
//
// One InferFn serves two callers. Static inference (infer_shapes) passes
// shapes that may hold symbols or unknown dims, and input values only where
// they are constants. The reference backend passes concrete shapes and every
// input value, so the same function yields the concrete output shapes that
// the kernel then fills. Keeping one function for both means the static and
// run-time answers cannot drift apart.
#pragma once

#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ir/graph.hpp"

namespace kiln::ir {

class InferContext {
 public:
  InferContext(const Node& node, std::span<const ValueType> input_types,
               std::span<const Tensor* const> input_values);

  const Node& node() const { return m_node; }
  const Attributes& attrs() const { return m_node.attrs; }
  int64_t opset() const { return m_node.opset; }

  size_t num_inputs() const { return m_input_types.size(); }
  // False for an input that is omitted (empty name) or beyond the list.
  bool has_input(size_t i) const;
  // REQUIRES: has_input(i); otherwise fails with "missing input i".
  const ValueType& input(size_t i) const;
  DType input_dtype(size_t i) const { return input(i).dtype; }
  // The input's value when known now (a constant, or at run time); else null.
  const Tensor* input_value(size_t i) const;

  void set_output(size_t i, ValueType type);
  // Sets a known output value (Constant, Shape of a static input, ...).
  void set_output_value(size_t i, Tensor value);
  const std::vector<ValueType>& outputs() const { return m_outputs; }
  std::vector<std::optional<Tensor>>& output_values() { return m_output_values; }

  size_t num_outputs() const { return m_node.outputs.size(); }

  // Throws kiln::Error(invalid_model) with `message`; the caller adds the
  // node and op.
  [[noreturn]] void fail(const std::string& message) const;
  // Throws kiln::Error(unsupported).
  [[noreturn]] void unsupported(const std::string& message) const;

  // Normalizes a possibly negative axis against `rank`, failing if out of range.
  int64_t normalize_axis(int64_t axis, int64_t rank) const;

 private:
  const Node& m_node;
  std::span<const ValueType> m_input_types;
  std::span<const Tensor* const> m_input_values;
  std::vector<ValueType> m_outputs;
  std::vector<std::optional<Tensor>> m_output_values;
};

using InferFn = std::function<void(InferContext&)>;

struct OpSchema {
  std::string op_type;
  InferFn infer;
};

// Looks up an op of the default ONNX domain ("" or "ai.onnx"); null if kiln
// does not know it.
const OpSchema* find_schema(std::string_view domain, std::string_view op_type);
std::vector<std::string> known_op_types();

// Runs `schema.infer` for `node`, adding the node and op to any error.
// Returns the inferred output types (and any known output values).
struct InferResult {
  std::vector<ValueType> types;
  std::vector<std::optional<Tensor>> values;
};
InferResult infer_node(const Node& node, std::span<const ValueType> input_types,
                       std::span<const Tensor* const> input_values);

// Static inference over the whole graph in topological order: fills every
// Value's type from the graph inputs and initializers. Values whose shape
// depends on data that is unknown before run time get unknown dims.
void infer_shapes(Graph& graph);

// The output dtypes that follow from `node`'s op, attributes and the input
// dtypes known (undefined for an unknown input), one per output; undefined
// where they do not. For a node static inference cannot run (an input of
// unknown type, or an unsupported use of the op), so that the nodes after it
// keep their types (src/ir/ops/fallback_dtypes.cpp).
std::vector<DType> fallback_output_dtypes(const Node& node, std::span<const DType> input_dtypes);

// Registration, one function per op family (src/ir/ops/*.cpp).
class OpRegistry {
 public:
  void add(std::string op_type, InferFn infer);
  const OpSchema* find(std::string_view op_type) const;
  std::vector<std::string> op_types() const;

 private:
  std::vector<OpSchema> m_schemas;
};

void register_elementwise_ops(OpRegistry& registry);
void register_nn_ops(OpRegistry& registry);
void register_tensor_ops(OpRegistry& registry);
void register_reduction_ops(OpRegistry& registry);

}  // namespace kiln::ir
