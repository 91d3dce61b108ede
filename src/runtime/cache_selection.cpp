#include "runtime/cache_selection.hpp"

#include <charconv>
#include <cstdlib>
#include <functional>
#include <map>
#include <mutex>
#include <optional>

#include "cache/disk_engine_cache.hpp"
#include "cache/ram_engine_cache.hpp"
#include "cache/redis_engine_cache.hpp"
#include "cache/signing_engine_cache.hpp"
#include "cache/tiered_engine_cache.hpp"
#include "kiln/error.hpp"
#include "runtime/compiled_model.hpp"
#include "util/byte_size.hpp"
#include "util/log.hpp"

namespace kiln::runtime {

namespace {

constexpr uint64_t k_default_ram_bytes = uint64_t{1} << 30;

std::string env(const char* name) {
  const char* value = std::getenv(name);
  return value ? std::string(value) : std::string();
}

std::optional<std::vector<std::byte>> configured_secret(const CompileSettings& s) {
  if (!s.engine_cache_secret_file.empty()) return cache::read_secret_file(s.engine_cache_secret_file);
  if (auto file = env("KILN_ENGINE_CACHE_SECRET_FILE"); !file.empty()) return cache::read_secret_file(file);
  if (auto text = env("KILN_ENGINE_CACHE_SECRET"); !text.empty()) {
    return cache::secret_from_text(text, "KILN_ENGINE_CACHE_SECRET");
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

std::shared_ptr<EngineCache> open_engine_cache(const CompileSettings& settings) {
  auto secret = configured_secret(settings);
  auto sign = [&](std::shared_ptr<EngineCache> inner) -> std::shared_ptr<EngineCache> {
    if (!secret) return inner;
    return std::make_shared<cache::SigningEngineCache>(std::move(inner), *secret);
  };
  if (settings.custom_engine_cache) return sign(settings.custom_engine_cache);

  std::vector<cache::CacheTier> tiers;
  for (const std::string& spec : engine_cache_tiers(settings)) {
    if (spec == "disk") {
      auto dir = settings.engine_cache_dir.empty() ? default_engine_cache_dir() : settings.engine_cache_dir;
      tiers.push_back({"disk " + dir.string(),
                       sign(std::make_shared<cache::DiskEngineCache>(dir, settings.engine_cache_size))});
    } else if (spec == "ram" || spec.starts_with("ram:")) {
      uint64_t bytes = ram_bytes(spec);
      // In-process memory is as trusted as the process: never signed.
      tiers.push_back({"ram", shared_instance<cache::RamEngineCache>(std::to_string(bytes), [&] {
                         return std::make_shared<cache::RamEngineCache>(bytes);
                       })});
    } else if (cache::is_redis_uri(spec)) {
      auto options = cache::parse_redis_uri(spec);
      auto redis = shared_instance<cache::RedisEngineCache>(
          spec, [&] { return std::make_shared<cache::RedisEngineCache>(options); });
      if (!secret) {
        log::warn_once(
            "unsigned-redis:" + options.describe(),
            "engine cache: entries from Redis at " + options.describe() +
                " are not authenticated (anyone who can write to it can serve engines to this host); "
                "set KILN_ENGINE_CACHE_SECRET_FILE or --cache-secret-file to sign them");
      }
      tiers.push_back({options.describe(), sign(redis)});
    } else {
      throw Error(
          ErrorCode::invalid_argument,
          "engine cache tier '" + spec + "': expected ram, ram:SIZE, disk, redis://... or unix://...");
    }
  }
  if (tiers.size() == 1) return tiers.front().cache;
  return std::make_shared<cache::TieredEngineCache>(std::move(tiers));
}

}  // namespace kiln::runtime
