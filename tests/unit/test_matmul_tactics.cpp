// Tactics of weight MatMul/Gemm layers in the cpu backend: real alternatives
// (weight layouts x oneDNN implementations) are timed at optimization level
// 3, the plan recreates exactly the chosen one (or refuses a plan naming an
// implementation this machine lacks), every candidate refits, and timings
// taken at one thread count are never served at another.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>
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

using testing::fixed_specs;
using testing::import_zoo;
using testing::relative_error;

// bert_tiny: MatMul + bias Add layers (weights [in, out]); resnet_tiny: its
// classifier is a Gemm with transB (weights [out, in]).
std::vector<Tensor> inputs_for(const std::string& name) {
  if (name == "resnet_tiny") {
    std::vector<float> pixels(2 * 3 * 64 * 64);
    for (size_t i = 0; i < pixels.size(); ++i)
      pixels[i] = static_cast<float>(std::sin(0.37 * static_cast<double>(i)));
    return {Tensor::from_values<float>({2, 3, 64, 64}, pixels)};
  }
  const int64_t batch = 2, seq = 16;
  std::vector<int64_t> ids(static_cast<size_t>(batch * seq));
  std::vector<int64_t> mask(ids.size(), 1);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int64_t>((i * 7919 + 13) % 1000);
  return {Tensor::from_values<int64_t>({batch, seq}, ids), Tensor::from_values<int64_t>({batch, seq}, mask)};
}

bool bitwise_equal(const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].shape() != b[i].shape() || a[i].dtype() != b[i].dtype() ||
        !std::equal(a[i].bytes().begin(), a[i].bytes().end(), b[i].bytes().begin(), b[i].bytes().end())) {
      return false;
    }
  }
  return true;
}

CompileSettings level(int optimization_level, int threads = 0) {
  CompileSettings s;
  s.optimization_level = optimization_level;
  s.num_threads = threads;
  return s;
}

struct Built {
  ir::Graph graph;
  std::unique_ptr<Engine> engine;
};

Built build(Backend& backend, const std::string& name, uint64_t seed, const CompileSettings& settings,
            builder::TimingCache& cache) {
  Built b{import_zoo(name, seed), nullptr};
  b.engine = backend.build(passes::lower(b.graph), fixed_specs(b.graph, inputs_for(name)), settings, cache);
  return b;
}

// The weight MatMul/Gemm layers' tactics ("matmul:f32/<impl>/<weights>..."),
// by layer name; attention's activation products ("matmul:batched") are not
// tuned.
bool is_weight_matmul(const LayerReport& r) {
  // r.op names the fused chain: "MatMul+Add+Gelu", "Gemm+Relu".
  return (r.op.rfind("MatMul", 0) == 0 || r.op.rfind("Gemm", 0) == 0) &&
         r.tactic.rfind("matmul:batched", 0) != 0;
}

std::vector<std::string> weight_matmul_tactics(const Engine& engine) {
  std::vector<std::string> tactics;
  for (const LayerReport& r : engine.info().layers) {
    if (is_weight_matmul(r)) {
      tactics.push_back(r.name + " = " + r.tactic);
    }
  }
  return tactics;
}

// The timing-cache entries of matmul layers: key -> candidate names.
std::vector<std::pair<std::string, std::vector<std::string>>> matmul_entries(
    const builder::TimingCache& cache) {
  std::vector<std::pair<std::string, std::vector<std::string>>> out;
  for (const std::string& key : cache.keys()) {
    if (key.find("|matmul|") == std::string::npos) continue;
    std::vector<std::string> names;
    const auto timings = cache.find(key);  // held: a range-for over *find() would dangle
    for (const builder::TacticTiming& t : timings.value()) names.push_back(t.tactic);
    out.emplace_back(key, names);
  }
  return out;
}

// "matmul:f32/brg:avx512_core/ba+relu" -> {"brg:avx512_core", "ba"}.
std::pair<std::string, std::string> impl_and_layout(const std::string& candidate) {
  const size_t a = candidate.find('/');
  const size_t b = candidate.find('/', a + 1);
  const size_t end = candidate.find('+', b + 1);
  return {candidate.substr(a + 1, b - a - 1),
          candidate.substr(b + 1, end == std::string::npos ? end : end - b - 1)};
}

TEST(MatmulTactics, Level3TimesSeveralCandidatesPerWeightMatmul) {
  auto backend = make_cpu_backend();
  for (const std::string name : {"bert_tiny", "resnet_tiny"}) {
    SCOPED_TRACE(name);
    builder::TimingCache cache;
    Built a = build(*backend, name, 1, level(3), cache);

    auto entries = matmul_entries(cache);
    ASSERT_FALSE(entries.empty());
    std::set<std::string> layouts;
    for (const auto& [key, names] : entries) {
      // Every weight matmul timed alternatives, not just a precision.
      EXPECT_GE(names.size(), 2u) << key;
      for (const std::string& n : names) {
        EXPECT_EQ(n.rfind("matmul:f32/", 0), 0u) << n;
        EXPECT_EQ(impl_and_layout(n).first.rfind("ref", 0), std::string::npos)
            << "reference kernel timed: " << n;
        layouts.insert(impl_and_layout(n).second);
      }
    }
    // Both plain layouts are candidates whatever oneDNN prefers.
    EXPECT_TRUE(layouts.count("ab")) << ::testing::PrintToString(layouts);
    EXPECT_TRUE(layouts.count("ba")) << ::testing::PrintToString(layouts);

    const auto tactics = weight_matmul_tactics(*a.engine);
    ASSERT_FALSE(tactics.empty());
    for (const LayerReport& r : a.engine->info().layers) {
      if (is_weight_matmul(r)) {
        EXPECT_GT(r.time_ms, 0.0) << r.name << " " << r.tactic;
      }
    }
    // Whatever won, the engine computes the model.
    const auto inputs = inputs_for(name);
    auto got = a.engine->run(inputs);
    auto want = ref::Executor(a.graph).run(inputs);
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i)
      EXPECT_LE(relative_error(got[i], want[i]), 1e-3) << "output " << i;
  }
}

TEST(MatmulTactics, LoadedPlanRunsTheChosenCandidateAndRefitsBitwise) {
  auto backend = make_cpu_backend();
  for (const std::string name : {"bert_tiny", "resnet_tiny"}) {
    SCOPED_TRACE(name);
    const auto inputs = inputs_for(name);
    // One timing cache: B's build reads A's timings, so both choose alike.
    builder::TimingCache cache;
    Built a = build(*backend, name, 1, level(3), cache);
    Built b = build(*backend, name, 2, level(3), cache);
    ASSERT_EQ(weight_matmul_tactics(*a.engine), weight_matmul_tactics(*b.engine));

    auto restored = backend->deserialize(a.engine->serialize());
    EXPECT_EQ(weight_matmul_tactics(*restored), weight_matmul_tactics(*a.engine));
    restored->refit(passes::source_weights(a.graph));
    EXPECT_TRUE(bitwise_equal(restored->run(inputs), a.engine->run(inputs))) << "loaded == fresh build";
    restored->refit(passes::source_weights(b.graph));
    EXPECT_TRUE(bitwise_equal(restored->run(inputs), b.engine->run(inputs))) << "refit == fresh build of B";
    // A second round trip keeps the recorded layout and implementation.
    auto again = cpu::parse_plan(restored->serialize());
    auto first = cpu::parse_plan(a.engine->serialize());
    ASSERT_EQ(again.layers.size(), first.layers.size());
    for (size_t i = 0; i < first.layers.size(); ++i) {
      EXPECT_EQ(again.layers[i].tactic.impl, first.layers[i].tactic.impl);
      EXPECT_EQ(again.layers[i].tactic.weights, first.layers[i].tactic.weights);
    }
  }
}

// Every (layout, implementation) candidate the build offered, forced into the
// plan for every weight matmul: it loads, refits and computes the model.
TEST(MatmulTactics, EveryOfferedCandidateLoadsFromThePlanAndRefits) {
  auto backend = make_cpu_backend();
  const std::string name = "bert_tiny";
  const auto inputs = inputs_for(name);
  builder::TimingCache cache;
  Built a = build(*backend, name, 1, level(1), cache);
  Built b = build(*backend, name, 2, level(0), cache);
  const auto want = ref::Executor(b.graph).run(inputs);

  std::set<std::pair<std::string, std::string>> offered;  // (impl, layout tag)
  for (const auto& [key, names] : matmul_entries(cache)) {
    for (const std::string& n : names) offered.insert(impl_and_layout(n));
  }
  ASSERT_GE(offered.size(), 2u);
  const cpu::EnginePlan plan = cpu::parse_plan(a.engine->serialize());
  for (const auto& [impl, tag] : offered) {
    // oneDNN's own layout is requested as `any`; the plain ones by name.
    const cpu::WeightLayout layout = tag == "ab"   ? cpu::WeightLayout::plain
                                     : tag == "ba" ? cpu::WeightLayout::transposed
                                                   : cpu::WeightLayout::any;
    SCOPED_TRACE(impl + " " + tag);
    cpu::EnginePlan forced = plan;
    int changed = 0;
    for (cpu::LayerDesc& l : forced.layers) {
      if (l.kind != cpu::LayerKind::matmul || l.tactic.impl.empty()) continue;
      l.tactic.impl = impl;
      l.tactic.weights = layout;
      l.tactic.name = "forced";
      ++changed;
    }
    ASSERT_GT(changed, 0);
    std::unique_ptr<Engine> engine;
    ASSERT_NO_THROW(engine = backend->deserialize(cpu::serialize_plan(forced)));
    engine->refit(passes::source_weights(b.graph));
    auto got = engine->run(inputs);
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i)
      EXPECT_LE(relative_error(got[i], want[i]), 1e-3) << "output " << i;
  }
}

TEST(MatmulTactics, APlanNamingAnUnavailableImplementationIsRefused) {
  auto backend = make_cpu_backend();
  builder::TimingCache cache;
  Built a = build(*backend, "bert_tiny", 1, level(0), cache);
  cpu::EnginePlan plan = cpu::parse_plan(a.engine->serialize());
  bool changed = false;
  for (cpu::LayerDesc& l : plan.layers) {
    if (l.kind == cpu::LayerKind::matmul && !l.tactic.impl.empty() && !changed) {
      l.tactic.impl = "brg:avx512_future_isa";
      changed = true;
    }
  }
  ASSERT_TRUE(changed);
  try {
    backend->deserialize(cpu::serialize_plan(plan));
    FAIL() << "expected a kiln::Error";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("brg:avx512_future_isa"), std::string::npos) << what;
    EXPECT_NE(what.find("not available on this machine"), std::string::npos) << what;
  }
}

TEST(MatmulTactics, TimingsAtOneThreadCountAreNotReusedAtAnother) {
  auto backend = make_cpu_backend();
  builder::TimingCache cache;
  build(*backend, "bert_tiny", 1, level(1, 1), cache);
  const auto at1 = cache.keys();
  ASSERT_FALSE(at1.empty());
  for (const std::string& k : at1) EXPECT_NE(k.find("|threads=1|"), std::string::npos) << k;
  build(*backend, "bert_tiny", 1, level(1, 2), cache);
  // Every layer was timed again under its own key.
  EXPECT_EQ(cache.size(), 2 * at1.size());
  for (const std::string& k : cache.keys()) {
    EXPECT_TRUE(k.find("|threads=1|") != std::string::npos || k.find("|threads=2|") != std::string::npos)
        << k;
  }
  // The same thread count again is all hits.
  const uint64_t hits = cache.hits();
  const uint64_t misses = cache.misses();
  build(*backend, "bert_tiny", 2, level(1, 2), cache);
  EXPECT_EQ(cache.size(), 2 * at1.size());
  EXPECT_EQ(cache.misses(), misses);
  EXPECT_GE(cache.hits(), hits + at1.size());
}

}  // namespace
}  // namespace kiln
