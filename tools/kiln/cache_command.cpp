// `kiln cache stats | ls | verify | prune --max-size S | clear | explain MODEL`:
// inspect and manage the engine cache, like `ccache -s` and friends: the disk
// cache by default, or the tiers --cache / --cache-tiers name.
#include <algorithm>
#include <iomanip>
#include <iostream>
#include <optional>
#include <sstream>

#include "arguments.hpp"
#include "cache/disk_engine_cache.hpp"
#include "cache/redis_engine_cache.hpp"
#include "cache/redis_options.hpp"
#include "cache/tiered_engine_cache.hpp"
#include "commands.hpp"
#include "frontend/onnx/onnx_importer.hpp"
#include "runtime/cache_selection.hpp"
#include "runtime/compiled_model.hpp"
#include "runtime/miss_explainer.hpp"

namespace kiln::cli {

namespace {

struct CacheOptions {
  std::string action;
  std::string cache_dir;
  std::string max_size;
  std::string model;
  CompileOptions compile;
  bool json = false;
};

std::filesystem::path cache_dir(const CacheOptions& o) {
  if (!o.compile.cache_dir.empty()) return o.compile.cache_dir;
  return o.cache_dir.empty() ? runtime::default_engine_cache_dir() : std::filesystem::path(o.cache_dir);
}

std::string human_bytes(uint64_t bytes) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(1);
  if (bytes >= (uint64_t{1} << 30))
    os << static_cast<double>(bytes) / (1 << 30) << " GiB";
  else if (bytes >= (uint64_t{1} << 20))
    os << static_cast<double>(bytes) / (1 << 20) << " MiB";
  else if (bytes >= 1024)
    os << static_cast<double>(bytes) / 1024 << " KiB";
  else
    os << bytes << " B";
  return os.str();
}

// `kiln cache stats --cache URI | --cache-tiers LIST`: each tier's counters
// (a Redis tier's are the fleet's, kept in Redis).
int run_tier_stats(const CacheOptions& o) {
  CompileSettings settings = to_settings(o.compile);
  settings.engine_cache_dir = cache_dir(o);
  auto opened = runtime::open_engine_cache(settings);
  std::vector<cache::TierReport> tiers;
  if (auto* tiered = dynamic_cast<cache::TieredEngineCache*>(opened.get()))
    tiers = tiered->tier_stats();
  else
    tiers.push_back({runtime::engine_cache_tiers(settings).front(), cache::stats_of(*opened)});
  nlohmann::json j{{"command", "cache stats"}, {"tiers", nlohmann::json::array()}};
  for (const auto& t : tiers) {
    nlohmann::json tier{{"name", t.name}, {"reachable", t.stats.has_value()}};
    std::cout << (o.json ? "" : "Tier " + t.name + "\n");
    if (t.stats) {
      const CacheStats& s = *t.stats;
      tier["stats"] = {{"hits", s.hits},
                       {"misses", s.misses},
                       {"saves", s.saves},
                       {"evictions", s.evictions},
                       {"refused_too_large", s.refused_too_large},
                       {"quarantined", s.quarantined},
                       {"refused_unauthenticated", s.refused_unauthenticated},
                       {"build_ms_saved", s.build_ms_saved},
                       {"entries", s.entries},
                       {"bytes", s.bytes}};
      if (!o.json) {
        std::cout << "  Hits " << s.hits << ", misses " << s.misses << ", saves " << s.saves << ", evictions "
                  << s.evictions << ", quarantined " << s.quarantined << ", refused unauthenticated "
                  << s.refused_unauthenticated << "\n  Entries " << s.entries << ", " << human_bytes(s.bytes)
                  << "; build time saved " << s.build_ms_saved / 1000.0 << " s\n";
      }
    } else if (!o.json) {
      std::cout << "  (unreachable, or a cache without counters)\n";
    }
    j["tiers"].push_back(tier);
  }
  if (o.json) print_json(j);
  return 0;
}

// `ls`, `verify`, `prune` and `clear` on the disk cache in `dir`; fills `j`
// and `text`.
void disk_action(const CacheOptions& o, const std::filesystem::path& dir, nlohmann::json& j,
                 std::ostream& text) {
  uint64_t cap =
      o.compile.cache_size.empty() ? (uint64_t{5} << 30) : parse_size(o.compile.cache_size, "--cache-size");
  cache::DiskEngineCache cache(dir, cap);
  if (o.action == "stats") {
    CacheStats s = cache.stats();
    uint64_t absent =
        s.misses - std::min(s.misses, s.unusable_corrupt + s.unusable_incompatible + s.unusable_refit_failed);
    j["stats"] = {{"hits", s.hits},
                  {"misses", s.misses},
                  {"saves", s.saves},
                  {"evictions", s.evictions},
                  {"refused_too_large", s.refused_too_large},
                  {"quarantined", s.quarantined},
                  {"misses_by_reason",
                   {{"not_in_cache", absent},
                    {"corrupt", s.unusable_corrupt},
                    {"other_fingerprint", s.unusable_incompatible},
                    {"refit_failed", s.unusable_refit_failed}}},
                  {"build_ms_saved", s.build_ms_saved},
                  {"entries", s.entries},
                  {"bytes", s.bytes},
                  {"max_bytes", cap}};
    uint64_t lookups = s.hits + s.misses;
    text << "Cache directory      " << dir.string() << "\n"
         << "Hits                 " << s.hits;
    if (lookups)
      text << " / " << lookups << " (" << std::fixed << std::setprecision(1)
           << 100.0 * static_cast<double>(s.hits) / static_cast<double>(lookups) << " %)";
    text << "\nMisses               " << s.misses << "\n"
         << "  not in cache       " << absent << "\n"
         << "  corrupt entry      " << s.unusable_corrupt << "\n"
         << "  other machine      " << s.unusable_incompatible << "\n"
         << "  refit failed       " << s.unusable_refit_failed << "\n"
         << "Build time saved     " << std::setprecision(2) << static_cast<double>(s.build_ms_saved) / 1000.0
         << " s\n"
         << "Saves                " << s.saves << "\n"
         << "Evictions            " << s.evictions << "\n"
         << "Refused (too large)  " << s.refused_too_large << "\n"
         << "Quarantined          " << s.quarantined << "\n"
         << "Entries              " << s.entries << "\n"
         << "Cache size           " << human_bytes(s.bytes) << " / " << human_bytes(cap) << "\n";
  } else if (o.action == "ls") {
    j["entries"] = nlohmann::json::array();
    for (const auto& e : cache.list()) {
      j["entries"].push_back({{"key", e.key}, {"bytes", e.size}, {"mtime_ns", e.mtime_ns}});
      text << e.key << "  " << std::setw(10) << human_bytes(e.size) << "\n";
    }
  } else if (o.action == "verify") {
    int bad = 0;
    j["entries"] = nlohmann::json::array();
    for (const auto& r : cache.verify()) {
      j["entries"].push_back({{"key", r.key}, {"ok", r.ok}, {"reason", r.reason}});
      if (!r.ok) {
        ++bad;
        text << "BAD  " << r.key << ": " << r.reason << " (quarantined)\n";
      }
    }
    j["bad"] = bad;
    text << j["entries"].size() << " entries verified, " << bad << " bad\n";
  } else if (o.action == "prune") {
    auto r = cache.prune(parse_size(o.max_size, "--max-size"));
    j["removed_entries"] = r.removed_entries;
    j["removed_bytes"] = r.removed_bytes;
    j["entries"] = r.entries;
    j["bytes"] = r.bytes;
    text << "removed " << r.removed_entries << " entries (" << human_bytes(r.removed_bytes) << "); "
         << r.entries << " entries, " << human_bytes(r.bytes) << " left\n";
  } else if (o.action == "clear") {
    j["removed_entries"] = cache.clear();
    text << "removed " << j["removed_entries"].get<uint64_t>() << " entries\n";
  }
}

// `ls` and `clear` on a Redis tier. `verify` and `prune` have no Redis form:
// every load already checks an entry's size and XXH3 (and the envelope above
// it), and Redis evicts by its own maxmemory policy or the URI's ttl.
void redis_action(const CacheOptions& o, const std::string& uri, nlohmann::json& j, std::ostream& text) {
  cache::RedisEngineCache redis(cache::parse_redis_uri(uri));
  const std::string where = "Redis at " + redis.options().describe();
  if (o.action == "ls") {
    auto entries = redis.list();
    if (!entries) throw Error(ErrorCode::io, "cache ls: cannot reach " + where);
    j["entries"] = nlohmann::json::array();
    for (const auto& e : *entries) {
      j["entries"].push_back({{"key", e.key}, {"bytes", e.size}, {"ttl_ms", e.ttl_ms}});
      text << e.key << "  " << std::setw(10) << human_bytes(e.size)
           << (e.ttl_ms >= 0 ? "  expires in " + std::to_string(e.ttl_ms / 1000) + " s" : "") << "\n";
    }
  } else if (o.action == "clear") {
    auto removed = redis.clear();
    if (!removed)
      throw Error(ErrorCode::io,
                  "cache clear: cannot reach " + where + (redis.options().read_only ? " (read-only)" : ""));
    j["removed_entries"] = *removed;
    text << "removed " << *removed << " entries\n";
  } else {
    throw Error(ErrorCode::invalid_argument,
                "cache " + o.action + " works on the disk cache only: " + where +
                    (o.action == "verify" ? " checks every entry's size and XXH3 as it is loaded"
                                          : " evicts by its maxmemory policy, or by the URI's ttl") +
                    " (docs/fleet-cache.md)");
  }
}

// `ls`, `verify`, `prune` and `clear` act on every tier that --cache or
// --cache-tiers names ($KILN_ENGINE_CACHE if neither; the disk cache by
// default). They once acted on the disk cache whatever was named, so
// `kiln cache clear --cache redis://...` emptied the local disk and left
// Redis as it was.
int run_tier_action(const CacheOptions& o, const std::vector<std::string>& tiers) {
  nlohmann::json j{{"command", "cache " + o.action}, {"tiers", nlohmann::json::array()}};
  std::ostringstream text;
  std::optional<Error> first_error;  // a tier that fails does not stop the others
  for (const auto& tier : tiers) {
    nlohmann::json t{{"name", tier}};
    text << "Tier " << tier << "\n";
    std::ostringstream tier_text;
    try {
      if (tier == "disk") {
        t["cache_dir"] = cache_dir(o).string();
        disk_action(o, cache_dir(o), t, tier_text);
      } else if (cache::is_redis_uri(tier)) {
        redis_action(o, tier, t, tier_text);
      } else {
        // A RAM tier lives inside one process: another process has nothing to act on.
        t["skipped"] = "a ram tier lives inside one process";
        tier_text << "(skipped: a ram tier lives inside one process)\n";
      }
    } catch (const Error& e) {
      t["error"] = e.what();
      tier_text << "error: " << e.what() << "\n";
      if (!first_error) first_error = e;
    }
    std::istringstream lines(tier_text.str());
    for (std::string line; std::getline(lines, line);) text << "  " << line << "\n";
    j["tiers"].push_back(t);
  }
  if (o.json) {
    print_json(j);
  } else {
    std::cout << text.str();
  }
  if (first_error) throw *first_error;  // after the report, for the exit code
  return 0;
}

int run_cache(const CacheOptions& o) {
  static const std::vector<std::string> k_actions = {"stats", "ls", "verify", "prune", "clear", "explain"};
  if (std::find(k_actions.begin(), k_actions.end(), o.action) == k_actions.end())
    throw Error(ErrorCode::invalid_argument,
                "cache: unknown action '" + o.action + "' (stats, ls, verify, prune, clear, explain)");
  if (o.action == "stats" && (!o.compile.cache.empty() || !o.compile.cache_tiers.empty()))
    return run_tier_stats(o);
  if (o.action == "prune" && o.max_size.empty())
    throw Error(ErrorCode::invalid_argument, "cache prune needs --max-size, e.g. 500M");
  if (o.action != "stats" && o.action != "explain") {
    auto tiers = runtime::engine_cache_tiers(to_settings(o.compile));
    if (tiers != std::vector<std::string>{"disk"}) return run_tier_action(o, tiers);
  }

  auto dir = cache_dir(o);
  nlohmann::json j{{"command", "cache " + o.action}, {"cache_dir", dir.string()}};
  std::ostringstream text;
  if (o.action == "explain") {
    if (o.model.empty()) throw Error(ErrorCode::invalid_argument, "cache explain needs a MODEL.onnx");
    auto model = frontend::import_onnx_file(o.model);
    CompileOptions compile = o.compile;
    if (compile.cache_dir.empty()) compile.cache_dir = dir.string();
    auto specs = to_specs(model.graph, compile, {});
    auto e = runtime::explain_compile(model.graph, specs, to_settings(compile));
    j["engines"] = nlohmann::json::array({{{"key", e.key},
                                           {"status", e.would_hit ? "hit" : "miss"},
                                           {"detail", e.detail},
                                           {"parts",
                                            {{"graph", key::to_hex(e.parts.graph)},
                                             {"inputs", key::to_hex(e.parts.inputs)},
                                             {"settings", key::to_hex(e.parts.settings)},
                                             {"fingerprint", key::to_hex(e.parts.fingerprint)}}}}});
    text << "engine  " << e.key.substr(0, 16) << "  " << (e.would_hit ? "hit" : "miss") << ": " << e.detail
         << "\n"
         << "        graph " << key::to_hex(e.parts.graph).substr(0, 16) << "  inputs "
         << key::to_hex(e.parts.inputs).substr(0, 16) << "  settings "
         << key::to_hex(e.parts.settings).substr(0, 16) << "  fingerprint "
         << key::to_hex(e.parts.fingerprint).substr(0, 16) << "\n";
  } else {
    disk_action(o, dir, j, text);
  }
  if (o.json) {
    print_json(j);
  } else {
    std::cout << text.str();
  }
  return 0;
}

}  // namespace

void add_cache_command(CLI::App& app, Action& action) {
  auto opt = std::make_shared<CacheOptions>();
  CLI::App* cmd = app.add_subcommand("cache", "Inspect and manage the engine cache");
  cmd->add_option("action", opt->action, "stats | ls | verify | prune | clear | explain")->required();
  cmd->add_option("model", opt->model, "Model file (.onnx), for explain");
  cmd->add_option("--max-size", opt->max_size, "For prune: the size to shrink the cache to, e.g. 500M");
  cmd->add_option("--shape", opt->compile.shapes, "For explain: NAME=SHAPE, as given to kiln build");
  add_compile_options(cmd, opt->compile);
  cmd->add_flag("--json", opt->json, "Print one JSON object instead of text");
  cmd->callback([opt, &action] { action = [opt] { return run_cache(*opt); }; });
}

}  // namespace kiln::cli
