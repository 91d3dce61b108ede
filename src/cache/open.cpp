#include "cache/open.hpp"

#include <charconv>
#include <cstdlib>
#include <functional>
#include <map>
#include <mutex>
#include <optional>

#include "cache/artifact_engine_cache.hpp"
#include "cache/cache_layout.hpp"
#include "cache/disk_engine_cache.hpp"
#include "cache/ram_engine_cache.hpp"
#include "cache/redis_engine_cache.hpp"
#include "cache/signing_engine_cache.hpp"
#include "cache/tiered_engine_cache.hpp"
#include "kiln/error.hpp"
#include "util/byte_size.hpp"
#include "util/log.hpp"

namespace kiln::cache {

namespace {

constexpr uint64_t k_default_ram_bytes = uint64_t{1} << 30;

std::string env(const char* name) {
  const char* value = std::getenv(name);
  return value ? std::string(value) : std::string();
}

std::optional<std::vector<std::byte>> configured_secret(const CompileSettings& s) {
  if (!s.engine_cache_secret_file.empty()) return read_secret_file(s.engine_cache_secret_file);
  if (auto file = env("KILN_ENGINE_CACHE_SECRET_FILE"); !file.empty()) return read_secret_file(file);
  if (auto text = env("KILN_ENGINE_CACHE_SECRET"); !text.empty()) {
    return secret_from_text(text, "KILN_ENGINE_CACHE_SECRET");
  }
  return std::nullopt;
}

// "ram" or "ram:512M".
uint64_t ram_bytes(const std::string& spec) {
  if (spec == "ram") return k_default_ram_bytes;
  auto size = parse_byte_size(std::string_view(spec).substr(4));
  if (!size.ok() || size.bytes == 0) {
    throw Error(ErrorCode::invalid_argument, "engine cache tier '" + spec +
                                                 "': expected ram or ram:SIZE (e.g. ram:512M)" +
                                                 (size.ok() ? std::string() : ": " + size.error));
  }
  return size.bytes;
}

// Process-wide instances: a RAM tier must outlive one compile to be of any
// use, and a Redis client keeps its connections and its outage state.
template <typename Cache>
std::shared_ptr<Cache> shared_instance(const std::string& id,
                                       const std::function<std::shared_ptr<Cache>()>& make) {
  static std::mutex mutex;
  static std::map<std::string, std::shared_ptr<Cache>> instances;
  std::lock_guard lock(mutex);
  auto& slot = instances[id];
  if (!slot) slot = make();
  return slot;
}

}  // namespace

std::vector<std::string> split_tier_list(const std::string& text) {
  std::vector<std::string> tiers;
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    if (comma == std::string::npos) comma = text.size();
    std::string item = text.substr(start, comma - start);
    while (!item.empty() && item.front() == ' ') item.erase(item.begin());
    while (!item.empty() && item.back() == ' ') item.pop_back();
    if (!item.empty()) tiers.push_back(item);
    start = comma + 1;
  }
  return tiers;
}

std::vector<std::string> engine_cache_tiers(const CompileSettings& settings) {
  if (!settings.engine_cache_tiers.empty()) return settings.engine_cache_tiers;
  if (auto tiers = split_tier_list(env("KILN_ENGINE_CACHE")); !tiers.empty()) return tiers;
  return {"disk"};
}

std::filesystem::path cache_dir(const CompileSettings& settings) {
  if (settings.engine_cache_dir.empty()) {
    throw Error(ErrorCode::invalid_argument,
                "engine_cache_dir is empty; name a folder, or leave it unset for the default (" +
                    default_engine_cache_dir().string() + ")");
  }
  return settings.engine_cache_dir;
}

std::filesystem::path timing_cache_path(const CompileSettings& settings) {
  if (settings.timing_cache_path == "-") return {};
  if (!settings.timing_cache_path.empty()) return settings.timing_cache_path;
  return CacheLayout(cache_dir(settings)).timing_cache_path();
}

std::shared_ptr<Store> open_tier(const std::string& spec, const CompileSettings& settings,
                                 const std::optional<std::vector<std::byte>>& secret) {
  auto sign = [&](std::shared_ptr<Store> inner) -> std::shared_ptr<Store> {
    if (!secret) return inner;
    return std::make_shared<SigningEngineCache>(std::move(inner), *secret);
  };
  if (spec == "disk") {
    return sign(std::make_shared<DiskEngineCache>(cache_dir(settings), settings.engine_cache_size));
  }
  if (spec == "ram" || spec.starts_with("ram:")) {
    uint64_t bytes = ram_bytes(spec);
    // In-process memory is as trusted as the process: never signed.
    return shared_instance<RamEngineCache>(std::to_string(bytes),
                                           [&] { return std::make_shared<RamEngineCache>(bytes); });
  }
  if (is_redis_uri(spec)) {
    auto options = parse_redis_uri(spec);
    auto redis =
        shared_instance<RedisEngineCache>(spec, [&] { return std::make_shared<RedisEngineCache>(options); });
    if (!secret) {
      log::warn_once(
          "unsigned-redis:" + options.describe(),
          "engine cache: entries from Redis at " + options.describe() +
              " are not authenticated (anyone who can write to it can serve engines to this host); "
              "set KILN_ENGINE_CACHE_SECRET_FILE or --cache-secret-file to sign them");
    }
    return sign(redis);
  }
  throw Error(ErrorCode::invalid_argument,
              "engine cache tier '" + spec + "': expected ram, ram:SIZE, disk, redis://... or unix://...");
}

std::shared_ptr<Store> open(const CompileSettings& settings) {
  auto secret = configured_secret(settings);
  if (settings.custom_engine_cache) {
    auto custom = adapt(settings.custom_engine_cache);
    if (!secret) return custom;
    return std::make_shared<SigningEngineCache>(std::move(custom), *secret);
  }

  // Tiers the caller named are checked strictly; tiers from the
  // environment never fail a compile.
  bool from_environment = settings.engine_cache_tiers.empty();
  std::vector<CacheTier> tiers;
  for (const std::string& spec : engine_cache_tiers(settings)) {
    try {
      auto store = open_tier(spec, settings, secret);
      // The tier's own name, without the signing layer's.
      std::string name = store->children().empty() ? store->name() : store->children().front()->name();
      tiers.push_back({name, store});
    } catch (const Error& e) {
      if (!from_environment || spec == "disk") throw;
      log::warn_once("bad-env-tier:" + spec,
                     std::string("KILN_ENGINE_CACHE: ") + e.what() + "; compiling without that tier");
    }
  }
  if (tiers.empty()) {
    log::warn_once("no-env-tier", "KILN_ENGINE_CACHE names no usable tier; using the disk cache");
    auto store = open_tier("disk", settings, secret);
    return store;
  }
  if (tiers.size() == 1) return tiers.front().cache;
  return std::make_shared<TieredEngineCache>(std::move(tiers));
}

std::shared_ptr<Store> open_artifact(std::span<const std::vector<std::byte>> engines,
                                     const CompileSettings& settings, bool behind_too,
                                     const std::string& source) {
  // The artifact's engines are trusted as the artifact file is, so they sit
  // in front of (outside) any signing layer; rebuilt engines go behind.
  return std::make_shared<ArtifactEngineCache>(engines, behind_too ? open(settings) : nullptr, source);
}

}  // namespace kiln::cache
