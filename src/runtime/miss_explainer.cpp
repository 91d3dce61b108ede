#include "runtime/miss_explainer.hpp"

#include <cstring>
#include <fstream>

#include "backends/cpu/cpu_backend.hpp"
#include "cache/cache_layers.hpp"
#include "cache/redis_engine_cache.hpp"
#include "format/header_peek.hpp"
#include "passes/passes.hpp"
#include "runtime/compiled_model.hpp"

namespace kiln::runtime {

namespace {

constexpr size_t k_max_entries_examined = 256;

std::optional<format::EnvelopeHeader> peek_entry(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::vector<std::byte> prefix(format::k_peek_bytes);
  in.read(reinterpret_cast<char*>(prefix.data()), static_cast<std::streamsize>(prefix.size()));
  prefix.resize(static_cast<size_t>(in.gcount()));
  return format::peek_header(prefix);
}

int equal_parts(const key::KeyParts& a, const key::KeyParts& b) {
  return (a.graph == b.graph) + (a.inputs == b.inputs) + (a.settings == b.settings) +
         (a.fingerprint == b.fingerprint);
}

// The headers of up to k_max_entries_examined entries of `cache`; `entries`
// counts the entries seen, readable or not.
std::vector<format::EnvelopeHeader> disk_headers(cache::DiskEngineCache& cache, size_t& entries) {
  std::vector<format::EnvelopeHeader> headers;
  auto listed = cache.list();
  entries += listed.size();
  for (size_t i = 0; i < listed.size() && i < k_max_entries_examined; ++i) {
    if (auto header = peek_entry(cache.layout().entry_path(listed[i].key))) headers.push_back(*header);
  }
  return headers;
}

std::string nearest_of(const std::vector<format::EnvelopeHeader>& headers, size_t entries,
                       const key::EngineKey& wanted) {
  if (entries == 0) return "not in cache (the cache is empty)";
  const format::EnvelopeHeader* nearest = nullptr;
  int best = -1;
  for (const auto& header : headers) {
    int score = equal_parts(header.key.parts, wanted.parts);
    if (score > best) {
      best = score;
      nearest = &header;
    }
  }
  if (!nearest) return "not in cache (no readable entry to compare with)";
  return "not in cache; nearest entry " + nearest->key.hex().substr(0, 16) + " (" + std::to_string(best) +
         " of 4 key parts equal) differs in: " + key::differing_parts(nearest->key.parts, wanted.parts);
}

// Gathers the headers of every disk and Redis store inside `cache`; false
// when it holds none that could be read.
bool gather_headers(EngineCache& cache, std::vector<format::EnvelopeHeader>& headers, size_t& entries) {
  bool any = false;
  cache::for_each_layer(cache, [&](EngineCache& layer) {
    if (auto* disk = dynamic_cast<cache::DiskEngineCache*>(&layer)) {
      auto more = disk_headers(*disk, entries);
      headers.insert(headers.end(), more.begin(), more.end());
      any = true;
    } else if (auto* redis = dynamic_cast<cache::RedisEngineCache*>(&layer)) {
      if (auto peeked = redis->peek_headers(k_max_entries_examined)) {
        entries += peeked->entries;
        headers.insert(headers.end(), peeked->headers.begin(), peeked->headers.end());
        any = true;
      }
    }
  });
  return any;
}

}  // namespace

std::string explain_miss(cache::DiskEngineCache& cache, const key::EngineKey& wanted) {
  size_t entries = 0;
  auto headers = disk_headers(cache, entries);
  return nearest_of(headers, entries, wanted);
}

std::string explain_miss(EngineCache& cache, const key::EngineKey& wanted) {
  std::vector<format::EnvelopeHeader> headers;
  size_t entries = 0;
  if (!gather_headers(cache, headers, entries)) return "not in cache";
  return nearest_of(headers, entries, wanted);
}

Explanation explain_compile(const ir::Graph& graph, std::span<const InputSpec> specs,
                            const CompileSettings& settings) {
  auto backend = make_cpu_backend();
  ir::Graph lowered = passes::lower(graph);
  key::EngineKey key = key::compute_engine_key(lowered, specs, settings, backend->fingerprint());
  Explanation e;
  e.key = key.hex();
  e.parts = key.parts;
  auto dir = settings.engine_cache_dir.empty() ? default_engine_cache_dir() : settings.engine_cache_dir;
  cache::DiskEngineCache cache(dir, settings.engine_cache_size);
  auto path = cache.layout().entry_path(e.key);
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    e.detail = explain_miss(cache, key);
    return e;
  }
  // Through CacheFs: a FIFO, folder, symlink or huge file at the entry's
  // path is reported, never blocked on, followed or read whole.
  std::vector<std::byte> blob;
  if (auto status = cache::posix_cache_fs()->read_file(path, blob); !status.ok()) {
    e.detail =
        "entry present but unusable (" + status.message + "): a compile would move it aside and rebuild";
    return e;
  }
  auto opened = format::open(std::span<const std::byte>(blob), key);
  if (auto* rejected = std::get_if<format::Rejection>(&opened)) {
    e.detail = "entry present but unusable (" + rejected->reason + "): a compile would rebuild it";
  } else if (std::get<format::OpenedBlob>(opened).header.fingerprint != backend->fingerprint().to_string()) {
    e.detail = "entry present but built by " + std::get<format::OpenedBlob>(opened).header.fingerprint;
  } else {
    e.would_hit = true;
    e.detail = "entry present and valid (" + std::to_string(blob.size()) + " bytes)";
  }
  return e;
}

}  // namespace kiln::runtime
