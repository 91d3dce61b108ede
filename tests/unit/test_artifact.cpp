// AOT artifacts: one .kiln file that loads in another process without a
// build, and falls back to compiling its embedded graph when it cannot.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>

#include "backends/ref/executor.hpp"
#include "frontend/onnx/onnx_importer.hpp"
#include "kiln/compile.hpp"
#include "runtime/artifact.hpp"
#include "runtime/compiled_model.hpp"
#include "test_helpers.hpp"
#include "zoo/zoo.hpp"

#ifndef KILN_CLI
#error "KILN_CLI must name the kiln executable"
#endif

namespace kiln {
namespace {

using runtime::CompiledModel;

struct Model {
  std::vector<std::byte> bytes;
  frontend::ImportedModel imported;
};

Model tiny_resnet(uint64_t seed) {
  std::string text = zoo::build_zoo_model("resnet_tiny", {seed, std::nullopt}).onnx_bytes;
  Model m;
  m.bytes.resize(text.size());
  std::memcpy(m.bytes.data(), text.data(), text.size());
  m.imported = frontend::import_onnx_bytes(m.bytes, "resnet_tiny.onnx");
  return m;
}

std::vector<InputSpec> batch_1_to_8() {
  return {{"input", DType::float32, {1, 3, 64, 64}, {4, 3, 64, 64}, {8, 3, 64, 64}}};
}

Tensor input_of(int64_t batch) { return testing::ramp_tensor({batch, 3, 64, 64}); }

void expect_matches_reference(CompiledModel& compiled, const ir::Graph& graph, int64_t batch) {
  std::vector<Tensor> in{input_of(batch)};
  auto got_t = compiled.run(in);
  auto got = got_t[0].data<float>();
  auto want_t = ref::Executor(graph).run(in);
  auto want = want_t[0].data<float>();
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) ASSERT_NEAR(got[i], want[i], 1e-3 * (1 + std::fabs(want[i]))) << i;
}

std::vector<std::byte> artifact_of(const Model& m, const std::filesystem::path& cache) {
  auto compiled = CompiledModel::compile(m.imported.graph, batch_1_to_8(), testing::fast_settings(cache));
  return compiled.to_artifact(m.bytes, m.imported.graph);
}

// Loads an artifact in this process as `kiln run` does.
CompiledModel load(const std::vector<std::byte>& bytes, const CompileSettings& settings,
                   frontend::ImportedModel& imported_out) {
  auto artifact = runtime::decode_artifact(bytes, "model.kiln");
  imported_out = frontend::import_onnx_bytes(artifact.onnx, "model.kiln");
  return CompiledModel::from_artifact(artifact, imported_out.graph, settings);
}

TEST(Artifact, LoadsWithoutABuildAndMatchesTheReference) {
  testing::TempDir dir;
  auto m = tiny_resnet(1);
  auto bytes = artifact_of(m, dir / "build_cache");
  frontend::ImportedModel imported;
  auto loaded = load(bytes, testing::fast_settings(dir / "empty_cache"), imported);
  ASSERT_EQ(loaded.report().engines.size(), 1u);
  EXPECT_EQ(loaded.report().engines[0].status, "hit") << loaded.report().engines[0].reason;
  EXPECT_EQ(loaded.report().engines[0].build_ms, 0);
  for (int64_t batch : {1, 5, 8}) expect_matches_reference(loaded, m.imported.graph, batch);
}

TEST(Artifact, RunsInASeparateProcessWithoutABuild) {
  testing::TempDir dir;
  auto m = tiny_resnet(1);
  auto bytes = artifact_of(m, dir / "c");
  testing::write_file(dir / "model.kiln",
                      std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
  std::string command = std::string(KILN_CLI) + " run " + (dir / "model.kiln").string() +
                        " --shape input=3x3x64x64 --json --cache-dir " + (dir / "other_cache").string() +
                        " 2>&1";
  auto [status, output] = testing::run_command(command);
  ASSERT_EQ(status, 0) << output;
  EXPECT_NE(output.find("\"status\": \"hit\""), std::string::npos) << output;
  EXPECT_EQ(output.find("\"status\": \"miss\""), std::string::npos) << output;
  EXPECT_NE(output.find("\"shape\": [\n        3,\n        10\n      ]"), std::string::npos) << output;
}

TEST(Artifact, AnotherMachinesArtifactRecompilesFromItsGraph) {
  testing::TempDir dir;
  auto m = tiny_resnet(1);
  auto artifact = runtime::decode_artifact(artifact_of(m, dir / "c"), "model.kiln");
  artifact.manifest.fingerprint = "cpu/plan1/dnnl-9.9/avx10";  // built elsewhere
  for (auto& blob : artifact.engines) blob.clear();
  auto bytes = runtime::encode_artifact(artifact);
  frontend::ImportedModel imported;
  auto loaded = load(bytes, testing::fast_settings(dir / "fresh"), imported);
  ASSERT_EQ(loaded.report().engines.size(), 1u);
  EXPECT_EQ(loaded.report().engines[0].status, "miss");  // built, and saved in this machine's cache
  expect_matches_reference(loaded, m.imported.graph, 2);
}

TEST(Artifact, ACorruptEngineIsRebuiltThroughTheCache) {
  testing::TempDir dir;
  auto m = tiny_resnet(1);
  auto artifact = runtime::decode_artifact(artifact_of(m, dir / "c"), "model.kiln");
  ASSERT_EQ(artifact.engines.size(), 1u);
  auto& blob = artifact.engines[0];
  blob[blob.size() / 2] ^= std::byte{0x40};
  auto bytes = runtime::encode_artifact(artifact);
  frontend::ImportedModel imported;
  auto loaded = load(bytes, testing::fast_settings(dir / "fresh"), imported);
  EXPECT_EQ(loaded.report().engines[0].status, "miss");
  expect_matches_reference(loaded, m.imported.graph, 2);

  // A truncated file loses its engines, not its model.
  auto whole = artifact_of(m, dir / "c");
  whole.resize(whole.size() - 100);
  auto truncated = load(whole, testing::fast_settings(dir / "fresh2"), imported);
  EXPECT_EQ(truncated.report().engines[0].status, "miss");
  expect_matches_reference(truncated, m.imported.graph, 2);
}

TEST(Artifact, ACorruptGraphSectionOrForeignFileIsAClearError) {
  testing::TempDir dir;
  auto m = tiny_resnet(1);
  auto bytes = artifact_of(m, dir / "c");
  bytes[200] ^= std::byte{1};
  try {
    (void)runtime::decode_artifact(bytes, "model.kiln");
    FAIL() << "a corrupt graph section decoded";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_model);
    EXPECT_NE(std::string(e.what()).find("model.kiln: artifact graph section is corrupt"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW((void)runtime::decode_artifact(m.bytes, "model.onnx"), Error);
  EXPECT_THROW((void)runtime::decode_artifact({}, "empty.kiln"), Error);
}

// The public API, as an application would use it: compile, save, load.
TEST(Artifact, PublicSaveAndLoad) {
  testing::TempDir dir;
  auto m = tiny_resnet(3);
  testing::write_file(dir / "model.onnx",
                      std::string(reinterpret_cast<const char*>(m.bytes.data()), m.bytes.size()));
  auto settings = testing::fast_settings(dir / "cache");
  auto compiled = kiln::compile(dir / "model.onnx", batch_1_to_8(), settings);
  compiled.save(dir / "model.kiln");
  auto loaded = kiln::load(dir / "model.kiln", testing::fast_settings(dir / "other_cache"));
  ASSERT_EQ(loaded.engines().size(), 1u);
  EXPECT_EQ(loaded.engines()[0].status, "hit") << loaded.engines()[0].reason;
  EXPECT_EQ(loaded.engines()[0].build_ms, 0);
  std::vector<Tensor> in{input_of(6)};
  auto want = ref::Executor(m.imported.graph).run(in);
  auto got = loaded.run(in);
  auto g = got[0].data<float>();
  auto w = want[0].data<float>();
  ASSERT_EQ(g.size(), w.size());
  for (size_t i = 0; i < w.size(); ++i) EXPECT_NEAR(g[i], w[i], 1e-3 * (1 + std::fabs(w[i])));
  EXPECT_THROW((void)kiln::load(dir / "model.onnx"), Error);
}

TEST(Artifact, NonRefittableEnginesCannotBeSaved) {
  testing::TempDir dir;
  auto m = tiny_resnet(1);
  auto settings = testing::fast_settings(dir.path());
  settings.cache_built_engines = settings.reuse_cached_engines = false;
  settings.refittable = false;
  auto compiled = CompiledModel::compile(m.imported.graph, batch_1_to_8(), settings);
  EXPECT_THROW((void)compiled.to_artifact(m.bytes, m.imported.graph), Error);
}

}  // namespace
}  // namespace kiln
