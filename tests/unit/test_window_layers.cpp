// Slice, Gather of one constant index and constant Pad on the cpu backend:
// native layers (strided windows copied by one oneDNN reorder, a filled
// destination with the source reordered into its interior, a view for zero
// padding), also where the bounds or amounts are computed from the input
// shape, as torch exports Swin's window shifts and padding. Each engine
// matches the reference backend and runs no reference kernel.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <ostream>
#include <string>
#include <vector>

#include "backends/cpu/cpu_backend.hpp"
#include "reference/executor.hpp"

#include "cpu_test_helpers.hpp"
#include "onnx_test_model.hpp"

namespace kiln {
namespace {

using onnx::TensorProto;
using testing::ProtoModel;
using testing::set_int;
using testing::set_string;

using Shape = std::vector<int64_t>;

std::vector<float> ramp(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  std::vector<float> v(static_cast<size_t>(n));
  for (size_t i = 0; i < v.size(); ++i) v[i] = std::sin(0.37f * static_cast<float>(i)) + 0.01f;
  return v;
}

struct WindowCase {
  std::string name;
  Shape input;
  std::function<void(ProtoModel&)> body;  // reads "x", writes "w"
  std::string op;                         // the node under test
  std::string tactic;                     // its layer's expected tactic
};

void PrintTo(const WindowCase& c, std::ostream* os) { *os << c.name; }

class WindowLayer : public ::testing::TestWithParam<WindowCase> {};

// The input's first dim is symbolic in the model (fixed only by the engine's
// input spec), so amounts and bounds read from its shape stay computed, not
// folded into constants. The windowed value feeds a Relu; the engine equals
// the reference.
TEST_P(WindowLayer, MatchesTheReferenceOnNativeLayers) {
  const WindowCase& c = GetParam();
  ProtoModel m(17);
  m.input("x", TensorProto::FLOAT, c.input);
  m.graph()
      .mutable_input(0)
      ->mutable_type()
      ->mutable_tensor_type()
      ->mutable_shape()
      ->mutable_dim(0)
      ->set_dim_param("n");
  c.body(m);
  m.node("Relu", {"w"}, "y");
  m.output("y", TensorProto::FLOAT, 1);
  const ir::Graph graph = m.import().graph;
  const std::vector<Tensor> inputs = {Tensor::from_values<float>(c.input, ramp(c.input))};
  const std::vector<Tensor> oracle = ref::Executor(graph).run(inputs);
  auto backend = make_cpu_backend();
  auto engine = testing::build_engine(*backend, graph, inputs, 0);
  const std::vector<Tensor> got = engine->run(inputs);
  EXPECT_TRUE(testing::bitwise_equal(got[0], oracle[0])) << testing::relative_error(got[0], oracle[0]);
  bool found = false;
  for (const LayerReport& r : engine->info().layers) {
    EXPECT_EQ(r.tactic.rfind("aux:", 0), std::string::npos) << r.op << " " << r.tactic;
    if (r.op != c.op) continue;
    found = true;
    EXPECT_EQ(r.tactic, c.tactic);
  }
  EXPECT_TRUE(found) << "no " << c.op << " layer";
}

INSTANTIATE_TEST_SUITE_P(
    Cases, WindowLayer,
    ::testing::Values(WindowCase{"SliceUnitSteps",
                                 {2, 6, 5},
                                 [](ProtoModel& m) {
                                   m.indices("s", {2}, {1, -4});
                                   m.indices("e", {2}, {5, 100});
                                   m.indices("a", {2}, {1, 2});
                                   m.node("Slice", {"x", "s", "e", "a"}, "w");
                                 },
                                 "Slice",
                                 "reorder:slice"},
                      // Swin's patch merging: x[:, 0::2, 1::2, :].
                      WindowCase{"SliceSteps",
                                 {1, 6, 6, 3},
                                 [](ProtoModel& m) {
                                   m.indices("s", {2}, {0, 1});
                                   m.indices("e", {2}, {100, 100});
                                   m.indices("a", {2}, {1, 2});
                                   m.indices("t", {2}, {2, 2});
                                   m.node("Slice", {"x", "s", "e", "a", "t"}, "w");
                                 },
                                 "Slice",
                                 "reorder:slice"},
                      // Ends read from the input's shape (torch.roll's split points).
                      WindowCase{"SliceShapeBounds",
                                 {2, 7, 4},
                                 [](ProtoModel& m) {
                                   m.node("Shape", {"x"}, "shape");
                                   m.indices("one", {1}, {1});
                                   m.node("Sub", {"shape", "one"}, "e");
                                   m.indices("s", {3}, {0, 3, 1});
                                   m.node("Slice", {"x", "s", "e"}, "w");
                                 },
                                 "Slice",
                                 "reorder:slice"},
                      // qkv[1] of a transposed [B, N, 3, H, d] projection.
                      WindowCase{"GatherTransposed",
                                 {2, 5, 3, 2, 4},
                                 [](ProtoModel& m) {
                                   auto* transpose = m.node("Transpose", {"x"}, "qkv");
                                   auto* perm = transpose->add_attribute();
                                   perm->set_name("perm");
                                   perm->set_type(onnx::AttributeProto::INTS);
                                   for (int64_t p : {2, 0, 3, 1, 4}) perm->add_ints(p);
                                   m.indices("i", {}, {1});
                                   m.node("Gather", {"qkv", "i"}, "w");
                                 },
                                 "Gather",
                                 "reorder:gather"},
                      WindowCase{"GatherNegativeAxisIndex",
                                 {3, 4, 5},
                                 [](ProtoModel& m) {
                                   m.indices("i", {}, {-2});
                                   set_int(m.node("Gather", {"x", "i"}, "w"), "axis", -1);
                                 },
                                 "Gather",
                                 "reorder:gather"},
                      WindowCase{"GatherOneElementVector",
                                 {3, 4, 5},
                                 [](ProtoModel& m) {
                                   m.indices("i", {1}, {2});
                                   set_int(m.node("Gather", {"x", "i"}, "w"), "axis", 1);
                                 },
                                 "Gather",
                                 "reorder:gather"},
                      WindowCase{"PadZeros",
                                 {1, 3, 4, 2},
                                 [](ProtoModel& m) {
                                   m.indices("p", {8}, {0, 1, 0, 0, 0, 2, 3, 1});
                                   m.node("Pad", {"x", "p"}, "w");
                                 },
                                 "Pad",
                                 "reorder:pad"},
                      WindowCase{"PadValue",
                                 {2, 3},
                                 [](ProtoModel& m) {
                                   m.indices("p", {4}, {1, 0, 2, 2});
                                   m.floats("v", {}, {-1.5f});
                                   m.node("Pad", {"x", "p", "v"}, "w");
                                 },
                                 "Pad",
                                 "reorder:pad"},
                      // Amounts from the shape, all zero (Swin at 224: 56 is a multiple of 7).
                      WindowCase{"PadShapeZero",
                                 {1, 7, 7, 3},
                                 [](ProtoModel& m) {
                                   m.node("Shape", {"x"}, "shape");
                                   m.indices("zero", {1}, {0});
                                   m.node("Mul", {"shape", "zero"}, "z");
                                   m.node("Concat", {"z", "z"}, "p");
                                   set_int(m.graph().mutable_node(m.graph().node_size() - 1), "axis", 0);
                                   set_string(m.node("Pad", {"x", "p"}, "w"), "mode", "constant");
                                 },
                                 "Pad",
                                 "view:pad"},
                      WindowCase{"PadShapeNonZero",
                                 {1, 5, 5, 3},
                                 [](ProtoModel& m) {
                                   m.node("Shape", {"x"}, "shape");
                                   m.indices("seven", {1}, {7});
                                   m.node("Mod", {"shape", "seven"}, "r");
                                   m.node("Sub", {"seven", "r"}, "pr");
                                   m.node("Mod", {"pr", "seven"}, "amount");
                                   m.indices("mask", {4}, {0, 1, 1, 0});
                                   m.node("Mul", {"amount", "mask"}, "end");
                                   m.indices("begin", {4}, {0, 0, 0, 0});
                                   m.node("Concat", {"begin", "end"}, "p");
                                   set_int(m.graph().mutable_node(m.graph().node_size() - 1), "axis", 0);
                                   m.node("Pad", {"x", "p"}, "w");
                                 },
                                 "Pad",
                                 "reorder:pad"}),
    [](const ::testing::TestParamInfo<WindowCase>& p) { return p.param.name; });

// Negative amounts crop: still right, on the reference kernel.
TEST(WindowLayerPad, NegativeAmountsFallBackToTheReferenceKernel) {
  ProtoModel m(17);
  m.input("x", TensorProto::FLOAT, {3, 4});
  m.indices("p", {4}, {-1, 1, 0, -2});
  m.node("Pad", {"x", "p"}, "y");
  m.output("y", TensorProto::FLOAT, 2);
  const ir::Graph graph = m.import().graph;
  const std::vector<Tensor> inputs = {Tensor::from_values<float>({3, 4}, ramp({3, 4}))};
  auto backend = make_cpu_backend();
  auto engine = testing::build_engine(*backend, graph, inputs, 0);
  EXPECT_TRUE(testing::bitwise_equal(engine->run(inputs)[0], ref::Executor(graph).run(inputs)[0]));
}

}  // namespace
}  // namespace kiln
