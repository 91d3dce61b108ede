// ScatterND, ScatterElements and GatherND on the reference backend.
//
// Each model is a hand-built ONNX proto, imported through the checker, whose
// expected output follows from the ONNX operator spec by hand: every
// reduction, negative and int32 indices, any axis, batch_dims, and an
// out-of-range index, which must be a kiln::Error naming the node and op.
#include <gtest/gtest.h>

#include <onnx/onnx_pb.h>
#include <cmath>

#include "backends/cpu/cpu_backend.hpp"
#include "cpu_test_helpers.hpp"
#include "frontend/onnx/onnx_importer.hpp"
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

template <typename T>
void expect_values(const Tensor& got, const std::vector<int64_t>& shape, const std::vector<T>& want) {
  ASSERT_EQ(got.shape(), shape);
  auto g = got.data<T>();
  ASSERT_EQ(g.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    if constexpr (std::is_floating_point_v<T>)
      EXPECT_NEAR(g[i], want[i], 1e-5 * std::max<T>(1, std::abs(want[i]))) << i;
    else
      EXPECT_EQ(g[i], want[i]) << i;
  }
}

Tensor floats(const std::vector<int64_t>& shape, const std::vector<float>& v) {
  return Tensor::from_values<float>(shape, v);
}

// Runs a model of one node `op(x, indices[, updates])` on the reference backend.
std::vector<Tensor> run(const ProtoModel& m, const std::vector<Tensor>& inputs) {
  return ref::Executor(m.import().graph).run(inputs);
}

const std::vector<float> k_1to8 = {1, 2, 3, 4, 5, 6, 7, 8};

TEST(ScatterND, ScattersElementsAndSlicesWithNegativeIndices) {
  {  // The spec's first example: single elements of a 1-D tensor.
    ProtoModel m(11);
    m.input("x", TensorProto::FLOAT, {8});
    m.input("u", TensorProto::FLOAT, {4});
    m.indices("i", {4, 1}, {4, 3, 1, 7});
    m.node("ScatterND", {"x", "i", "u"}, "y");
    m.output("y", TensorProto::FLOAT, 1);
    auto out = run(m, {floats({8}, k_1to8), floats({4}, {9, 10, 11, 12})});
    expect_values<float>(out[0], {8}, {1, 11, 3, 10, 9, 6, 7, 12});
  }
  {  // Whole rows of a [3, 2] tensor; -1 is the last row.
    ProtoModel m(13);
    m.input("x", TensorProto::FLOAT, {3, 2});
    m.input("u", TensorProto::FLOAT, {2, 2});
    m.indices("i", {2, 1}, {-1, 0});
    m.node("ScatterND", {"x", "i", "u"}, "y");
    m.output("y", TensorProto::FLOAT, 2);
    auto out = run(m, {floats({3, 2}, {1, 2, 3, 4, 5, 6}), floats({2, 2}, {10, 20, 30, 40})});
    expect_values<float>(out[0], {3, 2}, {30, 40, 3, 4, 10, 20});
  }
  {  // Full index tuples into [2, 2, 2] with int32 indices: {1, 0, 1} and {0, -1, 0}.
    ProtoModel m(13);
    m.input("x", TensorProto::FLOAT, {2, 2, 2});
    m.input("u", TensorProto::FLOAT, {2});
    m.indices("i", {2, 3}, {1, 0, 1, 0, -1, 0}, TensorProto::INT32);
    m.node("ScatterND", {"x", "i", "u"}, "y");
    m.output("y", TensorProto::FLOAT, 3);
    auto out = run(m, {floats({2, 2, 2}, k_1to8), floats({2}, {-1, -2})});
    expect_values<float>(out[0], {2, 2, 2}, {1, 2, -2, 4, 5, -1, 7, 8});
  }
}

TEST(ScatterND, ReductionsCombineDuplicateIndices) {
  // Updates 5 and 3 both go to element 0, 2 to element 2.
  struct Case {
    const char* reduction;
    int64_t opset;
    std::vector<float> want;
  };
  for (const Case& c :
       {Case{"none", 16, {3, 2, 2, 4}}, Case{"add", 16, {9, 2, 5, 4}}, Case{"mul", 16, {15, 2, 6, 4}},
        Case{"max", 18, {5, 2, 3, 4}}, Case{"min", 18, {1, 2, 2, 4}}}) {
    SCOPED_TRACE(c.reduction);
    ProtoModel m(c.opset);
    m.input("x", TensorProto::FLOAT, {4});
    m.input("u", TensorProto::FLOAT, {3});
    m.indices("i", {3, 1}, {0, 0, -2});
    set_string(m.node("ScatterND", {"x", "i", "u"}, "y"), "reduction", c.reduction);
    m.output("y", TensorProto::FLOAT, 1);
    auto out = run(m, {floats({4}, {1, 2, 3, 4}), floats({3}, {5, 3, 2})});
    expect_values<float>(out[0], {4}, c.want);
  }
  {  // Integer data reduces in its own type.
    ProtoModel m(16);
    m.input("x", TensorProto::INT64, {2, 2});
    m.input("u", TensorProto::INT64, {2, 2});
    m.indices("i", {2, 1}, {1, 1});
    set_string(m.node("ScatterND", {"x", "i", "u"}, "y"), "reduction", "add");
    m.output("y", TensorProto::INT64, 2);
    auto out = run(m, {Tensor::from_values<int64_t>({2, 2}, std::vector<int64_t>{1, 2, 3, 4}),
                       Tensor::from_values<int64_t>({2, 2}, std::vector<int64_t>{10, 20, 100, 200})});
    expect_values<int64_t>(out[0], {2, 2}, {1, 2, 113, 224});
  }
}

TEST(ScatterElements, ScattersAlongAnyAxisWithNegativeIndices) {
  {  // The spec's axis-1 example, with -3 standing for 2.
    ProtoModel m(13);
    m.input("x", TensorProto::FLOAT, {1, 5});
    m.input("u", TensorProto::FLOAT, {1, 2});
    m.indices("i", {1, 2}, {1, -3});
    set_int(m.node("ScatterElements", {"x", "i", "u"}, "y"), "axis", 1);
    m.output("y", TensorProto::FLOAT, 2);
    auto out = run(m, {floats({1, 5}, {1, 2, 3, 4, 5}), floats({1, 2}, {1.1f, 2.1f})});
    expect_values<float>(out[0], {1, 5}, {1, 1.1f, 2.1f, 4, 5});
  }
  {  // The spec's axis-0 example, as axis -2.
    ProtoModel m(11);
    m.input("x", TensorProto::FLOAT, {3, 3});
    m.input("u", TensorProto::FLOAT, {2, 3});
    m.indices("i", {2, 3}, {1, 0, 2, 0, 2, 1});
    set_int(m.node("ScatterElements", {"x", "i", "u"}, "y"), "axis", -2);
    m.output("y", TensorProto::FLOAT, 2);
    auto out =
        run(m, {floats({3, 3}, std::vector<float>(9, 0)), floats({2, 3}, {1, 1.1f, 1.2f, 2, 2.1f, 2.2f})});
    expect_values<float>(out[0], {3, 3}, {2, 1.1f, 0, 1, 0, 2.2f, 0, 2.1f, 1.2f});
  }
  {  // A middle axis of a rank-3 tensor with indices smaller than the data,
     // int32: (0,0,0)->2 (0,0,1)->0 (1,0,0)->1 (1,0,1)->-1 along axis 1.
    ProtoModel m(13);
    m.input("x", TensorProto::FLOAT, {2, 3, 2});
    m.input("u", TensorProto::FLOAT, {2, 1, 2});
    m.indices("i", {2, 1, 2}, {2, 0, 1, -1}, TensorProto::INT32);
    set_int(m.node("ScatterElements", {"x", "i", "u"}, "y"), "axis", 1);
    m.output("y", TensorProto::FLOAT, 3);
    auto out = run(m, {floats({2, 3, 2}, std::vector<float>(12, 0)), floats({2, 1, 2}, {1, 2, 3, 4})});
    expect_values<float>(out[0], {2, 3, 2}, {0, 2, 0, 0, 1, 0, 0, 0, 3, 0, 0, 4});
  }
}

TEST(ScatterElements, ReductionsCombineDuplicateIndices) {
  // Both updates (1.1, 2.1) go to element 1 of [1, 2, 3, 4, 5].
  struct Case {
    const char* reduction;
    int64_t opset;
    float want;
  };
  for (const Case& c : {Case{"add", 16, 2 + 1.1f + 2.1f}, Case{"mul", 16, 2 * 1.1f * 2.1f},
                        Case{"max", 18, 2.1f}, Case{"min", 18, 1.1f}}) {
    SCOPED_TRACE(c.reduction);
    ProtoModel m(c.opset);
    m.input("x", TensorProto::FLOAT, {1, 5});
    m.input("u", TensorProto::FLOAT, {1, 2});
    m.indices("i", {1, 2}, {1, 1});
    auto* n = m.node("ScatterElements", {"x", "i", "u"}, "y");
    set_int(n, "axis", 1);
    set_string(n, "reduction", c.reduction);
    m.output("y", TensorProto::FLOAT, 2);
    auto out = run(m, {floats({1, 5}, {1, 2, 3, 4, 5}), floats({1, 2}, {1.1f, 2.1f})});
    expect_values<float>(out[0], {1, 5}, {1, c.want, 3, 4, 5});
  }
}

TEST(GatherND, GathersElementsAndSlicesWithBatchDims) {
  const std::vector<int32_t> cube = {0, 1, 2, 3, 4, 5, 6, 7};  // [2, 2, 2]
  struct Case {
    const char* what;
    std::vector<int64_t> data_shape;
    std::vector<int64_t> index_shape;
    std::vector<int64_t> index_values;
    int64_t batch_dims;
    std::vector<int64_t> out_shape;
    std::vector<int32_t> want;
  };
  // The spec's examples, plus negative indices.
  for (const Case& c : {
           Case{"elements", {2, 2}, {2, 2}, {0, 0, 1, 1}, 0, {2}, {0, 3}},
           Case{"rows", {2, 2}, {2, 1}, {1, 0}, 0, {2, 2}, {2, 3, 0, 1}},
           Case{"rows of a cube", {2, 2, 2}, {2, 2}, {0, 1, 1, 0}, 0, {2, 2}, {2, 3, 4, 5}},
           Case{"nested indices", {2, 2, 2}, {2, 1, 2}, {0, 1, 1, 0}, 0, {2, 1, 2}, {2, 3, 4, 5}},
           Case{"batch_dims 1", {2, 2, 2}, {2, 1}, {1, 0}, 1, {2, 2}, {2, 3, 4, 5}},
           Case{"batch_dims 1, full tuples", {2, 2, 2}, {2, 2}, {1, 0, -1, -1}, 1, {2}, {2, 7}},
           Case{"negative", {2, 2}, {1, 2}, {-1, -2}, 0, {1}, {2}},
       }) {
    SCOPED_TRACE(c.what);
    ProtoModel m(13);
    m.input("x", TensorProto::INT32, c.data_shape);
    m.indices("i", c.index_shape, c.index_values);
    set_int(m.node("GatherND", {"x", "i"}, "y"), "batch_dims", c.batch_dims);
    m.output("y", TensorProto::INT32, c.out_shape.size());
    std::vector<int32_t> data(cube.begin(),
                              cube.begin() + static_cast<std::ptrdiff_t>(shape_numel(c.data_shape)));
    auto out = run(m, {Tensor::from_values<int32_t>(c.data_shape, data)});
    expect_values<int32_t>(out[0], c.out_shape, c.want);
  }
}

TEST(ScatterGather, OutOfRangeIndicesAreErrorsNamingTheNode) {
  for (int64_t bad : {4, -5}) {
    SCOPED_TRACE(bad);
    {
      ProtoModel m(13);
      m.input("x", TensorProto::FLOAT, {4});
      m.input("u", TensorProto::FLOAT, {2});
      m.indices("i", {2, 1}, {0, bad}, TensorProto::INT32);
      m.node("ScatterND", {"x", "i", "u"}, "y");
      m.output("y", TensorProto::FLOAT, 1);
      expect_error(
          [&] {
            run(m, {floats({4}, {1, 2, 3, 4}), floats({2}, {1, 2})});
          },
          ErrorCode::invalid_argument,
          {"ScatterND_1", "(ScatterND)", "index " + std::to_string(bad), "size 4"});
    }
    {
      ProtoModel m(18);
      m.input("x", TensorProto::FLOAT, {2, 4});
      m.input("u", TensorProto::FLOAT, {2, 1});
      m.indices("i", {2, 1}, {1, bad});
      auto* n = m.node("ScatterElements", {"x", "i", "u"}, "y");
      set_int(n, "axis", 1);
      set_string(n, "reduction", "add");
      m.output("y", TensorProto::FLOAT, 2);
      expect_error(
          [&] {
            run(m, {floats({2, 4}, k_1to8), floats({2, 1}, {1, 2})});
          },
          ErrorCode::invalid_argument,
          {"ScatterElements_1", "(ScatterElements)", "index " + std::to_string(bad), "axis 1"});
    }
    {
      ProtoModel m(13);
      m.input("x", TensorProto::FLOAT, {2, 4});
      m.indices("i", {1, 2}, {1, bad});
      m.node("GatherND", {"x", "i"}, "y");
      m.output("y", TensorProto::FLOAT, 1);
      expect_error(
          [&] {
            run(m, {floats({2, 4}, k_1to8)});
          },
          ErrorCode::invalid_argument,
          {"GatherND_1", "(GatherND)", "index " + std::to_string(bad), "axis 1"});
    }
  }
}

TEST(ScatterGather, MalformedShapesFailAtImportAndUncomputableReductionsAreReported) {
  {  // updates must be indices.shape[:-1] + data.shape[k:] = [2, 3]
    ProtoModel m(13);
    m.input("x", TensorProto::FLOAT, {4, 3});
    m.input("u", TensorProto::FLOAT, {2, 2});
    m.indices("i", {2, 1}, {0, 1});
    m.node("ScatterND", {"x", "i", "u"}, "y");
    m.output("y", TensorProto::FLOAT, 2);
    expect_error([&] { m.import(); }, ErrorCode::invalid_model, {"ScatterND_1", "updates dim 1"});
  }
  {  // index tuples longer than the data's rank
    ProtoModel m(13);
    m.input("x", TensorProto::FLOAT, {2, 2});
    m.indices("i", {1, 3}, {0, 0, 0});
    m.node("GatherND", {"x", "i"}, "y");
    m.output("y", TensorProto::FLOAT, 1);
    expect_error([&] { m.import(); }, ErrorCode::invalid_model, {"GatherND_1", "length 3"});
  }
  {  // max needs opset 18
    ProtoModel m(16);
    m.input("x", TensorProto::FLOAT, {4});
    m.input("u", TensorProto::FLOAT, {1});
    m.indices("i", {1, 1}, {0});
    set_string(m.node("ScatterND", {"x", "i", "u"}, "y"), "reduction", "max");
    m.output("y", TensorProto::FLOAT, 1);
    expect_error([&] { m.import(); }, ErrorCode::invalid_model, {"ScatterND_1", "'max'", "opset 16"});
  }
  {  // bool data has no arithmetic to add in: reported, not computed
    ProtoModel m(16);
    m.input("x", TensorProto::BOOL, {4});
    m.input("u", TensorProto::BOOL, {1});
    m.indices("i", {1, 1}, {0});
    set_string(m.node("ScatterND", {"x", "i", "u"}, "y"), "reduction", "add");
    m.output("y", TensorProto::BOOL, 1);
    auto unsupported = ref::find_unsupported(m.import().graph);
    ASSERT_EQ(unsupported.size(), 1u);
    EXPECT_NE(unsupported[0].reason.find("'add' of bool"), std::string::npos) << unsupported[0].reason;
  }
}

TEST(ScatterGather, RunInsideACpuEngineOnReferenceKernels) {
  // A masked fill as PyTorch exports x[idx] = v followed by a gather:
  // the cpu engine runs both on reference kernels and agrees with them.
  ProtoModel m(17);
  m.input("x", TensorProto::FLOAT, {2, 4});
  m.input("u", TensorProto::FLOAT, {1, 4});
  m.indices("i", {1, 1}, {-1});
  m.indices("g", {2, 2}, {1, 0, 0, 3});
  m.node("ScatterND", {"x", "i", "u"}, "s");
  m.node("GatherND", {"s", "g"}, "y");
  m.output("y", TensorProto::FLOAT, 1);
  auto graph = m.import().graph;
  std::vector<Tensor> inputs = {floats({2, 4}, k_1to8), floats({1, 4}, {10, 20, 30, 40})};
  auto backend = make_cpu_backend();
  auto engine = testing::build_engine(*backend, graph, inputs, 0);
  auto out = engine->run(inputs);
  expect_values<float>(out[0], {2}, {10, 4});
}

}  // namespace
}  // namespace kiln
