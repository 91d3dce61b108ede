// Reference kernels: plain, obviously correct implementations of each op.
//
// This backend favours clarity over speed. It is the correctness oracle that
// every optimized backend is tested against, and the fallback for nodes that
// an optimized backend does not support. A kernel receives its inputs and the
// output types that shape inference computed (ir::infer_node) and fills its
// outputs; it never decides an output shape on its own.
#pragma once

#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "ir/graph.hpp"
#include "ir/op_schema.hpp"

namespace kiln::ref {

class KernelContext {
 public:
  KernelContext(const ir::Node& node, std::span<const Tensor* const> inputs, const ir::InferResult& inferred,
                std::span<Tensor> outputs);

  const ir::Node& node() const { return m_node; }
  const ir::Attributes& attrs() const { return m_node.attrs; }
  int64_t opset() const { return m_node.opset; }

  size_t num_inputs() const { return m_inputs.size(); }
  bool has_input(size_t i) const { return i < m_inputs.size() && m_inputs[i] != nullptr; }
  // REQUIRES: has_input(i).
  const Tensor& input(size_t i) const;

  size_t num_outputs() const { return m_outputs.size(); }
  // The output's type as shape inference computed it (always concrete here).
  const ir::ValueType& output_type(size_t i) const { return m_inferred.types[i]; }
  // The output's value when inference already computed it (Shape, Size,
  // Constant); null otherwise.
  const Tensor* inferred_value(size_t i) const {
    return m_inferred.values[i] ? &*m_inferred.values[i] : nullptr;
  }
  // The output, allocated (zero-filled) with its inferred type on first use.
  Tensor& output(size_t i);
  // Makes output `i` share storage with an existing tensor (Identity,
  // Reshape...). REQUIRES: same dtype and element count as inferred.
  void set_output(size_t i, Tensor tensor);

  // Threads a kernel may use (util/parallel_for.hpp); 1 unless the caller
  // (an engine running the kernel as one of its layers) grants more.
  int threads() const { return m_threads; }
  void set_threads(int threads) { m_threads = threads; }

 private:
  const ir::Node& m_node;
  std::span<const Tensor* const> m_inputs;
  const ir::InferResult& m_inferred;
  std::span<Tensor> m_outputs;
  int m_threads = 1;
};

using KernelFn = std::function<void(KernelContext&)>;
// Why the kernel cannot run `node` with these input dtypes (undefined for an
// omitted input); nullopt when it can. Checked before running, so that an
// unsupported attribute or dtype is reported rather than computed wrongly.
using SupportFn =
    std::function<std::optional<std::string>(const ir::Node&, std::span<const DType> input_dtypes)>;

struct KernelDef {
  std::string op_type;
  KernelFn run;
  SupportFn check;  // may be empty: every dtype the kernel dispatches on is fine
};

class KernelRegistry {
 public:
  void add(std::string op_type, KernelFn run, SupportFn check = {});
  const KernelDef* find(std::string_view op_type) const;

 private:
  std::vector<KernelDef> m_kernels;
};

// The registry of every reference kernel.
const KernelRegistry& kernels();

// Output `output` of `node` on the host: the value inference already found,
// else the node's reference kernel run on `inputs` (null for an omitted
// input). How engines evaluate shape computations when an instance is made.
// Throws kiln::Error: internal when a present input has no value,
// unsupported when the op has no reference kernel.
Tensor evaluate_output(const ir::Node& node, std::span<const Tensor* const> inputs,
                       const ir::InferResult& inferred, size_t output);

// One registration function per op family (src/reference/kernels/*.cpp).
void register_elementwise_kernels(KernelRegistry& registry);
void register_nn_kernels(KernelRegistry& registry);
void register_tensor_kernels(KernelRegistry& registry);
void register_reduction_kernels(KernelRegistry& registry);

// Shared support check: every present input has one of `allowed` dtypes.
std::optional<std::string> require_dtypes(std::span<const DType> input_dtypes,
                                          std::initializer_list<DType> allowed);

}  // namespace kiln::ref
