// The cuda engine's plan: everything needed to recreate an engine without
// heuristics, timing or weights. The lowered graph (refittable weights carry
// their recipe, never a value), the input specs, and the layers: a partition
// of the graph's nodes into units that each run as one cuDNN execution plan,
// one cuBLASLt matmul or one of kiln's kernels, with the tactic chosen at
// build time. Plain data: building, serializing and running live elsewhere.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "backends/backend.hpp"
#include "backends/cuda/cudnn_conv.hpp"
#include "backends/cuda/lt_matmul.hpp"
#include "ir/graph.hpp"
#include "kiln/settings.hpp"

namespace kiln::cuda {

// Persistent values: never renumber.
enum class LayerKind : uint8_t {
  conv = 0,        // Conv (+ bias + residual Add + activation)
  matmul = 1,      // MatMul / Gemm (+ bias Add + activation); batched MatMul of two activations
  unary = 2,       // one activation or math op
  binary = 3,      // Add, Sub, Mul, Div, Max, Min, Pow with broadcasting
  pool = 4,        // MaxPool, AveragePool (2-D)
  reduce = 5,      // GlobalAveragePool, GlobalMaxPool
  softmax = 6,     // Softmax, LogSoftmax over the last axis
  layer_norm = 7,  // LayerNormalization over the last axis
  transpose = 8,
  view = 9,  // Reshape, Flatten, Squeeze, Unsqueeze, Identity: the input's memory
  concat = 10,
  slice = 11,   // Slice, or one output of a Split (a Split is one layer per output)
  shape = 12,   // a node computing shape values, evaluated on the host per instance (host_shapes.hpp)
  expand = 13,  // Expand: a broadcast copy to the target shape
  // A slice (or one Split output), the views after it and the Transpose that
  // ends them, as one strided copy from the slice's input (strided_walk.hpp):
  // nodes are [Slice or Split, views..., Transpose], output the Transpose's.
  gather = 14,
  // Scaled dot-product attention as one kernel, with the chains its operands
  // are read through and the Transpose of its output (attention_layer.hpp).
  attention = 15,
};
constexpr uint8_t k_last_layer_kind = 15;

struct Tactic {
  std::string name;    // for reports: "cudnn:e12/k3=1 fused", "cublasLt:3"
  double time_ms = 0;  // measured at the opt shapes; 0 when not timed
  // conv: the cuDNN engine, and whether its operation graph includes the
  // bias, residual and ReLU (else kiln's epilogue kernel applies them).
  CudnnEngineChoice cudnn;
  bool fused = false;
  // matmul: the cuBLASLt algorithm.
  std::vector<uint8_t> lt_algo;
};

struct Layer {
  LayerKind kind = LayerKind::unary;
  std::vector<ir::NodeId> nodes;  // anchor first, then fused nodes in chain order
  ir::NodeId bias_add = ir::k_no_node;
  ir::NodeId residual_add = ir::k_no_node;
  int residual_input = -1;
  ir::NodeId activation = ir::k_no_node;
  ir::ValueId output = ir::k_no_value;
  Tactic tactic;

  ir::NodeId anchor() const { return nodes.front(); }
};

struct Plan {
  ir::Graph graph;  // lowered; refittable weights hold a recipe and no value
  std::vector<InputSpec> specs;
  std::vector<Layer> layers;  // in execution order
  int32_t source_weight_count = 0;
  Fingerprint fingerprint;
  // The element type of every weight and activation on the GPU (precision.hpp);
  // the engine's inputs and outputs stay fp32.
  ElemType precision = ElemType::f32;
};

}  // namespace kiln::cuda
