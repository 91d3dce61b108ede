#include "cache/signing_engine_cache.hpp"

#include <sys/stat.h>

#include <fstream>
#include <sstream>

#include "cache/redis_engine_cache.hpp"
#include "format/envelope.hpp"
#include "kiln/error.hpp"
#include "util/log.hpp"

namespace kiln::cache {

namespace {

constexpr size_t k_min_secret_bytes = 16;

}  // namespace

SigningEngineCache::SigningEngineCache(std::shared_ptr<EngineCache> inner, std::vector<std::byte> secret)
    : m_inner(std::move(inner)),
      m_managed(dynamic_cast<ManagedCache*>(m_inner.get())),
      m_secret(std::move(secret)) {
  if (m_secret.empty()) throw Error(ErrorCode::invalid_argument, "engine cache signing: the secret is empty");
}

void SigningEngineCache::save(const std::string& key, std::span<const std::byte> blob) {
  std::vector<std::byte> signed_blob;
  try {
    signed_blob = format::sign(blob, m_secret);
  } catch (const Error& e) {
    log::warn("engine cache: not saving entry " + key.substr(0, 16) + ": " + e.what());
    return;
  }
  m_inner->save(key, signed_blob);
}

void SigningEngineCache::count_refusal() {
  ++m_refused;
  if (auto* redis = dynamic_cast<RedisEngineCache*>(m_inner.get())) redis->count_refused_unauthenticated();
}

std::optional<std::vector<std::byte>> SigningEngineCache::verified(const std::string& key,
                                                                   std::optional<std::vector<std::byte>> blob,
                                                                   bool in_compile) {
  if (!blob) return blob;
  auto rejection = format::verify_signature(*blob, m_secret);
  if (!rejection) return blob;
  if (in_compile) {
    // A compile reads a key up to twice (before and after waiting for another
    // builder); its outcome counts the refusal once (record_outcome).
    std::lock_guard lock(m_pending_mutex);
    if (!m_pending.emplace(key, rejection->reason).second) return std::nullopt;  // warned on the first read
  } else {
    count_refusal();
  }
  std::string message = "engine cache: refused entry " + key.substr(0, 16) + ": " + rejection->reason;
  if (format::is_signed(*blob))
    log::warn(message);  // a forgery or a misconfigured host: every time
  else
    log::warn_once("unsigned-entry", message + " (further unsigned entries are refused silently)");
  return std::nullopt;
}

std::optional<std::vector<std::byte>> SigningEngineCache::load(const std::string& key) {
  return verified(key, m_inner->load(key), false);
}

std::optional<std::vector<std::byte>> SigningEngineCache::fetch(const std::string& key) {
  return verified(key, m_managed ? m_managed->fetch(key) : m_inner->load(key), true);
}

std::optional<std::string> SigningEngineCache::refusal(const std::string& key) const {
  std::lock_guard lock(m_pending_mutex);
  auto it = m_pending.find(key);
  if (it == m_pending.end()) return std::nullopt;
  return it->second;
}

void SigningEngineCache::record_outcome(const std::string& key, Outcome outcome, uint64_t build_ms_saved) {
  bool refused = false;
  {
    std::lock_guard lock(m_pending_mutex);
    refused = m_pending.erase(key) != 0;
  }
  if (refused) count_refusal();
  if (m_managed) m_managed->record_outcome(key, outcome, build_ms_saved);
}

std::unique_ptr<BuildLease> SigningEngineCache::acquire_build_lease(const std::string& key) {
  return m_managed ? m_managed->acquire_build_lease(key) : nullptr;
}

bool SigningEngineCache::quarantine(const std::string& key, const std::string& reason) {
  return m_managed && m_managed->quarantine(key, reason);
}

bool SigningEngineCache::degraded() const { return m_managed && m_managed->degraded(); }

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
