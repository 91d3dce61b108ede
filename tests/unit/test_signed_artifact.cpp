// AOT artifacts in a fleet that signs its cache entries: signing × artifacts
// × tiers. An artifact is trusted as the file the user chose to load (its
// engines are checked by their envelope, not by the secret), and whatever is
// rebuilt goes into the signed stores behind it.
#include <gtest/gtest.h>

#include <sys/stat.h>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "cache/artifact_engine_cache.hpp"
#include "cache/disk_engine_cache.hpp"
#include "cache/open.hpp"
#include "format/envelope.hpp"
#include "frontend/onnx/onnx_importer.hpp"
#include "redis_test_server.hpp"
#include "reference/executor.hpp"
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

constexpr const char* k_secret = "the fleet's signing secret, 32+ bytes";

struct Fleet {
  testing::TempDir dir;
  std::string onnx;
  frontend::ImportedModel imported;

  Fleet() {
    onnx = zoo::build_zoo_model("resnet_tiny", {7, std::nullopt}).onnx_bytes;
    testing::write_file(dir / "m.onnx", onnx);
    testing::write_file(dir / "secret", k_secret);
    ::chmod((dir / "secret").c_str(), 0600);
    imported = frontend::import_onnx_file(dir / "m.onnx");
  }

  // Builds the artifact in another process ("host A"), with its own cache
  // folder, signing or not.
  std::vector<std::byte> build_elsewhere(bool signed_fleet) {
    std::string command =
        (signed_fleet ? "KILN_ENGINE_CACHE_SECRET_FILE=" + (dir / "secret").string() + " " : "") +
        std::string(KILN_CLI) + " build " + (dir / "m.onnx").string() +
        " --shape input=2x3x64x64 --optimization-level 0 --cache-dir " + (dir / "host_a").string() +
        " --save " + (dir / "m.kiln").string() + " 2>&1";
    auto [status, output] = testing::run_command(command);
    EXPECT_EQ(status, 0) << output;
    return testing::read_file_bytes(dir / "m.kiln");
  }

  // This process is "host B": its own folder, the same secret.
  CompileSettings host_b(std::vector<std::string> tiers) {
    CompileSettings s = testing::fast_settings(dir / "host_b");
    s.engine_cache_secret_file = dir / "secret";
    s.engine_cache_tiers = std::move(tiers);
    return s;
  }

  CompiledModel load(std::span<const std::byte> bytes, const CompileSettings& s,
                     frontend::ImportedModel& out) {
    auto artifact = runtime::decode_artifact(bytes, "m.kiln");
    out = frontend::import_onnx_bytes(artifact.onnx, "m.kiln");
    return CompiledModel::from_artifact(artifact, out.graph, s);
  }

  void expect_correct(CompiledModel& compiled) {
    std::vector<Tensor> in{testing::ramp_tensor({2, 3, 64, 64})};
    auto got_t = compiled.run(in);
    auto want_t = ref::Executor(imported.graph).run(in);
    auto got = got_t[0].data<float>();
    auto want = want_t[0].data<float>();
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i)
      ASSERT_NEAR(got[i], want[i], 1e-3 * (1 + std::fabs(want[i]))) << i;
  }
};

void expect_all_hits(const CompiledModel& model) {
  ASSERT_FALSE(model.report().engines.empty());
  for (const auto& e : model.report().engines) EXPECT_EQ(e.status, "hit") << e.reason;
}

// The tier lists of the matrix; "redis" is replaced by a live server's URI.
// A RAM tier lives as long as the process, so each test names its own size
// (`megabytes`, made distinct per tier list) to start with an empty one.
std::vector<std::string> tiers_of(const std::string& name, const testing::RedisTestServer* redis,
                                  int megabytes) {
  std::string ram = "ram:" + std::to_string(megabytes + (name == "redis" ? 100 : 0)) + "M";
  if (name == "disk") return {"disk"};
  if (name == "ram") return {ram, "disk"};
  return {ram, "disk", redis->uri()};
}

// Parameter: the tiers behind the artifact ("disk", "ram", "redis"); the
// Redis case starts a real redis-server, or skips without one.
class SignedArtifact : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() != "redis") return;
    REQUIRE_REDIS_SERVER();
    redis = std::make_unique<testing::RedisTestServer>();
  }
  std::unique_ptr<testing::RedisTestServer> redis;
};

TEST_P(SignedArtifact, BuiltOnOneHostLoadsOnAnotherWithTheSameSecretWithoutARebuild) {
  for (bool signed_build : {true, false}) {
    Fleet fleet;
    auto bytes = fleet.build_elsewhere(signed_build);
    frontend::ImportedModel imported;
    int ram = signed_build ? 61 : 62;
    auto loaded = fleet.load(bytes, fleet.host_b(tiers_of(GetParam(), redis.get(), ram)), imported);
    expect_all_hits(loaded);
    fleet.expect_correct(loaded);
    // Nothing was refused or rebuilt: host B's own disk store stays empty.
    auto stats = cache::DiskEngineCache(fleet.dir / "host_b", uint64_t{1} << 30).stats();
    EXPECT_EQ(stats.refused_unauthenticated, 0u);
    EXPECT_EQ(stats.saves, 0u);
  }
}

TEST_P(SignedArtifact, ATamperedEngineIsRefusedRebuiltAndSavedSignedBehindTheArtifact) {
  Fleet fleet;
  auto artifact = runtime::decode_artifact(fleet.build_elsewhere(true), "m.kiln");
  ASSERT_FALSE(artifact.engines.empty());
  for (auto& blob : artifact.engines) blob[blob.size() / 2] ^= std::byte{0x40};
  auto tampered = runtime::encode_artifact(artifact);
  auto settings = fleet.host_b(tiers_of(GetParam(), redis.get(), 63));

  frontend::ImportedModel imported;
  auto first = fleet.load(tampered, settings, imported);
  for (const auto& e : first.report().engines) EXPECT_EQ(e.status, "miss") << e.reason;
  fleet.expect_correct(first);

  // The rebuilt engines were saved signed in host B's stores: the next load
  // of the same (still tampered) artifact is served from them.
  auto second = fleet.load(tampered, settings, imported);
  expect_all_hits(second);
  fleet.expect_correct(second);
  auto key = second.report().engines.at(0).key;
  auto entry = testing::read_file_bytes(cache::CacheLayout(fleet.dir / "host_b").entry_path(key));
  EXPECT_TRUE(format::is_signed(entry));
}

TEST_P(SignedArtifact, AnUnsignedEntryBehindTheArtifactIsStillRefused) {
  Fleet fleet;
  auto artifact = runtime::decode_artifact(fleet.build_elsewhere(true), "m.kiln");
  ASSERT_FALSE(artifact.engines.empty());
  // Someone without the secret put the engines into host B's disk store;
  // the artifact lost its engines (truncated copy).
  auto unsigned_store = cache::DiskEngineCache(fleet.dir / "host_b", uint64_t{1} << 30);
  for (const auto& blob : artifact.engines) {
    auto opened = format::open(blob);
    unsigned_store.save(std::get<format::OpenedBlob>(opened).header.key.hex(), blob);
  }
  for (auto& blob : artifact.engines) blob.clear();
  auto bytes = runtime::encode_artifact(artifact);

  frontend::ImportedModel imported;
  auto loaded = fleet.load(bytes, fleet.host_b(tiers_of(GetParam(), redis.get(), 65)), imported);
  for (const auto& e : loaded.report().engines) {
    EXPECT_EQ(e.status, "miss");
    if (GetParam() == "disk") {
      EXPECT_NE(e.reason.find("unsigned entry"), std::string::npos) << e.reason;
    }
  }
  fleet.expect_correct(loaded);
}

INSTANTIATE_TEST_SUITE_P(Tiers, SignedArtifact, ::testing::Values("disk", "ram", "redis"));

TEST(SignedArtifactCli, RunsOnAnotherHostWithTheSecretWithoutARebuildWarning) {
  Fleet fleet;
  fleet.build_elsewhere(false);
  std::string command = "KILN_ENGINE_CACHE_SECRET_FILE=" + (fleet.dir / "secret").string() + " " +
                        std::string(KILN_CLI) + " run " + (fleet.dir / "m.kiln").string() +
                        " --shape input=2x3x64x64 --json --cache-dir " + (fleet.dir / "host_b").string() +
                        " 2>&1";
  auto [status, output] = testing::run_command(command);
  ASSERT_EQ(status, 0) << output;
  EXPECT_EQ(output.find("rebuilt"), std::string::npos) << output;
  EXPECT_EQ(output.find("\"status\": \"miss\""), std::string::npos) << output;
  EXPECT_NE(output.find("\"status\": \"hit\""), std::string::npos) << output;
}

TEST(ArtifactStore, ItsEnginesComeFirstAndItsHeadersExplainMisses) {
  testing::TempDir dir;
  auto behind = std::make_shared<cache::DiskEngineCache>(dir / "c", uint64_t{1} << 30);
  key::EngineKey key;
  key.digest[0] = 7;
  std::vector<std::byte> payload(64, std::byte{1});
  std::vector<std::vector<std::byte>> engines{format::seal({key, "kiln test", "cpu/test", 1, 5}, payload)};
  cache::ArtifactEngineCache store(engines, behind, "m.kiln");
  EXPECT_TRUE(store.get(key.hex()).hit());
  EXPECT_EQ(store.children().size(), 1u);
  auto headers = store.entry_headers(16);
  ASSERT_TRUE(headers);
  EXPECT_EQ(headers->entries, 1u);
  EXPECT_TRUE(store.quarantine(key.hex(), "test"));
  EXPECT_EQ(store.get(key.hex()).status, cache::Status::absent);
}

}  // namespace
}  // namespace kiln
