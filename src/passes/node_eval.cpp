#include "passes/node_eval.hpp"

#include "ir/op_schema.hpp"
#include "reference/kernel.hpp"

namespace kiln::passes {

std::optional<std::vector<Tensor>> evaluate_node(const ir::Node& node, std::span<const Tensor* const> inputs,
                                                 size_t max_bytes) {
  if (!node.domain.empty() && node.domain != "ai.onnx") return std::nullopt;
  const ref::KernelDef* kernel = ref::kernels().find(node.op_type);
  if (!kernel || !ir::find_schema(node.domain, node.op_type)) return std::nullopt;
  std::vector<ir::ValueType> types;
  std::vector<DType> dtypes;
  for (const Tensor* t : inputs) {
    types.push_back(t ? ir::ValueType::of(*t) : ir::ValueType{});
    dtypes.push_back(t ? t->dtype() : DType::undefined);
  }
  if (kernel->check && kernel->check(node, dtypes)) return std::nullopt;
  try {
    ir::InferResult inferred = ir::infer_node(node, types, inputs);
    size_t bytes = 0;
    for (const ir::ValueType& t : inferred.types) {
      if (!t.is_static()) return std::nullopt;
      bytes += static_cast<size_t>(shape_numel(t.static_shape())) * dtype_size(t.dtype);
    }
    if (bytes > max_bytes) return std::nullopt;
    std::vector<Tensor> outputs(node.outputs.size());
    ref::KernelContext ctx(node, inputs, inferred, outputs);
    kernel->run(ctx);
    for (size_t i = 0; i < outputs.size(); ++i) {
      if (!outputs[i].defined() && node.outputs[i] != ir::k_no_value) ctx.output(i);
    }
    return outputs;
  } catch (const Error& e) {
    std::string what = e.what();
    throw what.find(node.describe()) == std::string::npos ? e.with_context(node.describe() + ": ") : e;
  }
}

}  // namespace kiln::passes
