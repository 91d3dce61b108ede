// What one layer of a cuda engine reads, and the geometry, strides and
// walks it runs with at one instance's input shapes (cuda_instance.hpp):
// worked out once when the instance is made, and for convs and matmuls when
// their tactics are timed, never per run. Running the layer from them is
// layer_launch.hpp's part.
//
// Stateless; thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <numeric>
#include <optional>
#include <vector>

#include "backends/cuda/activation_layout.hpp"
#include "backends/cuda/attention_layer.hpp"
#include "backends/cuda/cuda_plan.hpp"
#include "backends/cuda/cudnn_conv.hpp"
#include "backends/cuda/device.hpp"
#include "backends/cuda/host_shapes.hpp"
#include "backends/cuda/kernels/kernels.hpp"
#include "backends/cuda/lt_matmul.hpp"
#include "backends/cuda/strided_walk.hpp"

namespace kiln::cuda {

struct Instance;

inline int64_t numel(const std::vector<int64_t>& shape) {
  return std::accumulate(shape.begin(), shape.end(), int64_t{1}, std::multiplies<>());
}

// The activation that ends a layer; Act::none without one.
ActParams layer_activation(const ir::Graph& g, const Layer& layer);

// A conv layer's bias input; k_no_value without one.
ir::ValueId conv_bias(const ir::Graph& g, const Layer& layer);

// The value a layer's residual Add adds; k_no_value without one.
ir::ValueId residual_of(const ir::Graph& g, const Layer& layer);

// A Transpose node's permutation of a rank-`rank` input (reversed dims when
// the node has no perm).
std::vector<int64_t> transpose_perm(const ir::Node& n, size_t rank);

// The slice output a gather layer's chain reads: the first view's (or the
// transpose's) data input.
ir::ValueId gather_part(const ir::Graph& g, const Layer& layer);

// What cuDNN's graph may include: bias, residual and a ReLU (any other
// activation runs in kiln's epilogue kernel, so nothing is fused then).
std::optional<ConvFusion> cudnn_fusion(const ir::Graph& g, const Layer& layer);

// A conv layer's cuDNN geometry at the instance's shapes, in `layout`.
ConvGeometry conv_geometry(const Plan& plan, const Layer& layer, const Instance& inst, Layout layout);

// What a matmul layer reads and applies at one instance's shapes.
struct MatmulParts {
  ir::ValueId x = ir::k_no_value, bias = ir::k_no_value, residual = ir::k_no_value;
  LtShape shape;
  ActParams post;             // applied after the matmul when the epilogue cannot
  bool bias_in_post = false;  // the bias too (batched products: one bias for every batch)
};
MatmulParts matmul_parts(const Plan& plan, const Layer& layer, const Instance& inst);

// A gather layer at one instance: its chain as one strided walk over the
// slice's input; or, where a view of the chain is no walk at these shapes,
// the slice into a scratch buffer of the instance and the transpose from it.
struct GatherParts {
  bool one_walk = true;
  StridedWalk walk;
  int64_t extent = 0;  // elements of the slice's input
  SliceParts slice;
  std::optional<DeviceBuffer> scratch;
};
// `host`: the instance's host values (shape-layer outputs and constants).
GatherParts gather_parts(const ir::Graph& g, const Layer& layer, const Instance& inst,
                         const std::vector<std::optional<Tensor>>& host, ElemType type);

// One operand of an attention layer at one instance: a 4-D strided view of
// the value it is read from (its chain's first input, or itself). Where a
// gather chain is no walk at these shapes, the gather runs into `staged`
// first and the view reads that.
struct AttentionOperandExec {
  ir::ValueId source = ir::k_no_value;
  int64_t offset = 0;
  std::array<int64_t, 4> strides{};
  Layer chain;  // the chain as a gather layer, when staged
  std::optional<GatherParts> staged_parts;
  std::optional<DeviceBuffer> staged;
};

// An attention layer at one instance: its problem sizes and strides (the
// data pointers are filled per run), worked out once.
struct AttentionExec {
  AttentionNodes nodes;
  std::array<AttentionOperandExec, 3> operands;  // Q, Kᵀ, V
  AttentionArgs args;
};
// Throws kiln::Error(unsupported) naming the layer when the kernel cannot
// take its shapes at this instance.
AttentionExec attention_exec(const ir::Graph& g, const Layer& layer, const Instance& inst,
                             const std::vector<std::optional<Tensor>>& host, ElemType type);

}  // namespace kiln::cuda
