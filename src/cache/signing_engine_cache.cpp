#include "cache/signing_engine_cache.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "cache/redis_engine_cache.hpp"
#include "format/envelope.hpp"
#include "kiln/error.hpp"
#include "util/log.hpp"

namespace kiln::cache {

namespace {

constexpr size_t k_min_secret_bytes = 16;
// A secret is a short line of text; anything larger is not one.
constexpr size_t k_max_secret_file_bytes = 64 << 10;

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

std::optional<std::vector<std::byte>> SigningEngineCache::verified(
    const std::string& key, std::optional<std::vector<std::byte>> blob, bool in_compile) {
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
  const std::string what = "engine cache secret file " + path.string();
  // Symlinks are followed (secrets often sit in mounted volumes behind
  // links); O_NONBLOCK so that a FIFO cannot block the open, and the type is
  // checked on the open descriptor before anything is read.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    throw Error(ErrorCode::invalid_argument, what + ": cannot read it: " + std::strerror(errno));
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    throw Error(ErrorCode::invalid_argument, what + ": cannot read it: " + std::strerror(errno));
  }
  if (!S_ISREG(st.st_mode)) {
    const char* type = S_ISDIR(st.st_mode)    ? "a folder"
                       : S_ISFIFO(st.st_mode) ? "a FIFO"
                       : S_ISSOCK(st.st_mode) ? "a socket"
                                              : "a device";
    throw Error(ErrorCode::invalid_argument, what + " is not a regular file (" + type + ")");
  }
  auto too_large = [&] {
    return Error(
        ErrorCode::invalid_argument,
        what + " holds more than " + std::to_string(k_max_secret_file_bytes) + " bytes: not a secret");
  };
  if (static_cast<uint64_t>(st.st_size) > k_max_secret_file_bytes) throw too_large();
  // At most one byte more than the limit, whatever the file does meanwhile.
  std::string text(k_max_secret_file_bytes + 1, '\0');
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::read(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw Error(ErrorCode::invalid_argument, what + ": cannot read it: " + std::strerror(errno));
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  if (done > k_max_secret_file_bytes) throw too_large();
  text.resize(done);
  if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
    log::warn_once("secret-mode:" + path.string(), what + " can be read by other users; chmod 600 it");
  }
  return secret_from_text(text, path.string());
}

}  // namespace kiln::cache
