#include "runtime/engine_provider.hpp"

#include "cache/miss_explainer.hpp"
#include "cache/open.hpp"
#include "format/envelope.hpp"
#include "key/engine_key.hpp"
#include "passes/passes.hpp"
#include "runtime/clock.hpp"
#include "util/log.hpp"

namespace kiln::runtime {

namespace {

using Outcome = cache::Store::Outcome;

// Why a lookup that found nothing usable missed, for the compile report.
std::string miss_reason(cache::Store& store, const cache::Fetched& fetched, const key::EngineKey& key) {
  switch (fetched.status) {
    case cache::Status::refused_unsigned:
    case cache::Status::refused_bad_signature:
      return "entry refused: " + fetched.reason + ", rebuilt";
    case cache::Status::corrupt:
      return "corrupt entry (" + fetched.reason + "), rebuilt";
    case cache::Status::unavailable:
      return "cache unavailable (" + fetched.reason + "); " + cache::explain_miss(store, key);
    case cache::Status::absent:
    case cache::Status::hit:
      break;
  }
  return cache::explain_miss(store, key);
}

// One lookup of `key`; the engine, refitted, or null with record.reason set
// and `outcome` saying why. `fetched` is the lookup, for record_outcome().
std::unique_ptr<Engine> try_cache_hit(cache::Store& cache, const key::EngineKey& key, Backend& backend,
                                      std::span<const Tensor> sources, int num_threads, EngineRecord& record,
                                      cache::Fetched& fetched, Outcome& outcome) {
  auto start = Clock::now();
  try {
    fetched = cache.get(record.key);
  } catch (const std::exception& e) {
    log::warn_once("cache-load", std::string("engine cache load failed, treating as a miss: ") + e.what());
    fetched = cache::Fetched::miss(cache::Status::unavailable, e.what());
  }
  if (!fetched.hit()) {
    record.reason = miss_reason(cache, fetched, key);
    outcome = Outcome::absent;
    return nullptr;
  }
  const std::vector<std::byte>* blob = &fetched.blob;
  auto opened = format::open(*blob, key);
  if (auto* rejected = std::get_if<format::Rejection>(&opened)) {
    record.reason = "corrupt entry (" + rejected->reason + "), rebuilt";
    log::warn("engine cache entry " + record.key.substr(0, 16) + " is unusable: " + rejected->reason);
    cache.quarantine(record.key, rejected->reason);
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
    if (!engine) cache.quarantine(record.key, e.what());
    outcome = engine ? Outcome::refit_failed : Outcome::corrupt;
    return nullptr;
  }
  record.saved_build_ms = static_cast<double>(header.build_ms);
  outcome = Outcome::usable;
  return engine;
}

}  // namespace

EngineProvider::EngineProvider(Backend& backend, const CompileSettings& settings,
                               std::optional<std::shared_ptr<cache::Store>> store)
    : m_backend(backend), m_settings(settings) {
  m_caching = settings.cache_built_engines || settings.reuse_cached_engines;
  if (m_caching && !settings.refittable) {
    // A cached engine is only reusable by refitting it with the new model's
    // weights; saving one that cannot be refitted would serve stale weights.
    throw Error(ErrorCode::invalid_argument,
                "engine caching needs refittable engines: set refittable = true, or turn off "
                "cache_built_engines and reuse_cached_engines");
  }
  if (store)
    m_cache = std::move(*store);
  else if (m_caching)
    m_cache = cache::open(settings);
  m_timing_path = cache::timing_cache_path(settings);
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
  Outcome outcome = Outcome::absent;
  cache::Fetched fetched;
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
      engine =
          try_cache_hit(*m_cache, *key, m_backend, sources, m_settings.num_threads, record, fetched, outcome);
      if (!engine && m_settings.cache_built_engines) {
        // Single flight: whoever holds the key's lease builds; the others
        // wait, then find the published entry.
        lease = m_cache->lease(record.key);
        if (lease) {
          EngineRecord second;
          second.key = record.key;
          second.key_ms = record.key_ms;
          Outcome second_outcome = Outcome::absent;
          cache::Fetched second_fetched;
          engine = try_cache_hit(*m_cache, *key, m_backend, sources, m_settings.num_threads, second,
                                 second_fetched, second_outcome);
          // The second read is the compile's lookup: a refusal counts once.
          fetched = std::move(second_fetched);
          if (engine) {
            record = second;
            outcome = second_outcome;
          }
        }
      }
      m_cache->record_outcome(record.key, fetched, outcome,
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
        m_cache->put(record.key, format::seal(header, engine->serialize()));
        record.status = m_cache->degraded() ? "built_uncached" : "miss";
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
