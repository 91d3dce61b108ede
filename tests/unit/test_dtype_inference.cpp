// Static dtype inference through the shape-computing chains that PyTorch's
// exporter writes (Shape -> ConstantOfShape -> Equal -> Where -> Expand, as
// in Swin's attention mask), with and without an op kiln cannot compute
// upstream.
//
// Before an unsupported op, every node is inferred in full. After one, the
// node's shapes are unknown but its dtypes still follow from the op
// (comparisons give bool, Shape int64, ConstantOfShape its value's type,
// Where its X or Y): the chain must stay typed, so only the unsupported op
// is reported, not every Where after it.
#include <gtest/gtest.h>

#include <onnx/onnx_pb.h>

#include "ir/op_schema.hpp"
#include "onnx_test_model.hpp"
#include "reference/executor.hpp"

namespace kiln {
namespace {

using onnx::TensorProto;
using testing::ProtoModel;
using testing::set_int;
using testing::set_scalar_tensor;

DType dtype_of_value(const ir::Graph& g, const std::string& name) {
  auto id = g.find_value(name);
  if (!id) throw Error(ErrorCode::internal, "no value " + name);
  return g.value(*id).type.dtype;
}

// The mask chain, reading `source` (float [3]): its Shape, ones and zeros
// of that shape, comparisons and logic on them, a Where whose X is `source`
// and whose Y is the zeros, a Cast, an Expand of the zeros and a Tile of the input.
void add_mask_chain(ProtoModel& m, const std::string& source) {
  m.node("Shape", {source}, "shape");
  set_scalar_tensor(m.node("ConstantOfShape", {"shape"}, "ones"), "value", TensorProto::INT64, 1);
  m.node("ConstantOfShape", {"shape"}, "zeros");  // no value: float 0
  m.node("Equal", {"shape", "ones"}, "eq");
  m.node("Not", {"eq"}, "ne");
  m.node("Less", {source, "zeros"}, "lt");
  m.node("Greater", {source, "zeros"}, "gt");
  m.node("And", {"lt", "eq"}, "both");
  m.node("Or", {"both", "gt"}, "either");
  m.node("Where", {"either", source, "zeros"}, "picked");
  set_int(m.node("Cast", {source}, "cast"), "to", TensorProto::INT32);
  m.node("Expand", {"zeros", "shape"}, "expanded");
  m.indices("reps", {3}, {1, 1, 2});
  m.node("Tile", {"x", "reps"}, "tiled");
  m.node("Size", {"picked"}, "size");
  m.indices("zero", {}, {0});
  m.indices("one", {}, {1});
  m.node("Range", {"zero", "size", "one"}, "range");
  m.node("Identity", {"range"}, "out");
  m.output("out", TensorProto::INT64, 1);
}

void expect_chain_dtypes(const ir::Graph& g) {
  for (auto [name, want] :
       {std::pair{"shape", DType::int64}, std::pair{"ones", DType::int64}, std::pair{"zeros", DType::float32},
        std::pair{"eq", DType::boolean}, std::pair{"ne", DType::boolean}, std::pair{"lt", DType::boolean},
        std::pair{"gt", DType::boolean}, std::pair{"both", DType::boolean},
        std::pair{"either", DType::boolean}, std::pair{"picked", DType::float32},
        std::pair{"cast", DType::int32}, std::pair{"expanded", DType::float32},
        std::pair{"tiled", DType::float32}, std::pair{"size", DType::int64},
        std::pair{"range", DType::int64}}) {
    EXPECT_EQ(dtype_of_value(g, name), want) << name;
  }
}

TEST(DtypeInference, MaskChainIsTypedAndRuns) {
  ProtoModel m(17);
  m.input("x", TensorProto::FLOAT, {3, 2, 2});
  m.node("ReduceSum", {"x"}, "r");  // [1, 1, 1]
  m.indices("flat", {1}, {-1});
  m.node("Reshape", {"r", "flat"}, "r1");
  m.indices("three", {1}, {3});
  m.node("Expand", {"r1", "three"}, "source");  // float [3], every element the sum
  add_mask_chain(m, "source");
  auto model = m.import();
  expect_chain_dtypes(model.graph);
  // The types hold at run time too: the executor checks every kernel's
  // output against inference.
  std::vector<float> x(12, 0.5f);
  auto out = ref::Executor(model.graph).run(std::vector<Tensor>{Tensor::from_values<float>({3, 2, 2}, x)});
  ASSERT_EQ(out[0].shape(), std::vector<int64_t>{3});
  EXPECT_EQ(out[0].data<int64_t>()[2], 2);
}

TEST(DtypeInference, MaskChainAfterAnUnsupportedOpKeepsItsDtypes) {
  // Det is valid ONNX that kiln does not compute: its output has no type.
  ProtoModel m(17);
  m.input("x", TensorProto::FLOAT, {3, 2, 2});
  m.node("Det", {"x"}, "source");
  add_mask_chain(m, "source");
  auto model = m.import();
  EXPECT_EQ(dtype_of_value(model.graph, "source"), DType::undefined);
  expect_chain_dtypes(model.graph);
  // Only Det is reported; no Where with an "undefined" condition.
  auto unsupported = ref::find_unsupported(model.graph);
  ASSERT_EQ(unsupported.size(), 1u);
  EXPECT_EQ(unsupported[0].op_type, "Det");
}

TEST(DtypeInference, FallbackDtypesFollowTheOpNotAGuess) {
  auto node = [](const std::string& op, size_t outputs = 1) {
    ir::Node n;
    n.op_type = op;
    n.opset = 17;
    n.outputs.assign(outputs, ir::ValueId{0});
    return n;
  };
  const DType u = DType::undefined;
  using V = std::vector<DType>;
  EXPECT_EQ(ir::fallback_output_dtypes(node("Where"), V{u, u, DType::float64}), V{DType::float64});
  EXPECT_EQ(ir::fallback_output_dtypes(node("Where"), V{DType::boolean, u, u}), V{u});
  EXPECT_EQ(ir::fallback_output_dtypes(node("GreaterOrEqual"), V{u, u}), V{DType::boolean});
  EXPECT_EQ(ir::fallback_output_dtypes(node("Add"), V{u, DType::int32}), V{DType::int32});
  EXPECT_EQ(ir::fallback_output_dtypes(node("Pow"), V{u, DType::float32}),
            V{u});  // the exponent's type is its own
  EXPECT_EQ(ir::fallback_output_dtypes(node("Expand"), V{DType::float32, u}), V{DType::float32});
  EXPECT_EQ(ir::fallback_output_dtypes(node("TopK", 2), V{u, DType::int64}), (V{u, DType::int64}));
  EXPECT_EQ(ir::fallback_output_dtypes(node("ConstantOfShape"), V{u}), V{DType::float32});
  auto cast = node("Cast");
  cast.attrs.set("to", int64_t{TensorProto::BOOL});
  EXPECT_EQ(ir::fallback_output_dtypes(cast, V{u}), V{DType::boolean});
  EXPECT_EQ(ir::fallback_output_dtypes(node("NoSuchOp"), V{DType::float32}), V{u});
}

}  // namespace
}  // namespace kiln
