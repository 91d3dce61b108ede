#include "runtime/engine_provider.hpp"

#include "cache/cache_layers.hpp"
#include "cache/managed_cache.hpp"
#include "cache/signing_engine_cache.hpp"
#include "format/envelope.hpp"
#include "key/engine_key.hpp"
#include "passes/passes.hpp"
#include "runtime/cache_selection.hpp"
#include "runtime/clock.hpp"
#include "runtime/miss_explainer.hpp"
#include "util/log.hpp"

namespace kiln::runtime {

namespace {

using Outcome = cache::ManagedCache::Outcome;

// Why a signing layer in `cache` refused this compile's read of `key`, if one did.
std::optional<std::string> find_refusal(EngineCache& cache, const std::string& key) {
  std::optional<std::string> why;
  cache::for_each_layer(cache, [&](EngineCache& layer) {
    auto* signing = dynamic_cast<cache::SigningEngineCache*>(&layer);
    if (signing && !why) why = signing->refusal(key);
  });
  return why;
}

// One lookup of `key`; the engine, refitted, or null with record.reason set
// and `outcome` saying why.
std::unique_ptr<Engine> try_cache_hit(EngineCache& cache, const key::EngineKey& key, Backend& backend,
                                      std::span<const Tensor> sources, int num_threads, EngineRecord& record,
                                      Outcome& outcome) {
  auto* managed = dynamic_cast<cache::ManagedCache*>(&cache);
  auto start = Clock::now();
  std::optional<std::vector<std::byte>> blob;
  try {
    blob = managed ? managed->fetch(record.key) : cache.load(record.key);
  } catch (const std::exception& e) {
    log::warn_once("cache-load", std::string("engine cache load failed, treating as a miss: ") + e.what());
  }
  if (!blob) {
    if (auto why = find_refusal(cache, record.key)) {
      record.reason = "entry refused: " + *why + ", rebuilt";
    } else {
      record.reason = explain_miss(cache, key);
    }
    outcome = Outcome::absent;
    return nullptr;
  }
  auto opened = format::open(*blob, key);
  if (auto* rejected = std::get_if<format::Rejection>(&opened)) {
    record.reason = "corrupt entry (" + rejected->reason + "), rebuilt";
    log::warn("engine cache entry " + record.key.substr(0, 16) + " is unusable: " + rejected->reason);
    if (managed) managed->quarantine(record.key, rejected->reason);
    outcome = Outcome::corrupt;
    return nullptr;
  }
  const auto& [header, payload] = std::get<format::OpenedBlob>(opened);
  if (header.fingerprint != backend.fingerprint().to_string()) {
    record.reason = "entry built by " + header.fingerprint + ", rebuilt";
    outcome = Outcome::incompatible;
    return nullptr;
  }
  std::unique_ptr<Engine> engine;
  try {
    engine = backend.deserialize(payload, num_threads);
    record.load_ms = ms_since(start);
    start = Clock::now();
    engine->refit(sources);
    record.refit_ms = ms_since(start);
  } catch (const Error& e) {
    record.reason = std::string(engine ? "refit failed" : "plan rejected") + " (" + e.what() + "), rebuilt";
    log::warn("engine cache entry " + record.key.substr(0, 16) + ": " + e.what());
    if (managed && !engine) managed->quarantine(record.key, e.what());
    outcome = engine ? Outcome::refit_failed : Outcome::corrupt;
    return nullptr;
  }
  record.saved_build_ms = static_cast<double>(header.build_ms);
  outcome = Outcome::usable;
  return engine;
}

}  // namespace

EngineProvider::EngineProvider(Backend& backend, const CompileSettings& settings)
    : m_backend(backend), m_settings(settings) {
  m_caching = settings.cache_built_engines || settings.reuse_cached_engines;
  if (m_caching && !settings.refittable) {
    // A cached engine is only reusable by refitting it with the new model's
    // weights; saving one that cannot be refitted would serve stale weights.
    throw Error(ErrorCode::invalid_argument,
                "engine caching needs refittable engines: set refittable = true, or turn off "
                "cache_built_engines and reuse_cached_engines");
  }
  if (m_caching) m_cache = open_engine_cache(settings);
  m_timing_path = resolve_timing_cache_path(settings);
}

builder::TimingCache& EngineProvider::timing_cache() {
  if (!m_timing) {
    m_timing = m_timing_path.empty() ? builder::TimingCache() : builder::TimingCache::open(m_timing_path);
  }
  return *m_timing;
}

std::unique_ptr<Engine> EngineProvider::provide(ir::Graph& lowered, std::span<const InputSpec> specs,
                                                std::span<const Tensor> sources, EngineRecord& record) {
  std::optional<key::EngineKey> key;
  std::unique_ptr<cache::BuildLease> lease;
  std::unique_ptr<Engine> engine;
  auto* managed = dynamic_cast<cache::ManagedCache*>(m_cache.get());
  Outcome outcome = Outcome::absent;
  {
    // Always keyed: an AOT artifact seals every engine under its key.
    auto start = Clock::now();
    key = key::compute_engine_key(lowered, specs, m_settings, m_backend.fingerprint());
    record.engine_key = key;
    record.key_ms = ms_since(start);
  }
  if (m_cache) {
    record.key = key->hex();
    if (m_settings.reuse_cached_engines) {
      engine = try_cache_hit(*m_cache, *key, m_backend, sources, m_settings.num_threads, record, outcome);
      if (!engine && managed && m_settings.cache_built_engines) {
        // Single flight: whoever holds the key's lease builds; the others
        // wait, then find the published entry.
        lease = managed->acquire_build_lease(record.key);
        if (lease) {
          EngineRecord second;
          second.key = record.key;
          second.key_ms = record.key_ms;
          Outcome second_outcome = Outcome::absent;
          engine = try_cache_hit(*m_cache, *key, m_backend, sources, m_settings.num_threads, second,
                                 second_outcome);
          if (engine) {
            record = second;
            outcome = second_outcome;
          }
        }
      }
      if (managed)
        managed->record_outcome(record.key, outcome,
                                engine ? static_cast<uint64_t>(record.saved_build_ms) : 0);
    } else {
      record.reason = "reuse_cached_engines is off";
    }
  }

  if (engine) {
    record.status = "hit";
  } else {
    auto start = Clock::now();
    passes::materialize_weights(lowered, sources);
    engine = m_backend.build(lowered, specs, m_settings, timing_cache());
    record.build_ms = ms_since(start);
    record.status = "built_uncached";
    if (m_cache && m_settings.cache_built_engines) {
      start = Clock::now();
      format::EnvelopeHeader header{*key, k_producer, m_backend.fingerprint().to_string(), unix_ms_now(),
                                    static_cast<uint64_t>(record.build_ms)};
      try {
        m_cache->save(record.key, format::seal(header, engine->serialize()));
        record.status = managed && managed->degraded() ? "built_uncached" : "miss";
      } catch (const std::exception& e) {
        // A cache that cannot store costs the next compile time, never this one.
        log::warn_once("cache-save", std::string("engine cache save failed, engine not cached: ") + e.what());
      }
      record.save_ms = ms_since(start);
    }
  }
  lease.reset();
  engine->set_num_threads(m_settings.num_threads);
  record.info = engine->info();
  return engine;
}

void EngineProvider::finish(CompileReport& report) {
  if (!m_timing) return;
  m_timing->save();
  report.timing_cache_path = m_timing_path;
  report.timing_cache_entries = m_timing->size();
  report.timing_cache_hits = m_timing->hits();
  report.timing_cache_misses = m_timing->misses();
}

}  // namespace kiln::runtime
