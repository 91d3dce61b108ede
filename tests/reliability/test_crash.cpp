// Crash safety of the disk engine cache: processes that save, load, evict
// and verify real-size entries are killed with SIGKILL at random points,
// hundreds of times (KILN_LONG_TESTS=1: 600 kills; otherwise 50). Afterwards:
//   - every entry in the folder loads and verifies (envelope and content);
//   - temp files left by killed writers are never entries, and the next
//     cleanup removes them (stale ones on the next save, all on clear());
//   - the size accounting (stats) equals what the disk holds, and the cap
//     holds again after the next save;
//   - no lock is left held, and the next compile (the real CLI) builds,
//     saves, and then hits.
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <random>
#include <thread>

#include "cache/cache_layout.hpp"
#include "cache/disk_engine_cache.hpp"
#include "process.hpp"
#include "quiet_logs.hpp"
#include "stress_blob.hpp"
#include "test_helpers.hpp"

#ifdef KILN_CLI
#include "zoo/zoo.hpp"
#endif

namespace kiln::reliability {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr uint64_t k_keys = 24;
constexpr uint64_t k_cap = 12ull << 20;  // ~20 entries of up to 1 MiB: eviction runs all the time

struct DiskTruth {
  uint64_t entries = 0;
  uint64_t bytes = 0;
  uint64_t temp_files = 0;
};

// What the entries folder holds, counted with std::filesystem, independently
// of the cache's own scan.
DiskTruth disk_truth(const cache::CacheLayout& layout) {
  DiskTruth truth;
  if (!fs::exists(layout.entries_dir())) return truth;
  for (const auto& item : fs::recursive_directory_iterator(layout.entries_dir())) {
    if (!item.is_regular_file()) continue;
    auto name = item.path().filename().string();
    if (cache::is_temp_name(name)) {
      ++truth.temp_files;
    } else if (cache::key_from_entry_name(name)) {
      ++truth.entries;
      truth.bytes += item.file_size();
    }
  }
  return truth;
}

// Moves every temp file's mtime two hours back: what a crashed writer's temp
// file looks like once the cache's staleness window (one hour) has passed.
void age_temp_files(const cache::CacheLayout& layout) {
  for (const auto& item : fs::recursive_directory_iterator(layout.entries_dir())) {
    if (!cache::is_temp_name(item.path().filename().string())) continue;
    fs::last_write_time(item.path(), fs::last_write_time(item.path()) - std::chrono::hours(2));
  }
}

struct KillReport {
  int kills = 0;
  int finished = 0;  // processes that ended on their own before their kill
  std::vector<std::string> failures;
};

// Keeps `parallel` churn processes running, killing each at a random moment
// between 5 and 250 ms after its start, until `kills` have been killed.
KillReport kill_loop(const fs::path& dir, const fs::path& logs, int kills, int parallel, uint32_t seed) {
  struct Running {
    std::unique_ptr<Child> child;
    Clock::time_point kill_at;
  };
  KillReport report;
  std::mt19937 rng(seed);
  std::vector<Running> running;
  int started = 0;
  while (report.kills < kills || !running.empty()) {
    while (started < kills + report.finished && static_cast<int>(running.size()) < parallel) {
      std::vector<std::string> argv = {KILN_CACHE_STRESS,
                                       "--dir",
                                       dir.string(),
                                       "--role",
                                       "churn",
                                       "--seed",
                                       std::to_string(seed * 100000 + started),
                                       "--keys",
                                       std::to_string(k_keys),
                                       "--cap",
                                       std::to_string(k_cap)};
      auto log = logs / ("churn-" + std::to_string(started % 64) + ".log");
      auto delay = std::chrono::milliseconds(5 + rng() % 246);
      running.push_back({std::make_unique<Child>(argv, log), Clock::now() + delay});
      ++started;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    for (auto it = running.begin(); it != running.end();) {
      auto ended = it->child->poll();
      if (!ended && Clock::now() >= it->kill_at) {
        it->child->kill(SIGKILL);
        ended = it->child->wait();
      }
      if (!ended) {
        ++it;
        continue;
      }
      if (*ended == 128 + SIGKILL) {
        ++report.kills;
      } else if (*ended == 0) {
        ++report.finished;
      } else {
        report.failures.push_back("exit " + std::to_string(*ended) + ": " + it->child->output());
      }
      it = running.erase(it);
    }
  }
  return report;
}

TEST(CrashSafety, SigkilledWritersReadersAndEvictorsLeaveAConsistentCache) {
  kiln::testing::TempDir dir;
  fs::create_directories(dir / "logs");
  const auto cache_dir = dir / "cache";
  const int kills = long_tests() ? 600 : 50;

  auto report = kill_loop(cache_dir, dir / "logs", kills, 4, 7);
  for (const auto& failure : report.failures) ADD_FAILURE() << "a stress process failed: " << failure;
  EXPECT_EQ(report.kills, kills);

  cache::CacheLayout layout(cache_dir);
  auto before = disk_truth(layout);
  std::printf("[ figures ] %d processes killed with SIGKILL; %llu entries and %llu temp files left behind\n",
              report.kills, static_cast<unsigned long long>(before.entries),
              static_cast<unsigned long long>(before.temp_files));
  ASSERT_GT(before.entries, 0u) << "the stress processes saved nothing before being killed";

  QuietLogs quiet;
  cache::DiskEngineCache cache(cache_dir, k_cap);

  // Every entry that is there loads and is a complete blob of its own key.
  uint64_t loaded = 0;
  for (const auto& entry : cache.list()) {
    auto id = stress_id_of(entry.key, k_keys);
    ASSERT_TRUE(id) << "an entry under a key nobody saved: " << entry.key;
    auto blob = cache.load(entry.key);
    if (!blob) continue;  // (nothing else runs now: this would be a bug too)
    ++loaded;
    EXPECT_EQ(check_stress_blob(*id, *blob), "") << entry.key;
  }
  EXPECT_EQ(loaded, before.entries);
  for (const auto& result : cache.verify()) EXPECT_TRUE(result.ok) << result.key << ": " << result.reason;

  // Size accounting is the disk's truth.
  auto stats = cache.stats();
  EXPECT_EQ(stats.entries, before.entries);
  EXPECT_EQ(stats.bytes, before.bytes);

  // No lock is left held by a dead process.
  for (uint64_t id = 0; id < k_keys; ++id) {
    auto lock = cache.acquire_build_lock(stress_key(id).hex(), std::chrono::milliseconds(0));
    EXPECT_TRUE(lock) << "build lock of entry " << id << " is still held";
  }

  // The next save cleans up: once stale, every temp file is removed, and the
  // cap holds again.
  age_temp_files(layout);
  cache.save(stress_key(0).hex(), stress_blob(0, 999, 64 << 10));
  auto after = disk_truth(layout);
  EXPECT_EQ(after.temp_files, 0u);
  EXPECT_LE(after.bytes, k_cap);
  EXPECT_EQ(cache.stats().bytes, after.bytes);
  EXPECT_EQ(check_stress_blob(0, *cache.load(stress_key(0).hex())), "");

#ifdef KILN_CLI
  // The next compile in that folder builds and saves; the one after hits.
  kiln::testing::write_file(dir / "model.onnx",
                            zoo::build_zoo_model("resnet_tiny", {3, std::nullopt}).onnx_bytes);
  for (const char* expected : {"\"status\": \"miss\"", "\"status\": \"hit\""}) {
    Child compile(
        {KILN_CLI, "build", (dir / "model.onnx").string(), "--shape", "input=1x3x64x64",
         "--optimization-level", "0", "--timing-cache", "-", "--json", "--cache-dir", cache_dir.string()},
        dir / "logs" / "compile.log");
    EXPECT_EQ(compile.wait(), 0) << compile.output();
    EXPECT_NE(compile.output().find(expected), std::string::npos) << compile.output();
  }
#endif
}

// clear() removes every temp file at once, stale or not (kiln cache clear).
TEST(CrashSafety, ClearRemovesFreshTempFilesOfKilledWriters) {
  kiln::testing::TempDir dir;
  fs::create_directories(dir / "logs");
  auto report = kill_loop(dir / "cache", dir / "logs", 12, 4, 11);
  EXPECT_TRUE(report.failures.empty());
  cache::CacheLayout layout(dir / "cache");
  // A writer killed before its rename leaves a temp file; make sure there is one.
  auto shard = layout.shard_dir(stress_key(1).hex());
  fs::create_directories(shard);
  kiln::testing::write_file(shard / ("." + stress_key(1).hex() + ".kiln.tmp.999999.1.2"), "half an entry");
  cache::DiskEngineCache cache(dir / "cache", k_cap);
  EXPECT_GT(disk_truth(layout).temp_files, 0u);
  cache.clear();
  auto after = disk_truth(layout);
  EXPECT_EQ(after.temp_files, 0u);
  EXPECT_EQ(after.entries, 0u);
}

}  // namespace
}  // namespace kiln::reliability
