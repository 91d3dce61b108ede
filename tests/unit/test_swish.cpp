// Swish (x * sigmoid(x), written by exporters as Mul(y, Sigmoid(y))) after a
// conv: as oneDNN's post-op, or as kiln's own pass over the conv's output
// (swish.hpp; the build times both and the plan keeps the choice). The pass
// against the exact function, at every tail length and at the extremes;
// both ways through an engine against the reference backend, in 16-channel
// blocks with padded channels and in nhwc; and the choice through a plan's
// round trip.
#include <gtest/gtest.h>

#include <onnx/onnx_pb.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "backends/cpu/cpu_backend.hpp"
#include "backends/cpu/cpu_features.hpp"
#include "backends/cpu/plan_format.hpp"
#include "backends/cpu/swish.hpp"
#include "cpu_test_helpers.hpp"
#include "onnx_test_model.hpp"
#include "passes/passes.hpp"
#include "reference/executor.hpp"

namespace kiln {
namespace {

using onnx::TensorProto;
using Model = testing::ProtoModel;

double exact_swish(double x) { return x / (1.0 + std::exp(-x)); }

TEST(SwishPass, MatchesTheExactFunctionAtEveryLength) {
  for (size_t n : {1u, 15u, 16u, 17u, 33u, 100u, 16u * 1024u + 5u, 70000u}) {
    std::vector<float> x(n);
    for (size_t i = 0; i < n; ++i) x[i] = static_cast<float>(std::sin(0.37 * static_cast<double>(i)) * 12.0);
    std::vector<float> y = x;
    cpu::swish_in_place(y);
    for (size_t i = 0; i < n; ++i) {
      const double want = exact_swish(x[i]);
      ASSERT_NEAR(y[i], want, 4e-7 * std::max(1.0, std::fabs(static_cast<double>(x[i]))))
          << "n " << n << " x " << x[i];
    }
  }
}

TEST(SwishPass, KeepsTheLimitsAndNaN) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> x = {0.0f, -0.0f, 200.0f, -200.0f, 88.0f, -88.0f, 1e-30f, nan, 3.0f};
  cpu::swish_in_place(x);
  EXPECT_EQ(x[0], 0.0f);
  EXPECT_EQ(x[1], 0.0f);
  EXPECT_FLOAT_EQ(x[2], 200.0f);  // sigmoid(x) is 1 to float precision
  EXPECT_NEAR(x[3], 0.0f, 1e-30f);
  EXPECT_FLOAT_EQ(x[4], 88.0f);
  EXPECT_NEAR(x[5], 0.0f, 1e-30f);
  EXPECT_NEAR(x[6], 0.5e-30f, 1e-36f);
  EXPECT_TRUE(std::isnan(x[7]));
  EXPECT_NEAR(x[8], exact_swish(3.0), 1e-6);
}

// x [2, 8, 10, 10] -> 3x3 conv to 24 channels (padded to 32 in blocks) ->
// Sigmoid -> Mul.
Model conv_silu() {
  Model m(17);
  m.input("x", {2, 8, 10, 10});
  m.weight("w", {24, 8, 3, 3}, 2.0);
  m.weight("b", {24});
  testing::set_ints(m.node("Conv", "conv", {"x", "w", "b"}, {"c"}), "pads", {1, 1, 1, 1});
  m.node("Sigmoid", "sigmoid", {"c"}, {"s"});
  m.node("Mul", "silu", {"c", "s"}, {"y"});
  m.output_shaped("y", TensorProto::FLOAT, {2, 24, 10, 10});
  return m;
}

TEST(SwishEngine, EitherWayMatchesTheReferenceAndThePlanKeepsTheChoice) {
  const Model m = conv_silu();
  const ir::Graph graph = m.import("silu.onnx").graph;
  const Tensor want = ref::Executor(graph).run(m.inputs())[0];
  auto backend = make_cpu_backend();
  auto engine = testing::build_engine(*backend, graph, m.inputs(), 0);
  for (cpu::Layout layout : {cpu::Layout::blocked, cpu::Layout::nhwc}) {
    for (bool native : {false, true}) {
      cpu::EnginePlan plan = cpu::parse_plan(engine->serialize());
      for (cpu::LayerDesc& l : plan.layers) {
        if (l.kind != cpu::LayerKind::conv) continue;
        l.tactic = cpu::Tactic(cpu::ConvAlgo::direct, layout, cpu::Prec::f32, "conv");
        l.tactic.native_swish = native;
      }
      auto rebuilt = backend->deserialize(cpu::serialize_plan(plan));
      rebuilt->refit(passes::source_weights(graph));
      std::vector<LayerTiming> steps;
      const std::vector<Tensor> got = rebuilt->run_profiled(m.inputs(), steps);
      const std::string what =
          std::string(layout == cpu::Layout::nhwc ? "nhwc" : "blocked") + (native ? " native" : " post-op");
      EXPECT_LE(testing::relative_error(got.at(0), want), 1e-5) << what;
      int passes = 0;
      for (const LayerTiming& t : steps) passes += t.tactic == "native:swish" ? 1 : 0;
      EXPECT_EQ(passes, native ? 1 : 0) << what;
      // The reloaded engine's own plan says the same.
      const cpu::EnginePlan again = cpu::parse_plan(rebuilt->serialize());
      for (const cpu::LayerDesc& l : again.layers) {
        if (l.kind == cpu::LayerKind::conv) {
          EXPECT_EQ(l.tactic.native_swish, native) << what;
        }
      }
    }
  }
}

// oneDNN's winograd kernels take no swish post-op; they run the conv alone
// and kiln's pass after it, and match the reference (winograd's transforms
// round more than a direct conv: 1e-4).
TEST(SwishEngine, WinogradRunsWithThePass) {
  if (!cpu::has_avx512f()) GTEST_SKIP() << "oneDNN's f32 winograd convolution needs AVX-512";
  const Model m = conv_silu();
  const ir::Graph graph = m.import("silu.onnx").graph;
  auto backend = make_cpu_backend();
  auto engine = testing::build_engine(*backend, graph, m.inputs(), 0);
  cpu::EnginePlan plan = cpu::parse_plan(engine->serialize());
  for (cpu::LayerDesc& l : plan.layers) {
    if (l.kind != cpu::LayerKind::conv) continue;
    l.tactic = cpu::Tactic(cpu::ConvAlgo::winograd, cpu::Layout::any, cpu::Prec::f32, "conv");
    l.tactic.native_swish = true;
  }
  auto rebuilt = backend->deserialize(cpu::serialize_plan(plan));
  rebuilt->refit(passes::source_weights(graph));
  std::vector<LayerTiming> steps;
  const std::vector<Tensor> got = rebuilt->run_profiled(m.inputs(), steps);
  EXPECT_LE(testing::relative_error(got.at(0), ref::Executor(graph).run(m.inputs())[0]), 1e-4);
  // The layer's steps (reorders of the input and output aside): the conv
  // (oneDNN would have refused a winograd primitive it cannot build: the
  // rebuild throws), then the pass.
  std::vector<std::string> conv_steps;
  for (const LayerTiming& t : steps) {
    if (t.name == "conv" && t.kind != "reorder") conv_steps.push_back(t.kind + " " + t.tactic);
  }
  ASSERT_EQ(conv_steps.size(), 2u);
  EXPECT_EQ(conv_steps[0], "onednn conv");
  EXPECT_EQ(conv_steps[1], "native native:swish");
  for (const cpu::LayerDesc& l : cpu::parse_plan(rebuilt->serialize()).layers) {
    if (l.kind != cpu::LayerKind::conv) continue;
    EXPECT_EQ(l.tactic.algo, cpu::ConvAlgo::winograd);
    EXPECT_TRUE(l.tactic.native_swish);
  }
}

// A timed build chooses; whichever it chose matches the reference.
TEST(SwishEngine, ATimedBuildMatchesTheReference) {
  const Model m = conv_silu();
  const ir::Graph graph = m.import("silu.onnx").graph;
  auto backend = make_cpu_backend();
  auto engine = testing::build_engine(*backend, graph, m.inputs(), 1);
  const std::vector<Tensor> got = engine->run(m.inputs());
  EXPECT_LE(testing::relative_error(got.at(0), ref::Executor(graph).run(m.inputs())[0]), 1e-5);
}

}  // namespace
}  // namespace kiln
