// Hostile files in a cache folder: whatever another user or a broken tool
// leaves where the disk cache expects its own files (a FIFO, a huge sparse
// file, a symlink, a folder) must never hang, exhaust memory or be followed.
// Each is a warned miss, is moved out of the way so the key can be cached
// again, and `verify` reports it. Blocking cases run the kiln CLI as a child
// process under a deadline, so a regression fails instead of hanging the
// suite.
#include <gtest/gtest.h>

#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <thread>

#include "cache/disk_engine_cache.hpp"
#include "cache/fault_injection_fs.hpp"
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
using cache::CacheLayout;
using cache::DiskEngineCache;

std::string hex(uint64_t id) { return stress_key(id).hex(); }

int64_t mtime_ns(const fs::path& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return -1;
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
}

// A hostile sparse entry: `bytes` long, all zeros, no disk blocks.
void make_sparse(const fs::path& path, uint64_t bytes) {
  fs::create_directories(path.parent_path());
  { std::ofstream touch(path); }
  fs::resize_file(path, bytes);
}

TEST(HostileCacheFiles, HugeSparseEntryIsRejectedBeforeBeingRead) {
  kiln::testing::TempDir dir;
  DiskEngineCache cache(dir.path(), 8 << 20);
  CacheLayout layout(dir.path());
  make_sparse(layout.entry_path(hex(1)), uint64_t{3} << 30);
  struct rusage before {};
  ::getrusage(RUSAGE_SELF, &before);
  QuietLogs quiet;
  EXPECT_FALSE(cache.load(hex(1)).has_value());
  struct rusage after {};
  ::getrusage(RUSAGE_SELF, &after);
  EXPECT_LT(after.ru_maxrss - before.ru_maxrss, 256 << 10) << "KiB grown reading a 3 GB entry";
  // Moved out of the way: the key can be cached again.
  EXPECT_FALSE(fs::exists(layout.entry_path(hex(1))));
  cache.save(hex(1), stress_blob(1, 1, 4096));
  EXPECT_TRUE(cache.load(hex(1)).has_value());
}

TEST(HostileCacheFiles, SymlinkedEntryIsNeitherFollowedNorTouched) {
  kiln::testing::TempDir dir;
  DiskEngineCache cache(dir.path(), 8 << 20);
  CacheLayout layout(dir.path());
  // A valid blob elsewhere, old, linked in as the entry.
  auto target = dir / "elsewhere.kiln";
  kiln::testing::write_file_bytes(target, stress_blob(1, 1, 4096));
  fs::last_write_time(target, fs::last_write_time(target) - std::chrono::hours(48));
  auto old_mtime = mtime_ns(target);
  fs::create_directories(layout.shard_dir(hex(1)));
  fs::create_symlink(target, layout.entry_path(hex(1)));

  QuietLogs quiet;
  EXPECT_FALSE(cache.load(hex(1)).has_value());
  EXPECT_EQ(mtime_ns(target), old_mtime) << "the link's target was refreshed";
  EXPECT_TRUE(fs::exists(target));
  EXPECT_FALSE(fs::is_symlink(layout.entry_path(hex(1))));
  cache.save(hex(1), stress_blob(1, 2, 4096));
  EXPECT_TRUE(cache.load(hex(1)).has_value());
  EXPECT_EQ(mtime_ns(target), old_mtime);
}

TEST(HostileCacheFiles, FolderAtAnEntryPathIsReportedByVerifyAndTheKeyStaysCacheable) {
  kiln::testing::TempDir dir;
  DiskEngineCache cache(dir.path(), 8 << 20);
  CacheLayout layout(dir.path());
  cache.save(hex(2), stress_blob(2, 1, 4096));
  fs::create_directories(layout.entry_path(hex(1)));

  QuietLogs quiet;
  auto results = cache.verify();
  ASSERT_EQ(results.size(), 2u);
  bool reported = false;
  for (const auto& result : results) {
    if (result.key != hex(1)) {
      EXPECT_TRUE(result.ok) << result.reason;
      continue;
    }
    reported = true;
    EXPECT_FALSE(result.ok);
    EXPECT_NE(result.reason.find("not a regular file"), std::string::npos) << result.reason;
  }
  EXPECT_TRUE(reported);
  EXPECT_FALSE(fs::exists(layout.entry_path(hex(1))));

  // A folder found by a load is moved away too, and saving is not degraded.
  fs::create_directories(layout.entry_path(hex(3)));
  EXPECT_FALSE(cache.load(hex(3)).has_value());
  cache.save(hex(3), stress_blob(3, 1, 4096));
  EXPECT_FALSE(cache.degraded());
  EXPECT_TRUE(cache.load(hex(3)).has_value());
}

// A read-only folder (injected: root ignores permissions) must not read as a
// successful clear or prune: each entry left behind is reported with why.
TEST(HostileCacheFiles, ClearAndPruneThatCannotRemoveEntriesReportEachFailure) {
  kiln::testing::TempDir dir;
  auto faults = std::make_shared<cache::FaultInjectionFs>();
  DiskEngineCache cache(dir.path(), 8 << 20, faults);
  for (uint64_t id = 0; id < 3; ++id) cache.save(hex(id), stress_blob(id, 1, 4096));
  faults->inject(cache::FsOp::remove, EROFS);
  QuietLogs quiet;
  auto pruned = cache.prune(0);
  EXPECT_EQ(pruned.removed_entries, 0u);
  EXPECT_EQ(pruned.entries, 3u);
  ASSERT_EQ(pruned.failures.size(), 3u);
  EXPECT_NE(pruned.failures[0].find(std::strerror(EROFS)), std::string::npos) << pruned.failures[0];
  auto cleared = cache.clear_entries();
  EXPECT_EQ(cleared.removed_entries, 0u);
  EXPECT_EQ(cleared.entries, 3u);
  ASSERT_EQ(cleared.failures.size(), 3u);
  EXPECT_NE(cleared.failures[0].find(".kiln"), std::string::npos) << cleared.failures[0];
  EXPECT_EQ(cache.list().size(), 3u);
  // A folder in an entry's place cannot be unlinked: reported too.
  faults->clear();
  fs::create_directories(CacheLayout(dir.path()).entry_path(hex(7)));
  cleared = cache.clear_entries();
  EXPECT_EQ(cleared.removed_entries, 3u);
  ASSERT_EQ(cleared.failures.size(), 1u);
  EXPECT_NE(cleared.failures[0].find(hex(7)), std::string::npos) << cleared.failures[0];
}

#ifdef KILN_CLI
// Runs the CLI with a deadline; kills it and fails if it is not done by then.
struct CliRun {
  int status = -1;
  std::string output;
  bool timed_out = false;
};
CliRun run_cli(std::vector<std::string> args, const fs::path& log, std::chrono::seconds deadline) {
  args.insert(args.begin(), KILN_CLI);
  Child child(args, log);
  auto until = std::chrono::steady_clock::now() + deadline;
  CliRun run;
  while (!child.poll()) {
    if (std::chrono::steady_clock::now() > until) {
      child.kill();
      run.timed_out = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  run.status = child.wait();
  run.output = child.output();
  return run;
}

class HostileCacheCli : public ::testing::Test {
 protected:
  void SetUp() override {
    kiln::testing::write_file(m_dir / "model.onnx",
                              zoo::build_zoo_model("resnet_tiny", {3, std::nullopt}).onnx_bytes);
  }
  CliRun build() {
    return run_cli(
        {"build", (m_dir / "model.onnx").string(), "--shape", "input=1x3x64x64", "--optimization-level", "0",
         "--timing-cache", "-", "--json", "--cache-dir", cache_dir().string()},
        m_dir / "build.log", std::chrono::seconds(120));
  }
  fs::path cache_dir() const { return m_dir / "cache"; }
  // The keys of every entry in the cache.
  std::vector<std::string> keys() {
    std::vector<std::string> result;
    DiskEngineCache cache(cache_dir(), 1 << 30);
    for (const auto& entry : cache.list()) result.push_back(entry.key);
    return result;
  }

  kiln::testing::TempDir m_dir;
};

TEST_F(HostileCacheCli, FifoAsTheCountersFileHangsNeitherBuildNorStats) {
  CacheLayout layout(cache_dir());
  fs::create_directories(layout.version_dir());
  ASSERT_EQ(::mkfifo(layout.stats_path().c_str(), 0666), 0);
  auto built = build();
  ASSERT_FALSE(built.timed_out) << "kiln build blocked on a FIFO";
  EXPECT_EQ(built.status, 0) << built.output;
  auto stats = run_cli({"cache", "stats", "--cache-dir", cache_dir().string()}, m_dir / "stats.log",
                       std::chrono::seconds(60));
  ASSERT_FALSE(stats.timed_out) << "kiln cache stats blocked on a FIFO";
  EXPECT_EQ(stats.status, 0) << stats.output;
}

TEST_F(HostileCacheCli, FifoAtAnEntryPathIsAWarnedMissThatRebuildsAndThenHits) {
  ASSERT_EQ(build().status, 0);
  auto entries = keys();
  ASSERT_FALSE(entries.empty());
  CacheLayout layout(cache_dir());
  for (const auto& key : entries) {
    fs::remove(layout.entry_path(key));
    ASSERT_EQ(::mkfifo(layout.entry_path(key).c_str(), 0666), 0);
  }
  auto rebuilt = build();
  ASSERT_FALSE(rebuilt.timed_out) << "kiln build blocked on a FIFO entry";
  EXPECT_EQ(rebuilt.status, 0) << rebuilt.output;
  EXPECT_NE(rebuilt.output.find("\"status\": \"miss\""), std::string::npos) << rebuilt.output;
  EXPECT_NE(rebuilt.output.find("not a regular file"), std::string::npos) << rebuilt.output;
  auto hit = build();
  EXPECT_EQ(hit.status, 0) << hit.output;
  EXPECT_NE(hit.output.find("\"status\": \"hit\""), std::string::npos) << hit.output;
  EXPECT_EQ(hit.output.find("\"status\": \"miss\""), std::string::npos) << hit.output;
}
#endif

}  // namespace
}  // namespace kiln::reliability
