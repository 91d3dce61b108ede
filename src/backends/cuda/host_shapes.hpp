// Shape subgraphs inside a cuda engine: the nodes whose outputs are small
// integer tensors computed from shapes (Shape → Gather → Unsqueeze → Concat,
// as every exporter writes a Reshape target for a dynamic batch or
// sequence), which the engine evaluates on the host once per instance
// instead of refusing them.
//
// Inside an engine every input shape is fixed per instance, so such a value
// is a constant of the instance: the nodes computing it are no-GPU-work
// layers (LayerKind::shape), and the layers reading it (a Reshape's shape, a
// Slice's starts and ends, ...) take it at instance creation.
//
// The rule (docs/cuda.md says why):
// - a node is a *shape node* when it is Shape or Size, or every input it has
//   is a structural constant (never a refittable weight) or a shape node's
//   output; each output is an int32/int64/bool tensor of rank ≤ 1; and the
//   reference backend has a kernel for it (which computes it on the host);
// - a shape node is *taken* when every reader of each output is a taken
//   shape node or a shape argument (shape_arguments) of a node the GPU runs,
//   and no output is a graph output. A shape value that a GPU kernel would
//   read as data (the kernels are float-only) leaves its nodes refused.
//
// Stateless; thread-safe.
#pragma once

#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "backends/backend.hpp"
#include "backends/cuda/cuda_plan.hpp"
#include "ir/graph.hpp"

namespace kiln::cuda {

// The inputs a GPU layer of `node`'s op reads as shape arguments on the host
// (a Reshape's shape, a Slice's starts/ends/axes/steps, Split's sizes,
// Squeeze/Unsqueeze axes), never as device memory.
std::vector<size_t> shape_arguments(const ir::Node& node);

// Whether `node` could be a shape node (see above) or reads a non-float
// value: the cases where a node's support depends on the shape analysis.
bool involves_shape_values(const ir::Graph& graph, const ir::Node& node);

struct HostShapes {
  std::vector<bool> taken;                          // by node: a shape node the engine evaluates
  std::vector<std::optional<std::string>> refused;  // by node: a shape node that is not taken, and why
  std::vector<bool> host_value;                     // by value: a taken node's output or a constant
};

// Why the GPU cannot run `node` as a layer when the values marked in
// `host_value` are known on the host (shape arguments may read them).
using GpuReason =
    std::function<std::optional<std::string>(ir::NodeId node, const std::vector<bool>& host_value)>;

// The shape nodes of `graph` and which are taken; `gpu_reason` decides the
// readers that are not shape nodes.
HostShapes analyse_host_shapes(const ir::Graph& graph, const GpuReason& gpu_reason);

// Every value's static type at one set of input shapes, and the host value
// of every constant and shape-layer output, from inference node by node in
// topological order (a Reshape whose target a shape layer computes gets its static
// shape). Throws kiln::Error naming the node when a shape node cannot be
// evaluated.
struct InstanceValues {
  std::vector<std::optional<std::vector<int64_t>>> shapes;  // by value; nullopt: unknown
  std::vector<std::optional<Tensor>> host;                  // by value
};
InstanceValues instance_values(const ir::Graph& graph, std::span<const InputSpec> specs,
                               const std::vector<std::vector<int64_t>>& input_shapes,
                               std::span<const Layer> layers);

// Where a slice layer (a Slice, or one output of a Split) starts and how it
// steps in each dim of its input at one instance: from constants or the
// instance's shape values, worked out once per instance rather than per run.
// Throws kiln::Error(unsupported) for a step below 1 (the slice kernel's
// limit), which the support check cannot see when shapes compute it.
struct SliceParts {
  std::vector<int64_t> starts, steps;
  // For a Gather of one index whose output drops the axis: the axis, where
  // the window keeps a dim of 1 (the same bytes); else -1.
  int64_t dropped_axis = -1;
};
SliceParts slice_parts(const ir::Graph& graph, const Layer& layer,
                       const std::vector<std::optional<std::vector<int64_t>>>& shapes,
                       const std::vector<std::optional<Tensor>>& host);

// An Expand layer's walk over its input: per output dim, the input elements
// one step of it moves (0 where the input dim is 1 or missing and repeats).
// REQUIRES: `in` broadcasts to `out`.
std::vector<int64_t> expand_strides(std::span<const int64_t> in, std::span<const int64_t> out);

}  // namespace kiln::cuda
