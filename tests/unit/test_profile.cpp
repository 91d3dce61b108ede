// Profiled runs: every engine step and fallback node once, labelled with its
// nodes, ops, tactic and kind; shares that add up; the outputs of a normal
// run. No timing is asserted.
#include <gtest/gtest.h>

#include <onnx/onnx_pb.h>
#include <cmath>
#include <map>
#include <set>

#include "backends/cpu/cpu_backend.hpp"
#include "cpu_test_helpers.hpp"
#include "fallback_model.hpp"
#include "frontend/onnx/onnx_importer.hpp"
#include "runtime/compiled_model.hpp"
#include "test_helpers.hpp"
#include "zoo/model_builder.hpp"

namespace kiln {
namespace {

using runtime::CompiledModel;
using runtime::ModelProfile;

void expect_same(const std::vector<Tensor>& got, const std::vector<Tensor>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_EQ(got[i].shape(), want[i].shape());
    auto g = got[i].data<float>();
    auto w = want[i].data<float>();
    for (size_t j = 0; j < w.size(); ++j) ASSERT_EQ(g[j], w[j]) << "output " << i << " element " << j;
  }
}

void expect_consistent(const ModelProfile& p, int runs) {
  EXPECT_EQ(p.runs, runs);
  ASSERT_FALSE(p.layers.empty());
  double percent = 0, ms = 0, by_kind = 0;
  const std::set<std::string> kinds{"onednn", "aux", "native", "reorder", "reference"};
  for (const runtime::ProfileLayer& l : p.layers) {
    EXPECT_TRUE(kinds.contains(l.timing.kind)) << l.timing.kind;
    EXPECT_GE(l.timing.ms, 0);
    EXPECT_FALSE(l.timing.op.empty());
    EXPECT_FALSE(l.timing.tactic.empty());
    EXPECT_FALSE(l.timing.nodes.empty());
    percent += l.percent;
    ms += l.timing.ms;
  }
  for (const auto& [kind, kind_ms] : p.by_kind_ms) by_kind += kind_ms;
  EXPECT_NEAR(percent, 100.0, 1e-6);
  EXPECT_NEAR(ms, p.total_ms, 1e-9 * (1 + ms));
  EXPECT_NEAR(by_kind, p.total_ms, 1e-9 * (1 + ms));
  auto slowest = p.slowest(3);
  ASSERT_EQ(slowest.size(), std::min<size_t>(3, p.layers.size()));
  for (size_t i = 1; i < slowest.size(); ++i) {
    EXPECT_GE(p.layers[slowest[i - 1]].timing.ms, p.layers[slowest[i]].timing.ms);
  }
}

TEST(Profile, EngineRunProfiledLabelsEveryStepAndMatchesRun) {
  auto backend = make_cpu_backend();
  ir::Graph graph = testing::import_zoo("resnet_tiny", 3, 1);
  std::vector<Tensor> inputs{testing::sine_images(1, 64)};
  auto engine = testing::build_engine(*backend, graph, inputs, 1);
  auto want = engine->run(inputs);
  std::vector<LayerTiming> timings;
  auto got = engine->run_profiled(inputs, timings);
  expect_same(got, want);
  expect_same(engine->run(inputs), want);

  // Every layer of the engine but the zero-copy views is one oneDNN step
  // (resnet_tiny has no reference-kernel layers), except its global average
  // pool, kiln's own loop; each node in exactly one.
  std::vector<std::string> primitive_names;
  std::map<std::string, int> node_uses;
  bool fused = false;
  for (const LayerTiming& t : timings) {
    if (t.kind == "reorder") {
      EXPECT_EQ(t.op, "Reorder");
      continue;
    }
    if (t.op == "GlobalAveragePool") {
      EXPECT_EQ(t.kind, "native") << t.name;
      EXPECT_EQ(t.tactic, "native:global_average") << t.name;
    } else {
      EXPECT_EQ(t.kind, "onednn") << t.name;
    }
    EXPECT_EQ(t.name, t.nodes.front());
    primitive_names.push_back(t.name);
    for (const std::string& n : t.nodes) ++node_uses[n];
    if (t.op.find("Conv+") == 0) {
      fused = true;
      EXPECT_GT(t.nodes.size(), 1u) << t.op;
    }
  }
  for (const auto& [node, uses] : node_uses) EXPECT_EQ(uses, 1) << node;
  EXPECT_TRUE(fused);
  std::vector<std::string> layer_names;
  const std::set<std::string> views{"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Transpose"};
  for (const LayerReport& r : engine->info().layers) {
    if (!views.contains(r.op)) layer_names.push_back(r.name);  // a zero-copy view has no step
  }
  EXPECT_EQ(primitive_names, layer_names);
  EXPECT_EQ(timings.back().name, "outputs");
}

TEST(Profile, CompiledModelProfileOfResnetTiny) {
  testing::TempDir dir;
  ir::Graph graph = testing::import_zoo("resnet_tiny", 3, 1);
  std::vector<Tensor> inputs{testing::sine_images(1, 64)};
  auto compiled =
      CompiledModel::compile(graph, testing::fixed_specs(graph, inputs), testing::fast_settings(dir.path()));
  auto want = compiled.run(inputs);
  ModelProfile p = compiled.profile(inputs, 3);
  expect_consistent(p, 3);
  expect_same(p.outputs, want);
  EXPECT_GT(p.by_kind_ms.count("onednn"), 0u);
  EXPECT_EQ(p.by_kind_ms.count("reference"), 0u);
  for (const runtime::ProfileLayer& l : p.layers) EXPECT_EQ(l.segment, 0);
}

TEST(Profile, ReferenceKernelsInsideAnEngineAreAuxLayers) {
  testing::TempDir dir;
  ir::Graph graph = testing::import_zoo("bert_tiny", 3, 1);
  std::vector<Tensor> inputs = testing::bert_inputs(1, 16);
  auto compiled =
      CompiledModel::compile(graph, testing::fixed_specs(graph, inputs), testing::fast_settings(dir.path()));
  auto want = compiled.run(inputs);
  ModelProfile p = compiled.profile(inputs, 2);
  expect_consistent(p, 2);
  ASSERT_EQ(p.outputs.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(testing::relative_error(p.outputs[i], want[i]), 0.0);
  bool gather = false;
  for (const runtime::ProfileLayer& l : p.layers) gather |= l.timing.kind == "aux" && l.timing.op == "Gather";
  EXPECT_TRUE(gather);
  EXPECT_GT(p.by_kind_ms.count("onednn"), 0u);
}

// Two blocks of Conv → Relu → NonZero ...: NonZero falls back to the
// reference backend; the Gather and Cast of its count run as reference
// kernels inside the next engine.
std::string nonzero_model() { return testing::nonzero_blocks_model(2, 5, 1); }

TEST(Profile, FallbackNodesAreReferenceLayers) {
  testing::TempDir dir;
  const std::string bytes = nonzero_model();
  auto model = frontend::import_onnx_bytes(std::as_bytes(std::span<const char>(bytes)), "nonzero.onnx");
  std::vector<Tensor> inputs{testing::ramp_tensor({1, 4, 8, 8})};
  auto compiled = CompiledModel::compile(model.graph, testing::fixed_specs(model.graph, inputs),
                                         testing::fast_settings(dir.path()));
  auto want = compiled.run(inputs);
  ModelProfile p = compiled.profile(inputs, 2);
  expect_consistent(p, 2);
  expect_same(p.outputs, want);
  const auto& segments = compiled.report().segments;
  int nonzero = 0;
  for (const runtime::ProfileLayer& l : p.layers) {
    ASSERT_LT(static_cast<size_t>(l.segment), segments.size());
    EXPECT_EQ(l.timing.kind == "reference", !segments[static_cast<size_t>(l.segment)].engine)
        << l.timing.name;
    if (l.timing.op == "NonZero") {
      ++nonzero;
      EXPECT_EQ(l.timing.kind, "reference");
    }
  }
  EXPECT_EQ(nonzero, 2);
  EXPECT_GT(p.by_kind_ms.count("reference"), 0u);
  EXPECT_GT(p.by_kind_ms.count("aux") + p.by_kind_ms.count("onednn"), 0u);
}

}  // namespace
}  // namespace kiln
