#include "runtime/compiled_model.hpp"

#include <chrono>

#include "backends/cpu/cpu_backend.hpp"
#include "builder/timing_cache.hpp"
#include "cache/disk_engine_cache.hpp"
#include "format/envelope.hpp"
#include "key/engine_key.hpp"
#include "passes/passes.hpp"
#include "runtime/miss_explainer.hpp"
#include "util/log.hpp"

namespace kiln::runtime {

namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

constexpr const char* k_producer = "kiln 0.1.0";

int64_t unix_ms_now() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// The engine cache a compile uses: the user's, or the disk cache.
std::shared_ptr<EngineCache> cache_for(const CompileSettings& settings) {
  if (settings.custom_engine_cache) return settings.custom_engine_cache;
  auto dir = settings.engine_cache_dir.empty() ? default_engine_cache_dir() : settings.engine_cache_dir;
  return std::make_shared<cache::DiskEngineCache>(dir, settings.engine_cache_size);
}

// Tries to serve `key` from `cache`. On success the engine is refitted with
// `sources` and ready; otherwise `record.reason` says why not. Every failure
// here is a miss, never an error: the caller builds instead.
std::unique_ptr<Engine> try_cache_hit(EngineCache& cache, const key::EngineKey& key, Backend& backend,
                                      std::span<const Tensor> sources, int num_threads, EngineRecord& record) {
  auto* disk = dynamic_cast<cache::DiskEngineCache*>(&cache);
  auto start = Clock::now();
  std::optional<std::vector<std::byte>> blob;
  try {
    blob = cache.load(record.key);
  } catch (const std::exception& e) {
    log::warn_once("cache-load", std::string("engine cache load failed, treating as a miss: ") + e.what());
  }
  if (!blob) {
    record.reason = disk ? explain_miss(*disk, key) : "not in cache";
    return nullptr;
  }
  auto opened = format::open(*blob, key);
  if (auto* rejected = std::get_if<format::Rejection>(&opened)) {
    record.reason = "corrupt entry (" + rejected->reason + "), rebuilt";
    log::warn("engine cache entry " + record.key.substr(0, 16) + " is unusable: " + rejected->reason);
    if (disk) disk->quarantine(record.key, rejected->reason);
    return nullptr;
  }
  const auto& header = std::get<format::OpenedBlob>(opened).header;
  if (header.fingerprint != backend.fingerprint().to_string()) {
    record.reason = "entry built by " + header.fingerprint + ", rebuilt";
    return nullptr;
  }
  std::unique_ptr<Engine> engine;
  try {
    engine = backend.deserialize(std::get<format::OpenedBlob>(opened).payload, num_threads);
    record.load_ms = ms_since(start);
    start = Clock::now();
    engine->refit(sources);
    record.refit_ms = ms_since(start);
  } catch (const Error& e) {
    record.reason = std::string(engine ? "refit failed" : "plan rejected") + " (" + e.what() + "), rebuilt";
    log::warn("engine cache entry " + record.key.substr(0, 16) + ": " + e.what());
    if (disk && !engine) disk->quarantine(record.key, e.what());
    return nullptr;
  }
  return engine;
}

}  // namespace

std::filesystem::path default_engine_cache_dir() {
  std::error_code ec;
  auto temp = std::filesystem::temp_directory_path(ec);
  if (ec) temp = "/tmp";
  return temp / "kiln_engine_cache";
}

std::filesystem::path resolve_timing_cache_path(const CompileSettings& settings) {
  if (settings.timing_cache_path == "-") return {};
  if (!settings.timing_cache_path.empty()) return settings.timing_cache_path;
  auto dir = settings.engine_cache_dir.empty() ? default_engine_cache_dir() : settings.engine_cache_dir;
  return dir / "timing" / "timing_cache.bin";
}

CompiledModel::CompiledModel(CompiledModel&&) noexcept = default;
CompiledModel& CompiledModel::operator=(CompiledModel&&) noexcept = default;
CompiledModel::~CompiledModel() = default;

CompiledModel CompiledModel::compile(const ir::Graph& graph, std::vector<InputSpec> specs,
                                     const CompileSettings& settings) {
  auto compile_start = Clock::now();
  if (specs.size() != graph.inputs().size()) {
    throw Error(ErrorCode::invalid_argument, graph.source + ": " + std::to_string(specs.size()) +
                                                 " input specs for a model with " +
                                                 std::to_string(graph.inputs().size()) + " inputs");
  }
  bool caching = settings.cache_built_engines || settings.reuse_cached_engines;
  if (caching && !settings.refittable) {
    // A cached engine is only reusable by refitting it with the new model's
    // weights; saving one that cannot be refitted would serve stale weights.
    throw Error(ErrorCode::invalid_argument,
                "engine caching needs refittable engines: set refittable = true, or turn off "
                "cache_built_engines and reuse_cached_engines");
  }

  CompiledModel model;
  model.m_backend = make_cpu_backend();
  Backend& backend = *model.m_backend;
  model.m_report.backend = std::string(backend.name());

  auto start = Clock::now();
  ir::Graph lowered = passes::lower(graph);
  model.m_report.lower_ms = ms_since(start);

  std::string unsupported;
  for (size_t n = 0; n < lowered.num_nodes(); ++n) {
    if (auto reason = backend.unsupported_reason(lowered, static_cast<ir::NodeId>(n))) {
      unsupported += (unsupported.empty() ? "" : "; ") + lowered.node(static_cast<ir::NodeId>(n)).describe() +
                     ": " + *reason;
    }
  }
  if (!unsupported.empty()) {
    throw Error(ErrorCode::unsupported, graph.source + ": the " + model.m_report.backend +
                                            " backend cannot run " + unsupported +
                                            " (use --backend ref; partitioning with fallback comes later)");
  }

  EngineRecord record;
  std::shared_ptr<EngineCache> cache;
  std::optional<key::EngineKey> key;
  std::optional<LockFile> build_lock;
  std::vector<Tensor> sources = passes::source_weights(graph);
  if (caching) {
    start = Clock::now();
    key = key::compute_engine_key(lowered, specs, settings, backend.fingerprint());
    record.key = key->hex();
    record.key_ms = ms_since(start);
    cache = cache_for(settings);
    if (settings.reuse_cached_engines) {
      model.m_engine = try_cache_hit(*cache, *key, backend, sources, settings.num_threads, record);
      auto* disk = dynamic_cast<cache::DiskEngineCache*>(cache.get());
      if (!model.m_engine && disk && settings.cache_built_engines) {
        // Single flight: whoever holds the key's lock builds; the others wait,
        // then find the published entry.
        build_lock = disk->acquire_build_lock(record.key);
        if (build_lock) {
          EngineRecord second;
          second.key = record.key;
          model.m_engine = try_cache_hit(*cache, *key, backend, sources, settings.num_threads, second);
          if (model.m_engine) record = second;
        }
      }
    } else {
      record.reason = "reuse_cached_engines is off";
    }
  }

  if (model.m_engine) {
    record.status = "hit";
  } else {
    auto timing_path = resolve_timing_cache_path(settings);
    builder::TimingCache timing =
        timing_path.empty() ? builder::TimingCache() : builder::TimingCache::open(timing_path);
    start = Clock::now();
    model.m_engine = backend.build(lowered, specs, settings, timing);
    record.build_ms = ms_since(start);
    timing.save();
    model.m_report.timing_cache_path = timing_path;
    model.m_report.timing_cache_entries = timing.size();
    model.m_report.timing_cache_hits = timing.hits();
    model.m_report.timing_cache_misses = timing.misses();
    record.status = "built_uncached";
    if (cache && settings.cache_built_engines) {
      start = Clock::now();
      format::EnvelopeHeader header{*key, k_producer, backend.fingerprint().to_string(), unix_ms_now()};
      try {
        cache->save(record.key, format::seal(header, model.m_engine->serialize()));
        auto* disk = dynamic_cast<cache::DiskEngineCache*>(cache.get());
        record.status = disk && disk->degraded() ? "built_uncached" : "miss";
      } catch (const std::exception& e) {
        // A cache that cannot store costs the next compile time, never this one.
        log::warn_once("cache-save", std::string("engine cache save failed, engine not cached: ") + e.what());
      }
      record.save_ms = ms_since(start);
    }
  }
  build_lock.reset();
  model.m_engine->set_num_threads(settings.num_threads);
  record.info = model.m_engine->info();
  model.m_report.engines.push_back(std::move(record));
  model.m_report.compile_ms = ms_since(compile_start);
  return model;
}

std::vector<Tensor> CompiledModel::run(std::span<const Tensor> inputs) { return m_engine->run(inputs); }

}  // namespace kiln::runtime
