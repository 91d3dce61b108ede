#include "backends/cuda/device_weights.hpp"

#include <algorithm>
#include <string>

#include "backends/cuda/cuda_check.hpp"
#include "backends/cuda/cuda_layers.hpp"
#include "backends/cuda/kernels/kernels.hpp"
#include "backends/cuda/layer_parts.hpp"
#include "backends/cuda/precision.hpp"

namespace kiln::cuda {

using ir::k_no_value;
using ir::ValueId;

DeviceWeights::DeviceWeights(const Plan& plan, const ActivationLayouts& layouts, const DeviceContext& device)
    : m_plan(plan), m_layouts(layouts), m_device(device) {
  m_constants.resize(m_plan.graph.num_values());
  m_matmul_weights.resize(m_plan.layers.size());
  m_krsc_weights.resize(m_plan.graph.num_values());
}

size_t DeviceWeights::upload(ValueId v, const Tensor& host) {
  if (host.dtype() != DType::float32) {
    throw Error(ErrorCode::unsupported, "cuda: constant '" + m_plan.graph.value(v).name + "' is " +
                                            std::string(dtype_name(host.dtype())));
  }
  // The recipe's fp32 value, rounded on the host to the storage precision
  // (to nearest even, as the kernels' own conversions): a refit and a fresh
  // build of the same weights upload the same bytes.
  // fp32 goes up as it is, without a host copy.
  std::vector<std::byte> converted;
  std::span<const std::byte> bytes = host.bytes();
  if (m_plan.precision != ElemType::f32) {
    converted = to_storage(host.data<float>(), m_plan.precision);
    bytes = converted;
  }
  auto& slot = m_constants[static_cast<size_t>(v)];
  if (!slot || slot->size() != std::max<size_t>(bytes.size(), 4))
    slot.emplace(std::max<size_t>(bytes.size(), 4));
  // From pageable memory, cudaMemcpyAsync returns once the bytes are staged,
  // so they may go away at once; callers synchronize once after a batch of
  // uploads instead of once per weight.
  check(cudaMemcpyAsync(slot->data(), bytes.data(), bytes.size(), cudaMemcpyHostToDevice, m_device.stream()),
        "cudaMemcpyAsync(constant)");
  return bytes.size();
}

void DeviceWeights::upload_structural() {
  const ir::Graph& g = m_plan.graph;
  for (const Layer& layer : m_plan.layers) {
    if (layer.kind == LayerKind::shape) continue;  // read on the host only
    for (ir::NodeId id : layer.nodes) {
      for (ValueId v : g.node(id).inputs) {
        if (v == k_no_value || !is_constant(g, v) || g.value(v).recipe) continue;
        const Tensor* t = g.value(v).known_value();
        if (t && t->dtype() == DType::float32 && !m_constants[static_cast<size_t>(v)]) upload(v, *t);
      }
    }
  }
  m_device.synchronize();
}

const void* DeviceWeights::constant(ValueId v) const {
  const auto& slot = m_constants[static_cast<size_t>(v)];
  if (!slot)
    throw Error(ErrorCode::internal,
                "cuda engine: constant '" + m_plan.graph.value(v).name + "' not on the GPU");
  return slot->data();
}

const void* DeviceWeights::matmul_weight(size_t layer) const {
  return m_matmul_weights[layer] ? m_matmul_weights[layer]->data() : nullptr;
}

const void* DeviceWeights::krsc_weight(ValueId w) const {
  const auto& slot = m_krsc_weights[static_cast<size_t>(w)];
  if (!slot)
    throw Error(ErrorCode::internal,
                "cuda engine: the KRSC weight '" + m_plan.graph.value(w).name + "' is not on the GPU");
  return slot->data();
}

void DeviceWeights::prepare_matmul_weights() {
  // Gemm with transB holds W as [N, K]; cuBLASLt reads [K, N]: transposed
  // once per refit, on the GPU, from the value just uploaded (elements of
  // the storage precision move unconverted).
  const ir::Graph& g = m_plan.graph;
  for (size_t i = 0; i < m_plan.layers.size(); ++i) {
    const Layer& layer = m_plan.layers[i];
    if (layer.kind != LayerKind::matmul) continue;
    const ir::Node& n = g.node(layer.anchor());
    if (n.op_type != "Gemm" || n.attrs.get_int("transB", 0) == 0) continue;
    const ValueId w = n.inputs[1];
    const auto shape = g.value(w).type.static_shape();
    const size_t bytes = static_cast<size_t>(shape[0] * shape[1]) * elem_size(m_plan.precision);
    auto& slot = m_matmul_weights[i];
    if (!slot) slot.emplace(std::max<size_t>(bytes, 4));
    const int perm[2] = {1, 0};
    launch_transpose(m_plan.precision, constant(w), slot->data(), 2, shape.data(), perm, m_device.stream());
  }
  m_device.synchronize();
}

void DeviceWeights::prepare_conv_weights() {
  // A channels-last conv reads W [K, C/g, R, S] as KRSC. The recipe's value
  // is uploaded KCRS (as every constant) and transposed here, once per
  // refit; where nothing but channels-last convs' weight inputs reads it,
  // the KCRS copy is freed (a refit uploads it again). A structural weight
  // is uploaded once: its KRSC copy, made at the first refit, stays valid.
  const ir::Graph& g = m_plan.graph;
  std::vector<bool> nhwc_conv(g.num_nodes(), false);  // by node: the anchor of a channels-last conv
  for (size_t i = 0; i < m_plan.layers.size(); ++i) {
    if (m_plan.layers[i].kind == LayerKind::conv && m_layouts.of_layer(i) == Layout::nhwc)
      nhwc_conv[static_cast<size_t>(m_plan.layers[i].anchor())] = true;
  }
  // By value: read as a channels-last conv's weight; read any other way.
  std::vector<bool> krsc(g.num_values(), false), other(g.num_values(), false);
  for (ir::NodeId id = 0; id < static_cast<ir::NodeId>(g.num_nodes()); ++id) {
    const auto& ins = g.node(id).inputs;
    for (size_t k = 0; k < ins.size(); ++k) {
      if (ins[k] == k_no_value) continue;
      const bool weight = nhwc_conv[static_cast<size_t>(id)] && k == 1;
      (weight ? krsc : other)[static_cast<size_t>(ins[k])] = true;
    }
  }
  for (ValueId v : g.outputs()) other[static_cast<size_t>(v)] = true;
  std::vector<size_t> freed;
  for (size_t v = 0; v < g.num_values(); ++v) {
    if (!krsc[v] || !m_constants[v]) continue;
    const auto shape = g.value(static_cast<ValueId>(v)).type.static_shape();
    const size_t bytes = static_cast<size_t>(numel(shape)) * elem_size(m_plan.precision);
    auto& slot = m_krsc_weights[v];
    if (!slot) slot.emplace(std::max<size_t>(bytes, 4));
    const int perm[4] = {0, 2, 3, 1};
    launch_transpose(m_plan.precision, m_constants[v]->data(), slot->data(), 4, shape.data(), perm,
                     m_device.stream());
    if (!other[v]) freed.push_back(v);
  }
  m_device.synchronize();
  for (size_t v : freed) m_constants[v].reset();
}

}  // namespace kiln::cuda
