// TieredEngineCache: lookups go down the tiers, hits are copied up
// (backfill), saves write through, bad lower entries are never copied up,
// leases are taken in every tier; and the compile pipeline through tiers
// chosen by settings and by KILN_ENGINE_CACHE.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>

#include "cache/cache_layout.hpp"
#include "cache/disk_engine_cache.hpp"
#include "cache/open.hpp"
#include "cache/ram_engine_cache.hpp"
#include "cache/redis_engine_cache.hpp"
#include "cache/tiered_engine_cache.hpp"
#include "format/envelope.hpp"
#include "frontend/onnx/onnx_importer.hpp"
#include "kiln/error.hpp"
#include "redis_test_server.hpp"
#include "runtime/compiled_model.hpp"
#include "zoo/zoo.hpp"

namespace kiln {
namespace {

using cache::CacheTier;
using cache::TieredEngineCache;

key::EngineKey make_key(uint8_t seed) {
  key::EngineKey key;
  for (size_t i = 0; i < key.digest.size(); ++i) {
    key.digest[i] = static_cast<uint8_t>(seed + i);
    key.parts.graph[i] = static_cast<uint8_t>(seed * 3 + i);
  }
  return key;
}

// A sealed blob for key `seed`, and that key's hex.
std::pair<std::string, std::vector<std::byte>> entry(uint8_t seed, size_t payload_size = 1000) {
  auto key = make_key(seed);
  std::vector<std::byte> payload(payload_size, static_cast<std::byte>(seed));
  return {key.hex(), format::seal({key, "kiln test", "cpu/test", 1, 10}, payload)};
}

struct RamDisk {
  testing::TempDir dir;
  std::shared_ptr<cache::RamEngineCache> ram = std::make_shared<cache::RamEngineCache>(uint64_t{1} << 20);
  std::shared_ptr<cache::DiskEngineCache> disk =
      std::make_shared<cache::DiskEngineCache>(dir / "cache", uint64_t{1} << 30);
  TieredEngineCache tiers{{{"ram", ram}, {"disk", disk}}};
};

TEST(TieredCache, ALowerTierHitIsCopiedIntoTheTiersAbove) {
  RamDisk t;
  auto [key, blob] = entry(1);
  t.disk->save(key, blob);
  EXPECT_FALSE(t.ram->load(key));
  auto loaded = t.tiers.load(key);
  ASSERT_TRUE(loaded);
  EXPECT_EQ(*loaded, blob);
  EXPECT_TRUE(t.ram->load(key));  // backfilled
  auto report = t.tiers.tier_stats();
  ASSERT_EQ(report.size(), 2u);
  EXPECT_EQ(report[0].served, 0u);
  EXPECT_EQ(report[0].backfilled, 1u);
  EXPECT_EQ(report[1].served, 1u);
  ASSERT_TRUE(report[1].stats);
  EXPECT_EQ(report[1].stats->hits, 1u);
  // Now the RAM tier answers.
  ASSERT_TRUE(t.tiers.load(key));
  EXPECT_EQ(t.tiers.tier_stats()[0].served, 1u);
}

TEST(TieredCache, SavesWriteThroughAndMissesGoToTheBottom) {
  RamDisk t;
  auto [key, blob] = entry(2);
  EXPECT_FALSE(t.tiers.load(key));
  t.tiers.save(key, blob);
  EXPECT_TRUE(t.ram->load(key));
  EXPECT_TRUE(t.disk->load(key));
  auto disk_stats = t.disk->stats();
  EXPECT_EQ(disk_stats.saves, 1u);
  EXPECT_EQ(disk_stats.misses, 1u);
}

TEST(TieredCache, ABadLowerEntryIsQuarantinedNotCopiedUpAndTheNextTierServes) {
  testing::TempDir dir;
  auto ram = std::make_shared<cache::RamEngineCache>(uint64_t{1} << 20);
  auto disk = std::make_shared<cache::DiskEngineCache>(dir / "cache", uint64_t{1} << 30);
  auto bottom = std::make_shared<cache::RamEngineCache>(uint64_t{1} << 20);
  TieredEngineCache tiers({{"ram", ram}, {"disk", disk}, {"shared", bottom}});
  auto [key, blob] = entry(3);
  auto corrupt = blob;
  corrupt[corrupt.size() - 1] ^= std::byte{1};
  disk->save(key, corrupt);
  bottom->save(key, blob);
  auto [other_key, other_blob] = entry(4);
  ram->save(key, other_blob);  // another key's entry stored under this key

  auto loaded = tiers.load(key);
  ASSERT_TRUE(loaded);
  EXPECT_EQ(*loaded, blob);
  auto report = tiers.tier_stats();
  EXPECT_EQ(report[0].rejected, 1u);
  EXPECT_EQ(report[1].rejected, 1u);
  EXPECT_EQ(report[2].served, 1u);
  EXPECT_EQ(*disk->load(key), blob);  // quarantined, then replaced by the good copy
  EXPECT_EQ(*ram->load(key), blob);
}

TEST(TieredCache, LeasesAreTakenInEveryManagedTier) {
  testing::TempDir dir;
  auto disk = std::make_shared<cache::DiskEngineCache>(dir / "cache", uint64_t{1} << 30);
  TieredEngineCache tiers({{"ram", std::make_shared<cache::RamEngineCache>(1 << 20)}, {"disk", disk}});
  auto [key, blob] = entry(5);
  auto lease = tiers.lease(key);
  ASSERT_TRUE(lease);
  // The disk lock is held: another taker times out.
  EXPECT_FALSE(disk->acquire_build_lock(key, std::chrono::milliseconds(50)));
  lease.reset();
  EXPECT_TRUE(disk->acquire_build_lock(key, std::chrono::milliseconds(50)));
}

TEST(TieredCache, RamDiskAndRedisTogether) {
  REQUIRE_REDIS_SERVER();
  testing::RedisTestServer server;
  testing::TempDir dir;
  auto redis = std::make_shared<cache::RedisEngineCache>(cache::parse_redis_uri(server.uri()));
  auto make_host = [&](const std::string& name) {
    return TieredEngineCache(
        {{"ram", std::make_shared<cache::RamEngineCache>(1 << 20)},
         {"disk", std::make_shared<cache::DiskEngineCache>(dir / name, uint64_t{1} << 30)},
         {"redis", redis}});
  };
  auto host1 = make_host("host1");
  auto host2 = make_host("host2");
  auto [key, blob] = entry(6);
  host1.save(key, blob);
  EXPECT_TRUE(redis->load(key));
  ASSERT_TRUE(host2.load(key));
  EXPECT_EQ(host2.tier_stats()[2].served, 1u);
  EXPECT_EQ(host2.tier_stats()[1].backfilled, 1u);
  ASSERT_TRUE(host2.load(key));
  EXPECT_EQ(host2.tier_stats()[0].served, 1u);
  auto fleet = host2.tier_stats()[2].stats;
  ASSERT_TRUE(fleet);
  EXPECT_EQ(fleet->entries, 1u);
}

// --- selection from settings and the environment ---

frontend::ImportedModel zoo_model(const std::string& name, uint64_t seed) {
  std::string bytes = zoo::build_zoo_model(name, {seed, std::nullopt}).onnx_bytes;
  return frontend::import_onnx_bytes(std::as_bytes(std::span<const char>(bytes)), name + ".onnx");
}

CompileSettings fast_settings(const std::filesystem::path& cache_dir) {
  CompileSettings s;
  s.engine_cache_dir = cache_dir;
  s.optimization_level = 0;
  s.timing_cache_path = "-";
  return s;
}

TEST(CacheSelection, TierListsFromSettingsAndEnvironment) {
  testing::TempDir dir;
  CompileSettings s = fast_settings(dir / "cache");
  ::unsetenv("KILN_ENGINE_CACHE");
  EXPECT_EQ(cache::engine_cache_tiers(s), std::vector<std::string>{"disk"});
  EXPECT_TRUE(dynamic_cast<cache::DiskEngineCache*>(cache::open(s).get()));

  ::setenv("KILN_ENGINE_CACHE", "ram:64M, disk", 1);
  EXPECT_EQ(cache::engine_cache_tiers(s), (std::vector<std::string>{"ram:64M", "disk"}));
  auto tiered = std::dynamic_pointer_cast<TieredEngineCache>(cache::open(s));
  ASSERT_TRUE(tiered);
  EXPECT_EQ(tiered->tiers().size(), 2u);

  s.engine_cache_tiers = {"ram"};  // settings win over the environment
  EXPECT_TRUE(dynamic_cast<cache::RamEngineCache*>(cache::open(s).get()));
  ::unsetenv("KILN_ENGINE_CACHE");

  for (const char* bad : {"tape", "ram:lots", "redis://h?bogus=1"}) {
    s.engine_cache_tiers = {bad};
    EXPECT_THROW(cache::open(s), Error) << bad;
  }
}

TEST(CacheSelection, AnEmptyCacheDirIsAnErrorNotTheSharedDefault) {
  testing::TempDir dir;
  CompileSettings s = fast_settings(dir / "cache");
  EXPECT_FALSE(CompileSettings{}.engine_cache_dir.empty());  // unset: the default folder
  s.engine_cache_dir.clear();
  EXPECT_THROW(cache::open(s), Error);
  s.timing_cache_path.clear();
  EXPECT_THROW(cache::timing_cache_path(s), Error);
  auto a = zoo_model("resnet_tiny", 1);
  EXPECT_THROW(runtime::CompiledModel::compile(
                   a.graph, {InputSpec::fixed("input", DType::float32, {1, 3, 64, 64})}, s),
               Error);
}

TEST(CacheSelection, TheTimingCacheLivesWhereCacheLayoutSays) {
  testing::TempDir dir;
  CompileSettings s = fast_settings(dir / "cache");
  s.timing_cache_path.clear();
  EXPECT_EQ(cache::timing_cache_path(s), cache::CacheLayout(dir / "cache").timing_cache_path());
  s.timing_cache_path = "-";
  EXPECT_TRUE(cache::timing_cache_path(s).empty());
}

TEST(CacheSelection, AGarbageEnvironmentTierIsAWarningNotAFailedCompile) {
  testing::TempDir dir;
  CompileSettings s = fast_settings(dir / "cache");
  auto a = zoo_model("resnet_tiny", 1);
  for (const char* garbage : {"tape", "ram:lots, disk", "redis://h?bogus=1,ram:32M", ",,"}) {
    ::setenv("KILN_ENGINE_CACHE", garbage, 1);
    ::testing::internal::CaptureStderr();
    std::shared_ptr<cache::Store> store;
    EXPECT_NO_THROW(store = cache::open(s)) << garbage;
    auto compiled = runtime::CompiledModel::compile(
        a.graph, {InputSpec::fixed("input", DType::float32, {1, 3, 64, 64})}, s);
    auto err = ::testing::internal::GetCapturedStderr();
    EXPECT_FALSE(compiled.report().engines.empty()) << garbage;
    if (std::string(garbage) != ",,") {
      EXPECT_NE(err.find("KILN_ENGINE_CACHE"), std::string::npos) << err;
    }
  }
  ::setenv("KILN_ENGINE_CACHE", "tape", 1);
  EXPECT_TRUE(dynamic_cast<cache::DiskEngineCache*>(cache::open(s).get()));  // no tier left: the disk cache
  ::setenv("KILN_ENGINE_CACHE", "tape,ram:32M", 1);
  EXPECT_TRUE(dynamic_cast<cache::RamEngineCache*>(cache::open(s).get()));  // the good tier stays
  ::unsetenv("KILN_ENGINE_CACHE");
}

TEST(CacheSelection, ARamTierServesTheNextCompileInTheSameProcess) {
  testing::TempDir dir;
  auto a = zoo_model("resnet_tiny", 1);
  CompileSettings s = fast_settings(dir / "cache");
  s.engine_cache_tiers = {"ram:96M", "disk"};
  auto first = runtime::CompiledModel::compile(
      a.graph, {InputSpec::fixed("input", DType::float32, {1, 3, 64, 64})}, s);
  EXPECT_EQ(first.report().engines.at(0).status, "miss");
  std::filesystem::remove_all(dir / "cache");  // only the RAM tier can serve now
  auto second = runtime::CompiledModel::compile(
      a.graph, {InputSpec::fixed("input", DType::float32, {1, 3, 64, 64})}, s);
  EXPECT_EQ(second.report().engines.at(0).status, "hit") << second.report().engines.at(0).reason;
}

}  // namespace
}  // namespace kiln
