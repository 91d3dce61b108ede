#include <gtest/gtest.h>

#include "ir/graph.hpp"
#include "ir/op_schema.hpp"

namespace kiln::ir {
namespace {

Node make_node(std::string name, std::string op, std::vector<ValueId> in, std::vector<ValueId> out) {
  Node n;
  n.name = std::move(name);
  n.op_type = std::move(op);
  n.opset = 17;
  n.inputs = std::move(in);
  n.outputs = std::move(out);
  return n;
}

TEST(IrGraph, TopologicalOrderSortsNodesListedOutOfOrder) {
  Graph g;
  ValueId x = g.add_value("x", ValueType::of_static(DType::float32, std::vector<int64_t>{2, 3}));
  g.add_input(x);
  ValueId a = g.add_value("a");
  ValueId b = g.add_value("b");
  // b = Relu(a) is listed before a = Relu(x).
  g.add_node(make_node("second", "Relu", {a}, {b}));
  g.add_node(make_node("first", "Relu", {x}, {a}));
  g.add_output(b);
  EXPECT_EQ(g.topological_order(), (std::vector<NodeId>{1, 0}));
  // Deterministic: the same answer every time.
  EXPECT_EQ(g.topological_order(), g.topological_order());
}

TEST(IrGraph, TopologicalOrderKeepsInsertionOrderForIndependentNodes) {
  Graph g;
  ValueId x = g.add_value("x", ValueType::of_static(DType::float32, std::vector<int64_t>{4}));
  g.add_input(x);
  std::vector<ValueId> outs;
  for (int i = 0; i < 5; ++i) {
    outs.push_back(g.add_value("y" + std::to_string(i)));
    g.add_node(make_node("n" + std::to_string(i), "Relu", {x}, {outs.back()}));
  }
  EXPECT_EQ(g.topological_order(), (std::vector<NodeId>{0, 1, 2, 3, 4}));
}

TEST(IrGraph, CycleIsAnErrorNamingANode) {
  Graph g;
  ValueId a = g.add_value("a");
  ValueId b = g.add_value("b");
  g.add_node(make_node("n0", "Relu", {b}, {a}));
  g.add_node(make_node("n1", "Relu", {a}, {b}));
  g.source = "cyclic.onnx";
  try {
    (void)g.topological_order();
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_model);
    EXPECT_NE(std::string(e.what()).find("cyclic.onnx"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("(Relu)"), std::string::npos);
  }
}

TEST(IrGraph, ShapeInferenceCarriesSymbolicDims) {
  Graph g;
  ValueType in{DType::float32, Dims{Dim::symbol("batch"), Dim(3), Dim(1)}};
  ValueId x = g.add_value("x", in);
  ValueId y = g.add_value("y", ValueType{DType::float32, Dims{Dim(1), Dim(4)}});
  g.add_input(x);
  g.add_input(y);
  ValueId z = g.add_value("z");
  g.add_node(make_node("add", "Add", {x, y}, {z}));
  g.add_output(z);
  infer_shapes(g);
  EXPECT_EQ(g.value(z).type.to_string(), "float32[batch,3,4]");
  // The printable form shows ops, names and inferred types.
  std::string text = g.to_string();
  EXPECT_NE(text.find("%z: float32[batch,3,4] = Add(%x, %y)"), std::string::npos) << text;
}

TEST(IrGraph, IncompatibleBroadcastIsAnInvalidModel) {
  Graph g;
  ValueId x = g.add_value("x", ValueType::of_static(DType::float32, std::vector<int64_t>{2, 3}));
  ValueId y = g.add_value("y", ValueType::of_static(DType::float32, std::vector<int64_t>{4}));
  g.add_input(x);
  g.add_input(y);
  ValueId z = g.add_value("z");
  g.add_node(make_node("bad_add", "Add", {x, y}, {z}));
  try {
    infer_shapes(g);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_model);
    EXPECT_NE(std::string(e.what()).find("node 'bad_add' (Add)"), std::string::npos) << e.what();
  }
}

TEST(IrShape, BroadcastDims) {
  auto r = broadcast_dims(Dims{Dim::symbol("n"), Dim(1)}, Dims{Dim(5)});
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)[0], Dim::symbol("n"));
  EXPECT_EQ((*r)[1], Dim(5));
  EXPECT_FALSE(broadcast_dims(Dims{Dim(2)}, Dims{Dim(3)}));
}

}  // namespace
}  // namespace kiln::ir
