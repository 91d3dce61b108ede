// Which nodes the cuda backend runs, and the partition of a lowered graph
// into its layers: passes::find_fusions chains (Conv/Gemm/MatMul → bias →
// residual → activation) become one layer where the GPU path can fuse them;
// every other supported node is a layer of its own.
//
// Stateless; thread-safe.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "backends/cuda/cuda_plan.hpp"
#include "backends/cuda/kernels/kernels.hpp"

namespace kiln::cuda {

// Why the cuda backend cannot run `node`; nullopt when it can.
std::optional<std::string> unsupported_reason(const ir::Graph& graph, ir::NodeId node);

// The layer kind of a node the backend supports.
LayerKind layer_kind(const ir::Node& node);

std::vector<Layer> partition_layers(const ir::Graph& lowered);

// The activation a node computes (Relu, Gelu, Clip with constant bounds...),
// or nullopt for a node that is not an activation kiln's kernels have.
std::optional<ActParams> activation_of(const ir::Graph& graph, const ir::Node& node);

// Whether value `v` is a constant of the plan: a refittable weight (recipe)
// or a structural initializer.
bool is_constant(const ir::Graph& graph, ir::ValueId v);

// The operator of a binary layer's node. REQUIRES: layer_kind(node) is binary.
BinaryOp binary_op_of(const ir::Node& node);

const char* layer_kind_name(LayerKind kind);

}  // namespace kiln::cuda
