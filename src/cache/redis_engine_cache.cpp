#include "cache/redis_engine_cache.hpp"

#include <xxhash.h>

#include <algorithm>
#include <charconv>
#include <limits>
#include <map>
#include <sstream>
#include <thread>

#include "cache/entry_limits.hpp"
#include "cache/redis_build_lease.hpp"
#include "format/header_peek.hpp"
#include "util/log.hpp"

namespace kiln::cache {

namespace {

using std::chrono::milliseconds;

constexpr std::string_view k_manifest_magic = "kiln-redis";
constexpr int k_manifest_version = 1;
// Chunks written before their manifest: if the writer dies they go away.
constexpr milliseconds k_write_window{10 * 60 * 1000};
// Superseded chunks stay this long, for readers still on the old manifest.
constexpr milliseconds k_grace{60 * 1000};
constexpr int64_t k_quarantine_seconds = 7 * 24 * 3600;

// Sets the manifest (with PX ARGV[2] when > 0) and returns the one it replaced.
constexpr const char* k_swap_script =
    "local old = redis.call('GET', KEYS[1]) "
    "if tonumber(ARGV[2]) > 0 then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) "
    "else redis.call('SET', KEYS[1], ARGV[1]) end "
    "return old";
// Deletes KEYS[1] only if it still holds ARGV[1].
constexpr const char* k_delete_if_script =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

// A manifest is not signed, and anyone who can write to the Redis server can
// write one, so nothing in it is trusted before parse_manifest() has bounded
// it: the size by k_max_entry_bytes, the chunk length by Redis's largest value,
// the chunk count by k_max_chunks, and the generation to a short hex string
// (it becomes part of key names). Within those bounds a manifest can only
// choose which bytes a load reads, at most k_max_entry_bytes of them; what is
// read is then checked against the manifest's XXH3, and by whoever reads the
// blob (the envelope's own XXH3-128 and key, the signing layer's HMAC when the
// cache is signed), so a forged manifest costs a miss, never a wrong engine.
// Signing the manifest as well would add nothing to that.
constexpr uint64_t k_max_chunk_bytes = uint64_t{512} << 20;  // Redis's largest value
constexpr uint64_t k_max_chunks = 65536;
constexpr size_t k_max_generation_chars = 32;

struct Manifest {
  std::string generation;
  uint64_t size = 0;
  uint64_t chunk_bytes = 0;
  uint64_t checksum = 0;

  uint64_t chunks() const { return size == 0 ? 0 : (size + chunk_bytes - 1) / chunk_bytes; }
  std::string text() const {
    std::ostringstream os;
    os << k_manifest_magic << ' ' << k_manifest_version << ' ' << generation << ' ' << size << ' '
       << chunk_bytes << ' ' << std::hex << checksum;
    return os.str();
  }
};

// Why a manifest cannot be used; empty when it can.
std::string manifest_problem(const Manifest& m) {
  bool hex = !m.generation.empty() && m.generation.size() <= k_max_generation_chars &&
             std::all_of(m.generation.begin(), m.generation.end(),
                         [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
  if (!hex) return "its generation is not a short hex string";
  if (m.size > k_max_entry_bytes) {
    return "it claims " + std::to_string(m.size) + " bytes, more than the largest entry (" +
           std::to_string(k_max_entry_bytes) + ")";
  }
  if (m.chunk_bytes == 0 || m.chunk_bytes > k_max_chunk_bytes) {
    return "its chunk length " + std::to_string(m.chunk_bytes) + " is not 1 byte to 512 MiB";
  }
  if (m.chunks() > k_max_chunks) {
    return "it claims " + std::to_string(m.chunks()) + " chunks, more than " + std::to_string(k_max_chunks);
  }
  return {};
}

struct ParsedManifest {
  std::optional<Manifest> manifest;
  std::string problem;  // why there is none
};

ParsedManifest parse_manifest_checked(const std::string& text) {
  // Numbers are read as text first: istream would wrap "-1" to 2^64 - 1.
  std::istringstream is(text);
  std::string magic, version, size, chunk_bytes, checksum, rest;
  Manifest m;
  if (!(is >> magic >> version >> m.generation >> size >> chunk_bytes >> checksum) || (is >> rest) ||
      magic != k_manifest_magic || version != std::to_string(k_manifest_version)) {
    return {std::nullopt, "it is not a kiln manifest"};
  }
  auto number = [](const std::string& digits, uint64_t& out, int base) {
    auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), out, base);
    return ec == std::errc() && ptr == digits.data() + digits.size();
  };
  if (!number(size, m.size, 10) || !number(chunk_bytes, m.chunk_bytes, 10) ||
      !number(checksum, m.checksum, 16)) {
    return {std::nullopt, "a number in it is malformed or out of range"};
  }
  if (auto problem = manifest_problem(m); !problem.empty()) return {std::nullopt, problem};
  return {m, {}};
}

std::optional<Manifest> parse_manifest(const std::string& text) {
  return parse_manifest_checked(text).manifest;
}

std::string reply_string(const RedisReply& reply) {
  return reply && reply->type == REDIS_REPLY_STRING ? std::string(reply->str, reply->len) : std::string();
}

std::string_view as_chars(std::span<const std::byte> bytes) {
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

// Every key matching `pattern` (or the first `max` found), by SCAN (never
// KEYS, which blocks Redis).
std::vector<std::string> scan_keys(RedisConnection& c, const std::string& pattern,
                                   size_t max = std::numeric_limits<size_t>::max()) {
  std::vector<std::string> keys;
  std::string cursor = "0";
  do {
    auto reply = c.command({"SCAN", cursor, "MATCH", pattern, "COUNT", "1000"});
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2)
      throw RedisReplyError("unexpected SCAN reply");
    cursor.assign(reply->element[0]->str, reply->element[0]->len);
    const redisReply* batch = reply->element[1];
    for (size_t i = 0; i < batch->elements; ++i)
      keys.emplace_back(batch->element[i]->str, batch->element[i]->len);
  } while (cursor != "0" && keys.size() < max);
  if (keys.size() > max) keys.resize(max);
  return keys;
}

}  // namespace

RedisEngineCache::RedisEngineCache(RedisOptions options)
    : m_client(std::make_shared<RedisClient>(std::move(options))) {}

std::string RedisEngineCache::entry_key(const std::string& key) const {
  return options().prefix + ":entry:" + key;
}
std::string RedisEngineCache::lease_key(const std::string& key) const {
  return options().prefix + ":lease:" + key;
}
std::string RedisEngineCache::chunk_key(const std::string& key, const std::string& generation,
                                        uint64_t index) const {
  return options().prefix + ":chunk:" + key + ":" + generation + ":" + std::to_string(index);
}

void RedisEngineCache::count(std::initializer_list<Count> counts) {
  {
    std::lock_guard lock(m_stats_mutex);
    for (const Count& c : counts) m_stats.*(c.counter) += c.n;
  }
  if (options().read_only || m_client->down()) return;
  const std::string stats_key = options().prefix + ":stats";
  std::vector<std::string> amounts;
  for (const Count& c : counts) amounts.push_back(std::to_string(c.n));
  std::vector<RedisConnection::Args> increments;
  size_t i = 0;
  for (const Count& c : counts) increments.push_back({"HINCRBY", stats_key, c.field, amounts[i++]});
  (void)m_client->call([&](RedisConnection& c) { return c.pipeline(increments).size(); });
}

void RedisEngineCache::put(const std::string& key, std::span<const std::byte> blob) {
  const RedisOptions& o = options();
  if (o.read_only) return;
  if (blob.size() > o.max_entry_bytes) {
    log::warn("Redis engine cache: not caching a " + std::to_string(blob.size()) +
              "-byte engine, larger than max_entry_size " + std::to_string(o.max_entry_bytes));
    count({{&CacheStats::refused_too_large, "refused_too_large"}});
    return;
  }
  if (blob.size() > k_max_entry_bytes || (blob.size() + o.chunk_bytes - 1) / o.chunk_bytes > k_max_chunks) {
    log::warn("Redis engine cache: not caching a " + std::to_string(blob.size()) +
              "-byte engine, more than " + std::to_string(k_max_chunks) + " chunks of chunk_size " +
              std::to_string(o.chunk_bytes) + " or above the largest entry (" +
              std::to_string(k_max_entry_bytes) + " bytes)");
    count({{&CacheStats::refused_too_large, "refused_too_large"}});
    return;
  }
  Manifest manifest{random_hex(8), blob.size(), o.chunk_bytes, XXH3_64bits(blob.data(), blob.size())};
  const std::string manifest_text = manifest.text();
  const std::string entry = entry_key(key);
  const int64_t ttl_ms = std::chrono::duration_cast<milliseconds>(o.ttl).count();

  auto saved = m_client->call([&](RedisConnection& c) {
    const std::string window = std::to_string(k_write_window.count());
    std::vector<std::string> chunk_keys;
    for (uint64_t i = 0; i < manifest.chunks(); ++i) {
      chunk_keys.push_back(chunk_key(key, manifest.generation, i));
      auto part =
          blob.subspan(i * o.chunk_bytes, std::min<uint64_t>(o.chunk_bytes, blob.size() - i * o.chunk_bytes));
      c.command({"SET", chunk_keys.back(), as_chars(part), "PX", window});
    }
    // The entry exists from here on, whole.
    auto old = c.command({"EVAL", k_swap_script, "1", entry, manifest_text, std::to_string(ttl_ms)});

    // The replaced manifest is bounded by parse_manifest like any other; one
    // that fails it was not written by kiln, and its chunks (if any) cannot
    // be named safely: they are left to their own expiry.
    std::vector<std::string> old_keys;
    if (auto replaced = parse_manifest(reply_string(old));
        replaced && replaced->generation != manifest.generation) {
      for (uint64_t i = 0; i < replaced->chunks(); ++i)
        old_keys.push_back(chunk_key(key, replaced->generation, i));
    }
    const std::string keep_ms = std::to_string(ttl_ms + k_grace.count());
    const std::string grace_ms = std::to_string(k_grace.count());
    std::vector<RedisConnection::Args> after;
    for (const auto& k : chunk_keys) {
      after.push_back(ttl_ms > 0 ? RedisConnection::Args{"PEXPIRE", k, keep_ms}
                                 : RedisConnection::Args{"PERSIST", k});
    }
    for (const auto& k : old_keys) after.push_back({"PEXPIRE", k, grace_ms});
    c.pipeline(after);
    return true;
  });
  if (saved) count({{&CacheStats::saves, "saves"}});
}

Fetched RedisEngineCache::get(const std::string& key) {
  auto blob = fetch(key);
  if (blob) return Fetched::found(std::move(*blob));
  if (m_client->down())
    return Fetched::miss(Status::unavailable, "Redis at " + options().describe() + " is down");
  return Fetched::miss(Status::absent);
}

void RedisEngineCache::record_outcome(const std::string&, const Fetched&, Outcome outcome,
                                      uint64_t build_ms_saved) {
  switch (outcome) {
    case Outcome::usable:
      count({{&CacheStats::hits, "hits"}, {&CacheStats::build_ms_saved, "build_ms_saved", build_ms_saved}});
      break;
    case Outcome::absent:
      count({{&CacheStats::misses, "misses"}});
      break;
    case Outcome::corrupt:
      count({{&CacheStats::misses, "misses"}, {&CacheStats::unusable_corrupt, "unusable_corrupt"}});
      break;
    case Outcome::incompatible:
      count({{&CacheStats::misses, "misses"}, {&CacheStats::unusable_incompatible, "unusable_incompatible"}});
      break;
    case Outcome::refit_failed:
      count({{&CacheStats::misses, "misses"}, {&CacheStats::unusable_refit_failed, "unusable_refit_failed"}});
      break;
  }
}

std::optional<std::vector<std::byte>> RedisEngineCache::fetch(const std::string& key) {
  enum class Found { hit, miss, broken };
  struct Result {
    Found found = Found::miss;
    std::vector<std::byte> blob;
    std::string why;
  };
  const RedisOptions& o = options();
  const std::string entry = entry_key(key);
  const int64_t ttl_ms = std::chrono::duration_cast<milliseconds>(o.ttl).count();

  auto result = m_client->call([&](RedisConnection& c) -> Result {
    std::string manifest_text = reply_string(c.command({"GET", entry}));
    if (manifest_text.empty()) return {};
    auto parsed = parse_manifest_checked(manifest_text);
    const auto& manifest = parsed.manifest;
    auto broken = [&](std::string why) {
      // Take the entry out of service unless a newer save replaced it.
      if (!o.read_only) c.command({"EVAL", k_delete_if_script, "1", entry, manifest_text});
      return Result{Found::broken, {}, std::move(why)};
    };
    if (!manifest) return broken("invalid manifest: " + parsed.problem);
    Result hit{Found::hit, {}, {}};
    hit.blob.reserve(manifest->size);
    std::vector<std::string> chunk_keys;
    for (uint64_t i = 0; i < manifest->chunks(); ++i) {
      chunk_keys.push_back(chunk_key(key, manifest->generation, i));
      auto reply = c.command({"GET", chunk_keys.back()});
      if (reply->type != REDIS_REPLY_STRING) return broken("chunk " + std::to_string(i) + " is gone");
      if (reply->len > manifest->size - hit.blob.size())
        return broken("chunk " + std::to_string(i) + " is too long");
      const auto* bytes = reinterpret_cast<const std::byte*>(reply->str);
      hit.blob.insert(hit.blob.end(), bytes, bytes + reply->len);
    }
    if (hit.blob.size() != manifest->size) return broken("chunks hold fewer bytes than the manifest says");
    if (XXH3_64bits(hit.blob.data(), hit.blob.size()) != manifest->checksum)
      return broken("checksum mismatch");
    if (ttl_ms > 0 && !o.read_only) {
      // Each hit restarts the entry's time to live.
      const std::string ttl = std::to_string(ttl_ms);
      const std::string keep = std::to_string(ttl_ms + k_grace.count());
      std::vector<RedisConnection::Args> touch{{"PEXPIRE", entry, ttl}};
      for (const auto& k : chunk_keys) touch.push_back({"PEXPIRE", k, keep});
      c.pipeline(touch);
    }
    return hit;
  });

  if (result && result->found == Found::hit) return std::move(result->blob);
  if (result && result->found == Found::broken) {
    log::warn("Redis engine cache: entry " + key.substr(0, 16) + " is incomplete (" + result->why +
              "); treated as a miss");
  }
  return std::nullopt;
}

std::unique_ptr<BuildLease> RedisEngineCache::lease(const std::string& key) {
  const RedisOptions& o = options();
  const std::string entry = entry_key(key);
  const std::string lease = lease_key(key);
  const auto deadline = std::chrono::steady_clock::now() + o.lease_wait;
  milliseconds poll{50};
  bool waited = false;
  for (;;) {
    if (!o.read_only) {
      std::unique_ptr<RedisBuildLease> taken;
      switch (RedisBuildLease::try_take(m_client, lease, taken)) {
        case RedisBuildLease::Outcome::taken:
          if (waited) ++m_lease_waits;
          return taken;
        case RedisBuildLease::Outcome::unavailable:
          return nullptr;
        case RedisBuildLease::Outcome::held_by_other:
          break;
      }
    }
    // Another host is building (or we may not take leases): has it
    // published, or has its lease gone?
    auto state = m_client->call([&](RedisConnection& c) {
      auto replies = c.pipeline({{"EXISTS", entry}, {"EXISTS", lease}});
      return std::pair<bool, bool>(replies[0]->integer > 0, replies[1]->integer > 0);
    });
    if (!state) return nullptr;
    auto [published, building] = *state;
    if (published) {
      if (waited) ++m_lease_waits;
      return std::make_unique<NoBuildLease>();
    }
    if (o.read_only && !building) return std::make_unique<NoBuildLease>();  // nobody to wait for
    if (std::chrono::steady_clock::now() >= deadline) {
      log::warn("Redis engine cache: waited " + std::to_string(o.lease_wait.count()) +
                " ms for another host to build " + key.substr(0, 16) + "; building here too");
      return nullptr;
    }
    if (!waited) log::info("Redis engine cache: another host is building " + key.substr(0, 16) + "; waiting");
    waited = true;
    std::this_thread::sleep_for(poll);
    poll = std::min(poll * 2, milliseconds(500));
  }
}

bool RedisEngineCache::quarantine(const std::string& key, const std::string& reason) {
  if (options().read_only) return false;
  const std::string entry = entry_key(key);
  auto removed = m_client->call([&](RedisConnection& c) {
    std::string manifest_text = reply_string(c.command({"GET", entry}));
    if (manifest_text.empty()) return false;
    c.command({"SET", options().prefix + ":quarantine:" + key, reason + "\n" + manifest_text, "EX",
               std::to_string(k_quarantine_seconds)});
    if (c.command({"EVAL", k_delete_if_script, "1", entry, manifest_text})->integer == 0) return false;
    if (auto manifest = parse_manifest(manifest_text)) {
      std::vector<RedisConnection::Args> expire;
      std::vector<std::string> keys;
      for (uint64_t i = 0; i < manifest->chunks(); ++i)
        keys.push_back(chunk_key(key, manifest->generation, i));
      const std::string grace = std::to_string(k_grace.count());
      for (const auto& k : keys) expire.push_back({"PEXPIRE", k, grace});
      c.pipeline(expire);
    }
    return true;
  });
  if (!removed || !*removed) return false;
  count({{&CacheStats::quarantined, "quarantined"}});
  return true;
}

CacheStats RedisEngineCache::stats() const {
  std::lock_guard lock(m_stats_mutex);
  return m_stats;
}

std::optional<std::vector<RedisEntryInfo>> RedisEngineCache::list() {
  const std::string prefix = options().prefix + ":entry:";
  return m_client->call([&](RedisConnection& c) {
    std::vector<RedisEntryInfo> entries;
    auto keys = scan_keys(c, prefix + "*");
    std::vector<RedisConnection::Args> gets;
    for (const auto& k : keys) {
      gets.push_back({"GET", k});
      gets.push_back({"PTTL", k});
    }
    auto replies = c.pipeline(gets);
    for (size_t i = 0; i < keys.size(); ++i) {
      auto manifest = parse_manifest(reply_string(replies[2 * i]));
      if (!manifest) continue;  // expired between SCAN and GET, or foreign
      entries.push_back({keys[i].substr(prefix.size()), manifest->size, replies[2 * i + 1]->integer});
    }
    return entries;
  });
}

std::optional<RedisEngineCache::PeekedHeaders> RedisEngineCache::peek_headers(size_t max_entries) {
  const std::string prefix = options().prefix + ":entry:";
  return m_client->call([&](RedisConnection& c) {
    PeekedHeaders peeked;
    // A miss should not pay for a SCAN of the whole fleet: the first
    // max_entries entries are enough to compare with.
    auto keys = scan_keys(c, prefix + "*", max_entries);
    peeked.entries = keys.size();
    std::vector<RedisConnection::Args> gets;
    for (const auto& k : keys) gets.push_back({"GET", k});
    auto manifests = c.pipeline(gets);
    // The argument strings outlive the pipeline call (Args holds views).
    std::vector<std::string> chunk_keys;
    chunk_keys.reserve(keys.size());
    for (size_t i = 0; i < keys.size(); ++i) {
      auto manifest = parse_manifest(reply_string(manifests[i]));
      if (!manifest || manifest->size == 0) continue;
      chunk_keys.push_back(chunk_key(keys[i].substr(prefix.size()), manifest->generation, 0));
    }
    const std::string last = std::to_string(format::k_peek_bytes - 1);
    std::vector<RedisConnection::Args> ranges;
    for (const auto& k : chunk_keys) ranges.push_back({"GETRANGE", k, "0", last});
    for (const auto& reply : c.pipeline(ranges)) {
      std::string bytes = reply_string(reply);
      if (auto header = format::peek_header(std::as_bytes(std::span<const char>(bytes))))
        peeked.headers.push_back(*header);
    }
    return peeked;
  });
}

std::optional<CacheStats> RedisEngineCache::fleet_stats() {
  auto entries = list();
  if (!entries) return std::nullopt;
  auto counters = m_client->call([&](RedisConnection& c) {
    auto reply = c.command({"HGETALL", options().prefix + ":stats"});
    std::map<std::string, uint64_t> values;
    for (size_t i = 0; reply->type == REDIS_REPLY_ARRAY && i + 1 < reply->elements; i += 2) {
      std::string value(reply->element[i + 1]->str, reply->element[i + 1]->len);
      uint64_t n = 0;
      std::from_chars(value.data(), value.data() + value.size(), n);
      values[std::string(reply->element[i]->str, reply->element[i]->len)] = n;
    }
    return values;
  });
  if (!counters) return std::nullopt;
  CacheStats s;
  auto get = [&](const char* name) { return counters->count(name) ? counters->at(name) : 0; };
  s.hits = get("hits");
  s.misses = get("misses");
  s.saves = get("saves");
  s.refused_too_large = get("refused_too_large");
  s.quarantined = get("quarantined");
  s.unusable_corrupt = get("unusable_corrupt");
  s.unusable_incompatible = get("unusable_incompatible");
  s.unusable_refit_failed = get("unusable_refit_failed");
  s.build_ms_saved = get("build_ms_saved");
  s.refused_unauthenticated = get("refused_unauthenticated");
  s.entries = entries->size();
  for (const auto& e : *entries) s.bytes += e.size;
  return s;
}

std::optional<uint64_t> RedisEngineCache::clear() {
  if (options().read_only) return std::nullopt;
  return m_client->call([&](RedisConnection& c) {
    uint64_t removed = 0;
    for (const char* kind : {":entry:*", ":chunk:*"}) {
      auto keys = scan_keys(c, options().prefix + kind);
      std::vector<RedisConnection::Args> unlink;
      for (const auto& k : keys) unlink.push_back({"UNLINK", k});
      auto replies = c.pipeline(unlink);
      if (std::string_view(kind) == ":entry:*") {
        for (const auto& r : replies)
          removed += r->type == REDIS_REPLY_INTEGER ? static_cast<uint64_t>(r->integer) : 0;
      }
    }
    return removed;
  });
}

}  // namespace kiln::cache
