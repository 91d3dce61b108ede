// CompiledModel::refit: new weights in place equal a fresh compile with those
// weights (bitwise, with the same tactics), for engines, fallback segments
// and every shape instance; a bad update changes nothing.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iostream>

#include "fallback_model.hpp"
#include "frontend/onnx/onnx_importer.hpp"
#include "kiln/compile.hpp"
#include "reference/executor.hpp"
#include "runtime/clock.hpp"
#include "runtime/compiled_model.hpp"
#include "test_helpers.hpp"
#include "zoo/zoo.hpp"

namespace kiln {
namespace {

using runtime::CompiledModel;

frontend::ImportedModel import(const std::string& bytes, const std::string& name) {
  return frontend::import_onnx_bytes(std::as_bytes(std::span<const char>(bytes)), name);
}

frontend::ImportedModel zoo_model(const std::string& name, uint64_t seed,
                                  std::optional<int64_t> batch = std::nullopt) {
  return import(zoo::build_zoo_model(name, {seed, batch}).onnx_bytes, name + ".onnx");
}

// Every refittable weight of `model`, with `source`'s values.
std::vector<WeightUpdate> weights_of(const CompiledModel& model, const ir::Graph& source) {
  std::vector<WeightUpdate> updates;
  for (const WeightInfo& w : model.weights()) {
    for (size_t v = 0; v < source.num_values(); ++v) {
      const ir::Value& value = source.value(static_cast<ir::ValueId>(v));
      if (value.name == w.name && value.initializer) updates.push_back({w.name, *value.initializer});
    }
  }
  return updates;
}

// Settings without the engine cache: every compile builds. One timing cache
// file, so a second build of the architecture reads the first's timings and
// chooses the same tactics.
CompileSettings uncached(const std::filesystem::path& timing_cache, int level = 0) {
  CompileSettings s;
  s.cache_built_engines = false;
  s.reuse_cached_engines = false;
  s.optimization_level = level;
  s.timing_cache_path = timing_cache;
  return s;
}

std::vector<std::byte> bytes_of(const std::vector<Tensor>& outputs) {
  std::vector<std::byte> all;
  for (const Tensor& t : outputs) all.insert(all.end(), t.bytes().begin(), t.bytes().end());
  return all;
}

std::vector<std::byte> run_bytes(CompiledModel& model, const Tensor& input) {
  std::vector<Tensor> in{input};
  return bytes_of(model.run(in));
}

TEST(Refit, ResNet18RefitEqualsAFreshCompileBitwise) {
  testing::TempDir dir;
  auto a = zoo_model("resnet18", 1, 1);
  auto b = zoo_model("resnet18", 2, 1);
  const auto specs = std::vector{InputSpec::fixed("input", DType::float32, {1, 3, 224, 224})};
  const auto settings = uncached(dir / "timing.cache", 1);
  auto model = CompiledModel::compile(a.graph, specs, settings);
  auto fresh = CompiledModel::compile(b.graph, specs, settings);
  const Tensor input = testing::ramp_tensor({1, 3, 224, 224});
  const auto before = run_bytes(model, input);

  auto updates = weights_of(model, b.graph);
  ASSERT_EQ(updates.size(), model.weights().size());
  // BatchNorm parameters are weights too: folding them is replayed.
  EXPECT_GT(updates.size(), 60u);
  RefitStats stats = model.refit(updates);
  EXPECT_EQ(stats.weights, updates.size());
  EXPECT_EQ(stats.engines, 1u);
  EXPECT_GT(stats.refit_ms, 0);
  ASSERT_TRUE(model.last_refit());
  EXPECT_EQ(model.last_refit()->weights, updates.size());

  const auto after = run_bytes(model, input);
  EXPECT_NE(after, before);
  EXPECT_EQ(after, run_bytes(fresh, input));
  // The caller's tensors may go: the model copied them.
  updates.clear();
  EXPECT_EQ(run_bytes(model, input), after);
}

TEST(Refit, MobileNetV2RefitOfSomeWeightsEqualsAFreshCompile) {
  testing::TempDir dir;
  auto a = zoo_model("mobilenet_tiny", 3, 2);
  auto b = zoo_model("mobilenet_tiny", 4, 2);
  const auto specs = std::vector{InputSpec::fixed("input", DType::float32, {2, 3, 64, 64})};
  const auto settings = uncached(dir / "timing.cache", 1);
  auto model = CompiledModel::compile(a.graph, specs, settings);
  const Tensor input = testing::ramp_tensor({2, 3, 64, 64});

  // Half the weights from b, in two refits: the model ends as b.
  auto updates = weights_of(model, b.graph);
  ASSERT_EQ(updates.size(), model.weights().size());
  const auto half = updates.begin() + static_cast<std::ptrdiff_t>(updates.size() / 2);
  model.refit(std::span(updates.begin(), half));
  auto mixed = run_bytes(model, input);
  model.refit(std::span(half, updates.end()));
  auto fresh = CompiledModel::compile(b.graph, specs, settings);
  EXPECT_EQ(run_bytes(model, input), run_bytes(fresh, input));
  EXPECT_NE(mixed, run_bytes(fresh, input));
}

// nonzero_blocks_model(3): with min_block_size 3 the first Conv → Relu (two
// nodes) falls back to the reference backend and reads block0's weights;
// the later blocks' convs are engines.
TEST(Refit, FallbackSegmentsReadTheNewWeights) {
  testing::TempDir dir;
  auto a = import(testing::nonzero_blocks_model(3, 1), "a.onnx");
  auto b = import(testing::nonzero_blocks_model(3, 2), "b.onnx");
  const auto specs =
      std::vector{InputSpec{"input", DType::float32, {1, 4, 8, 8}, {2, 4, 8, 8}, {4, 4, 8, 8}}};
  auto settings = uncached(dir / "timing.cache");
  settings.min_block_size = 3;
  auto model = CompiledModel::compile(a.graph, specs, settings);
  const auto& segments = model.report().segments;
  ASSERT_FALSE(segments.empty());
  ASSERT_FALSE(segments[0].engine);
  ASSERT_GE(model.report().engines.size(), 1u);

  auto stats = model.refit(weights_of(model, b.graph));
  EXPECT_EQ(stats.weights, 6u);
  EXPECT_EQ(stats.fallback_weights, 2u);  // block0.w and block0.b
  // The last engine (the third block's Gather ... Add) reads no weight.
  EXPECT_EQ(stats.engines, 2u);

  auto fresh = CompiledModel::compile(b.graph, specs, settings);
  ref::Executor reference(b.graph);
  for (int64_t batch : {1, 3}) {
    const Tensor input = testing::ramp_tensor({batch, 4, 8, 8});
    EXPECT_EQ(run_bytes(model, input), run_bytes(fresh, input)) << "batch " << batch;
    std::vector<Tensor> in{input};
    const auto outputs = model.run(in);
    const auto reference_outputs = reference.run(in);
    auto out = outputs[0].data<float>();
    auto expected = reference_outputs[0].data<float>();
    for (size_t i = 0; i < expected.size(); ++i)
      ASSERT_NEAR(out[i], expected[i], 1e-3 * (1 + std::fabs(expected[i]))) << i;
  }

  // Refitting only a fallback weight refits no engine.
  auto again = model.refit(std::vector<WeightUpdate>{{"block0.b", testing::ramp_tensor({4})}});
  EXPECT_EQ(again.engines, 0u);
  EXPECT_EQ(again.fallback_weights, 1u);
}

// Outputs bitwise as before every rejected refit.
TEST(Refit, ABadUpdateIsAClearErrorAndChangesNothing) {
  testing::TempDir dir;
  auto a = import(testing::nonzero_blocks_model(3, 1), "a.onnx");
  auto b = import(testing::nonzero_blocks_model(3, 2), "b.onnx");
  const auto specs =
      std::vector{InputSpec{"input", DType::float32, {1, 4, 8, 8}, {2, 4, 8, 8}, {4, 4, 8, 8}}};
  auto settings = uncached(dir / "timing.cache");
  settings.min_block_size = 3;
  auto model = CompiledModel::compile(a.graph, specs, settings);
  const Tensor input = testing::ramp_tensor({2, 4, 8, 8});
  const auto before = run_bytes(model, input);

  auto good = weights_of(model, b.graph);  // valid updates first: none may land
  // `bad` replaces the valid update of its name, or, with `append`, joins them.
  auto expect_refused = [&](WeightUpdate bad, const std::string& message, bool append = false) {
    auto updates = good;
    auto same = std::find_if(updates.begin(), updates.end(),
                             [&](const WeightUpdate& u) { return u.name == bad.name; });
    if (append || same == updates.end())
      updates.push_back(std::move(bad));
    else
      *same = std::move(bad);
    try {
      model.refit(updates);
      ADD_FAILURE() << "refit accepted: " << message;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
      EXPECT_NE(std::string(e.what()).find(message), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("a.onnx"), std::string::npos) << e.what();
    }
    EXPECT_EQ(run_bytes(model, input), before) << message;
  };
  expect_refused({"no.such.weight", testing::ramp_tensor({4})}, "no initializer named 'no.such.weight'");
  expect_refused({"block1.w", testing::ramp_tensor({4, 4, 3, 3}).reshaped({4, 4, 9})},
                 "weight 'block1.w' is float32[4x4x3x3], the new value is float32[4x4x9]");
  expect_refused({"block2.b", Tensor::zeros(DType::float64, {4})},
                 "weight 'block2.b' is float32[4], the new value is float64[4]");
  expect_refused({"block0.w", testing::ramp_tensor({4, 4, 3, 3})}, "weight 'block0.w' is given twice", true);
  expect_refused({"scale", Tensor::scalar(1.0f)}, "initializer 'scale' is not a refittable weight: a scalar");
  expect_refused({"one", Tensor::scalar(int64_t{2})},
                 "initializer 'one' is not a refittable weight: a int64");
  EXPECT_FALSE(model.last_refit());

  // And the model still refits afterwards.
  model.refit(good);
  auto fresh = CompiledModel::compile(b.graph, specs, settings);
  EXPECT_EQ(run_bytes(model, input), run_bytes(fresh, input));
}

TEST(Refit, EveryShapeInstanceGetsTheNewWeights) {
  testing::TempDir dir;
  auto a = zoo_model("resnet_tiny", 1);
  auto b = zoo_model("resnet_tiny", 2);
  const auto specs =
      std::vector{InputSpec{"input", DType::float32, {1, 3, 64, 64}, {2, 3, 64, 64}, {4, 3, 64, 64}}};
  const auto settings = uncached(dir / "timing.cache");
  auto model = CompiledModel::compile(a.graph, specs, settings);
  auto fresh = CompiledModel::compile(b.graph, specs, settings);
  // Three shapes: three engine instances, each with weights in its layouts.
  const std::vector<Tensor> inputs{testing::ramp_tensor({1, 3, 64, 64}), testing::ramp_tensor({3, 3, 64, 64}),
                                   testing::ramp_tensor({4, 3, 64, 64})};
  std::vector<std::vector<std::byte>> before;
  for (const Tensor& in : inputs) before.push_back(run_bytes(model, in));

  model.refit(weights_of(model, b.graph));
  for (size_t i = 0; i < inputs.size(); ++i) {
    auto out = run_bytes(model, inputs[i]);
    EXPECT_NE(out, before[i]) << "shape " << inputs[i].shape_string();
    EXPECT_EQ(out, run_bytes(fresh, inputs[i])) << "shape " << inputs[i].shape_string();
  }
}

TEST(Refit, ImmutableWeightsRefuse) {
  testing::TempDir dir;
  auto a = zoo_model("resnet_tiny", 1);
  const auto specs = std::vector{InputSpec::fixed("input", DType::float32, {1, 3, 64, 64})};
  auto settings = uncached(dir / "timing.cache");
  settings.refittable = false;
  auto model = CompiledModel::compile(a.graph, specs, settings);
  const Tensor input = testing::ramp_tensor({1, 3, 64, 64});
  const auto before = run_bytes(model, input);
  auto b = zoo_model("resnet_tiny", 2);
  try {
    model.refit(weights_of(model, b.graph));
    ADD_FAILURE() << "a model compiled with refittable = false refitted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("refittable = false"), std::string::npos) << e.what();
  }
  EXPECT_EQ(run_bytes(model, input), before);
}

// The public API: refit by a name → tensor map; save() refuses afterwards
// (the artifact would embed the compile-time weights).
TEST(Refit, PublicApiRefitsByNameAndSaveRefusesAfterwards) {
  testing::TempDir dir;
  std::string a = zoo::build_zoo_model("resnet_tiny", {1, std::nullopt}).onnx_bytes;
  testing::write_file(dir / "b.onnx", zoo::build_zoo_model("resnet_tiny", {2, std::nullopt}).onnx_bytes);
  const auto specs = std::vector{InputSpec::fixed("input", DType::float32, {2, 3, 64, 64})};
  const auto settings = uncached(dir / "timing.cache");
  auto model = kiln::compile(std::as_bytes(std::span<const char>(a)), specs, settings);
  auto fresh = kiln::compile(dir / "b.onnx", specs, settings);
  model.save(dir / "before.kiln");

  auto b = zoo_model("resnet_tiny", 2);
  std::map<std::string, Tensor> weights;
  for (const WeightInfo& w : model.weights()) {
    for (size_t v = 0; v < b.graph.num_values(); ++v) {
      if (b.graph.value(static_cast<ir::ValueId>(v)).name == w.name)
        weights[w.name] = *b.graph.value(static_cast<ir::ValueId>(v)).initializer;
    }
  }
  ASSERT_EQ(weights.size(), model.weights().size());
  RefitStats stats = model.refit(weights);
  EXPECT_EQ(stats.weights, weights.size());
  std::vector<Tensor> in{testing::ramp_tensor({2, 3, 64, 64})};
  EXPECT_EQ(bytes_of(model.run(in)), bytes_of(fresh.run(in)));
  EXPECT_THROW(model.save(dir / "after.kiln"), Error);
}

// Refit against the compile that refit replaces (through the engine cache:
// import, lowering, key, lookup, load and refit). Prints both; asserts only
// that they compute the same thing.
TEST(Refit, ResNet18RefitTimeAgainstARecompileThroughTheCache) {
  testing::TempDir dir;
  testing::write_file(dir / "a.onnx", zoo::build_zoo_model("resnet18", {1, 1}).onnx_bytes);
  testing::write_file(dir / "b.onnx", zoo::build_zoo_model("resnet18", {2, 1}).onnx_bytes);
  const auto specs = std::vector{InputSpec::fixed("input", DType::float32, {1, 3, 224, 224})};
  CompileSettings settings = testing::fast_settings(dir / "cache");
  auto model = kiln::compile(dir / "a.onnx", specs, settings);
  ASSERT_EQ(model.engines().at(0).status, "miss");
  std::vector<Tensor> in{testing::ramp_tensor({1, 3, 224, 224})};
  model.run(in);

  auto b = frontend::import_onnx_file(dir / "b.onnx");
  std::map<std::string, Tensor> weights;
  for (const WeightInfo& w : model.weights()) {
    for (size_t v = 0; v < b.graph.num_values(); ++v) {
      if (b.graph.value(static_cast<ir::ValueId>(v)).name == w.name)
        weights[w.name] = *b.graph.value(static_cast<ir::ValueId>(v)).initializer;
    }
  }
  std::vector<double> refit_ms, check_ms, recompile_ms;
  std::vector<std::byte> refitted, recompiled;
  for (int round = 0; round < 3; ++round) {
    const RefitStats stats = model.refit(weights);
    refit_ms.push_back(stats.refit_ms);
    check_ms.push_back(stats.check_ms);
    refitted = bytes_of(model.run(in));
    const auto start = runtime::Clock::now();
    auto hit = kiln::compile(dir / "b.onnx", specs, settings);
    recompile_ms.push_back(runtime::ms_since(start));
    ASSERT_EQ(hit.engines().at(0).status, "hit");
    recompiled = bytes_of(hit.run(in));
  }
  EXPECT_EQ(refitted, recompiled);
  std::cout << "resnet18 (batch 1, 224x224, " << weights.size() << " weights): refit ms";
  for (double ms : refit_ms) std::cout << " " << ms;
  std::cout << " (of which checking and copying the values";
  for (double ms : check_ms) std::cout << " " << ms;
  std::cout << ")";
  std::cout << "; recompile through the cache (hit) ms";
  for (double ms : recompile_ms) std::cout << " " << ms;
  std::cout << "\n";
}

}  // namespace
}  // namespace kiln
