// kiln::JitModule: exact engines per shape, a range engine after K distinct
// values of a dim, recompiles through the engine cache (also after reset()
// and across processes), one compile for threads that miss together, and
// outputs equal to the reference backend on every path.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <latch>
#include <nlohmann/json.hpp>
#include <thread>

#include "cpu_test_helpers.hpp"
#include "frontend/onnx/onnx_importer.hpp"
#include "kiln/error.hpp"
#include "kiln/jit.hpp"
#include "reference/executor.hpp"
#include "test_helpers.hpp"
#include "zoo/zoo.hpp"

#ifndef KILN_CLI
#error "KILN_CLI must name the kiln executable"
#endif

namespace kiln {
namespace {

std::string zoo_bytes(const std::string& name, uint64_t seed) {
  return zoo::build_zoo_model(name, {seed, std::nullopt}).onnx_bytes;  // symbolic batch
}

std::span<const std::byte> as_bytes(const std::string& s) { return std::as_bytes(std::span<const char>(s)); }

Tensor image_batch(int64_t batch, double phase = 0.0) {
  Tensor t = Tensor::zeros(DType::float32, {batch, 3, 64, 64});
  auto v = t.mutable_data<float>();
  for (size_t i = 0; i < v.size(); ++i)
    v[i] = static_cast<float>(std::sin(0.37 * static_cast<double>(i) + phase));
  return t;
}

// Three masked tokens, as this file's expectations were written for.
std::vector<Tensor> bert_inputs(int64_t batch, int64_t seq) { return testing::bert_inputs(batch, seq, 3); }

// Private cache and timing cache; no tactic timing, so builds are quick and
// the same every time.
CompileSettings test_settings(const std::filesystem::path& dir) {
  CompileSettings s;
  s.engine_cache_dir = dir / "cache";
  s.timing_cache_path = dir / "cache" / "timing" / "timing_cache.bin";
  s.optimization_level = 0;
  return s;
}

// Largest |got - want| over max|want|.
double relative_error(const Tensor& got, const Tensor& want) {
  EXPECT_EQ(got.shape(), want.shape());
  if (got.shape() != want.shape()) return 1e9;
  auto g = got.data<float>();
  auto w = want.data<float>();
  double max_ref = 1e-12, max_diff = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    max_ref = std::max(max_ref, static_cast<double>(std::fabs(w[i])));
    double d = std::isfinite(g[i]) ? std::fabs(static_cast<double>(g[i]) - w[i]) : 1e9;
    max_diff = std::max(max_diff, d);
  }
  return max_diff / max_ref;
}

class Oracle {
 public:
  explicit Oracle(const std::string& bytes)
      : m_model(frontend::import_onnx_bytes(as_bytes(bytes))), m_ref(m_model.graph) {}
  void expect_matches(const std::vector<Tensor>& got, const std::vector<Tensor>& inputs) {
    auto want = m_ref.run(inputs);
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i)
      EXPECT_LE(relative_error(got[i], want[i]), 1e-3) << "output " << i;
  }

 private:
  frontend::ImportedModel m_model;
  ref::Executor m_ref;
};

std::vector<int64_t> image_shape(int64_t batch) { return {batch, 3, 64, 64}; }

TEST(JitModule, FirstCallCompilesExactShapesAndNewShapesRecompile) {
  testing::TempDir dir;
  std::string model = zoo_bytes("resnet_tiny", 1);
  Oracle oracle(model);
  JitOptions options;
  options.dynamic_after = 3;
  JitModule jit(as_bytes(model), test_settings(dir.path()), options);
  EXPECT_EQ(jit.input_names(), std::vector<std::string>{"input"});
  EXPECT_EQ(jit.compiles(), 0u);

  std::vector<Tensor> two{image_batch(2)};
  JitCallInfo info;
  auto out = jit.run(two, &info);
  EXPECT_TRUE(info.compiled);
  EXPECT_FALSE(info.range);
  EXPECT_EQ(jit.compiles(), 1u);
  ASSERT_EQ(jit.last_engines().size(), 1u);
  EXPECT_EQ(jit.last_engines()[0].status, "miss");
  auto log = jit.compile_log();
  EXPECT_EQ(log[0].signature, "input=2x3x64x64");
  EXPECT_EQ(log[0].trigger, "first call");
  oracle.expect_matches(out, two);

  // Same shape: served, nothing compiled.
  jit(two);
  EXPECT_EQ(jit.compiles(), 1u);

  // A new batch: a second exact engine; the first still serves batch 2.
  std::vector<Tensor> three{image_batch(3, 0.5)};
  out = jit.run(three, &info);
  EXPECT_TRUE(info.compiled);
  EXPECT_EQ(info.engine, 1u);
  EXPECT_EQ(jit.compiles(), 2u);
  EXPECT_EQ(jit.live_engines(), 2u);
  EXPECT_EQ(jit.compile_log()[1].signature, "input=3x3x64x64");
  EXPECT_NE(jit.compile_log()[1].trigger.find("dim 0"), std::string::npos) << jit.compile_log()[1].trigger;
  oracle.expect_matches(out, three);
  std::vector<std::vector<int64_t>> shape2{image_shape(2)};
  EXPECT_EQ(jit.engine_for(shape2), std::optional<size_t>(0));
}

TEST(JitModule, SwitchesToOneRangeEngineAfterKDistinctValues) {
  testing::TempDir dir;
  std::string model = zoo_bytes("resnet_tiny", 2);
  Oracle oracle(model);
  JitOptions options;
  options.dynamic_after = 2;
  JitModule jit(as_bytes(model), test_settings(dir.path()), options);

  for (int64_t batch : {1, 2}) {
    std::vector<Tensor> in{image_batch(batch)};
    JitCallInfo info;
    jit.run(in, &info);
    EXPECT_FALSE(info.range);
  }
  EXPECT_EQ(jit.compiles(), 2u);

  // The third distinct batch compiles one range engine: min 1, opt 3, max
  // the next power of two at or above 2 x 3.
  std::vector<Tensor> in3{image_batch(3, 0.3)};
  JitCallInfo info;
  auto out = jit.run(in3, &info);
  EXPECT_TRUE(info.compiled);
  EXPECT_TRUE(info.range);
  oracle.expect_matches(out, in3);
  ASSERT_EQ(jit.compiles(), 3u);
  auto record = jit.compile_log()[2];
  EXPECT_TRUE(record.range);
  EXPECT_EQ(record.specs[0].min, (std::vector<int64_t>{1, 3, 64, 64}));
  EXPECT_EQ(record.specs[0].opt, (std::vector<int64_t>{3, 3, 64, 64}));
  EXPECT_EQ(record.specs[0].max, (std::vector<int64_t>{8, 3, 64, 64}));
  EXPECT_NE(record.trigger.find("range engine"), std::string::npos) << record.trigger;
  EXPECT_EQ(record.signature, "input=[1..8, opt 3]x3x64x64");

  // Every other batch in range: the range engine, no compile. Batches with
  // an exact engine keep it.
  for (int64_t batch : {5, 8, 4, 6}) {
    SCOPED_TRACE(batch);
    std::vector<Tensor> in{image_batch(batch, static_cast<double>(batch))};
    out = jit.run(in, &info);
    EXPECT_FALSE(info.compiled);
    EXPECT_TRUE(info.range);
    EXPECT_EQ(info.engine, 2u);
    oracle.expect_matches(out, in);
  }
  EXPECT_EQ(jit.compiles(), 3u);
  std::vector<std::vector<int64_t>> one{image_shape(1)};
  EXPECT_EQ(jit.engine_for(one), std::optional<size_t>(0));

  // Past the range's max: one wider range engine (max 2 x 9 -> 32).
  std::vector<Tensor> in9{image_batch(9)};
  out = jit.run(in9, &info);
  EXPECT_TRUE(info.compiled);
  EXPECT_TRUE(info.range);
  oracle.expect_matches(out, in9);
  EXPECT_EQ(jit.compile_log()[3].specs[0].max[0], 32);
  std::vector<std::vector<int64_t>> twenty{image_shape(20)};
  EXPECT_EQ(jit.engine_for(twenty), std::optional<size_t>(3));
  EXPECT_EQ(jit.compiles(), 4u);
}

TEST(JitModule, DeclaredDimRangeIsUsedAndEnforced) {
  testing::TempDir dir;
  std::string model = zoo_bytes("resnet_tiny", 2);
  JitOptions options;
  options.dynamic_after = 1;
  options.dim_ranges["batch"] = {1, 6};
  JitModule jit(as_bytes(model), test_settings(dir.path()), options);
  std::vector<Tensor> in{image_batch(2)};
  jit(in);
  in = {image_batch(3)};
  jit(in);
  auto record = jit.compile_log().back();
  EXPECT_TRUE(record.range);
  EXPECT_EQ(record.specs[0].max[0], 6);
  in = {image_batch(7)};
  try {
    jit(in);
    FAIL() << "batch 7 ran";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    std::string what = e.what();
    EXPECT_NE(what.find("'input' dim 0 ('batch')"), std::string::npos) << what;
    EXPECT_NE(what.find("[1, 6]"), std::string::npos) << what;
  }
}

// Both of BERT's inputs share the batch and sequence dims; a range over the
// sequence recomputes the Shape → Reshape chains per call.
TEST(JitModule, BertRangeEnginesMatchTheReference) {
  testing::TempDir dir;
  std::string model = zoo_bytes("bert_tiny", 3);
  Oracle oracle(model);
  JitModule jit(as_bytes(model), test_settings(dir.path()));  // dynamic_after = 1, as PyTorch
  JitCallInfo info;
  auto in = bert_inputs(2, 16);
  oracle.expect_matches(jit.run(in, &info), in);
  EXPECT_FALSE(info.range);

  in = bert_inputs(2, 9);  // the sequence changed: it becomes a range, the batch stays exact
  oracle.expect_matches(jit.run(in, &info), in);
  EXPECT_TRUE(info.range);
  auto record = jit.compile_log().back();
  for (const InputSpec& s : record.specs) {
    EXPECT_EQ(s.min, (std::vector<int64_t>{2, 1}));
    EXPECT_EQ(s.max, (std::vector<int64_t>{2, 32}));
  }
  in = bert_inputs(2, 30);
  oracle.expect_matches(jit.run(in, &info), in);
  EXPECT_FALSE(info.compiled);
  EXPECT_EQ(jit.compiles(), 2u);
}

// BERT's sequence is bounded by its 128-entry position table, and the
// automatic range max (256 here) is past it. Whether the backend builds that
// range (the out-of-table part then failing only when used) or rejects it
// (the JIT then narrows the range to the values seen, see docs/jit.md), every
// sequence the model can take is served correctly, and one it cannot is an
// error, never a wrong answer.
TEST(JitModule, ARangePastWhatTheModelTakesStillServesWhatItTakes) {
  testing::TempDir dir;
  std::string model = zoo_bytes("bert_tiny", 3);
  Oracle oracle(model);
  JitModule jit(as_bytes(model), test_settings(dir.path()));
  JitCallInfo info;
  for (int64_t seq : {100, 120, 7, 128, 64}) {
    SCOPED_TRACE(seq);
    auto in = bert_inputs(1, seq);
    oracle.expect_matches(jit.run(in, &info), in);
  }
  EXPECT_TRUE(info.range);
  EXPECT_TRUE(jit.compile_log().back().range);
  auto too_long = bert_inputs(1, 200);
  EXPECT_THROW(jit(too_long), Error);
  EXPECT_LE(jit.compiles(), 4u);
}

TEST(JitModule, ResetDropsEnginesAndTheNextCompileHitsTheDiskCache) {
  testing::TempDir dir;
  std::string model = zoo_bytes("resnet_tiny", 4);
  auto settings = test_settings(dir.path());
  JitModule jit(as_bytes(model), settings);
  std::vector<Tensor> in{image_batch(2)};
  auto first = jit(in);
  EXPECT_EQ(jit.last_engines().at(0).status, "miss");

  jit.reset();
  EXPECT_EQ(jit.live_engines(), 0u);
  std::vector<std::vector<int64_t>> shape{image_shape(2)};
  EXPECT_EQ(jit.engine_for(shape), std::nullopt);
  JitCallInfo info;
  auto again = jit.run(in, &info);
  EXPECT_TRUE(info.compiled);
  EXPECT_EQ(jit.compiles(), 2u);
  EXPECT_EQ(jit.compile_log()[1].trigger, "first call since reset()");
  EXPECT_EQ(jit.last_engines().at(0).status, "hit") << jit.last_engines().at(0).reason;
  EXPECT_EQ(jit.last_engines()[0].key, jit.compile_log()[0].engines.at(0).key);
  ASSERT_EQ(first.size(), again.size());
  EXPECT_TRUE(std::equal(first[0].bytes().begin(), first[0].bytes().end(), again[0].bytes().begin()));

  // A fresh module over a model file of the same architecture with other
  // weights (a new session): a hit, refitted with its own weights.
  std::string other = zoo_bytes("resnet_tiny", 5);
  testing::write_file(dir / "other.onnx", other);
  JitModule fresh(dir / "other.onnx", settings);
  auto out = fresh(in);
  EXPECT_EQ(fresh.last_engines().at(0).status, "hit");
  Oracle(other).expect_matches(out, in);
}

// The same architecture with new weights, as a torch.compile'd module whose
// parameters changed: the live engines (an exact one and a range one) are
// refitted in place; nothing compiles, and the outputs are those of a fresh
// compile of the new model.
TEST(JitModule, UpdateModelWithNewWeightsRefitsTheLiveEnginesInPlace) {
  testing::TempDir dir;
  std::string before = zoo_bytes("resnet_tiny", 6);
  std::string after = zoo_bytes("resnet_tiny", 7);
  testing::write_file(dir / "after.onnx", after);
  auto settings = test_settings(dir.path());
  JitModule jit(as_bytes(before), settings);
  std::vector<Tensor> two{image_batch(2)};
  std::vector<Tensor> five{image_batch(5, 0.3)};
  auto old_two = jit(two);
  jit(five);  // dynamic_after 1: a range engine for the batch
  ASSERT_EQ(jit.compiles(), 2u);
  ASSERT_EQ(jit.live_engines(), 2u);

  JitUpdate update = jit.update_model(dir / "after.onnx");
  EXPECT_TRUE(update.refit) << update.recompile_reason;
  EXPECT_TRUE(update.recompile_reason.empty());
  EXPECT_EQ(update.engines_refit, 2u);
  EXPECT_EQ(update.engines_dropped, 0u);
  EXPECT_GE(update.stats.engines, 2u);
  EXPECT_GT(update.stats.weights, 0u);
  EXPECT_EQ(jit.refits(), 1u);
  EXPECT_EQ(jit.live_engines(), 2u);

  JitCallInfo info;
  auto new_two = jit.run(two, &info);
  EXPECT_FALSE(info.compiled);
  EXPECT_EQ(info.engine, 0u);
  auto new_five = jit.run(five, &info);
  EXPECT_FALSE(info.compiled);
  EXPECT_TRUE(info.range);
  EXPECT_EQ(jit.compiles(), 2u);                            // no compile since the update
  EXPECT_GT(relative_error(new_two[0], old_two[0]), 1e-3);  // the weights did change

  // A fresh module over the new model, called the same way, compiles the
  // same engines: the refitted ones give what it gives.
  JitModule fresh(dir / "after.onnx", settings);
  auto fresh_two = fresh(two);
  auto fresh_five = fresh(five);
  EXPECT_EQ(fresh.compiles(), 2u);
  EXPECT_LE(relative_error(new_two[0], fresh_two[0]), 1e-6);
  EXPECT_LE(relative_error(new_five[0], fresh_five[0]), 1e-6);
  Oracle oracle(after);
  oracle.expect_matches(new_two, two);
  oracle.expect_matches(new_five, five);
}

// Another graph (same inputs) is a structural change: the engines are
// dropped and the next call compiles the new model.
TEST(JitModule, UpdateModelWithAnotherArchitectureRecompiles) {
  testing::TempDir dir;
  std::string resnet = zoo_bytes("resnet_tiny", 8);
  std::string mobilenet = zoo_bytes("mobilenet_tiny", 8);
  JitModule jit(as_bytes(resnet), test_settings(dir.path()));
  std::vector<Tensor> two{image_batch(2)};
  jit(two);
  ASSERT_EQ(jit.compiles(), 1u);

  JitUpdate update = jit.update_model(as_bytes(mobilenet));
  EXPECT_FALSE(update.refit);
  EXPECT_NE(update.recompile_reason.find("graph changed"), std::string::npos) << update.recompile_reason;
  EXPECT_EQ(update.engines_refit, 0u);
  EXPECT_EQ(update.engines_dropped, 1u);
  EXPECT_EQ(jit.live_engines(), 0u);
  EXPECT_EQ(jit.refits(), 0u);

  JitCallInfo info;
  auto out = jit.run(two, &info);
  EXPECT_TRUE(info.compiled);
  EXPECT_EQ(jit.compiles(), 2u);
  EXPECT_NE(jit.compile_log()[1].trigger.find("first call since update_model()"), std::string::npos)
      << jit.compile_log()[1].trigger;
  Oracle(mobilenet).expect_matches(out, two);

  // Back to a ResNet of other weights: a structural change again, and its
  // compile is a load + refit from the engine cache.
  update = jit.update_model(as_bytes(zoo_bytes("resnet_tiny", 9)));
  EXPECT_FALSE(update.refit);
  out = jit(two);
  EXPECT_EQ(jit.compiles(), 3u);
  EXPECT_EQ(jit.last_engines().at(0).status, "hit");
  Oracle(zoo_bytes("resnet_tiny", 9)).expect_matches(out, two);
}

// Engines compiled with refittable = false cannot take new weights: the
// update drops them and their shapes compile again, with the new weights.
TEST(JitModule, UpdateModelDropsEnginesThatRefuseARefit) {
  testing::TempDir dir;
  auto settings = test_settings(dir.path());
  settings.refittable = false;
  settings.cache_built_engines = false;  // the engine cache takes only refittable engines
  settings.reuse_cached_engines = false;
  JitModule jit(as_bytes(zoo_bytes("resnet_tiny", 10)), settings);
  std::vector<Tensor> two{image_batch(2)};
  jit(two);
  std::string after = zoo_bytes("resnet_tiny", 11);
  JitUpdate update = jit.update_model(as_bytes(after));
  EXPECT_TRUE(update.refit);
  EXPECT_EQ(update.engines_refit, 0u);
  EXPECT_EQ(update.engines_dropped, 1u);
  EXPECT_EQ(jit.live_engines(), 0u);
  JitCallInfo info;
  auto out = jit.run(two, &info);
  EXPECT_TRUE(info.compiled);
  Oracle(after).expect_matches(out, two);
}

// A model that does not import leaves the module as it was.
TEST(JitModule, UpdateModelWithABadModelKeepsTheOldOne) {
  testing::TempDir dir;
  std::string model = zoo_bytes("resnet_tiny", 12);
  JitModule jit(as_bytes(model), test_settings(dir.path()));
  std::vector<Tensor> two{image_batch(2)};
  auto first = jit(two);
  std::string junk = "not an onnx model";
  EXPECT_THROW(jit.update_model(as_bytes(junk)), Error);
  EXPECT_EQ(jit.live_engines(), 1u);
  JitCallInfo info;
  auto again = jit.run(two, &info);
  EXPECT_FALSE(info.compiled);
  EXPECT_LE(relative_error(again[0], first[0]), 0.0);
}

TEST(JitModule, CacheOffBuildsEveryTimeAndSavesNothing) {
  testing::TempDir dir;
  std::string model = zoo_bytes("resnet_tiny", 4);
  auto settings = test_settings(dir.path());
  settings.cache_built_engines = false;
  settings.reuse_cached_engines = false;
  JitModule jit(as_bytes(model), settings);
  std::vector<Tensor> in{image_batch(2)};
  jit(in);
  EXPECT_EQ(jit.last_engines().at(0).status, "built_uncached");
  jit.reset();
  jit(in);
  EXPECT_EQ(jit.last_engines().at(0).status, "built_uncached");
  if (std::filesystem::exists(dir / "cache")) {
    for (const auto& entry : std::filesystem::recursive_directory_iterator(dir / "cache")) {
      EXPECT_NE(entry.path().extension(), ".kiln") << entry.path();
    }
  }
}

// The shape was compiled by another process (the CLI); the JIT's compile of
// it is a hit.
TEST(JitModule, ShapeBuiltByAnotherProcessHits) {
  testing::TempDir dir;
  std::string model = zoo_bytes("resnet_tiny", 6);
  testing::write_file(dir / "model.onnx", model);
  auto settings = test_settings(dir.path());
  std::string command = std::string(KILN_CLI) + " build " + (dir / "model.onnx").string() +
                        " --shape input=3x3x64x64 --optimization-level 0 --json --cache-dir " +
                        settings.engine_cache_dir.string() + " --timing-cache " +
                        settings.timing_cache_path.string() + " >/dev/null 2>&1";
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  JitModule jit(dir / "model.onnx", settings);
  std::vector<Tensor> in{image_batch(3)};
  auto out = jit(in);
  EXPECT_EQ(jit.last_engines().at(0).status, "hit") << jit.last_engines().at(0).reason;
  Oracle(model).expect_matches(out, in);
}

TEST(JitModule, ThreadsMissingOnOneShapeCompileOnce) {
  testing::TempDir dir;
  std::string model = zoo_bytes("resnet_tiny", 7);
  Oracle oracle(model);
  JitModule jit(as_bytes(model), test_settings(dir.path()));
  constexpr int k_threads = 8;
  std::latch start(k_threads);
  std::vector<std::vector<Tensor>> outputs(k_threads);
  std::vector<JitCallInfo> infos(k_threads);
  std::vector<std::string> errors(k_threads);
  std::vector<std::thread> threads;
  std::vector<Tensor> in{image_batch(4)};
  for (int t = 0; t < k_threads; ++t) {
    threads.emplace_back([&, t] {
      start.arrive_and_wait();
      try {
        outputs[t] = jit.run(in, &infos[t]);
      } catch (const std::exception& e) {
        errors[t] = e.what();
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(jit.compiles(), 1u);
  EXPECT_EQ(jit.live_engines(), 1u);
  int compiled = 0;
  for (int t = 0; t < k_threads; ++t) {
    EXPECT_EQ(errors[t], "");
    compiled += infos[t].compiled ? 1 : 0;
    ASSERT_EQ(outputs[t].size(), 1u);
    EXPECT_TRUE(std::equal(outputs[t][0].bytes().begin(), outputs[t][0].bytes().end(),
                           outputs[0][0].bytes().begin()));
  }
  EXPECT_EQ(compiled, 1);
  oracle.expect_matches(outputs[0], in);

  // Threads on different shapes at once, several per shape: one compile per
  // shape, every result right.
  std::latch again(k_threads);
  std::vector<std::string> mixed_errors(k_threads);
  threads.clear();
  for (int t = 0; t < k_threads; ++t) {
    threads.emplace_back([&, t] {
      std::vector<Tensor> mine{image_batch(t % 2 ? 5 : 4, t)};
      again.arrive_and_wait();
      try {
        auto got = jit(mine);
        Oracle(model).expect_matches(got, mine);
      } catch (const std::exception& e) {
        mixed_errors[t] = e.what();
      }
    });
  }
  for (auto& th : threads) th.join();
  for (const auto& e : mixed_errors) EXPECT_EQ(e, "");
  EXPECT_EQ(jit.compiles(), 2u);  // batch 4 was ready; batch 5 compiled once
}

TEST(JitModule, InputsTheModelCannotTakeAreErrorsNamingTheInput) {
  testing::TempDir dir;
  std::string model = zoo_bytes("resnet_tiny", 1);
  JitModule jit(as_bytes(model), test_settings(dir.path()));
  auto expect_error = [&](std::vector<Tensor> in, const std::string& fragment) {
    try {
      jit(in);
      ADD_FAILURE() << "ran: " << fragment;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  expect_error({}, "0 inputs for a model with 1");
  expect_error({Tensor::zeros(DType::int64, {1, 3, 64, 64})}, "input 'input' is float32, got int64");
  expect_error({Tensor::zeros(DType::float32, {3, 64, 64})}, "input 'input' has rank 4");
  expect_error({Tensor::zeros(DType::float32, {1, 3, 32, 64})}, "input 'input' dim 2 is 64, got 32");
  EXPECT_EQ(jit.compiles(), 0u);
}

// `kiln bench tutorial` on a tiny model: both flows, each with the
// tutorial's three steps, and the engine statuses that make them honest.
TEST(BenchTutorial, ReportsTheThreeStepsOfBothFlows) {
  std::string command =
      std::string(KILN_CLI) + " bench tutorial --model resnet_tiny --batch 2 --json 2>/dev/null";
  auto [status, output] = testing::run_command(command);
  ASSERT_EQ(status, 0) << output;
  auto report = nlohmann::json::parse(output);
  EXPECT_TRUE(report["cache_private"].get<bool>());
  EXPECT_FALSE(std::filesystem::exists(report["cache_dir"].get<std::string>()));  // removed at exit
  for (const char* flow : {"jit", "aot"}) {
    SCOPED_TRACE(flow);
    const auto& steps = report[flow]["steps"];
    ASSERT_EQ(steps.size(), 3u);
    const char* statuses[] = {"built_uncached", "miss", "hit"};
    for (size_t i = 0; i < 3; ++i) {
      EXPECT_EQ(steps[i]["engines"][0]["status"], statuses[i]);
      EXPECT_GT(steps[i]["used_ms"].get<double>(), 0);
    }
    EXPECT_GT(steps[2]["engines"][0]["refit_ms"].get<double>(), 0);
    EXPECT_NE(steps[2]["model"], steps[1]["model"]);  // reuse refits other weights
  }
  const auto& aot = report["aot"]["steps"];
  for (int64_t i = 0; i < 3; ++i) {
    EXPECT_EQ(aot[i]["run_batch"].get<int64_t>(), 2 + i);
    EXPECT_EQ(aot[i]["output_shape"], nlohmann::json({2 + i, 10}));
  }
  EXPECT_EQ(report["aot"]["dynamic_batch"], nlohmann::json({1, 2, 4}));
}

}  // namespace
}  // namespace kiln
