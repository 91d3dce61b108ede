// The engine cache end to end: compile → save → compile another model of the
// same architecture → hit → refit, with real files, real corruption and real
// processes.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>

#include "backends/ref/executor.hpp"
#include "cache/cache_layout.hpp"
#include "cache/disk_engine_cache.hpp"
#include "frontend/onnx/onnx_importer.hpp"
#include "kiln/compile.hpp"
#include "kiln/engine_cache.hpp"
#include "runtime/compiled_model.hpp"
#include "test_helpers.hpp"
#include "zoo/zoo.hpp"

#ifndef KILN_CLI
#error "KILN_CLI must name the kiln executable"
#endif

namespace kiln {
namespace {

using runtime::CompiledModel;

frontend::ImportedModel zoo_model(const std::string& name, uint64_t seed) {
  std::string bytes = zoo::build_zoo_model(name, {seed, std::nullopt}).onnx_bytes;
  return frontend::import_onnx_bytes(std::as_bytes(std::span<const char>(bytes)), name + ".onnx");
}

std::vector<InputSpec> specs_for(int64_t batch) {
  return {InputSpec::fixed("input", DType::float32, {batch, 3, 64, 64})};
}

Tensor test_input(int64_t batch) { return testing::ramp_tensor({batch, 3, 64, 64}); }

CompileSettings fast_settings(const std::filesystem::path& cache_dir) {
  return testing::fast_settings(cache_dir);
}

std::vector<float> run_once(CompiledModel& m, int64_t batch = 2) {
  std::vector<Tensor> in{test_input(batch)};
  auto out = m.run(in);
  auto d = out[0].data<float>();
  return {d.begin(), d.end()};
}

std::filesystem::path entry_file(const std::filesystem::path& dir, const std::string& key) {
  return cache::CacheLayout(dir).entry_path(key);
}

TEST(CompileCache, SecondModelOfTheArchitectureHitsAndGetsItsOwnWeights) {
  testing::TempDir dir;
  auto a = zoo_model("resnet_tiny", 1);
  auto b = zoo_model("resnet_tiny", 2);
  auto settings = fast_settings(dir.path());

  auto cold = CompiledModel::compile(a.graph, specs_for(2), settings);
  ASSERT_EQ(cold.report().engines.size(), 1u);
  EXPECT_EQ(cold.report().engines[0].status, "miss");
  auto out_a = run_once(cold);

  auto hit = CompiledModel::compile(b.graph, specs_for(2), settings);
  EXPECT_EQ(hit.report().engines[0].status, "hit") << hit.report().engines[0].reason;
  EXPECT_EQ(hit.report().engines[0].key, cold.report().engines[0].key);
  auto out_hit = run_once(hit);

  CompileSettings no_cache = settings;
  no_cache.cache_built_engines = false;
  no_cache.reuse_cached_engines = false;
  auto fresh_b = CompiledModel::compile(b.graph, specs_for(2), no_cache);
  EXPECT_EQ(fresh_b.report().engines[0].status, "built_uncached");
  auto out_fresh = run_once(fresh_b);

  // B served from A's entry computes B's function, never A's.
  EXPECT_EQ(out_hit, out_fresh);
  EXPECT_NE(out_hit, out_a);
  // And agrees with the reference backend on B.
  ref::Executor ref(b.graph);
  std::vector<Tensor> in{test_input(2)};
  auto ref_outputs = ref.run(in);
  auto expected = ref_outputs[0].data<float>();
  for (size_t i = 0; i < expected.size(); ++i)
    EXPECT_NEAR(out_hit[i], expected[i], 1e-3 * (1 + std::fabs(expected[i])));

  // The hit reports the build it saved, and the counters add it up.
  EXPECT_EQ(hit.report().engines[0].saved_build_ms, std::floor(cold.report().engines[0].build_ms));
  auto stats = cache::DiskEngineCache(dir.path(), settings.engine_cache_size).stats();
  EXPECT_EQ(stats.hits, 1u);
  EXPECT_EQ(stats.misses, 1u);
  EXPECT_EQ(stats.build_ms_saved, static_cast<uint64_t>(cold.report().engines[0].build_ms));
}

class CorruptEntry : public ::testing::TestWithParam<std::string> {};

TEST_P(CorruptEntry, IsALoggedMissThatRebuildsAndOverwrites) {
  testing::TempDir dir;
  auto m = zoo_model("resnet_tiny", 1);
  auto settings = fast_settings(dir.path());
  auto first = CompiledModel::compile(m.graph, specs_for(2), settings);
  auto expected = run_once(first);
  auto path = entry_file(dir.path(), first.report().engines[0].key);
  ASSERT_TRUE(std::filesystem::exists(path));

  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  const std::string& kind = GetParam();
  if (kind == "truncated") bytes.resize(bytes.size() / 2);
  if (kind == "bitflip") bytes[bytes.size() - 100] = static_cast<char>(bytes[bytes.size() - 100] ^ 0x10);
  if (kind == "foreign") bytes = std::string(4096, 'x');
  if (kind == "older_version") bytes[8] = 0;  // envelope version 0
  if (kind == "empty") bytes.clear();
  testing::write_file(path, bytes);

  auto second = CompiledModel::compile(m.graph, specs_for(2), settings);
  EXPECT_EQ(second.report().engines[0].status, "miss");
  EXPECT_NE(second.report().engines[0].reason.find("corrupt"), std::string::npos)
      << second.report().engines[0].reason;
  EXPECT_EQ(run_once(second), expected);

  auto third = CompiledModel::compile(m.graph, specs_for(2), settings);
  EXPECT_EQ(third.report().engines[0].status, "hit") << third.report().engines[0].reason;
  EXPECT_EQ(run_once(third), expected);

  // Misses by reason: the cold one (absent) and the corrupt one.
  auto stats = cache::DiskEngineCache(dir.path(), settings.engine_cache_size).stats();
  EXPECT_EQ(stats.misses, 2u);
  EXPECT_EQ(stats.unusable_corrupt, 1u);
  EXPECT_EQ(stats.hits, 1u);
}

INSTANTIATE_TEST_SUITE_P(Kinds, CorruptEntry,
                         ::testing::Values("truncated", "bitflip", "foreign", "older_version", "empty"));

// The tutorial's RAMEngineCache, re-created as a user subclass.
class RamEngineCacheLikeTheTutorial : public EngineCache {
 public:
  void save(const std::string& key, std::span<const std::byte> blob) override {
    std::lock_guard lock(m_mutex);
    m_engines[key] = std::vector<std::byte>(blob.begin(), blob.end());
  }
  std::optional<std::vector<std::byte>> load(const std::string& key) override {
    std::lock_guard lock(m_mutex);
    auto it = m_engines.find(key);
    if (it == m_engines.end()) return std::nullopt;
    return it->second;
  }
  size_t size() const { return m_engines.size(); }

 private:
  std::mutex m_mutex;
  std::map<std::string, std::vector<std::byte>> m_engines;
};

TEST(CompileCache, CustomEngineCacheFromTheTutorial) {
  testing::TempDir dir;
  auto ram = std::make_shared<RamEngineCacheLikeTheTutorial>();
  auto settings = fast_settings(dir.path() / "unused");
  settings.custom_engine_cache = ram;
  auto a = zoo_model("resnet_tiny", 1);
  auto b = zoo_model("resnet_tiny", 5);
  auto first = CompiledModel::compile(a.graph, specs_for(1), settings);
  EXPECT_EQ(first.report().engines[0].status, "miss");
  EXPECT_EQ(ram->size(), 1u);
  auto second = CompiledModel::compile(b.graph, specs_for(1), settings);
  EXPECT_EQ(second.report().engines[0].status, "hit") << second.report().engines[0].reason;
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "unused" / "v1"));  // the disk cache was not used
}

TEST(CompileCache, CachingWithoutRefittableIsRefusedClearly) {
  testing::TempDir dir;
  auto m = zoo_model("resnet_tiny", 1);
  auto settings = fast_settings(dir.path());
  settings.refittable = false;
  try {
    CompiledModel::compile(m.graph, specs_for(1), settings);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("refittable"), std::string::npos);
  }
  settings.cache_built_engines = false;
  settings.reuse_cached_engines = false;
  auto uncached = CompiledModel::compile(m.graph, specs_for(1), settings);
  EXPECT_EQ(uncached.report().engines[0].status, "built_uncached");
}

TEST(CompileCache, AMissNamesTheKeyPartThatDiffers) {
  testing::TempDir dir;
  auto m = zoo_model("resnet_tiny", 1);
  auto settings = fast_settings(dir.path());
  CompiledModel::compile(m.graph, specs_for(2), settings);
  auto other_batch = CompiledModel::compile(m.graph, specs_for(3), settings);
  EXPECT_EQ(other_batch.report().engines[0].status, "miss");
  EXPECT_NE(other_batch.report().engines[0].reason.find("differs in: inputs"), std::string::npos)
      << other_batch.report().engines[0].reason;
}

TEST(CompileCache, UnusableCacheFolderStillCompiles) {
  testing::TempDir dir;
  testing::write_file(dir / "file", "not a folder");
  auto m = zoo_model("resnet_tiny", 1);
  auto compiled = CompiledModel::compile(m.graph, specs_for(1), fast_settings(dir / "file" / "cache"));
  EXPECT_EQ(compiled.report().engines[0].status, "built_uncached");
  EXPECT_EQ(run_once(compiled, 1).size(), 10u);
}

// Real processes, started fresh (exec, not a bare fork: OpenMP and other
// threads of this test process must not be inherited mid-flight).
TEST(CompileCache, EightProcessesCompilingTogetherBuildOnce) {
  testing::TempDir dir;
  testing::write_file(dir / "model.onnx", zoo::build_zoo_model("resnet_tiny", {3, std::nullopt}).onnx_bytes);
  constexpr int k_processes = 8;
  std::vector<FILE*> pipes;
  for (int p = 0; p < k_processes; ++p) {
    std::string command =
        std::string(KILN_CLI) + " build " + (dir / "model.onnx").string() +
        " --shape input=2x3x64x64 --optimization-level 0 --timing-cache - --json --cache-dir " +
        (dir / "cache").string() + " 2>/dev/null";
    pipes.push_back(::popen(command.c_str(), "r"));
    ASSERT_NE(pipes.back(), nullptr);
  }
  std::map<std::string, int> counts;
  for (FILE* pipe : pipes) {
    std::string output;
    char buffer[4096];
    size_t n = 0;
    while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) output.append(buffer, n);
    EXPECT_EQ(::pclose(pipe), 0) << output;
    for (const char* status : {"\"status\": \"hit\"", "\"status\": \"miss\""}) {
      if (output.find(status) != std::string::npos) ++counts[status];
    }
  }
  EXPECT_EQ(counts["\"status\": \"miss\""], 1);
  EXPECT_EQ(counts["\"status\": \"hit\""], k_processes - 1);
  // The counters count compiles, not reads: a waiter's first look (a miss)
  // and its look after the wait (a hit) are one hit.
  auto stats = cache::DiskEngineCache(dir / "cache", uint64_t{1} << 30).stats();
  EXPECT_EQ(stats.misses, 1u);
  EXPECT_EQ(stats.hits, static_cast<uint64_t>(k_processes - 1));
  EXPECT_EQ(stats.saves, 1u);
}

// The public API alone, as an application would use it.
TEST(CompileApi, CompileTwiceHitsAndRuns) {
  testing::TempDir dir;
  testing::write_file(dir / "a.onnx", zoo::build_zoo_model("resnet_tiny", {1, std::nullopt}).onnx_bytes);
  std::string b = zoo::build_zoo_model("resnet_tiny", {2, std::nullopt}).onnx_bytes;
  CompileSettings settings = fast_settings(dir / "cache");
  std::vector<InputSpec> specs{{"input", DType::float32, {1, 3, 64, 64}, {2, 3, 64, 64}, {4, 3, 64, 64}}};
  auto first = kiln::compile(dir / "a.onnx", specs, settings);
  EXPECT_EQ(first.engines().at(0).status, "miss");
  EXPECT_EQ(first.input_names(), std::vector<std::string>{"input"});
  auto second = kiln::compile(std::as_bytes(std::span<const char>(b)), specs, settings);
  EXPECT_EQ(second.engines().at(0).status, "hit") << second.engines().at(0).reason;
  std::vector<Tensor> in{test_input(3)};
  auto out = second.run(in);
  EXPECT_EQ(out.at(0).shape(), (std::vector<int64_t>{3, 10}));
  std::vector<Tensor> too_big{test_input(5)};
  EXPECT_THROW(second.run(too_big), Error);
}

}  // namespace
}  // namespace kiln
