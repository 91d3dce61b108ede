// Internal to kiln_passes: runs one node on the reference kernels, for
// constant folding. Stateless; safe to call concurrently.
#pragma once

#include <optional>
#include <span>
#include <vector>

#include "ir/graph.hpp"

namespace kiln::passes {

// The node's outputs for these inputs (null for an omitted input), or
// nullopt when the reference backend has no kernel for it or the node's
// outputs would exceed `max_bytes` in total. Errors from the kernel
// propagate as kiln::Error naming the node.
std::optional<std::vector<Tensor>> evaluate_node(const ir::Node& node, std::span<const Tensor* const> inputs,
                                                 size_t max_bytes);

}  // namespace kiln::passes
