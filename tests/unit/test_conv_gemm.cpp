// A 1x1 conv (stride 1, no padding, one group) can run as one oneDNN matmul
// over its nhwc activations, the [O, I] kernel read through a transposed
// view ("conv:gemm"). A plan that asks for it wherever it applies must match
// the reference, refit (BatchNorm factors included) like any other tactic,
// and round-trip; a plan that asks for it elsewhere is refused.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <span>
#include <string>
#include <vector>

#include "backends/cpu/cpu_backend.hpp"
#include "backends/cpu/plan_format.hpp"
#include "backends/ref/executor.hpp"
#include "builder/timing_cache.hpp"
#include "frontend/onnx/onnx_importer.hpp"
#include "kiln/error.hpp"
#include "passes/passes.hpp"
#include "zoo/zoo.hpp"

#include "cpu_test_helpers.hpp"

namespace kiln {
namespace {

using testing::import_zoo;
using testing::relative_error;

bool all_equal(const std::vector<int64_t>& v, int64_t x) {
  return std::all_of(v.begin(), v.end(), [x](int64_t e) { return e == x; });
}

bool gemm_shaped(const ir::Graph& g, const ir::Node& n) {
  if (n.op_type != "Conv") return false;
  const ir::ValueType& w = g.value(n.inputs[1]).type;
  return w.shape && w.shape->size() == 4 && (*w.shape)[2] == ir::Dim(1) && (*w.shape)[3] == ir::Dim(1) &&
         n.attrs.get_int("group", 1) == 1 && all_equal(n.attrs.get_ints("strides", {1, 1}), 1) &&
         all_equal(n.attrs.get_ints("pads", {0, 0, 0, 0}), 0) &&
         all_equal(n.attrs.get_ints("dilations", {1, 1}), 1);
}

const cpu::Tactic k_gemm(cpu::ConvAlgo::gemm, cpu::Layout::nhwc, cpu::Prec::f32, "conv:gemm/nhwc/f32");
const cpu::Tactic k_direct(cpu::ConvAlgo::direct, cpu::Layout::blocked, cpu::Prec::f32,
                           "conv:direct/nChw16c/f32");

TEST(ConvGemm, EveryPointwiseConvAsAMatmulMatchesTheReferenceAndRefits) {
  auto backend = make_cpu_backend();
  ir::Graph a = import_zoo("mobilenet_tiny", 1, 2);
  ir::Graph b = import_zoo("mobilenet_tiny", 2, 2);
  const std::vector<Tensor> inputs = {testing::sine_images(2, 64)};
  auto engine = testing::build_engine(*backend, a, inputs, 0);

  cpu::EnginePlan plan = cpu::parse_plan(engine->serialize());
  int as_gemm = 0;
  for (cpu::LayerDesc& l : plan.layers) {
    if (l.kind != cpu::LayerKind::conv || !gemm_shaped(plan.graph, plan.graph.node(l.anchor()))) continue;
    l.tactic = k_gemm;
    if (l.dw_conv != ir::k_no_node) {  // the attached depthwise conv then runs on its own
      l.dw_fused = false;
      l.dw_tactic = k_direct;
    }
    ++as_gemm;
  }
  ASSERT_GT(as_gemm, 2);
  auto gemm = backend->deserialize(cpu::serialize_plan(plan));
  // B's weights (BatchNorm folded by factors into the transposed kernel view).
  gemm->refit(passes::source_weights(b));
  EXPECT_LE(relative_error(gemm->run(inputs)[0], ref::Executor(b).run(inputs)[0]), 1e-3);
  gemm->refit(passes::source_weights(a));
  const Tensor got = gemm->run(inputs)[0];
  EXPECT_LE(relative_error(got, ref::Executor(a).run(inputs)[0]), 1e-3);
  int reported = 0;
  for (const LayerReport& r : gemm->info().layers) reported += r.tactic.rfind("conv:gemm", 0) == 0;
  EXPECT_EQ(reported, as_gemm);
  // Round trip: the reloaded plan still runs every such layer as a matmul.
  auto again = backend->deserialize(gemm->serialize());
  again->refit(passes::source_weights(a));
  const Tensor twice = again->run(inputs)[0];
  EXPECT_TRUE(std::equal(got.bytes().begin(), got.bytes().end(), twice.bytes().begin()));
}

TEST(ConvGemm, APlanAskingItForAnotherConvIsRefused) {
  auto backend = make_cpu_backend();
  ir::Graph g = import_zoo("resnet_tiny", 1, 2);
  const std::vector<Tensor> inputs = {Tensor::zeros(DType::float32, {2, 3, 64, 64})};
  auto engine = testing::build_engine(*backend, g, inputs, 0);
  cpu::EnginePlan plan = cpu::parse_plan(engine->serialize());
  bool changed = false;
  for (cpu::LayerDesc& l : plan.layers) {
    if (l.kind == cpu::LayerKind::conv && !gemm_shaped(plan.graph, plan.graph.node(l.anchor()))) {
      l.tactic = k_gemm;  // a 3x3 or 7x7 conv: no matmul computes it
      changed = true;
      break;
    }
  }
  ASSERT_TRUE(changed);
  try {
    auto bad = backend->deserialize(cpu::serialize_plan(plan));
    bad->refit(passes::source_weights(g));
    bad->run(inputs);
    FAIL() << "a gemm tactic on a 3x3 conv was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_model) << e.what();
    EXPECT_NE(std::string(e.what()).find("conv:gemm"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace kiln
