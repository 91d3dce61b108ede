// A stem conv (three input channels, as every image model's first layer)
// can read the plain NCHW input as it is and write 16-channel blocks
// (Layout::plain_in): no reorder of the whole input before it. Forced into a
// plan, it survives the plan round trip, runs with no step before it, and
// matches the reference backend at batch 1 and 2.
#include <gtest/gtest.h>

#include <onnx/onnx_pb.h>

#include <string>
#include <vector>

#include "backends/cpu/cpu_backend.hpp"
#include "backends/cpu/plan_format.hpp"
#include "cpu_test_helpers.hpp"
#include "onnx_test_model.hpp"
#include "passes/passes.hpp"
#include "reference/executor.hpp"

namespace kiln {
namespace {

using onnx::TensorProto;
using Model = testing::ProtoModel;
using testing::set_ints;

Model stem(int64_t batch) {
  Model m(17);
  m.input("x", {batch, 3, 17, 17});
  m.weight("w0", {16, 3, 3, 3});
  m.weight("b0", {16});
  auto* conv = m.node("Conv", "stem", {"x", "w0", "b0"}, {"c"});
  set_ints(conv, "pads", {1, 1, 1, 1});
  set_ints(conv, "strides", {2, 2});
  m.node("Relu", "relu", {"c"}, {"r"});
  m.weight("w1", {16, 16, 1, 1});
  m.node("Conv", "head", {"r", "w1"}, {"y"});
  m.output_shaped("y", TensorProto::FLOAT, {batch, 16, 9, 9});
  return m;
}

TEST(StemConv, ReadsThePlainInputWithNoReorderBeforeIt) {
  for (int64_t batch : {1, 2}) {
    const Model m = stem(batch);
    const ir::Graph graph = m.import("stem.onnx").graph;
    auto backend = make_cpu_backend();
    auto engine = testing::build_engine(*backend, graph, m.inputs(), 0);
    cpu::EnginePlan plan = cpu::parse_plan(engine->serialize());
    bool forced = false;
    for (cpu::LayerDesc& l : plan.layers) {
      if (l.kind != cpu::LayerKind::conv || graph.node(l.anchor()).name != "stem") continue;
      l.tactic = cpu::Tactic(cpu::ConvAlgo::direct, cpu::Layout::plain_in, cpu::Prec::f32,
                             "conv:direct/nchw>nChw16c/f32");
      forced = true;
    }
    ASSERT_TRUE(forced);
    const cpu::EnginePlan reread = cpu::parse_plan(cpu::serialize_plan(plan));
    bool kept = false;
    for (const cpu::LayerDesc& l : reread.layers) kept |= l.tactic.layout == cpu::Layout::plain_in;
    EXPECT_TRUE(kept) << "the plan round trip lost the layout";
    auto rebuilt = backend->deserialize(cpu::serialize_plan(plan));
    rebuilt->refit(passes::source_weights(graph));
    std::vector<LayerTiming> steps;
    const std::vector<Tensor> got = rebuilt->run_profiled(m.inputs(), steps);
    const std::vector<Tensor> want = ref::Executor(graph).run(m.inputs());
    EXPECT_LE(testing::relative_error(got.at(0), want.at(0)), 1e-4) << "batch " << batch;
    ASSERT_FALSE(steps.empty());
    EXPECT_EQ(steps[0].name, "stem") << steps[0].kind << " " << steps[0].tactic;
    EXPECT_EQ(steps[0].kind, "onednn") << steps[0].tactic;
    EXPECT_NE(steps[0].tactic.find("nchw>nChw16c"), std::string::npos) << steps[0].tactic;
  }
}

}  // namespace
}  // namespace kiln
