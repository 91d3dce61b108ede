// Partitioning with fallback: engines for the supported regions, the
// reference backend for the rest, each engine its own cache entry.
#include <gtest/gtest.h>

#include <onnx/onnx_pb.h>
#include <cmath>

#include "fallback_model.hpp"
#include "frontend/onnx/onnx_importer.hpp"
#include "reference/executor.hpp"
#include "runtime/compiled_model.hpp"
#include "test_helpers.hpp"
#include "zoo/model_builder.hpp"
#include "zoo/zoo.hpp"

namespace kiln {
namespace {

using runtime::CompiledModel;

frontend::ImportedModel import(const std::string& bytes) {
  return frontend::import_onnx_bytes(std::as_bytes(std::span<const char>(bytes)), "repeated_blocks.onnx");
}

Tensor input_of(int64_t batch) { return testing::ramp_tensor({batch, 4, 8, 8}); }

std::vector<InputSpec> batch_range(int64_t min, int64_t opt, int64_t max) {
  return {{"input", DType::float32, {min, 4, 8, 8}, {opt, 4, 8, 8}, {max, 4, 8, 8}}};
}

void expect_matches_reference(CompiledModel& compiled, const ir::Graph& graph, int64_t batch) {
  std::vector<Tensor> in{input_of(batch)};
  auto got = compiled.run(in);
  auto want = ref::Executor(graph).run(in);
  ASSERT_EQ(got.size(), want.size());
  for (size_t o = 0; o < want.size(); ++o) {
    ASSERT_EQ(got[o].shape(), want[o].shape()) << "output " << o;
    auto g = got[o].data<float>();
    auto w = want[o].data<float>();
    for (size_t i = 0; i < w.size(); ++i)
      ASSERT_NEAR(g[i], w[i], 1e-4 * (1 + std::fabs(w[i]))) << "output " << o << " element " << i;
  }
}

TEST(Partition, UnsupportedNodesFallBackAndOutputsMatchTheReference) {
  testing::TempDir dir;
  auto model = import(testing::nonzero_blocks_model(5, 1));
  auto compiled =
      CompiledModel::compile(model.graph, batch_range(1, 2, 4), testing::fast_settings(dir.path()));
  const auto& report = compiled.report();
  // engine, fallback, engine, fallback, ... engine: 6 engines, 5 fallbacks.
  ASSERT_EQ(report.segments.size(), 11u);
  for (size_t s = 0; s < report.segments.size(); ++s) {
    EXPECT_EQ(report.segments[s].engine, s % 2 == 0) << "segment " << s << ": " << report.segments[s].reason;
  }
  EXPECT_NE(report.segments[1].reason.find("NonZero"), std::string::npos) << report.segments[1].reason;
  EXPECT_EQ(report.engines.size(), 6u);
  // What passes between segments at every run, at the opt batch of 2: each
  // fallback (NonZero, Shape) reads its block's Relu output [2,4,8,8] (2048
  // bytes); each later engine reads that too, from the engine before, and
  // the NonZero's shape (2 int64s) for its Gather, Cast, Mul and Add.
  EXPECT_EQ(report.segments[0].values_in, 0u);
  for (size_t s = 1; s < report.segments.size(); ++s) {
    const runtime::SegmentRecord& seg = report.segments[s];
    EXPECT_EQ(seg.values_in, seg.engine ? 2u : 1u) << "segment " << s;
    EXPECT_EQ(seg.bytes_in, seg.engine ? 2064u : 2048u) << "segment " << s;
    EXPECT_EQ(seg.values_unsized, 0u) << "segment " << s;
  }
  for (int64_t batch : {1, 2, 3, 4}) expect_matches_reference(compiled, model.graph, batch);
}

TEST(Partition, IdenticalSubgraphsShareOneEntryWithinAndAcrossModels) {
  testing::TempDir dir;
  auto a = import(testing::nonzero_blocks_model(5, 1));
  auto cold = CompiledModel::compile(a.graph, batch_range(1, 2, 4), testing::fast_settings(dir.path()));
  const auto& engines = cold.report().engines;
  ASSERT_EQ(engines.size(), 6u);
  // The first engine (Conv → Relu from the input) and the last (no Conv) are
  // their own; the four middle ones are one architecture, built once.
  EXPECT_EQ(engines[0].status, "miss");
  EXPECT_EQ(engines[1].status, "miss");
  for (size_t e = 2; e < 5; ++e) {
    EXPECT_EQ(engines[e].key, engines[1].key);
    EXPECT_EQ(engines[e].status, "hit") << engines[e].reason;
  }
  EXPECT_EQ(engines[5].status, "miss");
  EXPECT_NE(engines[0].key, engines[1].key);
  expect_matches_reference(cold, a.graph, 3);

  // Another model of the architecture, other weights: every engine hits and
  // computes this model's function.
  auto b = import(testing::nonzero_blocks_model(5, 2));
  auto warm = CompiledModel::compile(b.graph, batch_range(1, 2, 4), testing::fast_settings(dir.path()));
  for (const auto& e : warm.report().engines) EXPECT_EQ(e.status, "hit") << e.reason;
  expect_matches_reference(warm, b.graph, 3);
}

TEST(Partition, EnginesSmallerThanMinBlockSizeFallBack) {
  testing::TempDir dir;
  auto model = import(testing::nonzero_blocks_model(3, 1));
  auto settings = testing::fast_settings(dir.path());
  settings.min_block_size = 3;  // the first engine (Conv, Relu) and the last (4 nodes) stay
  auto compiled = CompiledModel::compile(model.graph, batch_range(2, 2, 2), settings);
  const auto& segments = compiled.report().segments;
  ASSERT_FALSE(segments.empty());
  EXPECT_FALSE(segments[0].engine);
  EXPECT_NE(segments[0].reason.find("min_block_size 3"), std::string::npos) << segments[0].reason;
  EXPECT_EQ(compiled.report().engines.size(), 3u);
  expect_matches_reference(compiled, model.graph, 2);

  settings.min_block_size = 100;  // nothing is big enough: all on the reference backend
  auto all_ref = CompiledModel::compile(model.graph, batch_range(2, 2, 2), settings);
  EXPECT_TRUE(all_ref.report().engines.empty());
  ASSERT_EQ(all_ref.report().segments.size(), 1u);
  expect_matches_reference(all_ref, model.graph, 2);
}

// Shapes that static inference cannot tell inside a model (BERT's
// Shape → Slice → Concat → Reshape chains) must not split it: the engine
// infers them at run time. Every zoo model is one engine.
TEST(Partition, ZooModelsAreOneEngineEach) {
  testing::TempDir dir;
  for (const char* name : {"resnet_tiny", "mobilenet_tiny", "bert_tiny", "bert_tiny_decomposed"}) {
    std::string bytes = zoo::build_zoo_model(name, {1, std::nullopt}).onnx_bytes;
    auto model = frontend::import_onnx_bytes(std::as_bytes(std::span<const char>(bytes)), name);
    std::vector<InputSpec> specs;
    for (ir::ValueId id : model.graph.inputs()) {
      const ir::Value& v = model.graph.value(id);
      std::vector<int64_t> min, opt, max;
      for (const ir::Dim& d : *v.type.shape) {
        min.push_back(d.is_static() ? d.value() : 1);
        opt.push_back(d.is_static() ? d.value() : 2);
        max.push_back(d.is_static() ? d.value() : 4);
      }
      specs.push_back({v.name, v.type.dtype, min, opt, max});
    }
    auto compiled = CompiledModel::compile(model.graph, specs, testing::fast_settings(dir.path()));
    ASSERT_EQ(compiled.report().segments.size(), 1u) << name;
    EXPECT_TRUE(compiled.report().segments[0].engine) << name << ": " << compiled.report().segments[0].reason;
  }
}

TEST(Partition, AShapeOutsideTheRangeNamesTheInputDimAndRange) {
  testing::TempDir dir;
  auto model = import(testing::nonzero_blocks_model(2, 1));
  auto compiled =
      CompiledModel::compile(model.graph, batch_range(1, 2, 4), testing::fast_settings(dir.path()));
  std::vector<Tensor> in{input_of(5)};
  try {
    compiled.run(in);
    FAIL() << "batch 5 ran on an engine compiled for 1..4";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("input 'input' dim 0 is 5, outside the compiled range [1, 4]"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace kiln
