// Which nodes the CPU backend runs on oneDNN, which on reference kernels
// inside the engine (aux layers), and which once per shape set (shape
// layers); and the partition of a lowered graph into layers, with
// passes::find_fusions groups becoming one primitive each.
//
// Stateless; every function is thread-safe.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "backends/cpu/plan.hpp"

namespace kiln::cpu {

// The oneDNN layer kind that runs `node`, or nullopt (with `why`) when it
// must run as an aux layer. With `shape_only` (shape_only_values), Slice
// bounds and Pad amounts computed from input shapes count as known: the
// engine has them once the input shapes are.
std::optional<LayerKind> native_kind(const ir::Graph& graph, ir::NodeId node, std::string* why = nullptr,
                                     const std::vector<bool>* shape_only = nullptr);

// Why the engine cannot run `node` at all (neither oneDNN nor a reference
// kernel); nullopt when it can.
std::optional<std::string> unsupported_reason(const ir::Graph& graph, ir::NodeId node);

// Per value: true when it depends only on input shapes and structural
// constants (Shape chains, constants), never on input data or weights.
std::vector<bool> shape_only_values(const ir::Graph& graph);

// The layers of a lowered graph, in execution order. Every node belongs to
// exactly one layer. `fuse_attention` (CompileSettings::cpu_fused_attention)
// turns each matched attention's layers into one fused attention layer.
std::vector<LayerDesc> partition_layers(const ir::Graph& lowered, bool fuse_attention);

// Whether depthwise Conv `depthwise` can run as a post-op of Conv
// `pointwise` (oneDNN 2.6: a 1x1 stride-1 unpadded conv, then a 3x3
// depthwise conv with bias, stride 1 or 2, padding 1, over its channels).
// Only the nodes' geometry is checked, not that one reads the other.
bool can_attach_depthwise(const ir::Graph& graph, ir::NodeId pointwise, ir::NodeId depthwise);

// Whether a conv/matmul layer's activation is a swish: its Sigmoid and the
// Mul of the Sigmoid's input by its output are both in the layer.
bool has_swish(const ir::Graph& graph, const LayerDesc& layer);

const char* layer_kind_name(LayerKind kind);

}  // namespace kiln::cpu
