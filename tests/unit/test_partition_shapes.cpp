// Shape values that cross engine segments: a Shape (or a Shape → Gather →
// Concat chain) computed in one engine that decides a shape input of a node
// in a later engine, with a data-dependent node between the two.
#include <gtest/gtest.h>

#include <onnx/onnx_pb.h>

#include <cmath>
#include <set>
#include <string>
#include <vector>

#include "backends/registry/backend_registry.hpp"
#include "frontend/onnx/onnx_importer.hpp"
#include "partition/partition.hpp"
#include "passes/passes.hpp"
#include "reference/executor.hpp"
#include "runtime/compiled_model.hpp"
#include "test_helpers.hpp"
#include "zoo/model_builder.hpp"

namespace kiln {
namespace {

using runtime::CompiledModel;

// input [N, 4, 8, 8] → Relu = r. From r's shape, in the first engine:
// target = Concat(Gather(Shape(r), [0]), [-1]) = [N, -1]. A NonZero count
// of r (which falls back) is added to r: y. The second engine reshapes y to
// `target` and expands a [1, 1] slice of it to `Shape(r)`'s first two dims:
// both shape inputs come from the first engine.
std::string crossing_shape_model() {
  zoo::ModelBuilder b("crossing_shape", 13, 7);
  const std::vector<zoo::IoDim> dims{zoo::IoDim{0, "batch"}, {4, {}}, {8, {}}, {8, {}}};
  b.add_input("input", onnx::TensorProto::FLOAT, dims);
  std::string zero = b.int64_constant("zero", {1}, {0});
  std::string one = b.int64_constant("one", {}, {1});
  std::string minus_one = b.int64_constant("minus_one", {1}, {-1});
  std::string two = b.int64_constant("two", {1}, {2});
  std::string scale = b.float_constant("scale", {}, {1.0f / 1024});
  std::string r = b.node("Relu", "relu", {"input"});
  std::string s = b.node("Shape", "shape", {r});
  std::string n = b.node("Gather", "batch", {s, zero}, {zoo::Attr::of("axis", int64_t{0})});
  std::string target = b.node("Concat", "target", {n, minus_one}, {zoo::Attr::of("axis", int64_t{0})});
  std::string nc = b.node("Slice", "batch_channels", {s, zero, two});
  std::string nz = b.node("NonZero", "nonzero", {r});
  std::string count = b.node("Gather", "count", {b.node("Shape", "nz_shape", {nz}), one},
                             {zoo::Attr::of("axis", int64_t{0})});
  std::string f = b.node("Cast", "cast", {count}, {zoo::Attr::of("to", int64_t{onnx::TensorProto::FLOAT})});
  std::string y = b.node("Add", "add", {r, b.node("Mul", "scaled", {f, scale})});
  std::string flat = b.node("Reshape", "reshape", {y, target});
  std::string out = b.node("Softmax", "softmax", {flat}, {zoo::Attr::of("axis", int64_t{1})});
  std::string corner = b.node("Slice", "corner",
                              {y, b.int64_constant("starts", {2}, {0, 0}),
                               b.int64_constant("ends", {2}, {1, 1}), b.int64_constant("axes", {2}, {0, 1})});
  std::string grid =
      b.node("ReduceMean", "grid", {corner},
             {zoo::Attr::of("axes", std::vector<int64_t>{2, 3}), zoo::Attr::of("keepdims", int64_t{0})});
  std::string wide = b.node("Expand", "expand", {grid, nc});
  b.add_output(out, onnx::TensorProto::FLOAT, {zoo::IoDim{0, "batch"}, {256, {}}});
  b.add_output(wide, onnx::TensorProto::FLOAT, {zoo::IoDim{0, "batch"}, {4, {}}});
  return b.serialize();
}

void expect_matches_reference(CompiledModel& compiled, const ir::Graph& graph, int64_t batch) {
  std::vector<Tensor> in{testing::ramp_tensor({batch, 4, 8, 8})};
  auto got = compiled.run(in);
  auto want = ref::Executor(graph).run(in);
  ASSERT_EQ(got.size(), want.size());
  for (size_t o = 0; o < want.size(); ++o) {
    ASSERT_EQ(got[o].shape(), want[o].shape()) << "output " << o << " batch " << batch;
    auto g = got[o].data<float>();
    auto w = want[o].data<float>();
    for (size_t i = 0; i < w.size(); ++i)
      ASSERT_NEAR(g[i], w[i], 1e-4 * (1 + std::fabs(w[i]))) << "output " << o << " element " << i;
  }
}

TEST(PartitionShapes, AShapeFromAnEarlierEngineStaysShapeOnlyInTheLaterEngine) {
  testing::TempDir dir;
  std::string bytes = crossing_shape_model();
  auto model =
      frontend::import_onnx_bytes(std::as_bytes(std::span<const char>(bytes)), "crossing_shape.onnx");
  std::vector<InputSpec> specs{{"input", DType::float32, {1, 4, 8, 8}, {2, 4, 8, 8}, {5, 4, 8, 8}}};
  auto compiled = CompiledModel::compile(model.graph, specs, testing::fast_settings(dir.path()));
  const auto& segments = compiled.report().segments;
  ASSERT_EQ(segments.size(), 3u);
  EXPECT_TRUE(segments[0].engine) << segments[0].reason;
  EXPECT_FALSE(segments[1].engine);
  EXPECT_TRUE(segments[2].engine) << segments[2].reason;

  // The later engine knows the Reshape's result shape per input shape: the
  // Reshape is a view and the Softmax after it runs on oneDNN, neither on an
  // aux (reference) kernel. (Expand is an aux kernel either way; the
  // comparison below checks it.)
  runtime::ModelProfile profile =
      compiled.profile(std::vector<Tensor>{testing::ramp_tensor({3, 4, 8, 8})}, 1, 0);
  for (const auto& layer : profile.layers) {
    if (layer.segment != 2) continue;
    if (layer.timing.op == "Reshape" || layer.timing.op == "Softmax") {
      EXPECT_NE(layer.timing.kind, "aux") << layer.timing.name << " (" << layer.timing.op << ")";
    }
  }
  for (int64_t batch : {1, 2, 3, 5}) expect_matches_reference(compiled, model.graph, batch);
}

// The mechanism itself: the later segment computes the shape values again
// from r (which it reads anyway), so the first segment no longer hands the
// target shape or the Slice of Shape(r) over.
TEST(PartitionShapes, ALaterSegmentReadsTheShapedValueInsteadOfTheShape) {
  std::string bytes = crossing_shape_model();
  auto model =
      frontend::import_onnx_bytes(std::as_bytes(std::span<const char>(bytes)), "crossing_shape.onnx");
  ir::Graph lowered = passes::lower(model.graph);
  std::vector<InputSpec> specs{{"input", DType::float32, {1, 4, 8, 8}, {2, 4, 8, 8}, {5, 4, 8, 8}}};
  auto backend = make_backend("cpu");
  auto segments = partition::plan_segments(lowered, *backend, specs, 1);
  ASSERT_EQ(segments.size(), 3u);
  auto at_min = partition::types_at(lowered, specs, &InputSpec::min);
  auto at_opt = partition::types_at(lowered, specs, &InputSpec::opt);
  auto at_max = partition::types_at(lowered, specs, &InputSpec::max);
  const std::vector<bool> recompute = partition::recomputable_shape_values(lowered, at_min, at_opt, at_max);

  auto names = [&](const std::vector<ir::ValueId>& values) {
    std::set<std::string> out;
    for (ir::ValueId v : values) out.insert(lowered.value(v).name);
    return out;
  };
  const partition::Subgraph first = partition::extract_subgraph(lowered, segments[0], recompute);
  const partition::Subgraph last = partition::extract_subgraph(lowered, segments[2], recompute);
  EXPECT_EQ(names(first.outputs), std::set<std::string>{"relu_out"});
  EXPECT_EQ(names(last.inputs).count("target_out"), 0u);
  EXPECT_EQ(names(last.inputs).count("batch_channels_out"), 0u);
  EXPECT_EQ(names(last.inputs).count("relu_out"), 1u);
  // Without recomputation the shape values cross as plain inputs.
  const partition::Subgraph plain = partition::extract_subgraph(lowered, segments[2]);
  EXPECT_EQ(names(plain.inputs).count("target_out"), 1u);
}

}  // namespace
}  // namespace kiln
