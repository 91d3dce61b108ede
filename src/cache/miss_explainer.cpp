#include "cache/miss_explainer.hpp"

namespace kiln::cache {

namespace {

int equal_parts(const key::KeyParts& a, const key::KeyParts& b) {
  return (a.graph == b.graph) + (a.inputs == b.inputs) + (a.settings == b.settings) +
         (a.fingerprint == b.fingerprint);
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

}  // namespace

std::string explain_miss(Store& store, const key::EngineKey& wanted) {
  std::vector<format::EnvelopeHeader> headers;
  size_t entries = 0;
  bool any = false;
  walk(store, [&](Store& layer) {
    if (auto found = layer.entry_headers(k_max_entries_examined)) {
      entries += found->entries;
      headers.insert(headers.end(), found->headers.begin(), found->headers.end());
      any = true;
    }
  });
  if (!any) return "not in cache";
  return nearest_of(headers, entries, wanted);
}

}  // namespace kiln::cache
