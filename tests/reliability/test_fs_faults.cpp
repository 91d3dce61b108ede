// File-system faults the disk engine cache must survive, beyond those in
// tests/unit/test_disk_cache.cpp (ENOSPC on write, EROFS on mkdir, EXDEV on
// the quarantine rename, EIO on read, EPERM on touch, a folder that is a
// file): a failed publish at every stage (temp file not created, short
// write, fsync, rename) with the errno a real system gives, a real short
// write through the POSIX file system (RLIMIT_FSIZE), permission errors on
// reads, folders that cannot be listed, entries that cannot be deleted, a
// counters file that cannot be written. In every case: no exception, no
// partial entry, no temp file left, an entry saved before is still served
// intact, and the size accounting matches the disk.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/resource.h>

#include <cerrno>
#include <cstring>
#include <tuple>

#include "cache/disk_engine_cache.hpp"
#include "cache/fault_injection_fs.hpp"
#include "stress_blob.hpp"
#include "test_helpers.hpp"

namespace kiln::reliability {
namespace {

namespace fs = std::filesystem;
using cache::DiskEngineCache;
using cache::FaultInjectionFs;
using cache::FsOp;
using cache::WriteStage;

std::string hex(uint64_t id) { return stress_key(id).hex(); }

size_t temp_files(const fs::path& dir) {
  size_t n = 0;
  for (const auto& item : fs::recursive_directory_iterator(dir)) {
    if (item.is_regular_file() && cache::is_temp_name(item.path().filename().string())) ++n;
  }
  return n;
}

uint64_t entry_bytes_on_disk(const cache::CacheLayout& layout) {
  uint64_t total = 0;
  for (const auto& item : fs::recursive_directory_iterator(layout.entries_dir())) {
    if (item.is_regular_file() && cache::key_from_entry_name(item.path().filename().string())) {
      total += item.file_size();
    }
  }
  return total;
}

size_t count_of(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

using StageCase = std::tuple<WriteStage, int>;

std::string stage_case_name(const ::testing::TestParamInfo<StageCase>& param_info) {
  static const char* stages[] = {"create", "short_write", "fsync", "rename"};
  return std::string(stages[static_cast<int>(std::get<0>(param_info.param))]) + "_errno" +
         std::to_string(std::get<1>(param_info.param));
}

class FailedPublish : public ::testing::TestWithParam<StageCase> {};

TEST_P(FailedPublish, KeepsTheOldEntryLeavesNoTempFileAndWarnsOnce) {
  auto [stage, error] = GetParam();
  kiln::testing::TempDir dir;
  auto faults = std::make_shared<FaultInjectionFs>();
  DiskEngineCache cache(dir.path(), 8 << 20, faults);
  const auto old_blob = stress_blob(1, 1, 200 << 10);
  cache.save(hex(1), old_blob);

  faults->inject_write(stage, error);
  ::testing::internal::CaptureStderr();
  for (uint64_t generation = 2; generation < 5; ++generation) {
    EXPECT_NO_THROW(cache.save(hex(1), stress_blob(1, generation, 300 << 10)));  // re-save over the entry
    EXPECT_NO_THROW(cache.save(hex(2), stress_blob(2, generation, 300 << 10)));  // a new entry
  }
  auto err = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(count_of(err, "is not writable"), 1u) << err;
  EXPECT_NE(err.find(std::strerror(error)), std::string::npos) << err;
  EXPECT_TRUE(cache.degraded());
  EXPECT_EQ(faults->failures(FsOp::write), 1);  // degraded: later saves are not even tried

  // The entry from before the fault is served, byte for byte; the new key is
  // a miss, not a partial entry.
  auto loaded = cache.load(hex(1));
  ASSERT_TRUE(loaded);
  EXPECT_EQ(*loaded, old_blob);
  EXPECT_FALSE(cache.load(hex(2)));
  EXPECT_EQ(temp_files(dir.path()), 0u);
  EXPECT_EQ(cache.stats().bytes, entry_bytes_on_disk(cache.layout()));

  // A new process (a new cache object) on a healthy disk publishes again.
  faults->clear();
  DiskEngineCache healthy(dir.path(), 8 << 20, faults);
  healthy.save(hex(2), stress_blob(2, 9, 300 << 10));
  EXPECT_EQ(check_stress_blob(2, *healthy.load(hex(2))), "");
}

INSTANTIATE_TEST_SUITE_P(StagesAndErrnos, FailedPublish,
                         ::testing::Values(std::make_tuple(WriteStage::create, EACCES),
                                           std::make_tuple(WriteStage::create, EMFILE),
                                           std::make_tuple(WriteStage::create, EDQUOT),
                                           std::make_tuple(WriteStage::short_write, ENOSPC),
                                           std::make_tuple(WriteStage::short_write, EIO),
                                           std::make_tuple(WriteStage::short_write, EFBIG),
                                           std::make_tuple(WriteStage::fsync, EIO),
                                           std::make_tuple(WriteStage::fsync, ENOSPC),
                                           std::make_tuple(WriteStage::rename, EACCES),
                                           std::make_tuple(WriteStage::rename, EXDEV),
                                           std::make_tuple(WriteStage::rename, EBUSY)),
                         stage_case_name);

// A real short write, no injection: the file-size limit makes write(2)
// return fewer bytes than asked and then fail with EFBIG, through the real
// POSIX file system and AtomicFile.
TEST(FsFaults, RealShortWriteFromAFileSizeLimitIsAMissNotAPartialEntry) {
  kiln::testing::TempDir dir;
  DiskEngineCache cache(dir.path(), 64 << 20);
  const auto small = stress_blob(1, 1, 64 << 10);
  cache.save(hex(1), small);

  struct rlimit saved {};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &saved), 0);
  auto old_handler = ::signal(SIGXFSZ, SIG_IGN);  // else the kernel kills us at the limit
  struct rlimit limited = saved;
  limited.rlim_cur = 1 << 20;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &limited), 0);
  ::testing::internal::CaptureStderr();
  cache.save(hex(1), stress_blob(1, 2, 3 << 20));  // over the limit: a short write, then EFBIG
  cache.save(hex(2), stress_blob(2, 2, 3 << 20));
  auto err = ::testing::internal::GetCapturedStderr();
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &saved), 0);
  ::signal(SIGXFSZ, old_handler);

  EXPECT_NE(err.find(std::strerror(EFBIG)), std::string::npos) << err;
  EXPECT_TRUE(cache.degraded());
  EXPECT_EQ(*cache.load(hex(1)), small);
  EXPECT_FALSE(cache.load(hex(2)));
  EXPECT_EQ(temp_files(dir.path()), 0u);
}

TEST(FsFaults, PermissionDeniedOnReadIsAMissThatKeepsTheEntry) {
  kiln::testing::TempDir dir;
  auto faults = std::make_shared<FaultInjectionFs>();
  DiskEngineCache cache(dir.path(), 8 << 20, faults);
  cache.save(hex(1), stress_blob(1, 1, 1000));
  faults->inject(FsOp::read, EACCES, 3);
  ::testing::internal::CaptureStderr();
  for (int i = 0; i < 3; ++i) EXPECT_FALSE(cache.load(hex(1)));
  auto err = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(count_of(err, std::strerror(EACCES)), 1u) << err;  // one warning, not one per lookup
  // A permission problem is not corruption: nothing was quarantined or deleted.
  EXPECT_EQ(check_stress_blob(1, *cache.load(hex(1))), "");
  EXPECT_EQ(cache.stats().quarantined, 0u);
}

TEST(FsFaults, FoldersThatCannotBeListedLoseNoEntryAndTheCapComesBack) {
  kiln::testing::TempDir dir;
  auto faults = std::make_shared<FaultInjectionFs>();
  constexpr uint64_t k_cap = 1 << 20;
  DiskEngineCache cache(dir.path(), k_cap, faults);
  for (uint64_t id = 0; id < 3; ++id) cache.save(hex(id), stress_blob(id, 1, 300 << 10));
  faults->inject(FsOp::list, EIO);
  // Eviction cannot see the entries: saves still publish, list/stats/verify
  // report nothing rather than failing.
  for (uint64_t id = 3; id < 6; ++id) EXPECT_NO_THROW(cache.save(hex(id), stress_blob(id, 1, 300 << 10)));
  EXPECT_TRUE(cache.list().empty());
  EXPECT_TRUE(cache.verify().empty());
  EXPECT_EQ(cache.prune(0).removed_entries, 0u);
  EXPECT_EQ(check_stress_blob(5, *cache.load(hex(5))), "");
  // Once the folder can be listed again, the next save restores the cap.
  faults->clear();
  cache.save(hex(6), stress_blob(6, 1, 300 << 10));
  EXPECT_LE(entry_bytes_on_disk(cache.layout()), k_cap);
  EXPECT_EQ(cache.stats().bytes, entry_bytes_on_disk(cache.layout()));
  EXPECT_EQ(check_stress_blob(6, *cache.load(hex(6))), "");
}

TEST(FsFaults, EntriesThatCannotBeDeletedAreSkippedByEvictionUntilTheyCanBe) {
  kiln::testing::TempDir dir;
  auto faults = std::make_shared<FaultInjectionFs>();
  constexpr uint64_t k_cap = 1 << 20;
  DiskEngineCache cache(dir.path(), k_cap, faults);
  for (uint64_t id = 0; id < 3; ++id) cache.save(hex(id), stress_blob(id, 1, 300 << 10));
  faults->inject(FsOp::remove, EACCES);
  ::testing::internal::CaptureStderr();
  for (uint64_t id = 3; id < 6; ++id) EXPECT_NO_THROW(cache.save(hex(id), stress_blob(id, 1, 300 << 10)));
  auto err = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(count_of(err, std::strerror(EACCES)), 1u) << err;
  EXPECT_GT(entry_bytes_on_disk(cache.layout()), k_cap);  // over the cap, honestly reported
  EXPECT_EQ(cache.stats().bytes, entry_bytes_on_disk(cache.layout()));
  faults->clear();
  cache.save(hex(6), stress_blob(6, 1, 300 << 10));
  EXPECT_LE(entry_bytes_on_disk(cache.layout()), k_cap);
  for (const auto& entry : cache.list()) {
    EXPECT_EQ(check_stress_blob(*stress_id_of(entry.key, 8), *cache.load(entry.key)), "");
  }
}

TEST(FsFaults, QuarantineThatCanNeitherMoveNorDeleteReportsFailure) {
  kiln::testing::TempDir dir;
  auto faults = std::make_shared<FaultInjectionFs>();
  DiskEngineCache cache(dir.path(), 8 << 20, faults);
  cache.save(hex(1), stress_blob(1, 1, 1000));
  faults->inject(FsOp::rename, EACCES);
  faults->inject(FsOp::remove, EACCES);
  ::testing::internal::CaptureStderr();
  EXPECT_FALSE(cache.quarantine(hex(1), "test: corrupt"));
  auto err = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("cannot delete corrupt entry"), std::string::npos) << err;
  EXPECT_EQ(cache.stats().quarantined, 0u);
}

TEST(FsFaults, CountersThatCannotBeWrittenAreKeptAndWrittenLater) {
  kiln::testing::TempDir dir;
  auto faults = std::make_shared<FaultInjectionFs>();
  {
    DiskEngineCache cache(dir.path(), 8 << 20, faults);
    cache.save(hex(1), stress_blob(1, 1, 1000));
    faults->inject(FsOp::write, EIO, 1);  // the entry is fine; the counters file write fails
    cache.load(hex(1));
    cache.load(hex(2));
    cache.flush_stats();
    EXPECT_EQ(faults->failures(FsOp::write), 1);
    auto stats = cache.stats();  // the failed flush's counts were kept and written now
    EXPECT_EQ(stats.saves, 1u);
    EXPECT_EQ(stats.hits, 1u);
    EXPECT_EQ(stats.misses, 1u);
  }
  DiskEngineCache reopened(dir.path(), 8 << 20);
  auto stats = reopened.stats();
  EXPECT_EQ(stats.hits, 1u);
  EXPECT_EQ(stats.misses, 1u);
}

TEST(FsFaults, ShardFolderThatCannotBeCreatedDegradesButServesOtherShards) {
  kiln::testing::TempDir dir;
  auto faults = std::make_shared<FaultInjectionFs>();
  DiskEngineCache cache(dir.path(), 8 << 20, faults);
  cache.save(hex(1), stress_blob(1, 1, 1000));
  faults->inject(FsOp::create_directories, EACCES);
  EXPECT_NO_THROW(cache.save(hex(2), stress_blob(2, 1, 1000)));
  EXPECT_TRUE(cache.degraded());
  EXPECT_EQ(check_stress_blob(1, *cache.load(hex(1))), "");
  EXPECT_FALSE(cache.load(hex(2)));
  EXPECT_FALSE(cache.acquire_build_lock(hex(2), std::chrono::milliseconds(0)));
}

}  // namespace
}  // namespace kiln::reliability
