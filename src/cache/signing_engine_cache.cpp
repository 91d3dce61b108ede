#include "cache/signing_engine_cache.hpp"

#include <sys/stat.h>

#include <fstream>
#include <sstream>

#include "format/envelope.hpp"
#include "kiln/error.hpp"
#include "util/log.hpp"

namespace kiln::cache {

namespace {

constexpr size_t k_min_secret_bytes = 16;

}  // namespace

SigningEngineCache::SigningEngineCache(std::shared_ptr<Store> inner, std::vector<std::byte> secret)
    : CompositeStore({std::move(inner)}), m_secret(std::move(secret)) {
  if (!kids().front())
    throw Error(ErrorCode::invalid_argument, "engine cache signing: the inner store is null");
  if (m_secret.empty()) throw Error(ErrorCode::invalid_argument, "engine cache signing: the secret is empty");
}

std::string SigningEngineCache::name() const { return inner()->name() + " (signed)"; }

void SigningEngineCache::put(const std::string& key, std::span<const std::byte> blob) {
  std::vector<std::byte> signed_blob;
  try {
    signed_blob = format::sign(blob, m_secret);
  } catch (const Error& e) {
    log::warn("engine cache: not saving entry " + key.substr(0, 16) + ": " + e.what());
    return;
  }
  inner()->put(key, signed_blob);
}

void SigningEngineCache::note_refusal() {
  ++m_refused;
  if (!inner()->count_refusal()) ++m_refused_uncounted;
}

Fetched SigningEngineCache::get(const std::string& key) {
  Fetched inner_result = inner()->get(key);
  Fetched result;
  if (!inner_result.hit()) {
    result.status = inner_result.status;
    result.reason = inner_result.reason;
    result.asked.push_back(std::move(inner_result));
    return result;
  }
  result.status = Status::hit;
  result.blob = std::move(inner_result.blob);
  inner_result.blob.clear();
  result.asked.push_back(std::move(inner_result));
  auto rejection = format::verify_signature(result.blob, m_secret);
  if (!rejection) return result;  // a hit
  bool is_signed = format::is_signed(result.blob);
  result.status = is_signed ? Status::refused_bad_signature : Status::refused_unsigned;
  result.reason = rejection->reason;
  result.blob.clear();
  std::string message = "engine cache: refused entry " + key.substr(0, 16) + ": " + rejection->reason;
  if (is_signed)
    log::warn(message);  // a forgery or a misconfigured host: every time
  else
    log::warn_once("unsigned-entry", message + " (further unsigned entries are refused silently)");
  return result;
}

void SigningEngineCache::record_outcome(const std::string& key, const Fetched& lookup, Outcome outcome,
                                        uint64_t build_ms_saved) {
  // A compile may read a key twice; its last read is the one it reports, so
  // a refusal counts once per compile.
  if (lookup.refused()) {
    note_refusal();
    outcome = Outcome::absent;
    build_ms_saved = 0;
  }
  if (!lookup.asked.empty()) inner()->record_outcome(key, lookup.asked.front(), outcome, build_ms_saved);
}

std::optional<CacheStats> SigningEngineCache::counters() {
  auto stats = inner()->counters();
  if (stats) stats->refused_unauthenticated += m_refused_uncounted.load();
  return stats;
}

std::vector<std::byte> secret_from_text(const std::string& text, const std::string& origin) {
  std::string trimmed = text;
  while (!trimmed.empty() && std::isspace(static_cast<unsigned char>(trimmed.back()))) trimmed.pop_back();
  if (trimmed.size() < k_min_secret_bytes) {
    throw Error(ErrorCode::invalid_argument,
                "engine cache secret from " + origin + " is " + std::to_string(trimmed.size()) +
                    " bytes; it needs at least " + std::to_string(k_min_secret_bytes) +
                    " (e.g. head -c 32 /dev/urandom | base64)");
  }
  const auto* bytes = reinterpret_cast<const std::byte*>(trimmed.data());
  return {bytes, bytes + trimmed.size()};
}

std::vector<std::byte> read_secret_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw Error(ErrorCode::invalid_argument,
                "engine cache secret file " + path.string() + ": cannot read it");
  std::ostringstream text;
  text << in.rdbuf();
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && (st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
    log::warn_once("secret-mode:" + path.string(),
                   "engine cache secret file " + path.string() + " can be read by other users; chmod 600 it");
  }
  return secret_from_text(text.str(), path.string());
}

}  // namespace kiln::cache
