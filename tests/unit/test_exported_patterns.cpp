// Patterns that PyTorch's exporter writes for today's vision transformers,
// in miniature, compiled for the cpu backend: the whole model must be one
// engine (nothing left to the reference fallback) and match the reference.
//
// Swin's shifted-window attention builds its mask from shapes alone
// (Shape -> ConstantOfShape -> ScatterND -> Equal/Not -> Where) and adds it to
// the attention logits, and torchvision passes `training=True` with p=0 to
// its attention dropout, which the exporter writes as a Dropout whose
// training_mode is on and whose ratio is 0: an identity.
#include <gtest/gtest.h>

#include <onnx/onnx_pb.h>
#include <cmath>

#include "onnx_test_model.hpp"
#include "passes/passes.hpp"
#include "reference/executor.hpp"
#include "runtime/compiled_model.hpp"
#include "test_helpers.hpp"

namespace kiln {
namespace {

using onnx::TensorProto;
using testing::ProtoModel;
using testing::set_int;
using testing::set_scalar_tensor;

// x [1, 4, 4] + mask (-100 where the bottom-right 2x2 window is), through a
// Dropout(ratio 0, training on), then Softmax over the last axis.
ProtoModel swin_mask_model() {
  ProtoModel m(17);
  m.input("x", TensorProto::FLOAT, {1, 4, 4});
  set_int(m.node("Shape", {"x"}, "hw"), "start", 1);  // [4, 4]
  set_scalar_tensor(m.node("ConstantOfShape", {"hw"}, "zeros"), "value", TensorProto::FLOAT, 0);
  m.indices("four", {1}, {4});
  set_scalar_tensor(m.node("ConstantOfShape", {"four"}, "ones"), "value", TensorProto::FLOAT, 1);
  m.indices("window", {4, 2}, {2, 2, 2, 3, -1, 2, 3, -1});
  m.node("ScatterND", {"zeros", "window", "ones"}, "mask");
  m.node("Equal", {"mask", "zeros"}, "outside");
  m.node("Not", {"outside"}, "inside");
  m.floats("minus100", {}, {-100});
  m.floats("zero", {}, {0});
  m.node("Where", {"inside", "minus100", "zero"}, "bias");
  m.node("Add", {"x", "bias"}, "logits");
  m.floats("ratio", {}, {0});
  m.boolean("training", true);
  m.node("Dropout", {"logits", "ratio", "training"}, "dropped");
  set_int(m.node("Softmax", {"dropped"}, "y"), "axis", -1);
  m.output("y", TensorProto::FLOAT, 3);
  return m;
}

TEST(ExportedPatterns, SwinMaskAndZeroDropoutAreOneCpuEngine) {
  auto model = swin_mask_model().import("swin_mask.onnx");
  testing::TempDir dir;
  auto compiled = runtime::CompiledModel::compile(
      model.graph, {InputSpec::fixed("x", DType::float32, {1, 4, 4})}, testing::fast_settings(dir.path()));
  const auto& segments = compiled.report().segments;
  ASSERT_EQ(segments.size(), 1u);
  EXPECT_TRUE(segments[0].engine) << segments[0].reason;

  std::vector<Tensor> in{Tensor::zeros(DType::float32, {1, 4, 4})};
  // Rows 0, 1: nothing masked; rows 2, 3: the last two columns at -100.
  const float e = std::exp(-100.0f);
  const float u = 1.0f / (2 + 2 * e);
  const std::vector<float> want = {0.25f, 0.25f, 0.25f, 0.25f, 0.25f, 0.25f, 0.25f, 0.25f,
                                   u,     u,     u * e, u * e, u,     u,     u * e, u * e};
  for (const auto& out : {compiled.run(in)[0], ref::Executor(model.graph).run(in)[0]}) {
    ASSERT_EQ(out.shape(), (std::vector<int64_t>{1, 4, 4}));
    auto got = out.data<float>();
    for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-6) << i;
  }
}

size_t count_ops(const ir::Graph& graph, const std::string& op) {
  size_t n = 0;
  for (ir::NodeId id : graph.topological_order()) n += graph.node(id).op_type == op;
  return n;
}

// Lowering forwards the identity Dropout away, so no layer copies it.
TEST(ExportedPatterns, DropoutThatCannotDropIsForwardedAway) {
  auto model = swin_mask_model().import("swin_mask.onnx");
  EXPECT_EQ(count_ops(model.graph, "Dropout"), 1u);
  EXPECT_EQ(count_ops(passes::lower(model.graph), "Dropout"), 0u);
}

// One whose mask is a graph output stays, and so does one that drops.
TEST(ExportedPatterns, DropoutIsKeptWhenItsMaskIsReadOrItDrops) {
  for (const bool read_mask : {true, false}) {
    ProtoModel m(17);
    m.input("x", TensorProto::FLOAT, {2, 3});
    m.floats("ratio", {}, {read_mask ? 0.0f : 0.5f});
    m.boolean("training", true);
    m.node("Dropout", {"x", "ratio", "training"}, "y")->add_output(read_mask ? "mask" : "");
    m.output("y", TensorProto::FLOAT, 2);
    if (read_mask) m.output("mask", TensorProto::BOOL, 2);
    auto model = m.import("dropout.onnx");
    EXPECT_EQ(count_ops(passes::lower(model.graph), "Dropout"), 1u) << "read_mask " << read_mask;
  }
}

}  // namespace
}  // namespace kiln
