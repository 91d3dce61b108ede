// Writers, readers and an evictor working one cache folder at the same time,
// for a bounded time (3 s; KILN_LONG_TESTS=1: 30 s): no reader ever gets a
// partial, mixed or wrong blob (each hit is checked byte for byte), nothing
// fails, and the cap holds once they stop. Once as separate processes (the
// real deployment: flock and rename between processes), once as threads in
// one process on two cache objects (what ThreadSanitizer can watch).
//
// Eight processes compiling one model and building it once is
// CompileCache.EightProcessesCompilingTogetherBuildOnce (tests/unit).
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <random>
#include <thread>

#include "cache/disk_engine_cache.hpp"
#include "process.hpp"
#include "quiet_logs.hpp"
#include "stress_blob.hpp"
#include "test_helpers.hpp"

namespace kiln::reliability {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t k_keys = 16;
constexpr uint64_t k_cap = 4ull << 20;

uint64_t total_entry_bytes(cache::DiskEngineCache& cache) {
  uint64_t total = 0;
  for (const auto& entry : cache.list()) total += entry.size;
  return total;
}

TEST(Concurrency, WriterReaderAndEvictorProcessesNeverServeABadBlobAndKeepTheCap) {
  kiln::testing::TempDir dir;
  const int seconds = long_tests() ? 30 : 3;
  const std::vector<std::string> roles = {"writer", "writer", "writer", "reader",
                                          "reader", "reader", "evictor"};
  std::vector<std::unique_ptr<Child>> children;
  for (size_t i = 0; i < roles.size(); ++i) {
    std::vector<std::string> argv = {KILN_CACHE_STRESS,
                                     "--dir",
                                     (dir / "cache").string(),
                                     "--role",
                                     roles[i],
                                     "--seed",
                                     std::to_string(i + 1),
                                     "--keys",
                                     std::to_string(k_keys),
                                     "--cap",
                                     std::to_string(k_cap),
                                     "--min-size",
                                     std::to_string(16 << 10),
                                     "--max-size",
                                     std::to_string(512 << 10),
                                     "--seconds",
                                     std::to_string(seconds)};
    children.push_back(std::make_unique<Child>(argv, dir / (roles[i] + std::to_string(i) + ".log")));
  }
  long long hits = 0, saves = 0, prunes = 0;
  for (size_t i = 0; i < children.size(); ++i) {
    EXPECT_EQ(children[i]->wait(), 0) << roles[i] << ": " << children[i]->output();
    auto out = children[i]->output();
    hits += std::max(0LL, field_of(out, "hits"));
    saves += std::max(0LL, field_of(out, "saves"));
    prunes += std::max(0LL, field_of(out, "prunes"));
  }
  std::printf("[ figures ] %d s: %lld saves, %lld checked hits, %lld prunes, no bad blob\n", seconds, saves,
              hits, prunes);
  // The run proves something only if all three kinds of work happened.
  EXPECT_GT(saves, 0);
  EXPECT_GT(hits, 0);
  EXPECT_GT(prunes, 0);

  QuietLogs quiet;
  cache::DiskEngineCache cache(dir / "cache", k_cap);
  EXPECT_LE(total_entry_bytes(cache), k_cap);
  for (const auto& entry : cache.list()) {
    auto id = stress_id_of(entry.key, k_keys);
    ASSERT_TRUE(id);
    auto blob = cache.load(entry.key);
    ASSERT_TRUE(blob);
    EXPECT_EQ(check_stress_blob(*id, *blob), "");
  }
  EXPECT_EQ(cache.stats().bytes, total_entry_bytes(cache));
}

TEST(Concurrency, WriterReaderAndEvictorThreadsNeverServeABadBlobAndKeepTheCap) {
  kiln::testing::TempDir dir;
  QuietLogs quiet;
  // Two objects on one folder, as two libraries in one process would have.
  cache::DiskEngineCache first(dir.path(), k_cap);
  cache::DiskEngineCache second(dir.path(), k_cap);
  const auto run_for = std::chrono::seconds(long_tests() ? 20 : 2);
  const auto deadline = std::chrono::steady_clock::now() + run_for;
  std::atomic<uint64_t> saves{0}, hits{0}, prunes{0}, bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&, t] {
      cache::DiskEngineCache& cache = t % 2 == 0 ? first : second;
      std::mt19937_64 rng(static_cast<uint64_t>(t) + 1);
      uint64_t generation = static_cast<uint64_t>(t) << 32;
      while (std::chrono::steady_clock::now() < deadline) {
        uint64_t id = rng() % k_keys;
        auto hex = stress_key(id).hex();
        if (t < 2) {  // writers
          cache.save(hex, stress_blob(id, generation++, (16 << 10) + rng() % (256 << 10)));
          ++saves;
        } else if (t < 5) {  // readers
          if (auto blob = cache.load(hex)) {
            ++hits;
            if (!check_stress_blob(id, *blob).empty()) ++bad;
          }
        } else {  // evictor
          cache.prune(k_cap / 4 + rng() % (k_cap / 2));
          (void)cache.stats();
          ++prunes;
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(bad.load(), 0u);
  EXPECT_GT(saves.load(), 0u);
  EXPECT_GT(hits.load(), 0u);
  EXPECT_GT(prunes.load(), 0u);
  EXPECT_LE(total_entry_bytes(first), k_cap);
  auto stats = first.stats();
  EXPECT_EQ(stats.bytes, total_entry_bytes(first));
  EXPECT_EQ(stats.saves, saves.load());  // both objects' counts reach the shared file
}

}  // namespace
}  // namespace kiln::reliability
