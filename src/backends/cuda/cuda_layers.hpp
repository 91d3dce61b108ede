// Which nodes the cuda backend runs, and the partition of a lowered graph
// into its layers: passes::find_fusions chains (Conv/Gemm/MatMul → bias →
// residual → activation) become one layer where the GPU path can fuse them;
// every other supported node is a layer of its own, shape nodes
// (host_shapes.hpp) as no-GPU-work shape layers.
//
// Stateless; thread-safe.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "backends/cuda/cuda_plan.hpp"
#include "backends/cuda/kernels/kernels.hpp"

namespace kiln::cuda {

// Why the cuda backend cannot run `node`; nullopt when it can. A node that
// computes shape values (host_shapes.hpp) is supported when every reader
// of them is another such node or a shape argument of a GPU layer.
std::optional<std::string> unsupported_reason(const ir::Graph& graph, ir::NodeId node);

// By node: whether the engine evaluates it on the host per instance
// (LayerKind::shape).
std::vector<bool> host_shape_nodes(const ir::Graph& graph);

// The layer kind of a node the backend supports; `host_nodes` from
// host_shape_nodes(graph).
LayerKind layer_kind(const ir::Graph& graph, ir::NodeId node, const std::vector<bool>& host_nodes);

std::vector<Layer> partition_layers(const ir::Graph& lowered);

// What a layer cannot do at one instance's shapes (by value; nullopt:
// unknown) that the support check could not see statically: a batched
// MatMul whose batch dims, unknown to static inference, differ. Nullopt
// when it can run.
std::optional<std::string> instance_problem(const ir::Graph& graph, const Layer& layer,
                                            const std::vector<std::optional<std::vector<int64_t>>>& shapes);

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
