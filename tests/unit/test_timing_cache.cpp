// TimingCache persistence (round trip, corrupt and foreign files, merge on
// save, many processes saving at once, unwritable paths), the AtomicFile and
// LockFile it is built on, BuildProgress formatting, and the tactic search
// (level 0, cache hits, picking the fastest).
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <numeric>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "builder/progress.hpp"
#include "builder/tactic_search.hpp"
#include "builder/timing_cache.hpp"
#include "kiln/error.hpp"
#include "test_helpers.hpp"
#include "util/atomic_file.hpp"
#include "util/lock_file.hpp"

namespace kiln::builder {
namespace {

using kiln::testing::TempDir;
using kiln::testing::write_file;

std::string read_all(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<TacticTiming> timings_for(int i) {
  return {{"gemm_avx512", 0.5 + i}, {"winograd", 1.25 * i}, {"", 0.0}};
}

// Files in `dir` other than the cache itself and its lock file.
std::vector<std::string> stray_files(const std::filesystem::path& dir, const std::string& cache_name) {
  std::vector<std::string> stray;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    auto name = e.path().filename().string();
    if (name != cache_name && name != cache_name + ".lock") stray.push_back(name);
  }
  return stray;
}

TEST(TimingCache, InMemoryFindInsertAndCounters) {
  TimingCache cache;
  EXPECT_EQ(cache.size(), 0u);
  EXPECT_FALSE(cache.find("conv 1x3x224x224").has_value());
  cache.insert("conv 1x3x224x224", timings_for(1));
  auto hit = cache.find("conv 1x3x224x224");
  ASSERT_TRUE(hit.has_value());
  EXPECT_EQ(hit->size(), 3u);
  EXPECT_EQ((*hit)[0].tactic, "gemm_avx512");
  EXPECT_EQ(cache.hits(), 1u);
  EXPECT_EQ(cache.misses(), 1u);
  EXPECT_TRUE(cache.save());  // pathless: nothing to do, not a failure

  TimingCache moved = std::move(cache);
  EXPECT_EQ(moved.size(), 1u);
  TimingCache assigned;
  assigned = std::move(moved);
  EXPECT_EQ(assigned.size(), 1u);
  EXPECT_EQ(assigned.hits(), 1u);
}

TEST(TimingCache, MissingFileIsAnEmptyCache) {
  TempDir dir;
  auto cache = TimingCache::open(dir / "nope.bin");
  EXPECT_EQ(cache.size(), 0u);
  EXPECT_EQ(cache.path(), dir / "nope.bin");
}

TEST(TimingCache, RoundTripThroughFile) {
  TempDir dir;
  auto path = dir.path() / "sub" / "deeper" / "timing.cache";  // parents created by save
  {
    auto cache = TimingCache::open(path);
    for (int i = 0; i < 50; ++i) cache.insert("layer " + std::to_string(i), timings_for(i));
    cache.insert(std::string("binary\0key\n", 11), {{"t", 3.0}});
    cache.insert("no timings", {});
    ASSERT_TRUE(cache.save());
  }
  auto loaded = TimingCache::open(path);
  EXPECT_EQ(loaded.size(), 52u);
  for (int i = 0; i < 50; ++i) {
    auto hit = loaded.find("layer " + std::to_string(i));
    ASSERT_TRUE(hit.has_value()) << i;
    auto expected = timings_for(i);
    ASSERT_EQ(hit->size(), expected.size());
    for (size_t j = 0; j < expected.size(); ++j) {
      EXPECT_EQ((*hit)[j].tactic, expected[j].tactic);
      EXPECT_EQ((*hit)[j].time_ms, expected[j].time_ms);  // bit-exact
    }
  }
  EXPECT_EQ(loaded.find(std::string("binary\0key\n", 11))->at(0).time_ms, 3.0);
  EXPECT_TRUE(loaded.find("no timings")->empty());
  EXPECT_TRUE(stray_files(path.parent_path(), "timing.cache").empty());

  // Saving again writes byte-identical content (sorted, deterministic).
  auto before = read_all(path);
  ASSERT_TRUE(loaded.save());
  EXPECT_EQ(read_all(path), before);
}

class TimingCacheBadFile : public ::testing::Test {
 protected:
  // A valid file's bytes, to damage in various ways.
  std::string valid_bytes() {
    auto cache = TimingCache::open(m_dir / "valid.bin");
    for (int i = 0; i < 5; ++i) cache.insert("k" + std::to_string(i), timings_for(i));
    EXPECT_TRUE(cache.save());
    return read_all(m_dir / "valid.bin");
  }
  // Opens `bytes` as a cache: must be empty and must not throw.
  void expect_ignored(const std::string& bytes, const std::string& what) {
    auto path = m_dir / ("bad" + std::to_string(m_count++) + ".bin");
    write_file(path, bytes);
    std::optional<TimingCache> cache;
    ASSERT_NO_THROW(cache.emplace(TimingCache::open(path))) << what;
    EXPECT_EQ(cache->size(), 0u) << what;
  }

  TempDir m_dir;
  int m_count = 0;
};

TEST_F(TimingCacheBadFile, GarbageTruncatedOrForeignIsIgnored) {
  auto good = valid_bytes();
  ASSERT_GT(good.size(), 40u);
  expect_ignored("hello, this is not a timing cache at all", "garbage");
  expect_ignored(std::string(4096, '\xff'), "0xff bytes");
  expect_ignored("KIL", "truncated magic");
  expect_ignored("KILNTC", "magic only");
  for (size_t cut : {size_t{7}, size_t{16}, size_t{24}, good.size() / 2, good.size() - 1})
    expect_ignored(good.substr(0, cut), "truncated at " + std::to_string(cut));
  auto wrong_magic = good;
  wrong_magic[0] = 'X';
  expect_ignored(wrong_magic, "wrong magic");
  ASSERT_EQ(good[6], 2) << "format version u16 LE";
  auto newer = good;
  newer[6] = 3;
  expect_ignored(newer, "newer version");
  auto older = good;
  older[6] = 1;  // version 1 keys did not name the thread count: never read as ours
  expect_ignored(older, "older version");
  older[6] = 0;
  expect_ignored(older, "version 0");
  auto flipped = good;
  flipped[good.size() / 2] ^= 0x10;
  expect_ignored(flipped, "flipped bit");
  expect_ignored(good + "x", "trailing byte");
  // A folder where the file should be.
  std::filesystem::create_directory(m_dir / "a_folder");
  EXPECT_EQ(TimingCache::open(m_dir / "a_folder").size(), 0u);
}

TEST_F(TimingCacheBadFile, SaveReplacesCorruptButNeverForeignFiles) {
  auto good = valid_bytes();
  auto corrupt_path = m_dir / "corrupt.bin";
  write_file(corrupt_path, good.substr(0, good.size() - 3));
  auto cache = TimingCache::open(corrupt_path);
  cache.insert("fresh", {{"t", 1.0}});
  EXPECT_TRUE(cache.save());
  EXPECT_EQ(TimingCache::open(corrupt_path).size(), 1u);

  // Someone else's file at the configured path is not ours to clobber.
  auto foreign_path = m_dir / "notes.txt";
  write_file(foreign_path, "my precious notes");
  auto other = TimingCache::open(foreign_path);
  other.insert("fresh", {{"t", 1.0}});
  EXPECT_FALSE(other.save());
  EXPECT_EQ(read_all(foreign_path), "my precious notes");
}

TEST(TimingCache, SaveMergesWhatOthersSavedMeanwhile) {
  TempDir dir;
  auto path = dir / "shared.bin";
  auto a = TimingCache::open(path);
  auto b = TimingCache::open(path);
  a.insert("only_a", {{"x", 1.0}});
  a.insert("both", {{"x", 10.0}});
  b.insert("only_b", {{"y", 2.0}});
  b.insert("both", {{"y", 20.0}});
  ASSERT_TRUE(a.save());
  ASSERT_TRUE(b.save());  // b never saw a's entries: it must merge, not overwrite

  auto merged = TimingCache::open(path);
  EXPECT_EQ(merged.size(), 3u);
  EXPECT_TRUE(merged.find("only_a").has_value());
  EXPECT_TRUE(merged.find("only_b").has_value());
  EXPECT_EQ(merged.find("both")->at(0).tactic, "y");  // the later saver wins on conflict
  EXPECT_EQ(b.size(), 3u);                            // b also learned a's entries
}

TEST(TimingCache, UnwritablePathFailsWithoutThrowing) {
  TimingCache cache = TimingCache::open("/dev/null/x/timing.bin");  // under a regular file
  cache.insert("k", {{"t", 1.0}});
  bool saved = true;
  EXPECT_NO_THROW(saved = cache.save());
  EXPECT_FALSE(saved);
  EXPECT_EQ(cache.size(), 1u);  // the in-memory cache still works

  if (::geteuid() != 0) {  // root ignores folder permissions
    TempDir dir;
    auto locked = dir / "ro";
    std::filesystem::create_directory(locked);
    ::chmod(locked.c_str(), 0555);
    auto ro = TimingCache::open(locked / "timing.bin");
    ro.insert("k", {{"t", 1.0}});
    EXPECT_FALSE(ro.save());
    ::chmod(locked.c_str(), 0755);
    EXPECT_TRUE(std::filesystem::is_empty(locked));
  }
}

// Real processes: each child opens the shared path, adds its own keys over a
// few rounds and saves after each; all start together to maximize overlap.
TEST(TimingCache, ConcurrentProcessesLoseNoUpdates) {
  constexpr int k_processes = 8;
  constexpr int k_rounds = 5;
  constexpr int k_keys_per_round = 20;
  TempDir dir;
  auto path = dir / "shared.bin";

  int start_pipe[2];
  ASSERT_EQ(::pipe(start_pipe), 0);
  std::vector<pid_t> children;
  for (int p = 0; p < k_processes; ++p) {
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::close(start_pipe[1]);
      char go;
      if (::read(start_pipe[0], &go, 1) < 0) ::_exit(3);  // EOF when the parent lets go
      int failures = 0;
      auto cache = TimingCache::open(path);
      for (int r = 0; r < k_rounds; ++r) {
        for (int k = 0; k < k_keys_per_round; ++k)
          cache.insert("p" + std::to_string(p) + "/r" + std::to_string(r) + "/k" + std::to_string(k),
                       {{"tactic_" + std::to_string(k % 3), p + r * 0.25 + k * 0.001}});
        if (!cache.save()) ++failures;
      }
      ::_exit(failures == 0 ? 0 : 1);  // no atexit/gtest teardown in the child
    }
    children.push_back(pid);
  }
  ::close(start_pipe[0]);
  ::close(start_pipe[1]);  // releases every child at once
  for (pid_t pid : children) {
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child " << pid << " status " << status;
  }

  auto merged = TimingCache::open(path);
  EXPECT_EQ(merged.size(), size_t{k_processes * k_rounds * k_keys_per_round});
  for (int p = 0; p < k_processes; ++p)
    for (int r = 0; r < k_rounds; ++r)
      for (int k = 0; k < k_keys_per_round; ++k) {
        auto key = "p" + std::to_string(p) + "/r" + std::to_string(r) + "/k" + std::to_string(k);
        auto hit = merged.find(key);
        ASSERT_TRUE(hit.has_value()) << key;
        EXPECT_EQ(hit->at(0).time_ms, p + r * 0.25 + k * 0.001);
      }
  EXPECT_TRUE(stray_files(dir.path(), "shared.bin").empty());
}

TEST(AtomicFile, UncommittedTempIsRemovedAndTargetUntouched) {
  TempDir dir;
  auto target = dir / "file.bin";
  write_file(target, "old");
  {
    AtomicFile file(target);
    ASSERT_TRUE(file.ok()) << file.error();
    EXPECT_TRUE(file.write(std::string_view("new contents")));
    EXPECT_TRUE(std::filesystem::exists(file.temp_path()));
    EXPECT_EQ(file.temp_path().parent_path(), dir.path());
  }  // destroyed without commit()
  EXPECT_EQ(read_all(target), "old");
  EXPECT_TRUE(stray_files(dir.path(), "file.bin").empty());
  {
    AtomicFile file(target);
    EXPECT_TRUE(file.write(std::string_view("new contents")));
    EXPECT_TRUE(file.commit());
  }
  EXPECT_EQ(read_all(target), "new contents");
  EXPECT_TRUE(stray_files(dir.path(), "file.bin").empty());

  AtomicFile bad("/dev/null/x/file.bin");
  EXPECT_FALSE(bad.ok());
  EXPECT_FALSE(bad.write(std::string_view("x")));
  EXPECT_FALSE(bad.commit());
  EXPECT_NE(bad.error().find("/dev/null/x"), std::string::npos) << bad.error();
}

TEST(LockFile, ExcludesOtherHoldersAndReleases) {
  TempDir dir;
  auto path = dir / "x.lock";
  LockFile first(path);
  ASSERT_TRUE(first.acquire());
  LockFile second(path);
  EXPECT_FALSE(second.try_acquire());  // same process, separate descriptor: still excluded
  EXPECT_FALSE(second.acquire(std::chrono::milliseconds(20)));
  EXPECT_NE(second.error().find("timed out"), std::string::npos) << second.error();
  first.release();
  EXPECT_TRUE(second.try_acquire());
  {
    LockFile moved = std::move(second);
    EXPECT_TRUE(moved.acquired());
    EXPECT_FALSE(first.try_acquire());
  }  // RAII release
  EXPECT_TRUE(first.try_acquire());

  LockFile impossible("/dev/null/x.lock");
  EXPECT_FALSE(impossible.acquire(std::chrono::milliseconds(10)));
  EXPECT_FALSE(impossible.error().empty());
}

TEST(BuildProgress, FormatsCountsPercentAndEstimate) {
  EXPECT_EQ(BuildProgress::format("timing layers", 12, 57, 3.42), "timing layers: 12/57 (21%), ~3.4 s left");
  EXPECT_EQ(BuildProgress::format("timing layers", 0, 57, std::nullopt), "timing layers: 0/57 (0%)");
  EXPECT_EQ(BuildProgress::format("x", 1, 2, 42.4), "x: 1/2 (50%), ~42 s left");
  EXPECT_EQ(BuildProgress::format("x", 1, 2, 125.0), "x: 1/2 (50%), ~2 min 05 s left");
  EXPECT_EQ(BuildProgress::format("x", 0, 0, std::nullopt), "x: 0/0 (100%)");
}

TEST(BuildProgress, DrawsInPlaceOnlyWhenEnabled) {
  TempDir dir;
  auto log_path = dir / "progress.txt";
  int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(fd, 0);
  EXPECT_FALSE(is_terminal(fd));
  {
    BuildProgress automatic("timing layers", 3, BuildProgress::Mode::automatic, fd);
    EXPECT_FALSE(automatic.enabled());  // a file is not a terminal
    automatic.advance();
  }
  EXPECT_EQ(read_all(log_path), "");
  {
    BuildProgress forced("timing layers", 3, BuildProgress::Mode::always, fd);
    forced.advance(3);
    forced.advance();  // past the end: clamped
    EXPECT_EQ(forced.done(), 3u);
  }
  ::close(fd);
  auto text = read_all(log_path);
  EXPECT_EQ(text.front(), '\r');
  EXPECT_NE(text.find("\rtiming layers: 0/3 (0%)"), std::string::npos) << text;
  EXPECT_NE(text.find("\rtiming layers: 3/3 (100%)"), std::string::npos) << text;
  EXPECT_EQ(text.back(), '\n');
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 1);
}

// Candidates with known costs that count their calls.
struct FakeCandidates {
  std::vector<int> calls;
  std::vector<TacticCandidate> make(const std::vector<std::pair<std::string, double>>& costs) {
    calls.assign(costs.size(), 0);
    std::vector<TacticCandidate> out;
    for (size_t i = 0; i < costs.size(); ++i)
      out.push_back({costs[i].first, [this, i, ms = costs[i].second] {
                       ++calls[i];
                       return ms;
                     }});
    return out;
  }
  int total() const { return std::accumulate(calls.begin(), calls.end(), 0); }
};

TEST(TacticSearch, LevelZeroTakesTheFirstWithoutTiming) {
  FakeCandidates fake;
  auto candidates = fake.make({{"slow_first", 9.0}, {"fast", 1.0}});
  CompileSettings settings;
  settings.optimization_level = 0;
  TimingCache cache;
  auto choice = search_tactics("conv", candidates, settings, &cache);
  EXPECT_EQ(choice.index, 0u);
  EXPECT_EQ(choice.tactic, "slow_first");
  EXPECT_TRUE(choice.timings.empty());
  EXPECT_EQ(fake.total(), 0);
  EXPECT_EQ(cache.size(), 0u);
}

TEST(TacticSearch, ChoosesTheFastestAndCachesAllTimings) {
  FakeCandidates fake;
  auto candidates = fake.make({{"direct", 3.0}, {"gemm", 0.7}, {"winograd", 1.2}});
  CompileSettings settings;
  settings.debug = true;
  TimingCache cache;
  auto choice = search_tactics("conv 3x3", candidates, settings, &cache);
  EXPECT_EQ(choice.tactic, "gemm");
  EXPECT_EQ(choice.index, 1u);
  EXPECT_FALSE(choice.from_cache);
  ASSERT_EQ(choice.timings.size(), 3u);
  EXPECT_EQ(choice.timings[2].time_ms, 1.2);
  auto plan = timing_plan(3);
  // "direct" (over twice gemm's time) is dropped after one run; the others run in full.
  EXPECT_EQ(fake.calls[0], plan.warmup_runs + 1);
  for (int c : {fake.calls[1], fake.calls[2]}) {
    EXPECT_GE(c, plan.warmup_runs + plan.min_runs);
    EXPECT_LE(c, plan.warmup_runs + plan.max_runs);
  }
  ASSERT_TRUE(cache.find("conv 3x3").has_value());
  EXPECT_EQ(cache.find("conv 3x3")->size(), 3u);
}

TEST(TacticSearch, ACandidateTwiceAsSlowAsTheBestStopsBeingTimed) {
  // At a large batch one run of a slow tactic costs a tenth of a second or
  // more; once it is twice the best it cannot win, so levels 1-3 stop there.
  FakeCandidates fake;
  auto candidates = fake.make({{"fast", 1.0}, {"close", 1.9}, {"hopeless", 2.1}});
  auto choice = search_tactics("conv", candidates, CompileSettings{}, nullptr);
  EXPECT_EQ(choice.tactic, "fast");
  auto plan = timing_plan(3);
  EXPECT_EQ(fake.calls[2], plan.warmup_runs + 1);
  EXPECT_GE(fake.calls[1], plan.warmup_runs + plan.min_runs);
  ASSERT_EQ(choice.timings.size(), 3u);
  EXPECT_EQ(choice.timings[2].time_ms, 2.1);  // still timed, so the cache ranks it

  // Level 4 and up time every candidate in full.
  FakeCandidates full;
  auto again = full.make({{"fast", 1.0}, {"close", 1.9}, {"hopeless", 2.1}});
  CompileSettings thorough;
  thorough.optimization_level = 4;
  search_tactics("conv", again, thorough, nullptr);
  EXPECT_GE(full.calls[2], timing_plan(4).warmup_runs + timing_plan(4).min_runs);
}

TEST(TacticSearch, ABurstOfLoadDoesNotDecideBetweenCandidates) {
  // Two candidates, "fast" at 1.0 ms and "slow" at 1.3 ms, and a burst of
  // load from elsewhere that adds 2 ms to the first 4 runs the machine makes,
  // whichever candidate is running. Timed one candidate after the other, the
  // burst would cover most of "fast"'s runs and hand the layer to "slow";
  // interleaved, it costs each the same few runs and the medians see past it.
  int machine_runs = 0;
  auto timed = [&machine_runs](double ms) {
    return [&machine_runs, ms] { return ms + (machine_runs++ < 4 ? 2.0 : 0.0); };
  };
  std::vector<TacticCandidate> candidates = {{"fast", timed(1.0)}, {"slow", timed(1.3)}};
  auto choice = search_tactics("conv under load", candidates, CompileSettings{}, nullptr);
  EXPECT_EQ(choice.tactic, "fast");
  ASSERT_EQ(choice.timings.size(), 2u);
  EXPECT_EQ(choice.timings[0].time_ms, 1.0);
  EXPECT_EQ(choice.timings[1].time_ms, 1.3);
}

TEST(TacticSearch, CacheHitSkipsTiming) {
  TimingCache cache;
  cache.insert("matmul", {{"a", 5.0}, {"b", 0.1}});
  FakeCandidates fake;
  auto candidates = fake.make({{"a", 1.0}, {"b", 2.0}});  // live costs disagree: cache wins
  auto choice = search_tactics("matmul", candidates, CompileSettings{}, &cache);
  EXPECT_EQ(fake.total(), 0);
  EXPECT_EQ(choice.tactic, "b");
  EXPECT_TRUE(choice.from_cache);
  EXPECT_EQ(cache.hits(), 1u);

  // A tactic the cache has never seen is timed alone and added to the entry.
  auto more = fake.make({{"a", 1.0}, {"b", 2.0}, {"c", 0.05}});
  auto second = search_tactics("matmul", more, CompileSettings{}, &cache);
  EXPECT_EQ(second.tactic, "c");
  EXPECT_EQ(fake.calls[0] + fake.calls[1], 0);
  EXPECT_GT(fake.calls[2], 0);
  EXPECT_EQ(cache.find("matmul")->size(), 3u);
}

TEST(TacticSearch, LevelsScaleEffortAndFailuresAreSkipped) {
  auto calls_at = [](int level) {
    FakeCandidates fake;
    auto candidates = fake.make({{"a", 0.01}, {"b", 0.02}});
    CompileSettings settings;
    settings.optimization_level = level;
    search_tactics("k", candidates, settings, nullptr);
    return fake.calls[0];
  };
  EXPECT_LT(calls_at(1), calls_at(3));
  EXPECT_LT(calls_at(3), calls_at(5));

  std::vector<TacticCandidate> flaky = {
      {"broken", []() -> double { throw std::runtime_error("unsupported layout"); }},
      {"works", [] { return 2.0; }}};
  TimingCache cache;
  EXPECT_EQ(search_tactics("k", flaky, CompileSettings{}, &cache).tactic, "works");
  EXPECT_EQ(cache.find("k")->size(), 1u);  // failures are not cached

  std::vector<TacticCandidate> all_broken = {{"x", []() -> double { throw std::runtime_error("first"); }},
                                             {"y", []() -> double { throw std::runtime_error("second"); }}};
  EXPECT_THROW(search_tactics("k2", all_broken, CompileSettings{}, nullptr), std::runtime_error);
  EXPECT_THROW(search_tactics("k3", {}, CompileSettings{}, nullptr), kiln::Error);
}

TEST(TacticSearch, LayerKeyNamesThreadsSignatureAndCandidates) {
  std::vector<TacticCandidate> two = {{"a", [] { return 1.0; }}, {"b", [] { return 2.0; }}};
  std::vector<TacticCandidate> one = {{"a", [] { return 1.0; }}};
  const std::string base = layer_key("cpu plan v2, oneDNN 2.6.3, avx512_core", 1, "matmul|m=32", two);
  // A timing at 2 threads is another measurement than at 1.
  EXPECT_NE(base, layer_key("cpu plan v2, oneDNN 2.6.3, avx512_core", 2, "matmul|m=32", two));
  EXPECT_NE(base, layer_key("cpu plan v2, oneDNN 2.6.3, avx2", 1, "matmul|m=32", two));
  EXPECT_NE(base, layer_key("cpu plan v2, oneDNN 2.6.3, avx512_core", 1, "matmul|m=64", two));
  EXPECT_NE(base, layer_key("cpu plan v2, oneDNN 2.6.3, avx512_core", 1, "matmul|m=32", one));
  EXPECT_EQ(base, layer_key("cpu plan v2, oneDNN 2.6.3, avx512_core", 1, "matmul|m=32", two));
  EXPECT_NE(base.find("threads=1"), std::string::npos) << base;

  // Timings cached at one thread count are not served at another.
  TimingCache cache;
  CompileSettings s;
  s.optimization_level = 1;
  search_tactics(base, two, s, &cache);
  const std::string at2 = layer_key("cpu plan v2, oneDNN 2.6.3, avx512_core", 2, "matmul|m=32", two);
  EXPECT_FALSE(cache.find(at2).has_value());
  EXPECT_FALSE(search_tactics(at2, two, s, &cache).from_cache);
  EXPECT_EQ(cache.keys(), (std::vector<std::string>{base, at2}));
}

TEST(TacticSearch, TimeCallMeasuresWallTime) {
  double ms = time_call([] { ::usleep(20'000); });
  EXPECT_GE(ms, 19.0);
  EXPECT_LT(ms, 2000.0);
}

}  // namespace
}  // namespace kiln::builder
