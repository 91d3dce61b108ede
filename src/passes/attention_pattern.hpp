// Recognises scaled dot-product attention in a lowered graph, so a backend
// can run it as one fused layer instead of a batched MatMul, scale, mask
// Add, Softmax and a second batched MatMul with the whole [batch, heads,
// seq, seq] score tensor in memory between them (the cpu backend's
// attention layer, the cuda backend's flash-attention kernel).
//
// The pattern, walked back from the Softmax:
//   Q' = Q (* or / scalar)*        torch scales Q; SDPA's export scales Q and Kᵀ by sqrt(scale)
//   K' = Kᵀ (* or / scalar)*       Kᵀ is whatever the MatMul reads: a Transpose view or a tensor
//   S  = MatMul(Q', K') (* or / scalar)*   BERT divides the scores
//   S  = Add(S, mask)?             a float tensor broadcast onto the scores
//   P  = Softmax(S) over the last axis, then Identity?
//   O  = MatMul(P, V)
// Every value between two matched nodes must be read by the next node only
// (and not be a graph output); Q, K, V and the mask come from elsewhere.
// Scalars are float constants or weights of one element (read at run time,
// so a refit that changes them is honoured). Anything else is left to the
// separate layers.
//
// Stateless; thread-safe.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "ir/graph.hpp"

namespace kiln::passes {

struct ScaleFactor {
  ir::ValueId value = ir::k_no_value;  // the one-element float constant or weight
  bool divide = false;                 // Div by it rather than Mul
};

struct AttentionMatch {
  ir::NodeId qk_matmul = ir::k_no_node;
  ir::NodeId mask_add = ir::k_no_node;  // k_no_node when there is no mask
  ir::NodeId softmax = ir::k_no_node;
  ir::NodeId pv_matmul = ir::k_no_node;
  ir::ValueId q = ir::k_no_value;     // [..., Sq, D]
  ir::ValueId k_t = ir::k_no_value;   // [..., D, Sk]
  ir::ValueId v = ir::k_no_value;     // [..., Sk, Dv]
  ir::ValueId mask = ir::k_no_value;  // broadcast onto [..., Sq, Sk]; k_no_value when absent
  ir::ValueId output = ir::k_no_value;
  std::vector<ScaleFactor> scales;  // their product scales the scores
  // Every matched node in data-flow order (the engine infers their types in
  // this order): the scales of Q and Kᵀ, the QK MatMul, ..., the PV MatMul.
  std::vector<ir::NodeId> nodes;
};

// Per value: how many node inputs read it, plus one for a graph output.
std::vector<int> attention_reader_counts(const ir::Graph& graph);

// The attention around `softmax`, or nullopt with `why`.
std::optional<AttentionMatch> match_attention(const ir::Graph& graph, ir::NodeId softmax,
                                              const std::vector<int>& readers, std::string* why = nullptr);

// The attention a plan layer's nodes form (its Softmax is found among them),
// or nullopt when they are not exactly one matched attention.
std::optional<AttentionMatch> match_attention_layer(const ir::Graph& graph,
                                                    const std::vector<ir::NodeId>& nodes,
                                                    std::string* why = nullptr);

}  // namespace kiln::passes
