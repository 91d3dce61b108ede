// Builds at optimization level 4 and up run a second tuning pass that
// prices each layer's output reorder into its consumer's layout, and keep
// whichever engine runs faster. Whichever is kept, the engine must match the
// reference backend, and its plan must load and refit to the same outputs
// bitwise (the plan records the kept pass's tactics, not the other's).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <span>
#include <string>
#include <vector>

#include "backends/cpu/cpu_backend.hpp"
#include "backends/ref/executor.hpp"
#include "builder/timing_cache.hpp"
#include "frontend/onnx/onnx_importer.hpp"
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

TEST(LayoutRefinement, Level4BuildsMatchTheReferenceAndTheirPlansReload) {
  auto backend = make_cpu_backend();
  for (const std::string name : {"resnet_tiny", "mobilenet_tiny"}) {
    SCOPED_TRACE(name);
    ir::Graph g = import_zoo(name, 1);
    std::vector<float> pixels(2 * 3 * 64 * 64);
    for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<float>(std::sin(0.37 * static_cast<double>(i)));
    const std::vector<Tensor> inputs = {Tensor::from_values<float>({2, 3, 64, 64}, pixels)};
    const std::vector<InputSpec> specs = {
        InputSpec::fixed(g.value(g.inputs()[0]).name, DType::float32, inputs[0].shape())};
    CompileSettings settings;
    settings.optimization_level = 4;  // both passes
    builder::TimingCache cache;
    auto engine = backend->build(passes::lower(g), specs, settings, cache);
    const std::vector<Tensor> got = engine->run(inputs);
    EXPECT_LE(relative_error(got[0], ref::Executor(g).run(inputs)[0]), 1e-3);
    auto restored = backend->deserialize(engine->serialize());
    restored->refit(passes::source_weights(g));
    const std::vector<Tensor> again = restored->run(inputs);
    EXPECT_TRUE(std::equal(got[0].bytes().begin(), got[0].bytes().end(), again[0].bytes().begin()));
    // The reloaded engine reports the tactics the build kept.
    const EngineInfo built = engine->info();
    const EngineInfo loaded = restored->info();
    ASSERT_EQ(built.layers.size(), loaded.layers.size());
    for (size_t i = 0; i < built.layers.size(); ++i) EXPECT_EQ(built.layers[i].tactic, loaded.layers[i].tactic);
  }
}

}  // namespace
}  // namespace kiln
