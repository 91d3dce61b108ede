// The cuda backend's fused attention layer (LayerKind::attention, run by
// launch_attention in kernels.hpp): which layers of a partition it replaces,
// and how its nodes divide again when a plan is loaded.
//
// An attention layer's nodes are, in order: the chains it reads Q, Kᵀ and V
// through, the matched attention (passes/attention_pattern.hpp), and last,
// where there is one, the Transpose of its output that it writes directly.
// A chain is the nodes of Transpose layers, back to a gather layer ([Slice
// or Split, views..., Transpose]) or to a value read elsewhere, each value
// read only by the next (Kᵀ after a head split is often two): the
// kernel reads every operand through strides, so the head split of a fused
// QKV projection, Kᵀ and the head merge after it cost no copy. The layer's
// output is that Transpose's, else the attention's.
//
// Engines of every precision fuse it: fp16 and bf16 on the tensor cores,
// fp32 on the CUDA cores in exact fp32 (TF32 is not allowed by default).
//
// Stateless; thread-safe.
#pragma once

#include <array>
#include <optional>
#include <string>
#include <vector>

#include "backends/cuda/cuda_plan.hpp"
#include "passes/attention_pattern.hpp"

namespace kiln::cuda {

struct AttentionNodes {
  passes::AttentionMatch match;
  std::array<std::vector<ir::NodeId>, 3> chains;  // for Q, Kᵀ, V; empty: read as stored
  ir::NodeId output_transpose = ir::k_no_node;
};

// Replaces, in a partition of `graph`, each matched attention whose layers
// hold nothing but its nodes with one attention layer at the place of the
// last of them, absorbing the gather and Transpose layers around it as the
// header says. Attention the kernel cannot take (Q, K or V of rank other
// than 3 or 4, a static head dimension above k_attention_max_dim, a scale
// that is not a constant of the plan, more than four scales) stays unfused;
// why is logged at debug level. A head dimension static inference cannot
// see is checked when an instance is made: one above the kernel's limit is
// then an unsupported-shape error naming the layer.
std::vector<Layer> fuse_attention(const ir::Graph& graph, std::vector<Layer> layers);

// How an attention layer's nodes divide; nullopt (with `why`) when they do
// not form one as fuse_attention writes it (a plan that does not hold).
std::optional<AttentionNodes> attention_nodes(const ir::Graph& graph, const Layer& layer,
                                              std::string* why = nullptr);

}  // namespace kiln::cuda
