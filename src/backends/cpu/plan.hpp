// The CPU engine's plan: everything needed to recreate an engine without
// timing and without weights (DESIGN.md, "Weights and refit").
//
// A plan is the lowered graph (refittable weights carry their recipe and type
// but no data; structural constants keep their values), the input specs, and
// the layers: a partition of the graph's nodes into units that each run as one
// oneDNN primitive (with fused post-ops), a zero-copy view, a reference-kernel
// "aux" step, or a shape computation done once per input-shape set. Each layer
// records the tactic chosen at build time. The plan is plain data: building,
// serializing and running it live elsewhere (cpu_engine, plan_format).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "backends/backend.hpp"
#include "ir/graph.hpp"
#include "kiln/settings.hpp"

namespace kiln::cpu {

// Persistent values: never renumber.
enum class LayerKind : uint8_t {
  conv = 0,     // Conv (+ bias + residual sum + activation)
  matmul = 1,   // MatMul / Gemm (+ bias Add + residual sum + activation)
  pool = 2,     // MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool
  eltwise = 3,  // one unary activation or math op
  binary = 4,   // Add, Sub, Mul, Div with broadcasting
  softmax = 5,
  layer_norm = 6,
  concat = 7,
  view = 8,         // Reshape, Flatten, Squeeze, Unsqueeze, Identity, Transpose: no copy; Slice: copy or view
  aux = 9,          // runs a reference kernel inside the engine
  shape = 10,       // depends only on input shapes: evaluated once per shape set
  batch_norm = 11,  // BatchNormalization with its statistics (+ a fused Relu as `activation`)
  resample = 12,    // Resize / Upsample that oneDNN's resampling computes exactly (resample_layer.hpp)
  attention =
      13,  // MatMul(Q, Kᵀ), scales, mask Add, Softmax, MatMul(·, V) as one layer (attention_fusion.hpp)
};
constexpr uint8_t k_last_layer_kind = 13;

// gemm: a 1x1 conv as one oneDNN matmul over its nhwc activations.
enum class ConvAlgo : uint8_t { automatic = 0, direct = 1, winograd = 2, gemm = 3 };
constexpr uint8_t k_last_conv_algo = 3;
// Activation layout a tactic asks for: oneDNN's choice, channels-last, or
// 16-channel blocks (nChw16c, the layout of oneDNN's direct avx512 kernels);
// plain_in: a stem conv (a few input channels) reading the plain NCHW input
// as it is and writing 16-channel blocks, with no reorder before it.
enum class Layout : uint8_t { any = 0, nhwc = 1, blocked = 2, plain_in = 3 };
constexpr uint8_t k_last_layout = 3;
enum class Prec : uint8_t { f32 = 0, bf16 = 1 };
// Weight layout a MatMul/Gemm tactic asks oneDNN for, over the logical
// [K, N] weights: its choice (format_tag::any, e.g. brgemm's BA16a64b),
// plain row-major (ab) or transposed (ba).
enum class WeightLayout : uint8_t { any = 0, plain = 1, transposed = 2 };
constexpr uint8_t k_last_weight_layout = 2;

struct Tactic {
  // A constructor rather than an aggregate, so layer builders can name the
  // fields they use and leave the matmul-only ones at their defaults.
  Tactic() = default;
  Tactic(ConvAlgo a, Layout l, Prec p, std::string n = {}, double ms = 0)
      : algo(a), layout(l), precision(p), name(std::move(n)), time_ms(ms) {}

  ConvAlgo algo = ConvAlgo::automatic;
  Layout layout = Layout::any;
  Prec precision = Prec::f32;
  std::string name;    // for reports: "conv:direct/any/f32"
  double time_ms = 0;  // measured at the opt shape; 0 when not timed
  // Weight MatMul/Gemm only: the weight layout requested and the oneDNN
  // implementation (impl_info_str, e.g. "brg:avx512_core") chosen among
  // those oneDNN offers for it. Empty impl: oneDNN's first choice.
  WeightLayout weights = WeightLayout::any;
  std::string impl;
  // Conv only: the layer's swish (Sigmoid + Mul) runs as kiln's own pass
  // after the primitive rather than as its post-op (swish.hpp).
  bool native_swish = false;
};

struct LayerDesc {
  LayerKind kind = LayerKind::aux;
  std::vector<ir::NodeId> nodes;  // anchor first, then fused nodes in chain order
  // Fused nodes (conv/matmul only); k_no_node when absent.
  ir::NodeId bias_add = ir::k_no_node;
  ir::NodeId residual_add = ir::k_no_node;
  int residual_input = -1;
  ir::NodeId activation = ir::k_no_node;
  ir::ValueId output = ir::k_no_value;  // the layer's final value (first output for aux)
  Tactic tactic;
  // Conv only: a depthwise 3x3 Conv (and its activation) reading this 1x1
  // conv's result, its only reader. Run either as a post-op of the 1x1
  // primitive (dw_fused), so the wide intermediate never leaves the cache,
  // or as a second primitive with its own tactic; the build times both.
  ir::NodeId dw_conv = ir::k_no_node;
  ir::NodeId dw_activation = ir::k_no_node;
  bool dw_fused = false;
  Tactic dw_tactic;

  ir::NodeId anchor() const { return nodes.front(); }
};

struct EnginePlan {
  ir::Graph graph;  // lowered; refittable weights hold a recipe and no initializer
  std::vector<InputSpec> specs;
  std::vector<LayerDesc> layers;  // in execution order
  int num_threads = 0;
  size_t activation_bytes = 0;  // planned arena at the max shapes
  size_t weight_bytes = 0;
  int32_t source_weight_count = 0;  // 1 + the highest source index a recipe reads
  Fingerprint fingerprint;
};

// Whether value `v` of the plan's graph is a refittable weight.
inline bool is_weight(const ir::Graph& graph, ir::ValueId v) {
  return v != ir::k_no_value && graph.value(v).recipe.has_value() && graph.value(v).producer == ir::k_no_node;
}

}  // namespace kiln::cpu
