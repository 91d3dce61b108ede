// Gather layers: a Slice or Split part, the views after it and the Transpose
// that ends them run as one strided copy (attention's Q, K and V heads). And
// Gather nodes of one constant index, which run as slice layers.
// Host tests: which chains fuse, and the plan's round trip; GPU tests
// (label gpu): engines against the reference backend, for a chain that is
// one walk and one that needs the slice's copy first.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <string>
#include <vector>

#include "backends/cuda/cuda_layers.hpp"
#include "backends/cuda/cuda_plan_format.hpp"
#include "cuda_test_support.hpp"
#include "ir/op_schema.hpp"
#include "reference/executor.hpp"
#include "runtime/compiled_model.hpp"

namespace kiln {
namespace {

using testing::add_node;
using testing::int64s;
using testing::ints;
using testing::ramp;
using testing::relative_error;

// x [2, 5, 36] → Split(axis 2) into Q, K, V [2, 5, 12] → Reshape [2, 5, 3, 4]
// → Transpose (Q, V: [0, 2, 1, 3]; K: [0, 2, 3, 1]) → softmax(Q·Kᵀ)·V.
// With `extra_reader`, Q's split part is also a graph output: it must stay.
ir::Graph attention_heads(bool extra_reader) {
  ir::Graph g;
  g.source = "attention_heads";
  const ir::ValueId x = g.add_value("x", {DType::float32, ir::Dims{2, 5, 36}});
  g.add_input(x);
  std::vector<ir::ValueId> parts, heads;
  for (const char* p : {"q", "k", "v"}) parts.push_back(g.add_value(p));
  ir::Attributes axis2;
  axis2.set("axis", int64_t{2});
  add_node(g, "Split", {x, int64s(g, "sizes", {12, 12, 12})}, parts, axis2);
  const ir::ValueId target = int64s(g, "heads_shape", {2, 5, 3, 4});
  for (size_t i = 0; i < 3; ++i) {
    const ir::ValueId r = g.add_value(g.value(parts[i]).name + "_r");
    const ir::ValueId t = g.add_value(g.value(parts[i]).name + "_t");
    add_node(g, "Reshape", {parts[i], target}, {r});
    add_node(g, "Transpose", {r}, {t},
             ints("perm", i == 1 ? std::vector<int64_t>{0, 2, 3, 1} : std::vector<int64_t>{0, 2, 1, 3}));
    heads.push_back(t);
  }
  const ir::ValueId scores = g.add_value("scores"), probs = g.add_value("probs"), y = g.add_value("y");
  add_node(g, "MatMul", {heads[0], heads[1]}, {scores});
  ir::Attributes last;
  last.set("axis", int64_t{-1});
  add_node(g, "Softmax", {scores}, {probs}, last);
  add_node(g, "MatMul", {probs, heads[2]}, {y});
  g.add_output(y);
  if (extra_reader) g.add_output(parts[0]);
  ir::infer_shapes(g);
  return g;
}

// x [4, 10] → Slice columns 0..6 [4, 6] → Reshape [24] → Transpose: merging
// the sliced rows is no walk over x, so the slice is copied first.
ir::Graph slice_then_merge() {
  ir::Graph g;
  g.source = "slice_then_merge";
  const ir::ValueId x = g.add_value("x", {DType::float32, ir::Dims{4, 10}});
  g.add_input(x);
  const ir::ValueId s = g.add_value("s"), r = g.add_value("r"), t = g.add_value("t"), y = g.add_value("y");
  add_node(g, "Slice", {x, int64s(g, "starts", {0}), int64s(g, "ends", {6}), int64s(g, "axes", {1})}, {s});
  add_node(g, "Reshape", {s, int64s(g, "flat", {24})}, {r});
  add_node(g, "Transpose", {r}, {t}, ints("perm", {0}));
  add_node(g, "Relu", {t}, {y});
  g.add_output(y);
  ir::infer_shapes(g);
  return g;
}

size_t count_kind(const std::vector<cuda::Layer>& layers, cuda::LayerKind kind) {
  return static_cast<size_t>(
      std::count_if(layers.begin(), layers.end(), [kind](const cuda::Layer& l) { return l.kind == kind; }));
}

// x [2, 5, 8] → Gather(axis 1, scalar index 0) → [2, 8] (a class token, x[:, 0])
// → Relu; and Gather(axis 2, index [-1]) → [2, 5, 1] → Transpose [2, 1, 5]:
// each Gather of one constant index is a slice layer, never part of a
// gather chain. A Gather of indices the model computes stays off the GPU.
ir::Graph constant_index_gathers() {
  ir::Graph g;
  g.source = "constant_index_gathers";
  const ir::ValueId x = g.add_value("x", {DType::float32, ir::Dims{2, 5, 8}});
  g.add_input(x);
  const ir::ValueId token = g.add_value("token"), y0 = g.add_value("y0");
  const ir::ValueId last = g.add_value("last"), y1 = g.add_value("y1");
  ir::Attributes axis1, axis2;
  axis1.set("axis", int64_t{1});
  axis2.set("axis", int64_t{2});
  add_node(g, "Gather", {x, g.add_initializer("zero", Tensor::scalar<int64_t>(0))}, {token}, axis1);
  add_node(g, "Relu", {token}, {y0});
  add_node(g, "Gather", {x, int64s(g, "minus_one", {-1})}, {last}, axis2);
  add_node(g, "Transpose", {last}, {y1}, ints("perm", {0, 2, 1}));
  g.add_output(y0);
  g.add_output(y1);
  ir::infer_shapes(g);
  return g;
}

// The layers through a plan's serialization and back (a Split's node is in
// a layer per output).
void expect_plan_round_trip(const ir::Graph& g, const std::vector<cuda::Layer>& layers) {
  cuda::Plan plan;
  plan.graph = g;
  plan.layers = layers;
  plan.specs = {InputSpec::fixed("x", DType::float32, {2, 5, 36})};
  plan.fingerprint = {"cuda", cuda::k_plan_version, "test", "sm_90 x1"};
  for (cuda::Layer& l : plan.layers) {
    if (l.kind == cuda::LayerKind::matmul) l.tactic.lt_algo.assign(64, 0x5a);
  }
  const cuda::Plan back = cuda::parse_plan(cuda::serialize_plan(plan));
  ASSERT_EQ(back.layers.size(), plan.layers.size());
  for (size_t i = 0; i < plan.layers.size(); ++i) {
    EXPECT_EQ(back.layers[i].kind, plan.layers[i].kind) << i;
    EXPECT_EQ(back.layers[i].nodes, plan.layers[i].nodes) << i;
    EXPECT_EQ(back.layers[i].output, plan.layers[i].output) << i;
  }
}

TEST(CudaGather, EachSplitReshapeTransposeChainIsOneGatherLayer) {
  const ir::Graph g = attention_heads(false);
  const auto layers = cuda::partition_layers(g);
  EXPECT_EQ(count_kind(layers, cuda::LayerKind::gather), 3u);
  EXPECT_EQ(count_kind(layers, cuda::LayerKind::slice), 0u);
  EXPECT_EQ(count_kind(layers, cuda::LayerKind::view), 0u);
  EXPECT_EQ(count_kind(layers, cuda::LayerKind::transpose), 0u);
  for (const cuda::Layer& l : layers) {
    if (l.kind != cuda::LayerKind::gather) continue;
    ASSERT_EQ(l.nodes.size(), 3u);
    EXPECT_EQ(g.node(l.nodes[0]).op_type, "Split");
    EXPECT_EQ(g.node(l.nodes[1]).op_type, "Reshape");
    EXPECT_EQ(g.node(l.nodes[2]).op_type, "Transpose");
    EXPECT_EQ(l.output, g.node(l.nodes[2]).outputs[0]);
  }
  expect_plan_round_trip(g, layers);
}

TEST(CudaGather, AChainWhosePartsAnotherReaderNeedsStaysAsItIs) {
  const ir::Graph g = attention_heads(true);
  const auto layers = cuda::partition_layers(g);
  EXPECT_EQ(count_kind(layers, cuda::LayerKind::gather), 2u);  // K and V
  EXPECT_EQ(count_kind(layers, cuda::LayerKind::slice), 1u);   // Q's part is a graph output
  EXPECT_EQ(count_kind(layers, cuda::LayerKind::transpose), 1u);
  expect_plan_round_trip(g, layers);  // a slice layer and two gathers of one Split
}

TEST(CudaGather, ASliceReshapeTransposeChainFusesToo) {
  const auto layers = cuda::partition_layers(slice_then_merge());
  EXPECT_EQ(count_kind(layers, cuda::LayerKind::gather), 1u);
  EXPECT_EQ(count_kind(layers, cuda::LayerKind::slice), 0u);
}

TEST(CudaGather, AGatherOfOneConstantIndexIsASliceLayer) {
  const ir::Graph g = constant_index_gathers();
  for (ir::NodeId id = 0; id < static_cast<ir::NodeId>(g.num_nodes()); ++id)
    EXPECT_EQ(cuda::unsupported_reason(g, id), std::nullopt) << g.node(id).describe();
  const auto layers = cuda::partition_layers(g);
  EXPECT_EQ(count_kind(layers, cuda::LayerKind::slice), 2u);
  EXPECT_EQ(count_kind(layers, cuda::LayerKind::gather), 0u);
  expect_plan_round_trip(g, layers);

  // Indices computed at run time (here a graph input) are not one window.
  ir::Graph h;
  const ir::ValueId x = h.add_value("x", {DType::float32, ir::Dims{2, 5, 8}});
  const ir::ValueId i = h.add_value("i", {DType::int64, ir::Dims{}});
  const ir::ValueId y = h.add_value("y");
  h.add_input(x);
  h.add_input(i);
  const ir::NodeId gather = add_node(h, "Gather", {x, i}, {y});
  h.add_output(y);
  ir::infer_shapes(h);
  EXPECT_NE(cuda::unsupported_reason(h, gather), std::nullopt);
}

// ---- on a GPU (label gpu) ----

using CudaGatherGpu = testing::GpuTest;

TEST_F(CudaGatherGpu, GatherLayersMatchTheReference) {
  for (const ir::Graph& g :
       {attention_heads(false), attention_heads(true), slice_then_merge(), constant_index_gathers()}) {
    std::vector<InputSpec> specs;
    std::vector<Tensor> inputs;
    for (ir::ValueId v : g.inputs()) {
      const auto shape = g.value(v).type.static_shape();
      specs.push_back(InputSpec::fixed(g.value(v).name, DType::float32, shape));
      inputs.push_back(ramp(shape));
    }
    for (auto precisions :
         {std::set<Precision>{Precision::fp32}, std::set<Precision>{Precision::fp32, Precision::fp16}}) {
      CompileSettings s = settings();
      s.enabled_precisions = precisions;
      auto compiled = runtime::CompiledModel::compile(g, specs, s);
      ref::Executor reference(g);
      const auto want = reference.run(inputs);
      const auto got = compiled.run(inputs);
      ASSERT_EQ(got.size(), want.size());
      const double bound = precisions.count(Precision::fp16) ? 1e-2 : 1e-5;
      for (size_t o = 0; o < got.size(); ++o)
        EXPECT_LT(relative_error(got[o], want[o]), bound) << g.source << " output " << o;
    }
  }
}

}  // namespace
}  // namespace kiln
