// Models from today's exporters: IR versions 9 and 10, opsets 18 to 21.
//
// Each model is built here as a proto, small enough that its expected
// output follows from the ONNX operator spec by hand; each op version runs on
// the reference backend and, where the cpu backend takes it, in a cpu engine.
#include <gtest/gtest.h>

#include <onnx/onnx_pb.h>
#include <cmath>

#include "backends/cpu/cpu_backend.hpp"
#include "backends/cpu/layer_partition.hpp"
#include "cpu_test_helpers.hpp"
#include "frontend/onnx/onnx_importer.hpp"
#include "ir/op_versions.hpp"
#include "onnx_test_model.hpp"
#include "reference/executor.hpp"
#include "test_helpers.hpp"

namespace kiln {
namespace {

using testing::expect_error;

using onnx::TensorProto;

using testing::ProtoModel;
using testing::set_int;
using testing::set_string;

void expect_values(const Tensor& got, const std::vector<int64_t>& shape, const std::vector<float>& want,
                   double tol = 1e-5) {
  ASSERT_EQ(got.shape(), shape);
  auto g = got.data<float>();
  ASSERT_EQ(g.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i)
    EXPECT_NEAR(g[i], want[i], tol * std::max(1.0f, std::abs(want[i]))) << i;
}

// Runs `graph` on the reference backend and in a cpu engine; both outputs
// must match `want` (one expectation per output).
void expect_both_backends(const ir::Graph& graph, const std::vector<Tensor>& inputs,
                          const std::vector<std::pair<std::vector<int64_t>, std::vector<float>>>& want) {
  auto ref_out = ref::Executor(graph).run(inputs);
  ASSERT_EQ(ref_out.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    SCOPED_TRACE("reference output " + std::to_string(i));
    expect_values(ref_out[i], want[i].first, want[i].second);
  }
  auto backend = make_cpu_backend();
  auto engine = testing::build_engine(*backend, graph, inputs, 0);
  auto cpu_out = engine->run(inputs);
  ASSERT_EQ(cpu_out.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    SCOPED_TRACE("cpu output " + std::to_string(i));
    expect_values(cpu_out[i], want[i].first, want[i].second);
  }
}

const std::vector<float> k_x23 = {1, 2, 3, 4, 5, 6};  // [[1, 2, 3], [4, 5, 6]]
Tensor x23() { return Tensor::from_values<float>({2, 3}, k_x23); }

// Reduce* over axis 1 of [[1, 2, 3], [4, 5, 6]], by hand.
std::vector<float> reduce_rows(const std::string& op) {
  std::vector<float> out;
  for (int r = 0; r < 2; ++r) {
    std::vector<double> row(k_x23.begin() + 3 * r, k_x23.begin() + 3 * r + 3);
    double sum = 0, sq = 0, prod = 1, mx = row[0], mn = row[0], lse = 0;
    for (double v : row) {
      sum += v;
      sq += v * v;
      prod *= v;
      mx = std::max(mx, v);
      mn = std::min(mn, v);
      lse += std::exp(v);
    }
    double y = op == "ReduceMean"        ? sum / 3
               : op == "ReduceMax"       ? mx
               : op == "ReduceMin"       ? mn
               : op == "ReduceProd"      ? prod
               : op == "ReduceSumSquare" ? sq
               : op == "ReduceL1"        ? sum
               : op == "ReduceL2"        ? std::sqrt(sq)
               : op == "ReduceLogSum"    ? std::log(sum)
               : op == "ReduceSum"       ? sum
                                         : std::log(lse);
    out.push_back(static_cast<float>(y));
  }
  return out;
}

TEST(ModernOnnx, Ir10Opset18ReduceFamilyTakesAxesAsAnInput) {
  for (const char* op : {"ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceSumSquare", "ReduceL1",
                         "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSum"}) {
    SCOPED_TRACE(op);
    ProtoModel m(10, 18);
    m.input("x", TensorProto::FLOAT, {2, 3});
    m.ints("axes", {-1});
    set_int(m.node(op, {"x", "axes"}, {"y"}), "keepdims", 0);
    m.output("y", TensorProto::FLOAT);
    auto model = m.import("modern.onnx");
    EXPECT_EQ(model.ir_version, 10);
    expect_both_backends(model.graph, {x23()}, {{{2}, reduce_rows(op)}});
  }
}

TEST(ModernOnnx, Opset18ReduceWithoutAxesReducesAllOrIsANoop) {
  ProtoModel m(10, 18);
  m.input("x", TensorProto::FLOAT, {2, 3});
  m.ints("none", {});
  m.node("ReduceMax", {"x"}, {"all"});                                                // every axis, keepdims
  set_int(m.node("ReduceMin", {"x"}, {"same"}), "noop_with_empty_axes", 1);           // identity
  set_int(m.node("ReduceSum", {"x", "none"}, {"same2"}), "noop_with_empty_axes", 1);  // empty axes input
  m.output("all", TensorProto::FLOAT);
  m.output("same", TensorProto::FLOAT);
  m.output("same2", TensorProto::FLOAT);
  expect_both_backends(m.import("modern.onnx").graph, {x23()},
                       {{{1, 1}, {6}}, {{2, 3}, k_x23}, {{2, 3}, k_x23}});
}

TEST(ModernOnnx, Opset20ReduceMaxAndMinOfBool) {
  ProtoModel m(10, 20);
  m.input("b", TensorProto::BOOL, {2, 3});
  m.ints("axes", {1});
  set_int(m.node("ReduceMax", {"b", "axes"}, {"any"}), "keepdims", 0);
  set_int(m.node("ReduceMin", {"b", "axes"}, {"all"}), "keepdims", 0);
  m.output("any", TensorProto::BOOL);
  m.output("all", TensorProto::BOOL);
  auto model = m.import("modern.onnx");
  Tensor b = Tensor::zeros(DType::boolean, {2, 3});
  auto bytes = b.mutable_bytes();
  for (size_t i : {0u, 3u, 4u, 5u}) bytes[i] = std::byte{1};  // [[1, 0, 0], [1, 1, 1]]
  auto out = ref::Executor(model.graph).run(std::vector<Tensor>{b});
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].bytes()[0], std::byte{1});
  EXPECT_EQ(out[0].bytes()[1], std::byte{1});
  EXPECT_EQ(out[1].bytes()[0], std::byte{0});
  EXPECT_EQ(out[1].bytes()[1], std::byte{1});

  // Opset 18's ReduceMax has no bool: refused, not computed.
  m.proto().mutable_opset_import(0)->set_version(18);
  auto old = m.import("modern.onnx");
  auto unsupported = ref::find_unsupported(old.graph);
  ASSERT_EQ(unsupported.size(), 2u);
  EXPECT_NE(unsupported[0].reason.find("bool"), std::string::npos) << unsupported[0].reason;
}

TEST(ModernOnnx, Opset18SplitWithNumOutputsTakesTheRemainderLast) {
  ProtoModel m(10, 18);
  m.input("x", TensorProto::FLOAT, {5});
  set_int(m.node("Split", {"x"}, {"a", "b", "c"}), "num_outputs", 3);
  for (const char* o : {"a", "b", "c"}) m.output(o, TensorProto::FLOAT);
  Tensor x = Tensor::from_values<float>({5}, std::vector<float>{1, 2, 3, 4, 5});
  expect_both_backends(m.import("modern.onnx").graph, {x}, {{{2}, {1, 2}}, {{2}, {3, 4}}, {{1}, {5}}});

  // split sizes and num_outputs together are malformed.
  m.ints("sizes", {2, 2, 1});
  m.graph().mutable_node(0)->add_input("sizes");
  expect_error([&] { m.import("modern.onnx"); }, ErrorCode::invalid_model, {"Split", "num_outputs"});
}

TEST(ModernOnnx, Opset18PadWithAxesAndOpset19WrapMode) {
  ProtoModel m(10, 19);
  m.input("x", TensorProto::FLOAT, {2, 3});
  m.ints("pads", {1, 2});  // axis 1: one before, two after
  m.ints("axes", {1});
  m.node("Pad", {"x", "pads", "", "axes"}, {"constant"});
  set_string(m.node("Pad", {"x", "pads", "", "axes"}, {"wrapped"}), "mode", "wrap");
  m.output("constant", TensorProto::FLOAT);
  m.output("wrapped", TensorProto::FLOAT);
  expect_both_backends(
      m.import("modern.onnx").graph, {x23()},
      {{{2, 6}, {0, 1, 2, 3, 0, 0, 0, 4, 5, 6, 0, 0}}, {{2, 6}, {3, 1, 2, 3, 1, 2, 6, 4, 5, 6, 4, 5}}});
}

TEST(ModernOnnx, Opset19AveragePoolWithDilations) {
  ProtoModel m(10, 19);
  m.input("x", TensorProto::FLOAT, {1, 1, 1, 5});
  auto* pool = m.node("AveragePool", {"x"}, {"y"});
  for (auto [name, values] : {std::pair{"kernel_shape", std::vector<int64_t>{1, 2}},
                              std::pair{"dilations", std::vector<int64_t>{1, 2}}}) {
    auto* a = pool->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INTS);
    for (int64_t v : values) a->add_ints(v);
  }
  m.output("y", TensorProto::FLOAT);
  // Windows {1, 3}, {2, 4}, {3, 5}.
  expect_both_backends(m.import("modern.onnx").graph,
                       {Tensor::from_values<float>({1, 1, 1, 5}, std::vector<float>{1, 2, 3, 4, 5})},
                       {{{1, 1, 1, 3}, {2, 3, 4}}});
}

float gelu_erf(float x) { return static_cast<float>(0.5 * x * (1 + std::erf(x / std::sqrt(2.0)))); }
float gelu_tanh(float x) {
  double k = std::sqrt(2 / M_PI);
  return static_cast<float>(0.5 * x * (1 + std::tanh(k * (x + 0.044715 * x * x * x))));
}

TEST(ModernOnnx, Opset20GeluRunsOnTheCpuBackendsEltwisePath) {
  ProtoModel m(10, 20);
  m.input("x", TensorProto::FLOAT, {2, 3});
  m.node("Gelu", {"x"}, {"exact"});
  set_string(m.node("Gelu", {"x"}, {"tanh"}), "approximate", "tanh");
  m.output("exact", TensorProto::FLOAT);
  m.output("tanh", TensorProto::FLOAT);
  std::vector<float> xs = {-3, -1, -0.5f, 0.25f, 1, 2.5f};
  std::vector<float> exact, approx;
  for (float v : xs) {
    exact.push_back(gelu_erf(v));
    approx.push_back(gelu_tanh(v));
  }
  auto model = m.import("modern.onnx");
  // The same native eltwise layer as the fused Erf pattern.
  for (ir::NodeId n = 0; n < 2; ++n) EXPECT_EQ(cpu::native_kind(model.graph, n), cpu::LayerKind::eltwise);
  expect_both_backends(model.graph, {Tensor::from_values<float>({2, 3}, xs)},
                       {{{2, 3}, exact}, {{2, 3}, approx}});

  // Gelu does not exist before opset 20.
  m.proto().mutable_opset_import(0)->set_version(19);
  expect_error([&] { m.import("modern.onnx"); }, ErrorCode::invalid_model, {"Gelu", "opset 19"});
}

// (x - mean) / sqrt(var + eps) * gamma + beta with opset-18 ReduceMean (axes as an input).
TEST(ModernOnnx, Opset18DecomposedLayerNormIsRecognized) {
  ProtoModel m(10, 18);
  m.input("x", TensorProto::FLOAT, {2, 3});
  m.ints("axes", {-1});
  auto scalar = [&](const std::string& name, float v) {
    auto* t = m.graph().add_initializer();
    t->set_name(name);
    t->set_data_type(TensorProto::FLOAT);
    t->add_float_data(v);
  };
  auto vec = [&](const std::string& name, std::vector<float> v) {
    auto* t = m.graph().add_initializer();
    t->set_name(name);
    t->set_data_type(TensorProto::FLOAT);
    t->add_dims(3);
    for (float f : v) t->add_float_data(f);
  };
  scalar("two", 2);
  scalar("eps", 1e-5f);
  vec("gamma", {1, 2, 0.5f});
  vec("beta", {0, 1, -1});
  m.node("ReduceMean", {"x", "axes"}, {"mean"});
  m.node("Sub", {"x", "mean"}, {"c"});
  m.node("Pow", {"c", "two"}, {"sq"});
  m.node("ReduceMean", {"sq", "axes"}, {"var"});
  m.node("Add", {"var", "eps"}, {"ve"});
  m.node("Sqrt", {"ve"}, {"sd"});
  m.node("Div", {"c", "sd"}, {"n"});
  m.node("Mul", {"n", "gamma"}, {"s"});
  m.node("Add", {"s", "beta"}, {"y"});
  m.output("y", TensorProto::FLOAT);
  auto model = m.import("modern.onnx");
  ir::Graph lowered = passes::lower(model.graph);
  int layer_norms = 0;
  for (ir::NodeId n = 0; n < static_cast<ir::NodeId>(lowered.num_nodes()); ++n) {
    layer_norms += lowered.node(n).op_type == "LayerNormalization";
  }
  EXPECT_EQ(layer_norms, 1);
  // Each row of x23 is v - mean = {-1, 0, 1}, variance 2/3.
  const float inv = 1.0f / std::sqrt(2.0f / 3.0f + 1e-5f);
  std::vector<float> row = {-inv * 1 + 0, 0 * 2 + 1, inv * 0.5f - 1};
  std::vector<float> want = row;
  want.insert(want.end(), row.begin(), row.end());
  expect_both_backends(model.graph, {x23()}, {{{2, 3}, want}});
}

TEST(ModernOnnx, Opset21TypeListBumpsImportAndRun) {
  ProtoModel m(10, 21);
  m.input("x", TensorProto::FLOAT, {2, 3});
  m.ints("zero", {0});
  m.ints("shape6", {6});
  set_int(m.node("Flatten", {"x"}, {"f"}), "axis", 0);  // [1, 6]
  m.node("Squeeze", {"f", "zero"}, {"s"});              // [6]
  m.node("Unsqueeze", {"s", "zero"}, {"u"});            // [1, 6]
  m.node("Transpose", {"u"}, {"t"});                    // [6, 1]
  m.node("Reshape", {"t", "shape6"}, {"r"});            // [6]
  m.node("Identity", {"r"}, {"i"});
  auto* cast = m.node("Cast", {"i"}, {"c"});
  set_int(cast, "to", TensorProto::FLOAT);
  set_int(cast, "saturate", 1);
  m.node("Shape", {"c"}, {"shape"});
  m.node("ConstantOfShape", {"shape"}, {"zeros"});
  m.node("Add", {"c", "zeros"}, {"y"});
  m.node("Size", {"y"}, {"n"});
  m.output("y", TensorProto::FLOAT);
  m.output("n", TensorProto::INT64);
  auto model = m.import("modern.onnx");
  auto out = ref::Executor(model.graph).run(std::vector<Tensor>{x23()});
  expect_values(out[0], {6}, k_x23);
  EXPECT_EQ(out[1].int_at(0), 6);
}

TEST(ModernOnnx, NewerVersionsThanKilnKnowsAreClearErrors) {
  ProtoModel opset22(10, 22);
  opset22.input("x", TensorProto::FLOAT, {2});
  opset22.node("Relu", {"x"}, {"y"});
  opset22.output("y", TensorProto::FLOAT);
  expect_error([&] { opset22.import("o22.onnx"); }, ErrorCode::unsupported, {"o22.onnx", "opset 22", "(21)"});

  ProtoModel ir11(11, 21);
  ir11.input("x", TensorProto::FLOAT, {2});
  ir11.node("Relu", {"x"}, {"y"});
  ir11.output("y", TensorProto::FLOAT);
  expect_error([&] { ir11.import("ir11.onnx"); }, ErrorCode::unsupported,
               {"ir11.onnx", "IR version 11", "(10)"});

  // An in-memory graph at an opset kiln does not know is refused by op and opset.
  ir::Graph g;
  ir::ValueId x = g.add_value("x", {DType::float32, ir::Dims{ir::Dim(2)}});
  ir::ValueId y = g.add_value("y");
  g.add_input(x);
  ir::Node relu;
  relu.name = "r";
  relu.op_type = "Relu";
  relu.opset = 23;
  relu.inputs = {x};
  relu.outputs = {y};
  g.add_node(relu);
  g.add_output(y);
  expect_error([&] { ref::Executor executor(g); }, ErrorCode::unsupported, {"Relu", "opset 23"});
}

TEST(ModernOnnx, BrokenNewerModelsFailWithTheNodeNamed) {
  auto base = [] {
    ProtoModel m(10, 18);
    m.input("x", TensorProto::FLOAT, {2, 3});
    m.output("y", TensorProto::FLOAT);
    return m;
  };
  {  // used before defined
    auto m = base();
    m.node("Relu", {"later"}, {"y"});
    m.node("Relu", {"x"}, {"later"});
    expect_error([&] { m.import("modern.onnx"); }, ErrorCode::invalid_model,
                 {"Relu_1", "'later'", "topological"});
  }
  {  // opset-18 Reduce with an axes attribute (the opset-17 form)
    auto m = base();
    auto* n = m.node("ReduceMean", {"x"}, {"y"});
    auto* a = n->add_attribute();
    a->set_name("axes");
    a->set_type(onnx::AttributeProto::INTS);
    a->add_ints(1);
    expect_error([&] { m.import("modern.onnx"); }, ErrorCode::invalid_model,
                 {"ReduceMean-18", "no attribute 'axes'"});
  }
  {  // too many inputs
    auto m = base();
    m.node("ReduceMean", {"x", "x", "x"}, {"y"});
    expect_error([&] { m.import("modern.onnx"); }, ErrorCode::invalid_model,
                 {"ReduceMean", "1 to 2 inputs, got 3"});
  }
  {  // an unchanged op is checked against the library's opset-17 schema
    auto m = base();
    m.node("Relu", {"x", "x"}, {"y"});
    expect_error([&] { m.import("modern.onnx"); }, ErrorCode::invalid_model, {"Relu_1"});
  }
  {  // an op that does not exist
    auto m = base();
    m.node("NoSuchOp", {"x"}, {"y"});
    expect_error([&] { m.import("modern.onnx"); }, ErrorCode::invalid_model, {"NoSuchOp", "opset 18"});
  }
  {  // a graph output nothing produces
    auto m = base();
    m.node("Relu", {"x"}, {"z"});
    expect_error([&] { m.import("modern.onnx"); }, ErrorCode::invalid_model, {"graph output 'y'"});
  }
  {  // a domain that is not imported
    auto m = base();
    m.node("Thing", {"x"}, {"y"})->set_domain("com.example");
    expect_error([&] { m.import("modern.onnx"); }, ErrorCode::invalid_model, {"com.example", "opset_import"});
  }
}

TEST(ModernOnnx, Ir9And10FieldsKilnCannotRepresentAreRefused) {
  {  // a float8 initializer (IR 9)
    ProtoModel m(9, 19);
    m.input("x", TensorProto::FLOAT, {2});
    auto* t = m.graph().add_initializer();
    t->set_name("w");
    t->set_data_type(17);
    t->add_dims(2);
    t->set_raw_data(std::string(2, '\0'));
    m.node("Add", {"x", "w"}, {"y"});
    m.output("y", TensorProto::FLOAT);
    expect_error([&] { m.import("modern.onnx"); }, ErrorCode::unsupported, {"'w'", "FLOAT8E4M3FN"});
  }
  {  // an INT4 input (IR 10)
    ProtoModel m(10, 21);
    m.input("x", 22, {2});
    m.node("Identity", {"x"}, {"y"});
    m.output("y", 22);
    expect_error([&] { m.import("modern.onnx"); }, ErrorCode::unsupported, {"'x'", "INT4"});
  }
  {  // a call of a model-local function's overload (IR 10)
    ProtoModel m(10, 18);
    auto* local = m.proto().add_opset_import();
    local->set_domain("local");
    local->set_version(1);
    m.input("x", TensorProto::FLOAT, {2});
    auto* n = m.node("MyFn", {"x"}, {"y"});
    n->set_domain("local");
    n->mutable_unknown_fields()->AddLengthDelimited(8, "v2");
    m.output("y", TensorProto::FLOAT);
    expect_error([&] { m.import("modern.onnx"); }, ErrorCode::unsupported,
                 {"MyFn", "overload 'v2'", "local function"});
  }
  {  // node metadata (IR 10) does not change meaning: accepted
    ProtoModel m(10, 18);
    m.input("x", TensorProto::FLOAT, {2});
    auto* n = m.node("Relu", {"x"}, {"y"});
    n->mutable_unknown_fields()->AddLengthDelimited(9, std::string("\x0a\x01k\x12\x01v", 6));
    m.output("y", TensorProto::FLOAT);
    auto out = ref::Executor(m.import("modern.onnx").graph)
                   .run(std::vector<Tensor>{Tensor::from_values<float>({2}, std::vector<float>{-1, 2})});
    expect_values(out[0], {2}, {0, 2});
  }
  {  // a node of a domain kiln has no ops for is reported by domain
    ProtoModel m(10, 18);
    auto* custom = m.proto().add_opset_import();
    custom->set_domain("com.example");
    custom->set_version(3);
    m.input("x", TensorProto::FLOAT, {2});
    m.node("Thing", {"x"}, {"y"})->set_domain("com.example");
    m.output("y", TensorProto::FLOAT);
    auto unsupported = ref::find_unsupported(m.import("modern.onnx").graph);
    ASSERT_EQ(unsupported.size(), 1u);
    EXPECT_NE(unsupported[0].reason.find("com.example"), std::string::npos) << unsupported[0].reason;
  }
}

// Antialiased downsampling is the one opset-18 Resize form kiln does not
// compute (axes, keep_aspect_ratio_policy and half_pixel_symmetric it does:
// tests/ort compares them with ONNX Runtime).
TEST(ModernOnnx, Opset18ResizeFormsKilnDoesNotComputeAreReported) {
  ProtoModel m(10, 19);
  m.input("x", TensorProto::FLOAT, {1, 1, 2, 2});
  m.ints("sizes", {1, 1, 4, 4});
  set_int(m.node("Resize", {"x", "", "", "sizes"}, {"a"}), "antialias", 1);
  set_string(m.node("Resize", {"x", "", "", "sizes"}, {"b"}), "coordinate_transformation_mode",
             "half_pixel_symmetric");
  m.output("a", TensorProto::FLOAT);
  m.output("b", TensorProto::FLOAT);
  auto unsupported = ref::find_unsupported(m.import("modern.onnx").graph);
  ASSERT_EQ(unsupported.size(), 1u);
  EXPECT_NE(unsupported[0].reason.find("antialias"), std::string::npos) << unsupported[0].reason;
}

TEST(ModernOnnx, OpVersionTableRefusesWhatKilnDoesNotCompute) {
  // Every op version after 17 that kiln registers is computed, and ops it
  // does not register are refused by op type, so none reads as computed
  // with an older version's semantics.
  ir::Node n;
  n.op_type = "ReduceMean";
  n.opset = 21;
  EXPECT_FALSE(ir::op_version_problem(n));
  ASSERT_NE(ir::newer_op_version("ReduceMean", 21), nullptr);
  EXPECT_EQ(ir::newer_op_version("ReduceMean", 21)->since, 18);
  EXPECT_EQ(ir::newer_op_version("ReduceMax", 21)->since, 20);
  EXPECT_EQ(ir::newer_op_version("Relu", 21), nullptr);
  n.opset = 22;
  ASSERT_TRUE(ir::op_version_problem(n));
  EXPECT_NE(ir::op_version_problem(n)->find("opset 22"), std::string::npos);
}

}  // namespace
}  // namespace kiln
