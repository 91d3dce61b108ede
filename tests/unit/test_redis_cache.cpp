// RedisEngineCache against a real redis-server: whole entries only, chunking,
// TTL, read-only, prefixes, outages (killed, frozen, restarted), build
// leases, and several "hosts" (real processes) sharing one Redis.
#include <gtest/gtest.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <fstream>
#include <map>
#include <mutex>
#include <thread>

#include "cache/redis_build_lease.hpp"
#include "cache/redis_engine_cache.hpp"
#include "kiln/error.hpp"
#include "redis_test_server.hpp"
#include "util/log.hpp"
#include "zoo/zoo.hpp"

#ifndef KILN_CLI
#error "KILN_CLI must name the kiln executable"
#endif

namespace kiln {
namespace {

using cache::parse_redis_uri;
using cache::RedisEngineCache;
using testing::RedisTestServer;

std::vector<std::byte> bytes(size_t size, uint8_t seed) {
  std::vector<std::byte> out(size);
  for (size_t i = 0; i < size; ++i) out[i] = static_cast<std::byte>((i * 131 + seed * 7) & 0xff);
  return out;
}

std::string key_of(char c) { return std::string(64, c); }

std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Counts kiln's warnings that contain a phrase.
class WarningCounter {
 public:
  explicit WarningCounter(std::string phrase) : m_sink(std::make_shared<Sink>(std::move(phrase))) {
    (void)log::level();  // creates the logger
    spdlog::get("kiln")->sinks().push_back(m_sink);
  }
  ~WarningCounter() {
    auto& sinks = spdlog::get("kiln")->sinks();
    std::erase(sinks, m_sink);
  }
  int count() const { return m_sink->count.load(); }

 private:
  struct Sink : spdlog::sinks::base_sink<std::mutex> {
    explicit Sink(std::string p) : phrase(std::move(p)) {}
    void sink_it_(const spdlog::details::log_msg& msg) override {
      if (msg.level == spdlog::level::warn &&
          std::string_view(msg.payload.data(), msg.payload.size()).find(phrase) != std::string_view::npos) {
        ++count;
      }
    }
    void flush_() override {}
    std::string phrase;
    std::atomic<int> count{0};
  };
  std::shared_ptr<Sink> m_sink;
};

TEST(RedisUri, ParsesHostsSocketsCredentialsAndParameters) {
  auto o = parse_redis_uri(
      "redis://alice:s3cr%40t@cache.internal:6380/2?prefix=team1&ttl=86400&readonly=1"
      "&timeout_ms=200&connect_timeout_ms=100&chunk_size=4M&lease_ms=5000&lease_wait_ms=9000");
  EXPECT_EQ(o.host, "cache.internal");
  EXPECT_EQ(o.port, 6380);
  EXPECT_EQ(o.db, 2);
  EXPECT_EQ(o.user, "alice");
  EXPECT_EQ(o.password, "s3cr@t");
  EXPECT_EQ(o.prefix, "team1");
  EXPECT_EQ(o.ttl.count(), 86400);
  EXPECT_TRUE(o.read_only);
  EXPECT_EQ(o.command_timeout.count(), 200);
  EXPECT_EQ(o.connect_timeout.count(), 100);
  EXPECT_EQ(o.chunk_bytes, uint64_t{4} << 20);
  EXPECT_EQ(o.lease.count(), 5000);
  EXPECT_EQ(o.lease_wait.count(), 9000);
  EXPECT_EQ(o.describe().find("s3cr"), std::string::npos);

  auto d = parse_redis_uri("redis://localhost");
  EXPECT_EQ(d.port, 6379);
  EXPECT_EQ(d.db, 0);
  EXPECT_EQ(d.prefix, "kiln");
  EXPECT_FALSE(d.read_only);
  EXPECT_EQ(parse_redis_uri("redis://:pw@[::1]:7000").host, "::1");
  EXPECT_EQ(parse_redis_uri("redis://:pw@[::1]:7000").password, "pw");

  auto u = parse_redis_uri("unix:///run/redis/redis.sock?db=3&prefix=p");
  EXPECT_EQ(u.unix_path, "/run/redis/redis.sock");
  EXPECT_EQ(u.db, 3);

  for (const char* bad :
       {"http://x", "redis://", "redis://h:0", "redis://h:99999", "redis://h/x", "redis://h?ttl=-1",
        "redis://h?nope=1", "redis://h?readonly=maybe", "unix://relative", "redis://h?chunk_size=0",
        "redis://h?chunk_size=1G", "redis://:hunter2@h?bogus"}) {
    try {
      parse_redis_uri(bad);
      ADD_FAILURE() << "accepted " << bad;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
      EXPECT_EQ(std::string(e.what()).find("hunter2"), std::string::npos) << "password leaked: " << e.what();
    }
  }
}

TEST(RedisCache, RoundTripsSmallAndChunkedBlobs) {
  REQUIRE_REDIS_SERVER();
  RedisTestServer server;
  RedisEngineCache cache(parse_redis_uri(server.uri("chunk_size=64K")));
  uint8_t seed = 1;
  for (size_t size : {size_t{0}, size_t{1}, size_t{65536}, size_t{65537}, size_t{(1 << 20) + 3}}) {
    std::string key = key_of(static_cast<char>('a' + seed));
    auto blob = bytes(size, seed++);
    cache.save(key, blob);
    auto loaded = cache.load(key);
    ASSERT_TRUE(loaded) << size;
    EXPECT_EQ(*loaded, blob) << size;
  }
  // 1 MiB + 3 bytes in 64 KiB chunks: 17 chunk keys, each within the chunk size.
  auto chunks = server.command({"KEYS", "kiln:chunk:" + key_of('f') + ":*"});
  EXPECT_EQ(std::count(chunks.begin(), chunks.end(), '\n') + 1, 17);
  EXPECT_FALSE(cache.load(key_of('z')));
  auto s = cache.stats();
  EXPECT_EQ(s.hits, 5u);
  EXPECT_EQ(s.misses, 1u);
  EXPECT_EQ(s.saves, 5u);
  auto fleet = cache.fleet_stats();
  ASSERT_TRUE(fleet);
  EXPECT_EQ(fleet->entries, 5u);
  EXPECT_EQ(fleet->bytes, 0u + 1 + 65536 + 65537 + (1 << 20) + 3);
  EXPECT_EQ(fleet->hits, 5u);
}

TEST(RedisCache, LargeBlobsAreStoredInChunksWellWithinRedisLimits) {
  REQUIRE_REDIS_SERVER();
  RedisTestServer server;
  RedisEngineCache cache(parse_redis_uri(server.uri()));  // default 8 MiB chunks
  auto blob = bytes((size_t{20} << 20) + 5, 9);           // an AOT-artifact-sized entry
  cache.save(key_of('L'), blob);
  auto loaded = cache.load(key_of('L'));
  ASSERT_TRUE(loaded);
  EXPECT_TRUE(*loaded == blob);
  std::string keys = server.command({"KEYS", "kiln:chunk:" + key_of('L') + ":*"});
  EXPECT_EQ(std::count(keys.begin(), keys.end(), '\n') + 1, 3);
  for (size_t start = 0, end = 0; end != std::string::npos; start = end + 1) {
    end = keys.find('\n', start);
    std::string k = keys.substr(start, end == std::string::npos ? std::string::npos : end - start);
    EXPECT_LE(std::stoull(server.command({"STRLEN", k})), uint64_t{8} << 20) << k;
  }
  // max_entry_size refuses, counts, stores nothing.
  RedisEngineCache capped(parse_redis_uri(server.uri("max_entry_size=1M&prefix=capped")));
  capped.save(key_of('L'), blob);
  EXPECT_FALSE(capped.load(key_of('L')));
  EXPECT_EQ(capped.stats().refused_too_large, 1u);
}

TEST(RedisCache, AnEntryWithAMissingChunkIsAMissNeverAPartialBlob) {
  REQUIRE_REDIS_SERVER();
  RedisTestServer server;
  RedisEngineCache cache(parse_redis_uri(server.uri("chunk_size=1K")));
  cache.save(key_of('a'), bytes(10'000, 1));
  auto chunks = server.command({"KEYS", "kiln:chunk:" + key_of('a') + ":*:3"});
  ASSERT_EQ(server.command({"DEL", chunks}), "1");
  EXPECT_FALSE(cache.load(key_of('a')));
  // The broken manifest was taken out of service.
  EXPECT_EQ(server.command({"EXISTS", cache.entry_key(key_of('a'))}), "0");
  // A chunk whose bytes changed fails the manifest's checksum.
  cache.save(key_of('b'), bytes(5000, 2));
  auto first = server.command({"KEYS", "kiln:chunk:" + key_of('b') + ":*:0"});
  server.command({"SETRANGE", first, "10", "X"});
  EXPECT_FALSE(cache.load(key_of('b')));
}

TEST(RedisCache, ConcurrentReadersSeeOneWholeEntryOrTheOther) {
  REQUIRE_REDIS_SERVER();
  RedisTestServer server;
  auto uri = server.uri("chunk_size=16K");
  auto a = bytes(300'000, 1);
  auto b = bytes(450'000, 2);
  RedisEngineCache writer(parse_redis_uri(uri));
  writer.save(key_of('k'), a);
  std::atomic<bool> done{false};
  std::thread writing([&] {
    for (int i = 0; i < 40; ++i) writer.save(key_of('k'), i % 2 ? a : b);
    done = true;
  });
  RedisEngineCache reader(parse_redis_uri(uri));
  int loads = 0;
  while (!done || loads < 20) {
    auto blob = reader.load(key_of('k'));
    ASSERT_TRUE(blob);  // superseded chunks outlive the manifest by the grace: never a miss here
    ASSERT_TRUE(*blob == a || *blob == b) << "a blob of " << blob->size() << " bytes is neither entry";
    ++loads;
  }
  writing.join();
  // Superseded generations expire after the grace; the live one has no expiry.
  auto ttl_of = [&](const std::string& pattern) {
    std::map<std::string, int> ttls;
    for (size_t start = 0, end = 0; end != std::string::npos; start = end + 1) {
      std::string keys = server.command({"KEYS", pattern});
      end = keys.find('\n', start);
      std::string k = keys.substr(start, end == std::string::npos ? std::string::npos : end - start);
      if (!k.empty()) ttls[k] = std::stoi(server.command({"PTTL", k}));
    }
    return ttls;
  };
  int live = 0;
  for (const auto& [k, ttl] : ttl_of("kiln:chunk:*")) {
    if (ttl == -1)
      ++live;
    else
      EXPECT_LE(ttl, 60'000) << k;
  }
  EXPECT_EQ(live, 300'000 / 16384 + 1);  // the last save (a) holds 19 chunks
}

TEST(RedisCache, PrefixesKeepTeamsApart) {
  REQUIRE_REDIS_SERVER();
  RedisTestServer server;
  RedisEngineCache team1(parse_redis_uri(server.uri("prefix=team1")));
  RedisEngineCache team2(parse_redis_uri(server.uri("prefix=team2")));
  team1.save(key_of('a'), bytes(100, 1));
  EXPECT_TRUE(team1.load(key_of('a')));
  EXPECT_FALSE(team2.load(key_of('a')));
  EXPECT_EQ(server.command({"EXISTS", "team1:entry:" + key_of('a')}), "1");
  EXPECT_EQ(team2.clear().value_or(99), 0u);
  EXPECT_TRUE(team1.load(key_of('a')));
  EXPECT_EQ(team1.clear().value_or(99), 1u);
  EXPECT_FALSE(team1.load(key_of('a')));
}

TEST(RedisCache, TtlExpiresEntriesAndEachHitRenewsIt) {
  REQUIRE_REDIS_SERVER();
  RedisTestServer server;
  RedisEngineCache cache(parse_redis_uri(server.uri("ttl=1")));
  cache.save(key_of('a'), bytes(1000, 1));
  int ttl = std::stoi(server.command({"PTTL", cache.entry_key(key_of('a'))}));
  EXPECT_GT(ttl, 0);
  EXPECT_LE(ttl, 1000);
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  int aged = std::stoi(server.command({"PTTL", cache.entry_key(key_of('a'))}));
  EXPECT_LE(aged, 600);
  ASSERT_TRUE(cache.load(key_of('a')));
  EXPECT_GT(std::stoi(server.command({"PTTL", cache.entry_key(key_of('a'))})), aged);  // renewed by the hit
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));
  EXPECT_FALSE(cache.load(key_of('a')));

  // Without a TTL, entries never expire.
  RedisEngineCache forever(parse_redis_uri(server.uri("prefix=forever")));
  forever.save(key_of('b'), bytes(1000, 2));
  EXPECT_EQ(server.command({"PTTL", forever.entry_key(key_of('b'))}), "-1");
}

TEST(RedisCache, ReadOnlyNeverWritesButServes) {
  REQUIRE_REDIS_SERVER();
  RedisTestServer server;
  RedisEngineCache writer(parse_redis_uri(server.uri("ttl=100")));
  writer.save(key_of('a'), bytes(1000, 1));
  std::string before = server.command({"DBSIZE"});
  std::string stats_before = server.command({"HGETALL", "kiln:stats"});
  int ttl_before = std::stoi(server.command({"PTTL", writer.entry_key(key_of('a'))}));

  RedisEngineCache reader(parse_redis_uri(server.uri("readonly=1&ttl=100")));
  EXPECT_TRUE(reader.degraded());
  reader.save(key_of('b'), bytes(1000, 2));
  EXPECT_TRUE(reader.load(key_of('a')));
  EXPECT_FALSE(reader.load(key_of('b')));
  EXPECT_FALSE(reader.quarantine(key_of('a'), "test"));
  auto lease = reader.acquire_build_lease(key_of('c'));  // nobody building: go ahead, without a lease key
  EXPECT_TRUE(lease);
  EXPECT_EQ(server.command({"DBSIZE"}), before);
  EXPECT_EQ(server.command({"HGETALL", "kiln:stats"}), stats_before);
  EXPECT_LE(std::stoi(server.command({"PTTL", writer.entry_key(key_of('a'))})),
            ttl_before);  // hit did not renew
  EXPECT_EQ(reader.stats().hits, 1u);
}

TEST(RedisCache, PasswordAndUnixSocket) {
  REQUIRE_REDIS_SERVER();
  RedisTestServer server({"--requirepass", "open-sesame-123"});
  RedisEngineCache by_socket(
      parse_redis_uri("unix://" + server.socket_path().string() + "?db=1&password=open-sesame-123"));
  by_socket.save(key_of('a'), bytes(10, 1));
  EXPECT_TRUE(by_socket.load(key_of('a')));
  EXPECT_EQ(by_socket.outages(), 0u);

  RedisEngineCache by_tcp(
      parse_redis_uri("redis://:open-sesame-123@127.0.0.1:" + std::to_string(server.port()) + "/1"));
  EXPECT_TRUE(by_tcp.load(key_of('a')));

  // A wrong password is an outage (one warning), never an error.
  RedisEngineCache wrong(parse_redis_uri("redis://:nope@127.0.0.1:" + std::to_string(server.port()) + "/1"));
  EXPECT_FALSE(wrong.load(key_of('a')));
  EXPECT_EQ(wrong.outages(), 1u);
}

TEST(RedisCache, AnOutageIsOneWarningThenMissesAndItReconnects) {
  REQUIRE_REDIS_SERVER();
  RedisTestServer server;
  WarningCounter warnings("unreachable");
  RedisEngineCache cache(parse_redis_uri(server.uri("retry_ms=50&timeout_ms=300")));
  cache.save(key_of('a'), bytes(1000, 1));
  ASSERT_TRUE(cache.load(key_of('a')));

  server.stop();  // killed: every pooled connection is dead
  for (int i = 0; i < 5; ++i) {
    EXPECT_FALSE(cache.load(key_of('a')));
    cache.save(key_of('b'), bytes(1000, 2));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(cache.degraded());
  EXPECT_EQ(cache.acquire_build_lease(key_of('c')), nullptr);
  EXPECT_EQ(cache.outages(), 1u);
  EXPECT_EQ(warnings.count(), 1);

  server.start();  // back, empty
  std::this_thread::sleep_for(std::chrono::milliseconds(60));
  EXPECT_FALSE(cache.load(key_of('a')));
  cache.save(key_of('c'), bytes(1000, 3));
  EXPECT_TRUE(cache.load(key_of('c')));
  EXPECT_FALSE(cache.degraded());
  EXPECT_EQ(cache.outages(), 1u);

  // Frozen (there, but silent): the command timeout turns it into a miss.
  server.pause();
  EXPECT_FALSE(cache.load(key_of('c')));
  EXPECT_EQ(cache.outages(), 2u);
  server.resume();
  std::this_thread::sleep_for(std::chrono::milliseconds(60));
  EXPECT_TRUE(cache.load(key_of('c')));
  EXPECT_EQ(warnings.count(), 2);
}

TEST(RedisLease, AWaiterBlocksUntilTheBuilderPublishesThenHits) {
  REQUIRE_REDIS_SERVER();
  RedisTestServer server;
  RedisEngineCache host1(parse_redis_uri(server.uri()));
  RedisEngineCache host2(parse_redis_uri(server.uri()));
  auto lease = host1.acquire_build_lease(key_of('a'));
  ASSERT_TRUE(dynamic_cast<cache::RedisBuildLease*>(lease.get()));
  std::atomic<bool> published{false};
  bool published_when_returned = false;
  std::optional<std::vector<std::byte>> second_look;
  std::thread waiter([&] {
    auto waited = host2.acquire_build_lease(key_of('a'));
    published_when_returned = published.load();
    EXPECT_TRUE(waited);
    second_look = host2.load(key_of('a'));
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  host1.save(key_of('a'), bytes(100, 1));
  published = true;
  lease.reset();
  waiter.join();
  EXPECT_TRUE(published_when_returned);
  EXPECT_TRUE(second_look);
  EXPECT_EQ(server.command({"EXISTS", host1.lease_key(key_of('a'))}), "0");
}

TEST(RedisLease, IsRenewedWhileHeldAndOnlyItsHolderReleasesIt) {
  REQUIRE_REDIS_SERVER();
  RedisTestServer server;
  RedisEngineCache cache(parse_redis_uri(server.uri("lease_ms=150")));
  auto lease = cache.acquire_build_lease(key_of('a'));
  auto* redis_lease = dynamic_cast<cache::RedisBuildLease*>(lease.get());
  ASSERT_TRUE(redis_lease);
  std::this_thread::sleep_for(std::chrono::milliseconds(600));  // four lifetimes
  EXPECT_EQ(server.command({"GET", cache.lease_key(key_of('a'))}), redis_lease->token());
  EXPECT_TRUE(redis_lease->held());
  lease.reset();
  EXPECT_EQ(server.command({"EXISTS", cache.lease_key(key_of('a'))}), "0");

  // A lease that another host has since taken over is not deleted by its old holder.
  lease = cache.acquire_build_lease(key_of('b'));
  server.command({"SET", cache.lease_key(key_of('b')), "someone-else", "PX", "60000"});
  lease.reset();
  EXPECT_EQ(server.command({"GET", cache.lease_key(key_of('b'))}), "someone-else");
}

TEST(RedisLease, AVanishedHolderIsTakenOverAndTheWaitIsBounded) {
  REQUIRE_REDIS_SERVER();
  RedisTestServer server;
  RedisEngineCache cache(parse_redis_uri(server.uri("lease_wait_ms=2000")));
  // A host that took the lease and died: its lease expires, ours follows.
  server.command({"SET", cache.lease_key(key_of('a')), "crashed-host", "PX", "300"});
  auto lease = cache.acquire_build_lease(key_of('a'));
  auto* taken = dynamic_cast<cache::RedisBuildLease*>(lease.get());
  ASSERT_TRUE(taken);
  EXPECT_EQ(server.command({"GET", cache.lease_key(key_of('a'))}), taken->token());
  EXPECT_EQ(cache.lease_waits(), 1u);

  // A holder that keeps its lease for longer than lease_wait: build anyway.
  server.command({"SET", cache.lease_key(key_of('b')), "slow-host", "PX", "60000"});
  RedisEngineCache impatient(parse_redis_uri(server.uri("lease_wait_ms=300")));
  EXPECT_EQ(impatient.acquire_build_lease(key_of('b')), nullptr);
}

// --- several hosts: real processes with their own disk caches, one Redis ---

struct CliRun {
  int exit_code = -1;
  std::string output;
};

std::vector<CliRun> run_hosts(const std::vector<std::string>& commands) {
  std::vector<FILE*> pipes;
  for (const auto& command : commands) pipes.push_back(::popen(command.c_str(), "r"));
  std::vector<CliRun> runs;
  for (FILE* pipe : pipes) {
    CliRun run;
    if (!pipe) {
      runs.push_back(run);
      continue;
    }
    char buffer[4096];
    size_t n = 0;
    while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) run.output.append(buffer, n);
    int status = ::pclose(pipe);
    run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    runs.push_back(run);
  }
  return runs;
}

std::string host_build(const testing::TempDir& dir, const std::string& host, const std::string& tiers,
                       const std::string& model = "model.onnx") {
  return std::string(KILN_CLI) + " build " + (dir / model).string() +
         " --shape input=2x3x64x64 --optimization-level 0 --timing-cache - --json --cache-dir " +
         (dir / host).string() + " --cache-tiers " + tiers + " 2>" + (dir / (host + ".err")).string();
}

int count_status(const std::vector<CliRun>& runs, const std::string& status) {
  int n = 0;
  for (const auto& r : runs) n += r.output.find("\"status\": \"" + status + "\"") != std::string::npos;
  return n;
}

TEST(RedisFleet, HostsSharingOneRedisBuildEachKeyOnceAndAllHit) {
  REQUIRE_REDIS_SERVER();
  RedisTestServer server;
  testing::TempDir dir;
  testing::write_file(dir / "model.onnx", zoo::build_zoo_model("resnet_tiny", {3, std::nullopt}).onnx_bytes);
  std::string tiers = "disk," + server.uri();
  std::vector<std::string> hosts;
  for (int h = 0; h < 4; ++h) hosts.push_back(host_build(dir, "host" + std::to_string(h), tiers));
  auto runs = run_hosts(hosts);
  for (const auto& r : runs) EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(count_status(runs, "miss"), 1);
  EXPECT_EQ(count_status(runs, "hit"), 3);
  // Every host now holds it on its own disk: a second round hits locally even with Redis gone.
  server.stop();
  runs = run_hosts(hosts);
  EXPECT_EQ(count_status(runs, "hit"), 4);
}

TEST(RedisFleet, RedisKilledMidRunThenRestartedCompilesKeepWorkingAndLaterHit) {
  REQUIRE_REDIS_SERVER();
  RedisTestServer server;
  testing::TempDir dir;
  testing::write_file(dir / "model.onnx", zoo::build_zoo_model("resnet_tiny", {4, std::nullopt}).onnx_bytes);
  std::string tiers = "disk," + server.uri("retry_ms=100");
  auto first = run_hosts({host_build(dir, "a", tiers)});
  EXPECT_EQ(count_status(first, "miss"), 1) << first[0].output;

  server.stop();
  auto during = run_hosts({host_build(dir, "b", tiers), host_build(dir, "c", tiers)});
  for (const auto& r : during) EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(count_status(during, "miss"), 2);  // built and saved to their disks; Redis only missed
  std::string err = read_text(dir / "b.err");
  EXPECT_NE(err.find("unreachable"), std::string::npos) << err;

  server.start();  // empty again (no persistence)
  auto after = run_hosts({host_build(dir, "d", tiers)});
  EXPECT_EQ(count_status(after, "miss"), 1) << after[0].output;
  auto later = run_hosts({host_build(dir, "e", tiers), host_build(dir, "f", "disk," + server.uri())});
  EXPECT_EQ(count_status(later, "hit"), 2);
}

TEST(RedisFleet, AMissExplainsItselfFromRedisEntriesAlone) {
  // A host with no disk tier (a fresh container) still learns why it missed:
  // the nearest entry in Redis and the key parts that differ.
  REQUIRE_REDIS_SERVER();
  RedisTestServer server;
  testing::TempDir dir;
  testing::write_file(dir / "model.onnx", zoo::build_zoo_model("resnet_tiny", {5, std::nullopt}).onnx_bytes);
  auto build = [&](const std::string& extra) {
    return std::string(KILN_CLI) + " build " + (dir / "model.onnx").string() +
           " --shape input=2x3x64x64 --optimization-level 0 --timing-cache - --json --cache " + server.uri() +
           extra + " 2>/dev/null";
  };
  auto first = run_hosts({build("")});
  ASSERT_EQ(count_status(first, "miss"), 1) << first[0].output;
  EXPECT_NE(first[0].output.find("the cache is empty"), std::string::npos) << first[0].output;

  auto other = run_hosts({build(" --precision fp32,bf16")});
  ASSERT_EQ(count_status(other, "miss"), 1) << other[0].output;
  EXPECT_NE(other[0].output.find("differs in: settings"), std::string::npos) << other[0].output;
}

TEST(RedisFleet, CacheLsAndClearActOnTheNamedRedisNotTheLocalDisk) {
  // `kiln cache clear --cache redis://...` once emptied the local disk cache
  // and left Redis as it was.
  REQUIRE_REDIS_SERVER();
  RedisTestServer server;
  testing::TempDir dir;
  testing::write_file(dir / "model.onnx", zoo::build_zoo_model("resnet_tiny", {2, std::nullopt}).onnx_bytes);
  auto built = run_hosts({host_build(dir, "a", "disk," + server.uri())});
  ASSERT_EQ(count_status(built, "miss"), 1) << built[0].output;
  RedisEngineCache redis(parse_redis_uri(server.uri()));
  ASSERT_EQ(redis.list().value().size(), 1u);
  const std::string key = redis.list().value().front().key;

  const std::string cli = std::string(KILN_CLI) + " cache ";
  const std::string on_redis = " --cache " + server.uri() + " --cache-dir " + (dir / "a").string();
  auto ls = run_hosts({cli + "ls --json" + on_redis});
  EXPECT_EQ(ls[0].exit_code, 0) << ls[0].output;
  EXPECT_NE(ls[0].output.find(key), std::string::npos) << ls[0].output;

  // verify and prune have no Redis form: a clear error, nothing touched.
  auto verify =
      run_hosts({cli + "verify" + on_redis + " 2>&1", cli + "prune --max-size 1K" + on_redis + " 2>&1"});
  for (const auto& r : verify) {
    EXPECT_NE(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("disk cache only"), std::string::npos) << r.output;
  }

  auto clear = run_hosts({cli + "clear" + on_redis});
  EXPECT_EQ(clear[0].exit_code, 0) << clear[0].output;
  EXPECT_NE(clear[0].output.find("removed 1 entries"), std::string::npos) << clear[0].output;
  EXPECT_TRUE(redis.list().value().empty());
  // The local disk cache still has its copy.
  auto disk = run_hosts({cli + "ls --cache-dir " + (dir / "a").string()});
  EXPECT_NE(disk[0].output.find(key), std::string::npos) << disk[0].output;

  // A tier list acts on each tier in turn; a RAM tier (one process's) is skipped.
  auto both = run_hosts(
      {cli + "clear --cache-tiers ram,disk," + server.uri() + " --cache-dir " + (dir / "a").string()});
  EXPECT_EQ(both[0].exit_code, 0) << both[0].output;
  EXPECT_NE(both[0].output.find("skipped"), std::string::npos) << both[0].output;
  disk = run_hosts({cli + "ls --cache-dir " + (dir / "a").string()});
  EXPECT_EQ(disk[0].output.find(key), std::string::npos) << disk[0].output;

  server.stop();
  auto down = run_hosts({cli + "ls" + on_redis + " 2>&1"});
  EXPECT_NE(down[0].exit_code, 0);
  EXPECT_NE(down[0].output.find("cannot reach"), std::string::npos) << down[0].output;
  // With Redis down, a tier list still acts on the disk tier, reports Redis's
  // error, and exits non-zero.
  auto partial = run_hosts(
      {cli + "ls --cache-tiers disk," + server.uri() + " --cache-dir " + (dir / "a").string() + " 2>&1"});
  EXPECT_NE(partial[0].exit_code, 0);
  EXPECT_NE(partial[0].output.find("Tier disk"), std::string::npos) << partial[0].output;
  EXPECT_NE(partial[0].output.find("error: cache ls: cannot reach"), std::string::npos) << partial[0].output;
}

}  // namespace
}  // namespace kiln
