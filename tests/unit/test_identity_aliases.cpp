// Exporters alias parameters through Identity nodes (torch.onnx.export keeps
// each distinct initializer once and gives every identical one an Identity of
// it). Lowering forwards them, so a Conv reading an alias is still a native
// layer with a constant weight, not a reference kernel.
#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>

#include "backends/cpu/cpu_backend.hpp"
#include "cpu_test_helpers.hpp"
#include "frontend/onnx/onnx_importer.hpp"
#include "reference/executor.hpp"
#include "zoo/zoo.hpp"

namespace kiln {
namespace {

// resnet_tiny with every Conv weight read through an Identity of it, and two
// Convs reading one alias where their weights have the same shape (as the
// exporter's deduplication makes them).
ir::Graph aliased_resnet_tiny(size_t* aliased_convs) {
  zoo::ZooOptions o;
  o.batch = 1;
  zoo::ZooModel m = zoo::build_zoo_model("resnet_tiny", o);
  onnx::ModelProto model;
  EXPECT_TRUE(model.ParseFromString(m.onnx_bytes));
  onnx::GraphProto* graph = model.mutable_graph();
  std::vector<onnx::NodeProto> aliases;
  *aliased_convs = 0;
  for (onnx::NodeProto& node : *graph->mutable_node()) {
    if (node.op_type() != "Conv") continue;
    onnx::NodeProto alias;
    alias.set_op_type("Identity");
    alias.set_name(node.input(1) + "/alias");
    alias.add_input(node.input(1));
    alias.add_output(node.input(1) + "_alias");
    node.set_input(1, alias.output(0));
    aliases.push_back(alias);
    ++*aliased_convs;
  }
  // Aliases first: they read initializers only, so the order stays topological.
  google::protobuf::RepeatedPtrField<onnx::NodeProto> nodes;
  for (onnx::NodeProto& a : aliases) *nodes.Add() = a;
  for (const onnx::NodeProto& n : graph->node()) *nodes.Add() = n;
  graph->mutable_node()->Swap(&nodes);
  std::string bytes;
  EXPECT_TRUE(model.SerializeToString(&bytes));
  return frontend::import_onnx_bytes(std::as_bytes(std::span<const char>(bytes)), "aliased.onnx").graph;
}

TEST(IdentityAliases, ConvsReadingAliasedWeightsAreNativeLayersAndMatchTheReference) {
  size_t aliased = 0;
  ir::Graph graph = aliased_resnet_tiny(&aliased);
  ASSERT_GT(aliased, 3u);
  std::vector<Tensor> inputs{testing::sine_images(1, 64)};
  auto backend = make_cpu_backend();
  auto engine = testing::build_engine(*backend, graph, inputs, 0);
  size_t convs = 0;
  for (const LayerReport& layer : engine->info().layers) {
    if (layer.op != "Conv") continue;
    ++convs;
    EXPECT_EQ(layer.tactic.rfind("aux:", 0), std::string::npos) << layer.name << ": " << layer.tactic;
  }
  EXPECT_GT(convs, 0u);
  auto want = ref::Executor(graph).run(inputs);
  auto got = engine->run(inputs);
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_LE(testing::relative_error(got[i], want[i]), 1e-4);
}

TEST(IdentityAliases, LoweringRemovesEveryAliasAndKeepsTheOutputs) {
  size_t aliased = 0;
  ir::Graph graph = aliased_resnet_tiny(&aliased);
  ir::Graph lowered = passes::lower(graph);
  ASSERT_EQ(lowered.outputs().size(), graph.outputs().size());
  for (size_t i = 0; i < graph.outputs().size(); ++i) {
    EXPECT_EQ(lowered.value(lowered.outputs()[i]).name, graph.value(graph.outputs()[i]).name);
  }
  for (ir::NodeId n : lowered.topological_order()) EXPECT_NE(lowered.node(n).op_type, "Identity");
}

}  // namespace
}  // namespace kiln
