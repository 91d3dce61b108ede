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

#include "cpu_test_helpers.hpp"

namespace kiln {
namespace {

using testing::build_engine;
using testing::import_zoo;
using testing::relative_error;
using testing::sine_images;

TEST(LayoutRefinement, Level4BuildsMatchTheReferenceAndTheirPlansReload) {
  auto backend = make_cpu_backend();
  for (const std::string name : {"resnet_tiny", "mobilenet_tiny"}) {
    SCOPED_TRACE(name);
    ir::Graph g = import_zoo(name, 1, 2);
    const std::vector<Tensor> inputs = {sine_images(2, 64)};
    auto engine = build_engine(*backend, g, inputs, 4);  // level 4: both passes
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
    for (size_t i = 0; i < built.layers.size(); ++i)
      EXPECT_EQ(built.layers[i].tactic, loaded.layers[i].tactic);
  }
}

}  // namespace
}  // namespace kiln
