// The conformance runner's own logic: which inputs become initializers, where
// a compiled model's nodes ran, how cases are counted per op and group, and
// the floors that guard the oneDNN shares. No timing is asserted.
#include <gtest/gtest.h>

#include <onnx/onnx_pb.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "backends/cpu/layer_partition.hpp"
#include "frontend/onnx/onnx_importer.hpp"
#include "kiln/error.hpp"
#include "op_coverage.hpp"
#include "passes/passes.hpp"
#include "runtime/compiled_model.hpp"
#include "weight_inputs.hpp"
#include "zoo/model_builder.hpp"

namespace kiln::conformance {
namespace {

namespace fs = std::filesystem;

Tensor ramp(std::vector<int64_t> shape, float scale, float offset) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  std::vector<float> v(static_cast<size_t>(n));
  for (size_t i = 0; i < v.size(); ++i) v[i] = std::sin(static_cast<float>(i) * scale) + offset;
  return Tensor::from_values<float>(std::move(shape), v);
}

// x → Conv(x, w, b) → Relu, with the Conv's weight and bias graph inputs, as
// ONNX node tests feed them; plus a MatMul of x's rows with a 2-D input m
// and one with a batched input (an activation, not a weight).
frontend::ImportedModel conv_model() {
  zoo::ModelBuilder b("conv_inputs", 17, 1);
  const auto f = onnx::TensorProto::FLOAT;
  b.add_input("x", f, {{1, {}}, {2, {}}, {6, {}}, {6, {}}});
  b.add_input("w", f, {{4, {}}, {2, {}}, {3, {}}, {3, {}}});
  b.add_input("b", f, {{4, {}}});
  b.add_input("m", f, {{6, {}}, {5, {}}});
  b.add_input("batched", f, {{1, {}}, {2, {}}, {6, {}}, {3, {}}});
  std::string c =
      b.node("Conv", "conv", {"x", "w", "b"}, {zoo::Attr::of("pads", std::vector<int64_t>{1, 1, 1, 1})});
  std::string r = b.node("Relu", "relu", {c});
  std::string linear = b.node("MatMul", "linear", {"x", "m"});
  std::string bmm = b.node("MatMul", "bmm", {"x", "batched"});
  b.add_output(r, f, {{1, {}}, {4, {}}, {6, {}}, {6, {}}});
  b.add_output(linear, f, {{1, {}}, {2, {}}, {6, {}}, {5, {}}});
  b.add_output(bmm, f, {{1, {}}, {2, {}}, {6, {}}, {3, {}}});
  std::string bytes = b.serialize();
  return frontend::import_onnx_bytes(std::as_bytes(std::span(bytes.data(), bytes.size())));
}

std::vector<Tensor> conv_inputs() {
  return {ramp({1, 2, 6, 6}, 0.37f, 0), ramp({4, 2, 3, 3}, 0.71f, 0.1f), ramp({4}, 1.3f, 0),
          ramp({6, 5}, 0.23f, 0), ramp({1, 2, 6, 3}, 0.19f, 0)};
}

struct Compiled {
  std::vector<Tensor> outputs;
  std::vector<NodePlacement> placements;
};

Compiled compile_and_place(const ir::Graph& graph, const std::vector<Tensor>& inputs) {
  std::vector<InputSpec> specs;
  for (size_t i = 0; i < inputs.size(); ++i) {
    specs.push_back(
        InputSpec::fixed(graph.value(graph.inputs()[i]).name, inputs[i].dtype(), inputs[i].shape()));
  }
  CompileSettings settings;
  settings.cache_built_engines = false;
  settings.reuse_cached_engines = false;
  settings.timing_cache_path = "-";
  settings.optimization_level = 0;
  auto model = runtime::CompiledModel::compile(graph, specs, settings);
  runtime::ModelProfile profile = model.profile(inputs, 1, 0);
  return {profile.outputs, place_nodes(graph, model, profile)};
}

const NodePlacement& find(const std::vector<NodePlacement>& nodes, const std::string& name) {
  for (const NodePlacement& n : nodes) {
    if (n.node == name) return n;
  }
  throw Error(ErrorCode::internal, "no node " + name);
}

TEST(ConformanceWeights, PositionsFollowTheOpAndMatMulRank) {
  frontend::ImportedModel m = conv_model();
  const ir::Graph& g = m.graph;
  std::map<std::string, std::vector<size_t>> positions;
  for (const ir::Node& n : g.nodes()) positions[n.name] = weight_positions(g, n);
  EXPECT_EQ(positions.at("conv"), (std::vector<size_t>{1, 2}));
  EXPECT_TRUE(positions.at("relu").empty());
  EXPECT_EQ(positions.at("linear"), std::vector<size_t>{1});
  EXPECT_TRUE(positions.at("bmm").empty()) << "a batched right operand is an activation";
  std::vector<std::string> names;
  for (ir::ValueId v : weight_inputs(g)) names.push_back(g.value(v).name);
  EXPECT_EQ(names, (std::vector<std::string>{"w", "b", "m"}));
}

TEST(ConformanceWeights, InitializersHoldTheDataSetValuesAndTheRestStayInputs) {
  frontend::ImportedModel m = conv_model();
  const std::vector<Tensor> inputs = conv_inputs();
  auto w = weights_as_initializers(m.graph, inputs);
  ASSERT_TRUE(w);
  EXPECT_EQ(w->converted, (std::vector<std::string>{"w", "b", "m"}));
  ASSERT_EQ(w->graph.inputs().size(), 2u);
  EXPECT_EQ(w->graph.value(w->graph.inputs()[0]).name, "x");
  EXPECT_EQ(w->graph.value(w->graph.inputs()[1]).name, "batched");
  ASSERT_EQ(w->remaining.size(), 2u);
  EXPECT_EQ(w->remaining[0].bytes().data(), inputs[0].bytes().data());
  EXPECT_EQ(w->remaining[1].bytes().data(), inputs[4].bytes().data());
  const ir::Value& weight = w->graph.value(*w->graph.find_value("w"));
  ASSERT_TRUE(weight.initializer);
  ASSERT_EQ(weight.initializer->shape(), inputs[1].shape());
  auto got = weight.initializer->data<float>();
  auto want = inputs[1].data<float>();
  for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(got[i], want[i]);
  EXPECT_EQ(w->graph.num_nodes(), m.graph.num_nodes());
  EXPECT_EQ(w->graph.outputs(), m.graph.outputs());

  // A graph whose ops read no weights has no variant.
  zoo::ModelBuilder b("relu_only", 17, 1);
  b.add_input("x", onnx::TensorProto::FLOAT, {{3, {}}});
  b.add_output(b.node("Relu", "relu", {"x"}), onnx::TensorProto::FLOAT, {{3, {}}});
  std::string bytes = b.serialize();
  auto relu = frontend::import_onnx_bytes(std::as_bytes(std::span(bytes.data(), bytes.size())));
  EXPECT_FALSE(weights_as_initializers(relu.graph, std::vector<Tensor>{ramp({3}, 1, 0)}));
}

// The same model as the suite ships it (weights as inputs: the Conv cannot
// be a oneDNN layer) and with its weights as initializers (it is): the
// placements follow the engine's layers, with the backend's reason, and both
// variants compute the same outputs.
TEST(ConformanceWeights, PlacementsFollowTheEngineLayersInBothVariants) {
  frontend::ImportedModel m = conv_model();
  const std::vector<Tensor> inputs = conv_inputs();
  Compiled shipped = compile_and_place(m.graph, inputs);
  const NodePlacement& conv = find(shipped.placements, "conv");
  EXPECT_EQ(conv.op, "Conv");
  EXPECT_EQ(conv.placement, Placement::aux);
  ir::Graph lowered = passes::lower(m.graph);
  std::string why;
  for (size_t n = 0; n < lowered.num_nodes(); ++n) {
    if (lowered.node(static_cast<ir::NodeId>(n)).name == "conv") {
      EXPECT_FALSE(cpu::native_kind(lowered, static_cast<ir::NodeId>(n), &why));
    }
  }
  EXPECT_FALSE(why.empty());
  EXPECT_EQ(conv.reason, why) << "the reason is the cpu backend's own";
  EXPECT_EQ(find(shipped.placements, "relu").placement, Placement::onednn);

  auto w = weights_as_initializers(m.graph, inputs);
  ASSERT_TRUE(w);
  Compiled as_model = compile_and_place(w->graph, w->remaining);
  EXPECT_EQ(find(as_model.placements, "conv").placement, Placement::onednn);
  EXPECT_EQ(find(as_model.placements, "relu").placement, Placement::onednn);
  EXPECT_EQ(find(as_model.placements, "linear").placement, Placement::onednn);

  ASSERT_EQ(shipped.outputs.size(), as_model.outputs.size());
  for (size_t o = 0; o < shipped.outputs.size(); ++o) {
    auto a = shipped.outputs[o].data<float>();
    auto b = as_model.outputs[o].data<float>();
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-4 + 1e-4 * std::fabs(a[i]));
  }
}

// A node whose output shape depends on data runs in a fallback segment.
TEST(ConformanceWeights, FallbackNodesAreReferenceWithTheSegmentReason) {
  zoo::ModelBuilder b("nonzero", 17, 1);
  b.add_input("x", onnx::TensorProto::FLOAT, {{2, {}}, {3, {}}});
  std::string r = b.node("Relu", "relu", {"x"});
  std::string nz = b.node("NonZero", "nz", {r});
  b.add_output(r, onnx::TensorProto::FLOAT, {{2, {}}, {3, {}}});
  b.add_output(nz, onnx::TensorProto::INT64, {{2, {}}, {0, "n"}});
  std::string bytes = b.serialize();
  auto m = frontend::import_onnx_bytes(std::as_bytes(std::span(bytes.data(), bytes.size())));
  Compiled c = compile_and_place(m.graph, {ramp({2, 3}, 1.1f, 0)});
  EXPECT_EQ(find(c.placements, "relu").placement, Placement::onednn);
  const NodePlacement& n = find(c.placements, "nz");
  EXPECT_EQ(n.placement, Placement::reference);
  EXPECT_NE(n.reason.find("NonZero"), std::string::npos) << n.reason;
}

NodePlacement node(std::string op, Placement p, std::string reason = {}) {
  return {op + "_node", std::move(op), p, std::move(reason)};
}

TEST(ConformanceCoverage, AnOpTakesItsWorstNodeAndAbsorbedOnlyWhenAllAre) {
  OpCoverage c;
  // Two Convs, one on a reference kernel: the case counts as aux for Conv
  // and for the conv group; the Relu is on oneDNN.
  c.add("case/a", {node("Conv", Placement::onednn), node("Conv", Placement::aux, "why a"),
                   node("Relu", Placement::onednn)});
  // A folded node next to a oneDNN one: oneDNN.
  c.add("case/b", {node("Conv", Placement::onednn), node("Constant", Placement::absorbed)});
  // Only folded: absorbed. A fallback node: reference.
  c.add("case/c", {node("Constant", Placement::absorbed), node("NonZero", Placement::reference, "why c")});
  const PlacementCount& conv = c.ops().at("Conv");
  EXPECT_EQ(conv.cases, 2);
  EXPECT_EQ(conv.onednn(), 1);
  EXPECT_EQ(conv.by_placement.at(Placement::aux), 1);
  EXPECT_EQ(conv.reasons.at("aux: why a"), std::vector<std::string>{"case/a"});
  EXPECT_DOUBLE_EQ(conv.onednn_percent(), 50.0);
  EXPECT_EQ(c.ops().at("Constant").by_placement.at(Placement::absorbed), 2);
  EXPECT_EQ(c.ops().at("NonZero").by_placement.at(Placement::reference), 1);
  EXPECT_EQ(c.groups().at("conv").cases, 2);
  EXPECT_EQ(c.groups().at("conv").onednn(), 1);
  EXPECT_EQ(c.groups().at("activation").onednn(), 1);
  EXPECT_FALSE(c.groups().count("pooling"));
  EXPECT_EQ(c.cases().at("mixed"), 1);
  EXPECT_EQ(c.cases().at("onednn"), 1);
  EXPECT_EQ(c.cases().at("no engine"), 1);
  const std::string json = c.to_json();
  EXPECT_NE(json.find("\"aux: why a\": [\"case/a\"]"), std::string::npos) << json;
}

TEST(ConformanceCoverage, FloorsFailBelowTheirShareAndRejectUnknownGroups) {
  OpCoverage c;
  for (int i = 0; i < 3; ++i) c.add("case/on", {node("Conv", Placement::onednn)});
  c.add("case/off", {node("Conv", Placement::aux, "x")});  // conv: 75%
  const fs::path dir = fs::temp_directory_path() / ("kiln_floors_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  auto write = [&](const std::string& text) {
    std::ofstream(dir / "floors.txt") << text;
    return dir / "floors.txt";
  };
  EXPECT_TRUE(check_floors(c, write("# comment\nconv 75  # at the share\n")).empty());
  auto below = check_floors(c, write("conv 76\n"));
  ASSERT_EQ(below.size(), 1u);
  EXPECT_NE(below[0].find("3 of 4"), std::string::npos) << below[0];
  auto missing = check_floors(c, write("pooling 10\n"));
  ASSERT_EQ(missing.size(), 1u);
  EXPECT_NE(missing[0].find("no passing case"), std::string::npos);
  EXPECT_THROW(check_floors(c, write("convolution 10\n")), Error);
  EXPECT_THROW(check_floors(c, write("conv\n")), Error);
  EXPECT_THROW(check_floors(c, dir / "absent.txt"), Error);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace kiln::conformance
