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

namespace kiln {
namespace {

ir::Graph import_zoo(const std::string& name, uint64_t seed) {
  zoo::ZooOptions o;
  o.seed = seed;
  o.batch = 2;
  zoo::ZooModel m = zoo::build_zoo_model(name, o);
  return frontend::import_onnx_bytes(std::as_bytes(std::span<const char>(m.onnx_bytes)), name).graph;
}

double relative_error(const Tensor& got, const Tensor& want) {
  auto g = got.data<float>();
  auto w = want.data<float>();
  double max_ref = 1e-12;
  double max_diff = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    max_ref = std::max(max_ref, static_cast<double>(std::fabs(w[i])));
    max_diff = std::max(max_diff, std::isfinite(g[i]) ? std::fabs(static_cast<double>(g[i]) - w[i]) : 1e9);
  }
  return max_diff / max_ref;
}

bool all_equal(const std::vector<int64_t>& v, int64_t x) {
  return std::all_of(v.begin(), v.end(), [x](int64_t e) { return e == x; });
}

bool gemm_shaped(const ir::Graph& g, const ir::Node& n) {
  if (n.op_type != "Conv") return false;
  const ir::ValueType& w = g.value(n.inputs[1]).type;
  return w.shape && w.shape->size() == 4 && (*w.shape)[2] == ir::Dim(1) && (*w.shape)[3] == ir::Dim(1) &&
         n.attrs.get_int("group", 1) == 1 && all_equal(n.attrs.get_ints("strides", {1, 1}), 1) &&
         all_equal(n.attrs.get_ints("pads", {0, 0, 0, 0}), 0) && all_equal(n.attrs.get_ints("dilations", {1, 1}), 1);
}

const cpu::Tactic k_gemm(cpu::ConvAlgo::gemm, cpu::Layout::nhwc, cpu::Prec::f32, "conv:gemm/nhwc/f32");
const cpu::Tactic k_direct(cpu::ConvAlgo::direct, cpu::Layout::blocked, cpu::Prec::f32, "conv:direct/nChw16c/f32");

TEST(ConvGemm, EveryPointwiseConvAsAMatmulMatchesTheReferenceAndRefits) {
  auto backend = make_cpu_backend();
  ir::Graph a = import_zoo("mobilenet_tiny", 1);
  ir::Graph b = import_zoo("mobilenet_tiny", 2);
  std::vector<float> pixels(2 * 3 * 64 * 64);
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<float>(std::sin(0.37 * static_cast<double>(i)));
  const std::vector<Tensor> inputs = {Tensor::from_values<float>({2, 3, 64, 64}, pixels)};
  const std::vector<InputSpec> specs = {
      InputSpec::fixed(a.value(a.inputs()[0]).name, DType::float32, inputs[0].shape())};
  CompileSettings settings;
  settings.optimization_level = 0;
  builder::TimingCache cache;
  auto engine = backend->build(passes::lower(a), specs, settings, cache);

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
  ir::Graph g = import_zoo("resnet_tiny", 1);
  const std::vector<InputSpec> specs = {InputSpec::fixed(g.value(g.inputs()[0]).name, DType::float32, {2, 3, 64, 64})};
  CompileSettings settings;
  settings.optimization_level = 0;
  builder::TimingCache cache;
  auto engine = backend->build(passes::lower(g), specs, settings, cache);
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
    const std::vector<Tensor> inputs = {Tensor::zeros(DType::float32, {2, 3, 64, 64})};
    bad->run(inputs);
    FAIL() << "a gemm tactic on a 3x3 conv was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_model) << e.what();
    EXPECT_NE(std::string(e.what()).find("conv:gemm"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace kiln
