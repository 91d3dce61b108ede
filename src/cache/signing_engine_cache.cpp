#include "cache/signing_engine_cache.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "format/envelope.hpp"
#include "kiln/error.hpp"
#include "util/log.hpp"

namespace kiln::cache {

namespace {

constexpr size_t k_min_secret_bytes = 16;
// A secret is a short line of text; anything larger is not one.
constexpr size_t k_max_secret_file_bytes = 64 << 10;

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
