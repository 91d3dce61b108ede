#include "reference/kernel.hpp"

#include <algorithm>

namespace kiln::ref {

KernelContext::KernelContext(const ir::Node& node, std::span<const Tensor* const> inputs,
                             const ir::InferResult& inferred, std::span<Tensor> outputs)
    : m_node(node), m_inputs(inputs), m_inferred(inferred), m_outputs(outputs) {}

const Tensor& KernelContext::input(size_t i) const {
  if (!has_input(i)) throw Error(ErrorCode::invalid_model, "missing input " + std::to_string(i));
  return *m_inputs[i];
}

Tensor& KernelContext::output(size_t i) {
  Tensor& out = m_outputs[i];
  if (!out.defined()) {
    const ir::ValueType& type = m_inferred.types[i];
    if (!type.is_static()) {
      throw Error(ErrorCode::internal,
                  "output " + std::to_string(i) + " has no concrete shape: " + type.to_string());
    }
    out = Tensor::zeros(type.dtype, type.static_shape());
  }
  return out;
}

void KernelContext::set_output(size_t i, Tensor tensor) { m_outputs[i] = std::move(tensor); }

void KernelRegistry::add(std::string op_type, KernelFn run, SupportFn check) {
  m_kernels.push_back({std::move(op_type), std::move(run), std::move(check)});
}

const KernelDef* KernelRegistry::find(std::string_view op_type) const {
  for (const KernelDef& k : m_kernels) {
    if (k.op_type == op_type) return &k;
  }
  return nullptr;
}

const KernelRegistry& kernels() {
  static const KernelRegistry instance = [] {
    KernelRegistry r;
    register_elementwise_kernels(r);
    register_nn_kernels(r);
    register_tensor_kernels(r);
    register_reduction_kernels(r);
    return r;
  }();
  return instance;
}

std::optional<std::string> require_dtypes(std::span<const DType> input_dtypes,
                                          std::initializer_list<DType> allowed) {
  for (size_t i = 0; i < input_dtypes.size(); ++i) {
    DType d = input_dtypes[i];
    if (d == DType::undefined) continue;
    if (std::find(allowed.begin(), allowed.end(), d) == allowed.end()) {
      return "input " + std::to_string(i) + " has unsupported type " + std::string(dtype_name(d));
    }
  }
  return std::nullopt;
}

Tensor evaluate_output(const ir::Node& node, std::span<const Tensor* const> inputs,
                       const ir::InferResult& inferred, size_t output) {
  if (inferred.values[output]) return *inferred.values[output];
  for (size_t i = 0; i < node.inputs.size(); ++i) {
    if (node.inputs[i] != ir::k_no_value && !inputs[i])
      throw Error(ErrorCode::internal,
                  node.describe() + ": input " + std::to_string(i) + " has no value on the host");
  }
  const KernelDef* kernel = kernels().find(node.op_type);
  if (!kernel) throw Error(ErrorCode::unsupported, node.describe() + ": no reference kernel");
  std::vector<Tensor> outs(node.outputs.size());
  KernelContext ctx(node, inputs, inferred, outs);
  kernel->run(ctx);
  if (!outs[output].defined()) ctx.output(output);
  return outs[output];
}

}  // namespace kiln::ref
