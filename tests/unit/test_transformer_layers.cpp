// The layers public transformers and modern CNNs are made of (ViT's
// attention and MLP, ConvNeXt's 7x7 depthwise conv and LayerNorm,
// MobileNetV3's squeeze-and-excitation, DenseNet's BatchNorm after Concat),
// each as a small hand-built ONNX graph at the shapes those models use. Every
// one must run on oneDNN primitives (the profiled run names each step's kind:
// no "aux" reference kernel, no oneDNN reference implementation) and match
// the reference executor within 1e-4 of the output's range (fp32; oneDNN
// reassociates sums, so results are not bitwise the reference's).
#include <gtest/gtest.h>

#include <onnx/onnx_pb.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "backends/cpu/cpu_backend.hpp"
#include "backends/cpu/plan_format.hpp"
#include "cpu_test_helpers.hpp"
#include "frontend/onnx/onnx_importer.hpp"
#include "onnx_test_model.hpp"
#include "passes/passes.hpp"
#include "reference/executor.hpp"

namespace kiln {
namespace {

using onnx::TensorProto;

constexpr double k_tolerance = 1e-4;

using Model = testing::ProtoModel;
using testing::set_float;
using testing::set_int;
using testing::set_ints;
using testing::wave;

// Builds a cpu engine for `model` (level 0: oneDNN's first choices, no
// timing), runs it profiled, checks its outputs against the reference
// executor and returns the steps.
std::vector<LayerTiming> run_and_compare(const Model& model) {
  const ir::Graph graph = model.import("layers.onnx").graph;
  auto backend = make_cpu_backend();
  auto engine = testing::build_engine(*backend, graph, model.inputs(), 0);
  std::vector<LayerTiming> steps;
  const std::vector<Tensor> got = engine->run_profiled(model.inputs(), steps);
  const std::vector<Tensor> want = ref::Executor(graph).run(model.inputs());
  EXPECT_EQ(got.size(), want.size());
  for (size_t i = 0; i < std::min(got.size(), want.size()); ++i) {
    EXPECT_LE(testing::relative_error(got[i], want[i]), k_tolerance) << "output " << i;
  }
  return steps;
}

// The step whose lowered nodes include `node`, not a reorder; fails when none.
const LayerTiming* step_of(const std::vector<LayerTiming>& steps, const std::string& node) {
  for (const LayerTiming& t : steps) {
    if (t.kind == "reorder") continue;
    for (const std::string& n : t.nodes) {
      if (n == node) return &t;
    }
  }
  ADD_FAILURE() << "no step runs node " << node;
  return nullptr;
}

// `node` runs in a oneDNN primitive (not an aux reference kernel, not
// oneDNN's reference binary implementation); returns its step's op.
std::string expect_native(const std::vector<LayerTiming>& steps, const std::string& node) {
  const LayerTiming* t = step_of(steps, node);
  if (!t) return {};
  EXPECT_EQ(t->kind, "onednn") << node << ": " << t->op << " " << t->tactic;
  EXPECT_EQ(t->tactic.find("/ref"), std::string::npos) << node << ": " << t->tactic;
  return t->op;
}

void expect_no_aux(const std::vector<LayerTiming>& steps) {
  for (const LayerTiming& t : steps) EXPECT_NE(t.kind, "aux") << t.name << ": " << t.op << " " << t.tactic;
}

// ViT-B/16's attention at its shapes: heads split by Transpose (a permuted
// view), the query scaled by 1/sqrt(64) over that view, Q K^T as a 4-D
// batched MatMul against a transposed view, Softmax over the last axis, then
// the product with V. The scaling was oneDNN's reference binary kernel over
// the permuted view (26 ms per layer on ViT); it must be a jitted eltwise.
TEST(TransformerLayers, BatchedAttentionRunsOnOneDnnAndMatchesTheReference) {
  Model m(17);
  m.input("q", {1, 197, 12, 64});
  m.input("k", {1, 197, 12, 64});
  m.input("v", {1, 197, 12, 64});
  m.scalar("scale", 8.0f);
  set_ints(m.node("Transpose", "q_heads", {"q"}, {"qh"}), "perm", {0, 2, 1, 3});
  set_ints(m.node("Transpose", "k_heads_t", {"k"}, {"kt"}), "perm", {0, 2, 3, 1});
  set_ints(m.node("Transpose", "v_heads", {"v"}, {"vh"}), "perm", {0, 2, 1, 3});
  m.node("Div", "q_scale", {"qh", "scale"}, {"qs"});
  m.node("MatMul", "scores", {"qs", "kt"}, {"s"});
  set_int(m.node("Softmax", "softmax", {"s"}, {"p"}), "axis", -1);
  m.node("MatMul", "context", {"p", "vh"}, {"y"});
  m.output_shaped("y", TensorProto::FLOAT, {1, 12, 197, 64});
  const auto steps = run_and_compare(m);
  expect_no_aux(steps);
  expect_native(steps, "q_scale");
  EXPECT_EQ(step_of(steps, "q_scale")->tactic.rfind("eltwise:", 0), 0u) << step_of(steps, "q_scale")->tactic;
  expect_native(steps, "scores");
  expect_native(steps, "softmax");
  expect_native(steps, "context");
}

// torch's MultiheadAttention output: [tokens, batch, channels] transposed
// back to [batch, tokens, channels] (a permuted view) and added to the
// residual stream.
TEST(TransformerLayers, ResidualAddOfATransposedViewRunsOnOneDnn) {
  Model m(17);
  m.input("x", {1, 197, 768});
  m.input("attn", {197, 1, 768});
  set_ints(m.node("Transpose", "to_batch_first", {"attn"}, {"t"}), "perm", {1, 0, 2});
  m.node("Add", "residual", {"x", "t"}, {"y"});
  m.node("Add", "residual_swapped", {"t", "y"}, {"z"});
  m.output_shaped("z", TensorProto::FLOAT, {1, 197, 768});
  const auto steps = run_and_compare(m);
  expect_no_aux(steps);
  expect_native(steps, "residual");
  expect_native(steps, "residual_swapped");
}

// torch's MultiheadAttention splits its fused in-projection [197, 1, 2304]
// into q, k and v with Slices along the last axis (and negative, clamped
// bounds are legal ONNX). Each is one oneDNN reorder of the window, not a
// reference kernel.
TEST(TransformerLayers, SlicesOfTheInProjectionAreReorders) {
  Model m(17);
  m.input("qkv", {197, 1, 2304});
  m.ints("axes", {2});
  m.ints("q0", {0});
  m.ints("q1", {768});
  m.ints("k0", {768});
  m.ints("k1", {1536});
  m.ints("v0", {-768});
  m.ints("v1", {INT64_MAX});
  m.node("Slice", "q", {"qkv", "q0", "q1", "axes"}, {"q"});
  m.node("Slice", "k", {"qkv", "k0", "k1", "axes"}, {"k"});
  m.node("Slice", "v", {"qkv", "v0", "v1", "axes"}, {"v"});
  m.node("Add", "qk", {"q", "k"}, {"s"});
  m.node("Mul", "y", {"s", "v"}, {"y"});
  m.output_shaped("y", TensorProto::FLOAT, {197, 1, 768});
  const auto steps = run_and_compare(m);
  expect_no_aux(steps);
  for (const char* slice : {"q", "k", "v"}) {
    bool copied = false;
    for (const LayerTiming& t : steps) copied |= t.name == slice && t.kind == "reorder";
    EXPECT_TRUE(copied) << slice;
  }
}

// A transformer MLP over [batch, tokens, channels] (3-D Linear): MatMul with
// a 2-D weight + bias + the exporter's Erf GELU chain, then MatMul + bias +
// the residual. Lowering turns the chain into Gelu; both layers must be one
// fused oneDNN matmul each.
TEST(TransformerLayers, LinearGeluAndResidualFuseIntoOneDnnMatmuls) {
  Model m(17);
  m.input("x", {1, 197, 192});
  m.weight("w1", {192, 768});
  m.weight("b1", {768});
  m.weight("w2", {768, 192});
  m.weight("b2", {192});
  m.scalar("sqrt2", std::sqrt(2.0f));
  m.scalar("one", 1.0f);
  m.scalar("half", 0.5f);
  m.node("MatMul", "fc1", {"x", "w1"}, {"h0"});
  m.node("Add", "fc1_bias", {"h0", "b1"}, {"h"});
  m.node("Div", "gelu_div", {"h", "sqrt2"}, {"g0"});
  m.node("Erf", "gelu_erf", {"g0"}, {"g1"});
  m.node("Add", "gelu_add", {"g1", "one"}, {"g2"});
  m.node("Mul", "gelu_mul", {"h", "g2"}, {"g3"});
  m.node("Mul", "gelu_half", {"g3", "half"}, {"g"});
  m.node("MatMul", "fc2", {"g", "w2"}, {"o0"});
  m.node("Add", "fc2_bias", {"o0", "b2"}, {"o1"});
  m.node("Add", "residual", {"o1", "x"}, {"y"});
  m.output_shaped("y", TensorProto::FLOAT, {1, 197, 192});
  const auto steps = run_and_compare(m);
  expect_no_aux(steps);
  EXPECT_EQ(expect_native(steps, "fc1"), "MatMul+Add+Gelu");
  EXPECT_EQ(expect_native(steps, "fc2"), "MatMul+Add+Add");
}

// Pre-norm transformers' LayerNormalization over the last axis (ViT-B: 768).
TEST(TransformerLayers, LastAxisLayerNormRunsOnOneDnn) {
  Model m(17);
  m.input("x", {1, 197, 768});
  m.weight("gamma", {768}, 1.0, 1.0);
  m.weight("beta", {768});
  set_float(m.node("LayerNormalization", "ln", {"x", "gamma", "beta"}, {"y"}), "epsilon", 1e-6f);
  m.output_shaped("y", TensorProto::FLOAT, {1, 197, 768});
  const auto steps = run_and_compare(m);
  expect_no_aux(steps);
  EXPECT_EQ(expect_native(steps, "ln"), "LayerNormalization");
}

// ConvNeXt-T's first stage: a 7x7 depthwise conv (pad 3, bias) over 96
// channels at 56x56.
TEST(TransformerLayers, SevenBySevenDepthwiseConvRunsOnOneDnn) {
  Model m(17);
  m.input("x", {1, 96, 56, 56});
  m.weight("w", {96, 1, 7, 7});
  m.weight("b", {96});
  auto* conv = m.node("Conv", "dw7", {"x", "w", "b"}, {"y"});
  set_int(conv, "group", 96);
  set_ints(conv, "kernel_shape", {7, 7});
  set_ints(conv, "pads", {3, 3, 3, 3});
  m.output_shaped("y", TensorProto::FLOAT, {1, 96, 56, 56});
  const auto steps = run_and_compare(m);
  expect_no_aux(steps);
  EXPECT_EQ(expect_native(steps, "dw7"), "Conv");
}

// The Mul of `node` runs kiln's loop over its feature map's own layout
// (per-image, per-channel gate), never a reference kernel.
void expect_nested_mul(const std::vector<LayerTiming>& steps, const std::string& node) {
  const LayerTiming* t = step_of(steps, node);
  if (!t) return;
  EXPECT_EQ(t->op, "Mul");
  EXPECT_EQ(t->kind, "native") << t->tactic;
  EXPECT_EQ(t->tactic, "native:nested_Mul");
}

// MobileNetV3's squeeze-and-excitation: GlobalAveragePool -> 1x1 conv +
// Relu -> 1x1 conv + HardSigmoid -> Mul with the block's (blocked-layout)
// feature map. HardSigmoid fuses into its conv; the pooling and the Mul run
// kiln's loops over the feature map as it is laid out, and nothing falls to
// a reference kernel.
TEST(TransformerLayers, SqueezeExcitationRunsWithHardSigmoidFused) {
  Model m(17);
  m.input("x", {1, 16, 28, 28});
  m.weight("w0", {96, 16, 3, 3});
  m.weight("b0", {96});
  m.weight("w1", {24, 96, 1, 1}, 3.0);
  m.weight("b1", {24});
  m.weight("w2", {96, 24, 1, 1}, 3.0);
  m.weight("b2", {96});
  set_ints(m.node("Conv", "features", {"x", "w0", "b0"}, {"f"}), "pads", {1, 1, 1, 1});
  m.node("GlobalAveragePool", "squeeze", {"f"}, {"s"});
  m.node("Conv", "fc1", {"s", "w1", "b1"}, {"s1"});
  m.node("Relu", "fc1_relu", {"s1"}, {"s2"});
  m.node("Conv", "fc2", {"s2", "w2", "b2"}, {"s3"});
  auto* gate = m.node("HardSigmoid", "gate", {"s3"}, {"s4"});
  set_float(gate, "alpha", 1.0f / 6.0f);
  m.node("Mul", "excite", {"f", "s4"}, {"y"});
  m.output_shaped("y", TensorProto::FLOAT, {1, 96, 28, 28});
  const auto steps = run_and_compare(m);
  expect_no_aux(steps);
  EXPECT_EQ(expect_native(steps, "fc2"), "Conv+HardSigmoid");
  ASSERT_NE(step_of(steps, "squeeze"), nullptr);
  EXPECT_EQ(step_of(steps, "squeeze")->tactic, "native:global_average");
  expect_native(steps, "fc1");
  expect_nested_mul(steps, "excite");

  // MobileNetV3's timed tactics put the feature map in 16-channel blocks;
  // the plain per-channel gate beside it once sent the Mul to oneDNN's
  // reference binary kernel. The same plan with every conv on blocks:
  const ir::Graph graph = m.import("layers.onnx").graph;
  auto backend = make_cpu_backend();
  auto engine = testing::build_engine(*backend, graph, m.inputs(), 0);
  cpu::EnginePlan plan = cpu::parse_plan(engine->serialize());
  for (cpu::LayerDesc& l : plan.layers) {
    if (l.kind == cpu::LayerKind::conv) {
      l.tactic =
          cpu::Tactic(cpu::ConvAlgo::direct, cpu::Layout::blocked, cpu::Prec::f32, "conv:direct/nChw16c/f32");
    }
  }
  auto blocked = backend->deserialize(cpu::serialize_plan(plan));
  blocked->refit(passes::source_weights(graph));
  std::vector<LayerTiming> blocked_steps;
  const std::vector<Tensor> got = blocked->run_profiled(m.inputs(), blocked_steps);
  EXPECT_LE(testing::relative_error(got[0], ref::Executor(graph).run(m.inputs())[0]), k_tolerance);
  expect_no_aux(blocked_steps);
  EXPECT_NE(step_of(blocked_steps, "features")->tactic.find("nChw16c"), std::string::npos);
  expect_nested_mul(blocked_steps, "excite");
}

// SiLU as exporters write it, y * Sigmoid(y), after a conv (EfficientNet)
// and after a Linear: one swish post-op of the conv / matmul primitive.
TEST(TransformerLayers, SiluFusesIntoTheConvOrMatmulBeforeIt) {
  Model m(17);
  m.input("x", {1, 32, 28, 28});
  m.weight("w", {64, 32, 3, 3}, 3.0);
  m.weight("b", {64});
  m.weight("fc", {28, 48}, 3.0);
  set_ints(m.node("Conv", "conv", {"x", "w", "b"}, {"c"}), "pads", {1, 1, 1, 1});
  m.node("Sigmoid", "conv_sigmoid", {"c"}, {"cs"});
  m.node("Mul", "conv_silu", {"c", "cs"}, {"h"});
  m.node("MatMul", "linear", {"h", "fc"}, {"l"});
  m.node("Sigmoid", "linear_sigmoid", {"l"}, {"ls"});
  m.node("Mul", "linear_silu", {"ls", "l"}, {"y"});
  m.output_shaped("y", TensorProto::FLOAT, {1, 64, 28, 48});
  const auto steps = run_and_compare(m);
  expect_no_aux(steps);
  EXPECT_EQ(expect_native(steps, "conv"), "Conv+Sigmoid+Mul");
  EXPECT_EQ(expect_native(steps, "linear"), "MatMul+Sigmoid+Mul");
  EXPECT_NE(step_of(steps, "conv")->tactic.find("swish"), std::string::npos);
}

// HardSigmoid on its own (no conv before it) is an eltwise layer: the linear
// step, then a clip to [0, 1]; inputs reach both sides of the clip.
TEST(TransformerLayers, StandaloneHardSigmoidRunsOnOneDnn) {
  Model m(17);
  m.input("x", {1, 40, 14, 14});
  auto* gate = m.node("HardSigmoid", "gate", {"x"}, {"y"});
  set_float(gate, "alpha", 0.5f);
  set_float(gate, "beta", 0.6f);
  m.output_shaped("y", TensorProto::FLOAT, {1, 40, 14, 14});
  const auto steps = run_and_compare(m);
  expect_no_aux(steps);
  EXPECT_EQ(expect_native(steps, "gate"), "HardSigmoid");
}

// DenseNet's dense block tail: Concat -> BatchNormalization -> Relu -> 1x1
// conv. The BatchNorm follows a Concat, so lowering cannot fold it into a
// conv: it runs as oneDNN batch normalization with the Relu fused. The
// transition's Pad of nothing before AveragePool is forwarded away.
TEST(TransformerLayers, BatchNormAfterConcatRunsOnOneDnnWithReluFused) {
  Model m(17);
  m.input("a", {1, 64, 28, 28});
  m.input("b", {1, 32, 28, 28});
  m.weight("scale", {96}, 1.0, 1.0);
  m.weight("shift", {96});
  m.weight("mean", {96});
  m.weight("var", {96}, 1.0, 1.0);
  m.weight("w", {128, 96, 1, 1});
  m.ints("no_pads", {0, 0, 0, 0, 0, 0, 0, 0});
  set_int(m.node("Concat", "concat", {"a", "b"}, {"c"}), "axis", 1);
  m.node("BatchNormalization", "norm", {"c", "scale", "shift", "mean", "var"}, {"n"});
  m.node("Relu", "relu", {"n"}, {"r"});
  m.node("Conv", "conv", {"r", "w"}, {"k"});
  m.node("Pad", "pad", {"k", "no_pads"}, {"p"});
  auto* pool = m.node("AveragePool", "pool", {"p"}, {"y"});
  set_ints(pool, "kernel_shape", {2, 2});
  set_ints(pool, "strides", {2, 2});
  m.output_shaped("y", TensorProto::FLOAT, {1, 128, 14, 14});
  const auto steps = run_and_compare(m);
  expect_no_aux(steps);
  EXPECT_EQ(expect_native(steps, "norm"), "BatchNormalization+Relu");
  // Plain inputs: each is reordered by oneDNN straight into its window of the output.
  int concat_reorders = 0;
  for (const LayerTiming& t : steps) {
    if (t.name == "concat") {
      EXPECT_EQ(t.kind, "reorder") << t.op << " " << t.tactic;
      ++concat_reorders;
    }
  }
  EXPECT_EQ(concat_reorders, 2);
  // The Pad is gone from the lowered graph: no step runs it.
  for (const LayerTiming& t : steps) {
    for (const std::string& n : t.nodes) EXPECT_NE(n, "pad");
  }
  ir::Graph lowered = passes::lower(m.import("layers.onnx").graph);
  for (ir::NodeId n : lowered.topological_order()) EXPECT_NE(lowered.node(n).op_type, "Pad");
}

// DenseNet's convs write 16-channel blocks. At batch 2 a channel window is
// not a dense tensor, so a Concat would copy them; one that only a
// BatchNorm reads is instead a map of its inputs' channels, and the
// BatchNorm (with its Relu) gathers and normalizes them in one pass into
// 16-channel blocks: no step for the Concat, no reorder of an input (test_dense_block.cpp covers batch 1,
// where the convs write into the Concat).
TEST(TransformerLayers, ConcatOfBlockedConvOutputsIsGatheredByItsBatchNorm) {
  Model m(17);
  m.input("x", {2, 16, 28, 28});
  m.weight("wa", {64, 16, 3, 3});
  m.weight("wb", {32, 16, 3, 3});
  m.weight("scale", {96}, 1.0, 1.0);
  m.weight("shift", {96});
  m.weight("mean", {96});
  m.weight("var", {96}, 1.0, 1.0);
  set_ints(m.node("Conv", "conv_a", {"x", "wa"}, {"a"}), "pads", {1, 1, 1, 1});
  set_ints(m.node("Conv", "conv_b", {"x", "wb"}, {"b"}), "pads", {1, 1, 1, 1});
  set_int(m.node("Concat", "concat", {"a", "b"}, {"c"}), "axis", 1);
  m.node("BatchNormalization", "norm", {"c", "scale", "shift", "mean", "var"}, {"n"});
  m.node("Relu", "relu", {"n"}, {"y"});
  m.output_shaped("y", TensorProto::FLOAT, {2, 96, 28, 28});
  const ir::Graph graph = m.import("layers.onnx").graph;
  auto backend = make_cpu_backend();
  auto engine = testing::build_engine(*backend, graph, m.inputs(), 0);
  cpu::EnginePlan plan = cpu::parse_plan(engine->serialize());
  for (cpu::LayerDesc& l : plan.layers) {
    if (l.kind == cpu::LayerKind::conv) {
      l.tactic =
          cpu::Tactic(cpu::ConvAlgo::direct, cpu::Layout::blocked, cpu::Prec::f32, "conv:direct/nChw16c/f32");
    }
  }
  auto blocked = backend->deserialize(cpu::serialize_plan(plan));
  blocked->refit(passes::source_weights(graph));
  std::vector<LayerTiming> steps;
  const std::vector<Tensor> got = blocked->run_profiled(m.inputs(), steps);
  EXPECT_LE(testing::relative_error(got[0], ref::Executor(graph).run(m.inputs())[0]), k_tolerance);
  expect_no_aux(steps);
  const LayerTiming* norm = step_of(steps, "norm");
  ASSERT_NE(norm, nullptr);
  EXPECT_EQ(norm->kind, "native");
  EXPECT_EQ(norm->tactic, "native:channel_gather+batch_norm+relu");
  for (const LayerTiming& t : steps) {
    EXPECT_NE(t.name, "concat") << t.kind << " " << t.tactic;  // no step for the Concat
    if (t.kind == "reorder") {
      EXPECT_NE(t.name, "norm") << t.tactic;  // no input reordered for it
    }
  }
}

// ShuffleNet's unit: the input split by two Slices, one half through a conv
// (58 channels: oneDNN has no blocked concat over a tail of a 16-channel
// block), Concat with the other half, then the channel shuffle (Reshape,
// Transpose, Reshape). The Concat writes each input straight into its window
// of a plain output, one reorder per input, and the shuffle's first Reshape
// is then a view.
TEST(TransformerLayers, ShuffleUnitConcatIsOneReorderPerInputIntoAPlainOutput) {
  Model m(17);
  m.input("x", {1, 116, 8, 8});
  m.ints("lo", {0});
  m.ints("mid", {58});
  m.ints("hi", {116});
  m.ints("axis", {1});
  m.weight("w", {58, 58, 1, 1});
  m.ints("split_shape", {1, 2, 58, 8, 8});
  m.ints("flat_shape", {1, 116, 8, 8});
  m.node("Slice", "left", {"x", "lo", "mid", "axis"}, {"a"});
  m.node("Slice", "right", {"x", "mid", "hi", "axis"}, {"b"});
  m.node("Conv", "conv", {"b", "w"}, {"c"});
  set_int(m.node("Concat", "concat", {"a", "c"}, {"cat"}), "axis", 1);
  m.node("Reshape", "split", {"cat", "split_shape"}, {"r"});
  set_ints(m.node("Transpose", "shuffle", {"r"}, {"t"}), "perm", {0, 2, 1, 3, 4});
  m.node("Reshape", "flat", {"t", "flat_shape"}, {"y"});
  m.output_shaped("y", TensorProto::FLOAT, {1, 116, 8, 8});
  const auto steps = run_and_compare(m);
  expect_no_aux(steps);
  int concat_reorders = 0;
  for (const LayerTiming& t : steps) {
    if (t.name == "concat") {
      EXPECT_EQ(t.kind, "reorder") << t.op << " " << t.tactic;
      ++concat_reorders;
    }
    EXPECT_NE(t.name, "split") << t.kind << " " << t.tactic;  // a view: no step
  }
  EXPECT_EQ(concat_reorders, 2);
}

// Split (what torch.split exports) runs as windows
// of its input, one reorder per part, not on the reference kernel. Sizes
// from the opset-11 attribute, the opset-13 input, and opset 18's
// num_outputs with a smaller last part.
TEST(TransformerLayers, SplitRunsAsOneReorderPerPartInEveryOpset) {
  for (int64_t opset : {11, 13, 18}) {
    Model m(opset);
    m.input("x", {2, 10, 4, 4});
    onnx::NodeProto* split = nullptr;
    if (opset == 11) {
      split = m.node("Split", "split", {"x"}, {"a", "b", "c"});
      set_ints(split, "split", {3, 3, 4});
    } else if (opset == 13) {
      m.ints("sizes", {3, 3, 4});
      split = m.node("Split", "split", {"x", "sizes"}, {"a", "b", "c"});
    } else {
      split = m.node("Split", "split", {"x"}, {"a", "b", "c"});
      set_int(split, "num_outputs", 3);  // 4, 4, 2
    }
    set_int(split, "axis", 1);
    const std::vector<int64_t> sizes =
        opset == 18 ? std::vector<int64_t>{4, 4, 2} : std::vector<int64_t>{3, 3, 4};
    const char* names[] = {"a", "b", "c"};
    for (size_t i = 0; i < 3; ++i) {
      const std::string out = std::string("y") + names[i];
      m.node("Relu", std::string("relu_") + names[i], {names[i]}, {out});
      m.output_shaped(out, TensorProto::FLOAT, {2, sizes[i], 4, 4});
    }
    const auto steps = run_and_compare(m);
    expect_no_aux(steps);
    int parts = 0;
    for (const LayerTiming& t : steps) {
      if (t.name != "split") continue;
      EXPECT_EQ(t.kind, "reorder") << "opset " << opset << ": " << t.tactic;
      ++parts;
    }
    EXPECT_EQ(parts, 3) << "opset " << opset;
  }
}

// Inception's branch pool: torch writes avg_pool2d(padding=1,
// count_include_pad) as a zero Pad then an unpadded AveragePool. Lowering
// folds the Pad into the pool, which runs on oneDNN with the padding counted.
TEST(TransformerLayers, ZeroPadBeforeAveragePoolFoldsIntoThePool) {
  Model m(17);
  m.input("x", {1, 8, 10, 10});
  m.ints("pads", {0, 0, 1, 1, 0, 0, 1, 1});
  m.node("Pad", "pad", {"x", "pads"}, {"p"});
  auto* pool = m.node("AveragePool", "pool", {"p"}, {"y"});
  set_ints(pool, "kernel_shape", {3, 3});
  m.output_shaped("y", TensorProto::FLOAT, {1, 8, 10, 10});
  const auto steps = run_and_compare(m);
  expect_no_aux(steps);
  expect_native(steps, "pool");
  ir::Graph lowered = passes::lower(m.import("layers.onnx").graph);
  for (ir::NodeId n : lowered.topological_order()) {
    EXPECT_NE(lowered.node(n).op_type, "Pad");
    if (lowered.node(n).op_type == "AveragePool") {
      EXPECT_EQ(lowered.node(n).attrs.get_ints("pads"), (std::vector<int64_t>{1, 1, 1, 1}));
      EXPECT_EQ(lowered.node(n).attrs.get_int("count_include_pad"), 1);
    }
  }
}

// A Pad that pads something stays (and still matches the reference).
TEST(TransformerLayers, PadThatPadsIsKept) {
  Model m(17);
  m.input("x", {1, 8, 6, 6});
  m.ints("pads", {0, 0, 1, 1, 0, 0, 1, 1});
  m.node("Pad", "pad", {"x", "pads"}, {"y"});
  m.output_shaped("y", TensorProto::FLOAT, {1, 8, 8, 8});
  run_and_compare(m);
  ir::Graph lowered = passes::lower(m.import("layers.onnx").graph);
  int pads = 0;
  for (ir::NodeId n : lowered.topological_order()) pads += lowered.node(n).op_type == "Pad";
  EXPECT_EQ(pads, 1);
}

// x.mean([2, 3]) (ShuffleNetV2's head) lowers to GlobalAveragePool, plus a
// Flatten when the dims are not kept, and runs on oneDNN; a mean over other
// axes stays a ReduceMean.
TEST(TransformerLayers, SpatialReduceMeanRunsAsOneDnnGlobalAveragePool) {
  for (const int64_t keepdims : {0, 1}) {
    Model m(17);
    m.input("x", {2, 8, 5, 7});
    auto* mean = m.node("ReduceMean", "mean", {"x"}, {"y"});
    set_ints(mean, "axes", {-1, 2});
    set_int(mean, "keepdims", keepdims);
    if (keepdims)
      m.output_shaped("y", TensorProto::FLOAT, {2, 8, 1, 1});
    else
      m.output_shaped("y", TensorProto::FLOAT, {2, 8});
    const auto steps = run_and_compare(m);
    expect_no_aux(steps);
    expect_native(steps, "mean");
    ir::Graph lowered = passes::lower(m.import("layers.onnx").graph);
    size_t pools = 0;
    for (ir::NodeId n : lowered.topological_order()) {
      EXPECT_NE(lowered.node(n).op_type, "ReduceMean");
      pools += lowered.node(n).op_type == "GlobalAveragePool";
    }
    EXPECT_EQ(pools, 1u) << "keepdims " << keepdims;
  }
  Model other(17);
  other.input("x", {2, 8, 5, 7});
  set_ints(other.node("ReduceMean", "mean", {"x"}, {"y"}), "axes", {1, 2});
  other.output_shaped("y", TensorProto::FLOAT, {2, 1, 1, 7});
  run_and_compare(other);
  size_t means = 0;
  ir::Graph lowered = passes::lower(other.import("layers.onnx").graph);
  for (ir::NodeId n : lowered.topological_order()) means += lowered.node(n).op_type == "ReduceMean";
  EXPECT_EQ(means, 1u);
}

}  // namespace
}  // namespace kiln
