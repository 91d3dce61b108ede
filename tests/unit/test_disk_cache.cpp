// The engine caches (src/cache/): the disk cache's layout, true LRU, a cap
// enforced from the disk (after restarts, on re-saves), refusal of oversize
// blobs, counters that persist across processes, quarantine and verify,
// degradation on an unwritable folder and on injected faults (ENOSPC, EROFS,
// failed renames), and real processes (fork) saving, loading and building
// concurrently; then the RAM cache's LRU, cap and thread safety.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cache/disk_engine_cache.hpp"
#include "cache/fault_injection_fs.hpp"
#include "cache/ram_engine_cache.hpp"
#include "format/envelope.hpp"
#include "test_helpers.hpp"

namespace kiln::cache {
namespace {

using kiln::testing::TempDir;
using kiln::testing::write_file;
namespace fs = std::filesystem;

std::string make_key(int i) {
  std::string key;
  char buf[3];
  for (int j = 0; j < 32; ++j) {
    std::snprintf(buf, sizeof buf, "%02x",
                  static_cast<unsigned>((i * 37 + j * 11 + (j == 0 ? i * 64 : 0)) & 0xff));
    key += buf;
  }
  return key;
}

// A blob whose every byte follows from (key, writer, size), so a reader can
// tell a complete blob from a torn or mixed one.
std::vector<std::byte> make_blob(const std::string& key, int writer, size_t size) {
  std::string head = key.substr(0, 8) + ":" + std::to_string(writer) + ":" + std::to_string(size) + ";";
  std::vector<std::byte> blob(std::max(size, head.size()));
  std::memcpy(blob.data(), head.data(), head.size());
  std::mt19937 rng(static_cast<uint32_t>(std::hash<std::string>{}(key) + static_cast<size_t>(writer)));
  for (size_t i = head.size(); i < blob.size(); ++i) blob[i] = static_cast<std::byte>(rng());
  return blob;
}

// True when `blob` is exactly make_blob(key, w, n) for some writer and size.
bool is_intact_blob(const std::string& key, const std::vector<std::byte>& blob) {
  std::string text(reinterpret_cast<const char*>(blob.data()), std::min<size_t>(blob.size(), 40));
  int writer = 0;
  size_t size = 0;
  char prefix[9] = {};
  if (std::sscanf(text.c_str(), "%8[0-9a-f]:%d:%zu;", prefix, &writer, &size) != 3) return false;
  return key.compare(0, 8, prefix) == 0 && make_blob(key, writer, size) == blob;
}

size_t count_files(const fs::path& dir, bool (*pred)(const std::string&)) {
  size_t n = 0;
  if (!fs::exists(dir)) return 0;
  for (const auto& item : fs::recursive_directory_iterator(dir)) {
    if (item.is_regular_file() && pred(item.path().filename().string())) ++n;
  }
  return n;
}

size_t count_temp_files(const fs::path& dir) {
  return count_files(dir, [](const std::string& name) { return is_temp_name(name); });
}

// Runs `body(i)` in `n` forked processes; each exits with its return value.
std::vector<int> run_processes(int n, const std::function<int(int)>& body) {
  std::vector<pid_t> pids;
  for (int i = 0; i < n; ++i) {
    pid_t pid = ::fork();
    if (pid == 0) {
      int rc = 3;
      try {
        rc = body(i);
      } catch (...) {
        rc = 4;
      }
      std::fflush(nullptr);
      ::_exit(rc);
    }
    pids.push_back(pid);
  }
  std::vector<int> codes;
  for (pid_t pid : pids) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    codes.push_back(WIFEXITED(status) ? WEXITSTATUS(status) : 100 + WTERMSIG(status));
  }
  return codes;
}

TEST(DiskEngineCache, SaveLoadRoundTripAndLayout) {
  TempDir dir;
  DiskEngineCache cache(dir.path(), 1 << 20);
  auto key = make_key(1);
  auto blob = make_blob(key, 0, 500);
  EXPECT_FALSE(cache.load(key));
  cache.save(key, blob);
  auto loaded = cache.load(key);
  ASSERT_TRUE(loaded);
  EXPECT_EQ(*loaded, blob);
  // Sharded under a versioned folder.
  auto expected = dir.path() / "v1" / "entries" / key.substr(0, 2) / (key + ".kiln");
  EXPECT_EQ(cache.layout().entry_path(key), expected);
  EXPECT_TRUE(fs::is_regular_file(expected));
  EXPECT_EQ(count_temp_files(dir.path()), 0u);
}

TEST(DiskEngineCache, InvalidKeysAreIgnored) {
  TempDir dir;
  DiskEngineCache cache(dir.path(), 1 << 20);
  auto blob = make_blob(make_key(1), 0, 10);
  for (const std::string& bad : std::vector<std::string>{
           "", "abc", std::string(64, 'A'), std::string(63, 'a') + "/", "../" + std::string(61, 'a')}) {
    cache.save(bad, blob);
    EXPECT_FALSE(cache.load(bad));
  }
  EXPECT_EQ(cache.stats().entries, 0u);
}

TEST(DiskEngineCache, ReadsRefreshRecencySoEvictionIsTrueLru) {
  TempDir dir;
  DiskEngineCache cache(dir.path(), 300);
  auto a = make_key(1), b = make_key(2), c = make_key(3), d = make_key(4);
  cache.save(a, make_blob(a, 0, 100));
  cache.save(b, make_blob(b, 0, 100));
  cache.save(c, make_blob(c, 0, 100));
  ASSERT_TRUE(cache.load(a));
  cache.save(d, make_blob(d, 0, 100));
  EXPECT_TRUE(cache.load(a));
  EXPECT_FALSE(cache.load(b));  // the least recently used, not the oldest written
  EXPECT_TRUE(cache.load(c));
  EXPECT_TRUE(cache.load(d));
  auto stats = cache.stats();
  EXPECT_EQ(stats.evictions, 1u);
  EXPECT_EQ(stats.entries, 3u);
  EXPECT_EQ(stats.bytes, 300u);
}

TEST(DiskEngineCache, CapHoldsAfterRestart) {
  TempDir dir;
  auto a = make_key(1), b = make_key(2), c = make_key(3);
  {
    DiskEngineCache first(dir.path(), 1000);
    first.save(a, make_blob(a, 0, 400));
    first.save(b, make_blob(b, 0, 400));
  }
  // A new process knows nothing in memory; the disk is the truth.
  DiskEngineCache second(dir.path(), 1000);
  second.save(c, make_blob(c, 0, 400));
  EXPECT_FALSE(second.load(a));
  EXPECT_TRUE(second.load(b));
  EXPECT_TRUE(second.load(c));
  auto stats = second.stats();
  EXPECT_EQ(stats.bytes, 800u);
  EXPECT_EQ(stats.evictions, 1u);
  EXPECT_EQ(stats.refused_too_large, 0u);

  // A restart with a smaller cap evicts down to it on the next save.
  DiskEngineCache smaller(dir.path(), 500);
  auto e = make_key(5);
  smaller.save(e, make_blob(e, 0, 400));
  EXPECT_EQ(smaller.list().size(), 1u);
  EXPECT_TRUE(smaller.load(e));
}

TEST(DiskEngineCache, ResavingAKeyDoesNotDoubleCount) {
  TempDir dir;
  DiskEngineCache cache(dir.path(), 1000);
  auto a = make_key(1), b = make_key(2);
  for (int writer = 0; writer < 5; ++writer) cache.save(a, make_blob(a, writer, 400));
  cache.save(b, make_blob(b, 0, 400));
  auto stats = cache.stats();
  EXPECT_EQ(stats.entries, 2u);
  EXPECT_EQ(stats.bytes, 800u);
  EXPECT_EQ(stats.evictions, 0u);
  EXPECT_EQ(stats.saves, 6u);
  EXPECT_EQ(*cache.load(a), make_blob(a, 4, 400));  // the last save wins
}

TEST(DiskEngineCache, BlobLargerThanCapIsRefused) {
  TempDir dir;
  DiskEngineCache cache(dir.path(), 100);
  auto a = make_key(1), b = make_key(2);
  cache.save(a, make_blob(a, 0, 100));
  ::testing::internal::CaptureStderr();
  cache.save(b, make_blob(b, 0, 101));
  auto err = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("larger than the cache's cap"), std::string::npos) << err;
  EXPECT_FALSE(cache.load(b));
  EXPECT_TRUE(cache.load(a));  // nothing was evicted to make room for it
  auto stats = cache.stats();
  EXPECT_EQ(stats.refused_too_large, 1u);
  EXPECT_EQ(stats.saves, 1u);
}

TEST(DiskEngineCache, TimingLocksAndForeignFilesAreNeverCountedOrEvicted) {
  TempDir dir;
  DiskEngineCache cache(dir.path(), 500);
  fs::create_directories(dir.path() / "timing");
  auto timing = dir.path() / "timing" / "timing_cache.bin";
  write_file(timing, std::string(5000, 't'));
  auto a = make_key(1), b = make_key(2);
  cache.save(a, make_blob(a, 0, 300));
  {
    auto lock = cache.acquire_build_lock(b);
    ASSERT_TRUE(lock);
  }
  write_file(cache.layout().shard_dir(a) / "README", std::string(1000, 'r'));
  cache.save(b, make_blob(b, 0, 200));  // 500 in entries: no eviction
  auto stats = cache.stats();
  EXPECT_EQ(stats.entries, 2u);
  EXPECT_EQ(stats.bytes, 500u);
  EXPECT_EQ(stats.evictions, 0u);
  auto pruned = cache.prune(0);
  EXPECT_EQ(pruned.removed_entries, 2u);
  EXPECT_EQ(pruned.bytes, 0u);
  EXPECT_TRUE(fs::exists(timing));
  EXPECT_EQ(fs::file_size(timing), 5000u);
  EXPECT_TRUE(fs::exists(cache.layout().shard_dir(a) / "README"));
  EXPECT_TRUE(fs::exists(cache.layout().evict_lock_path()));
}

TEST(DiskEngineCache, StatsPersistAcrossObjects) {
  TempDir dir;
  auto a = make_key(1);
  {
    DiskEngineCache first(dir.path(), 1000);
    first.save(a, make_blob(a, 0, 100));
    EXPECT_TRUE(first.load(a));
    EXPECT_FALSE(first.load(make_key(2)));
  }
  {
    DiskEngineCache second(dir.path(), 1000);
    EXPECT_TRUE(second.load(a));
    auto stats = second.stats();
    EXPECT_EQ(stats.saves, 1u);
    EXPECT_EQ(stats.hits, 2u);
    EXPECT_EQ(stats.misses, 1u);
    EXPECT_EQ(stats.entries, 1u);
    second.zero_stats();
    EXPECT_EQ(second.stats().hits, 0u);
    EXPECT_EQ(second.stats().entries, 1u);  // zeroing counters keeps entries
  }
}

TEST(DiskEngineCache, RecencySurvivesRestart) {
  TempDir dir;
  auto a = make_key(1), b = make_key(2), c = make_key(3);
  {
    DiskEngineCache first(dir.path(), 200);
    first.save(a, make_blob(a, 0, 100));
    first.save(b, make_blob(b, 0, 100));
  }
  {
    DiskEngineCache second(dir.path(), 200);
    EXPECT_TRUE(second.load(a));
  }
  DiskEngineCache third(dir.path(), 200);
  third.save(c, make_blob(c, 0, 100));
  EXPECT_TRUE(third.load(a));
  EXPECT_FALSE(third.load(b));
  auto listed = third.list();
  ASSERT_EQ(listed.size(), 2u);
  EXPECT_EQ(listed[0].key, a);  // most recently used first
  EXPECT_EQ(listed[1].key, c);
}

TEST(DiskEngineCache, ListRemovePruneClear) {
  TempDir dir;
  DiskEngineCache cache(dir.path(), 10'000);
  std::vector<std::string> keys;
  for (int i = 0; i < 5; ++i) {
    keys.push_back(make_key(i));
    cache.save(keys.back(), make_blob(keys.back(), 0, 100));
  }
  auto listed = cache.list();
  ASSERT_EQ(listed.size(), 5u);
  EXPECT_EQ(listed.front().key, keys.back());
  EXPECT_EQ(listed.front().size, 100u);
  EXPECT_TRUE(cache.remove(keys[4]));
  EXPECT_FALSE(cache.remove(keys[4]));
  EXPECT_FALSE(cache.load(keys[4]));

  auto pruned = cache.prune(250);
  EXPECT_EQ(pruned.removed_entries, 2u);
  EXPECT_EQ(pruned.removed_bytes, 200u);
  EXPECT_EQ(pruned.entries, 2u);
  EXPECT_EQ(pruned.bytes, 200u);
  EXPECT_FALSE(cache.load(keys[0]));
  EXPECT_FALSE(cache.load(keys[1]));
  EXPECT_TRUE(cache.load(keys[2]));

  fs::create_directories(dir.path() / "timing");
  write_file(dir.path() / "timing" / "timing_cache.bin", "timings");
  write_file(cache.layout().shard_dir(keys[2]) / ("." + keys[2] + ".kiln.tmp.1.2.3"), "half");
  EXPECT_EQ(cache.clear(), 2u);
  EXPECT_TRUE(cache.list().empty());
  EXPECT_EQ(count_temp_files(dir.path()), 0u);
  EXPECT_TRUE(fs::exists(dir.path() / "timing" / "timing_cache.bin"));
  EXPECT_EQ(cache.stats().evictions, 2u);  // the counters survive a clear
}

TEST(DiskEngineCache, QuarantineAndVerify) {
  TempDir dir;
  DiskEngineCache cache(dir.path(), 1 << 20);
  format::EnvelopeHeader header;
  header.key.digest[0] = 0xab;
  header.producer = "kiln test";
  auto good_key = header.key.hex();
  auto payload = make_blob(good_key, 0, 64);
  cache.save(good_key, format::seal(header, payload));

  auto corrupt_key = make_key(7);
  auto corrupt = format::seal(header, payload);
  corrupt.back() ^= std::byte{1};
  cache.save(corrupt_key, corrupt);
  auto misplaced_key = make_key(8);  // a valid envelope under another key
  cache.save(misplaced_key, format::seal(header, payload));

  auto results = cache.verify();
  ASSERT_EQ(results.size(), 3u);
  for (const auto& result : results) {
    if (result.key == good_key) {
      EXPECT_TRUE(result.ok) << result.reason;
    } else if (result.key == corrupt_key) {
      EXPECT_FALSE(result.ok);
      EXPECT_EQ(result.reason, "checksum mismatch (corrupt blob)");
    } else {
      EXPECT_FALSE(result.ok);
      EXPECT_NE(result.reason.find("wrong key"), std::string::npos) << result.reason;
    }
  }
  EXPECT_TRUE(cache.load(good_key));
  EXPECT_FALSE(cache.load(corrupt_key));
  EXPECT_FALSE(cache.load(misplaced_key));
  EXPECT_EQ(
      count_files(cache.layout().quarantine_dir(), [](const std::string& n) { return n.ends_with(".kiln"); }),
      2u);
  EXPECT_EQ(count_files(cache.layout().quarantine_dir(),
                        [](const std::string& n) { return n.ends_with(".reason"); }),
            2u);
  auto stats = cache.stats();
  EXPECT_EQ(stats.quarantined, 2u);
  EXPECT_EQ(stats.entries, 1u);                          // quarantine is not counted
  EXPECT_FALSE(cache.quarantine(corrupt_key, "again"));  // already gone
  EXPECT_FALSE(cache.verify_entry(corrupt_key));
  auto single = cache.verify_entry(good_key);
  ASSERT_TRUE(single);
  EXPECT_TRUE(single->ok);

  // Quarantine keeps only the newest few.
  for (int i = 0; i < 12; ++i) {
    auto key = make_key(100 + i);
    cache.save(key, make_blob(key, 0, 10));
    EXPECT_TRUE(cache.quarantine(key, "test"));
  }
  EXPECT_EQ(
      count_files(cache.layout().quarantine_dir(), [](const std::string& n) { return n.ends_with(".kiln"); }),
      8u);
}

TEST(DiskEngineCache, UnwritableFolderDegradesWithOneWarning) {
  TempDir dir;
  write_file(dir.path() / "file", "a regular file");
  auto root = dir.path() / "file" / "cache";  // cannot be created, even by root
  ::testing::internal::CaptureStderr();
  {
    DiskEngineCache cache(root, 1 << 20);
    auto a = make_key(1);
    for (int i = 0; i < 3; ++i) {
      EXPECT_NO_THROW(cache.save(a, make_blob(a, i, 100)));
      EXPECT_FALSE(cache.load(a));
    }
    EXPECT_TRUE(cache.degraded());
    EXPECT_FALSE(cache.acquire_build_lock(a));
    auto stats = cache.stats();
    EXPECT_EQ(stats.entries, 0u);
    EXPECT_EQ(stats.misses, 3u);  // counted in memory
    EXPECT_TRUE(cache.list().empty());
    EXPECT_TRUE(cache.verify().empty());
  }
  auto err = ::testing::internal::GetCapturedStderr();
  size_t warnings = 0;
  for (size_t at = err.find("is not writable"); at != std::string::npos;
       at = err.find("is not writable", at + 1)) {
    ++warnings;
  }
  EXPECT_EQ(warnings, 1u) << err;
}

TEST(DiskEngineCache, DiskFullDropsSavesButServesWhatItHas) {
  TempDir dir;
  auto faults = std::make_shared<FaultInjectionFs>();
  DiskEngineCache cache(dir.path(), 1 << 20, faults);
  auto a = make_key(1), b = make_key(2), c = make_key(3);
  cache.save(a, make_blob(a, 0, 100));
  faults->inject(FsOp::write, ENOSPC, 1);
  ::testing::internal::CaptureStderr();
  EXPECT_NO_THROW(cache.save(b, make_blob(b, 0, 100)));
  int writes = faults->calls(FsOp::write);
  EXPECT_NO_THROW(cache.save(c, make_blob(c, 0, 100)));
  auto err = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("No space left on device"), std::string::npos) << err;
  EXPECT_TRUE(cache.degraded());
  EXPECT_EQ(faults->failures(FsOp::write), 1);
  EXPECT_EQ(faults->calls(FsOp::write), writes);  // c was dropped without trying: degraded
  EXPECT_FALSE(cache.load(b));
  EXPECT_FALSE(cache.load(c));
  EXPECT_TRUE(cache.load(a));
  EXPECT_EQ(count_temp_files(dir.path()), 0u);  // the half-written temp file is gone
}

TEST(DiskEngineCache, ReadOnlyFileSystemDegrades) {
  TempDir dir;
  auto faults = std::make_shared<FaultInjectionFs>();
  faults->inject(FsOp::create_directories, EROFS);
  DiskEngineCache cache(dir.path() / "cache", 1 << 20, faults);
  auto a = make_key(1);
  EXPECT_NO_THROW(cache.save(a, make_blob(a, 0, 100)));
  EXPECT_TRUE(cache.degraded());
  EXPECT_EQ(faults->calls(FsOp::write), 0);
  EXPECT_FALSE(cache.load(a));
}

TEST(DiskEngineCache, FailedQuarantineMoveDeletesTheEntry) {
  TempDir dir;
  auto faults = std::make_shared<FaultInjectionFs>();
  DiskEngineCache cache(dir.path(), 1 << 20, faults);
  auto a = make_key(1);
  cache.save(a, make_blob(a, 0, 100));
  faults->inject(FsOp::rename, EXDEV);
  EXPECT_TRUE(cache.quarantine(a, "corrupt"));
  EXPECT_FALSE(cache.load(a));
  EXPECT_EQ(cache.stats().quarantined, 1u);
}

TEST(DiskEngineCache, ReadErrorsAreMisses) {
  TempDir dir;
  auto faults = std::make_shared<FaultInjectionFs>();
  DiskEngineCache cache(dir.path(), 1 << 20, faults);
  auto a = make_key(1);
  cache.save(a, make_blob(a, 0, 100));
  faults->inject(FsOp::read, EIO, 1);
  EXPECT_FALSE(cache.load(a));
  EXPECT_TRUE(cache.load(a));
  faults->inject(FsOp::set_mtime, EPERM);  // a read-only cache still serves
  EXPECT_TRUE(cache.load(a));
}

TEST(DiskEngineCache, ConcurrentProcessesNeverTearEntriesAndKeepTheCap) {
  TempDir dir;
  constexpr int k_processes = 8;
  constexpr int k_rounds = 40;
  constexpr uint64_t k_cap = 3000;
  auto codes = run_processes(k_processes, [&](int writer) {
    DiskEngineCache cache(dir.path(), k_cap);
    std::mt19937 rng(static_cast<uint32_t>(writer));
    for (int round = 0; round < k_rounds; ++round) {
      // Keys 0-5 are shared by everyone; 100+ are this writer's own.
      int id =
          (rng() % 2 == 0) ? static_cast<int>(rng() % 6) : 100 + writer * 10 + static_cast<int>(rng() % 4);
      auto key = make_key(id);
      cache.save(key, make_blob(key, writer, 100 + rng() % 400));
      auto other = make_key(static_cast<int>(rng() % 6));
      if (auto loaded = cache.load(other); loaded && !is_intact_blob(other, *loaded)) return 1;
    }
    return 0;
  });
  for (int code : codes) EXPECT_EQ(code, 0);

  DiskEngineCache cache(dir.path(), k_cap);
  uint64_t total = 0;
  for (const auto& entry : cache.list()) {
    std::ifstream in(cache.layout().entry_path(entry.key), std::ios::binary);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    auto view = std::as_bytes(std::span(text.data(), text.size()));
    EXPECT_TRUE(is_intact_blob(entry.key, {view.begin(), view.end()})) << entry.key;
    total += entry.size;
  }
  EXPECT_LE(total, k_cap);
  EXPECT_EQ(count_temp_files(dir.path()), 0u);
  auto stats = cache.stats();
  EXPECT_EQ(stats.saves, uint64_t{k_processes * k_rounds});  // every process's counts add up
  EXPECT_EQ(stats.hits + stats.misses, uint64_t{k_processes * k_rounds});
  EXPECT_EQ(stats.bytes, total);
  EXPECT_GT(stats.evictions, 0u);
}

TEST(DiskEngineCache, SingleFlightBuildsOnceAcrossProcesses) {
  TempDir dir;
  auto builds = dir.path() / "builds.log";
  auto key = make_key(42);
  auto codes = run_processes(8, [&](int writer) {
    DiskEngineCache cache(dir.path() / "cache", 1 << 20);
    auto lock = cache.acquire_build_lock(key, std::chrono::seconds(60));
    if (!lock) return 1;
    if (!cache.load(key)) {
      int fd = ::open(builds.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (fd < 0 || ::write(fd, "build\n", 6) != 6) return 2;
      ::close(fd);
      std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the build
      cache.save(key, make_blob(key, writer, 1000));
    }
    return 0;
  });
  for (int code : codes) EXPECT_EQ(code, 0);
  std::ifstream in(builds);
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_EQ(text.str(), "build\n");
  DiskEngineCache cache(dir.path() / "cache", 1 << 20);
  auto stats = cache.stats();
  EXPECT_EQ(stats.misses, 1u);
  EXPECT_EQ(stats.hits, 7u);
  EXPECT_EQ(stats.saves, 1u);
}

TEST(DiskEngineCache, PublicFactoryIsADiskCache) {
  TempDir dir;
  auto cache = make_disk_engine_cache(dir.path(), 1000);
  auto a = make_key(1);
  cache->save(a, make_blob(a, 0, 10));
  EXPECT_TRUE(dynamic_cast<DiskEngineCache*>(cache.get()));
  EXPECT_EQ(*cache->load(a), make_blob(a, 0, 10));
}

TEST(RamEngineCache, LruByBytes) {
  RamEngineCache cache(300);
  auto a = make_key(1), b = make_key(2), c = make_key(3), d = make_key(4);
  cache.save(a, make_blob(a, 0, 100));
  cache.save(b, make_blob(b, 0, 100));
  cache.save(c, make_blob(c, 0, 100));
  ASSERT_TRUE(cache.load(a));
  cache.save(d, make_blob(d, 0, 100));
  EXPECT_TRUE(cache.load(a));
  EXPECT_FALSE(cache.load(b));
  EXPECT_TRUE(cache.load(c));
  EXPECT_TRUE(cache.load(d));
  cache.save(a, make_blob(a, 1, 150));  // replaces, with its new size
  auto stats = cache.stats();
  EXPECT_LE(stats.bytes, 300u);
  EXPECT_EQ(*cache.load(a), make_blob(a, 1, 150));
  EXPECT_EQ(stats.evictions, 2u);  // b, then c for the bigger a
  EXPECT_EQ(stats.bytes, 250u);
}

TEST(RamEngineCache, TooLargeIsRefused) {
  RamEngineCache cache(100);
  auto a = make_key(1), b = make_key(2);
  cache.save(a, make_blob(a, 0, 100));
  cache.save(b, make_blob(b, 0, 101));
  EXPECT_FALSE(cache.load(b));
  EXPECT_TRUE(cache.load(a));
  EXPECT_EQ(cache.stats().refused_too_large, 1u);
  auto factory = make_ram_engine_cache(100);
  factory->save(a, make_blob(a, 0, 100));
  EXPECT_TRUE(factory->load(a));
}

TEST(RamEngineCache, ThreadSafe) {
  constexpr uint64_t k_cap = 2000;
  RamEngineCache cache(k_cap);
  std::vector<std::thread> threads;
  std::atomic<int> torn{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(static_cast<uint32_t>(t));
      for (int i = 0; i < 2000; ++i) {
        auto key = make_key(static_cast<int>(rng() % 12));
        if (rng() % 2) {
          cache.save(key, make_blob(key, t, 50 + rng() % 200));
        } else if (auto blob = cache.load(key); blob && !is_intact_blob(key, *blob)) {
          ++torn;
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(torn.load(), 0);
  auto stats = cache.stats();
  EXPECT_LE(stats.bytes, k_cap);
  EXPECT_LE(stats.entries, 12u);
  EXPECT_GT(stats.hits, 0u);
}

}  // namespace
}  // namespace kiln::cache
