// SigningEngineCache: signs every entry it saves and refuses every entry it
// loads that is not signed with the same secret.
//
// Why a decorator around a cache, with the HMAC inside the envelope
// (format::sign, flags bit 0 + trailer): the signature travels with the
// entry through every tier and copy, while the decision "this store is not
// trusted" stays with the store. The compile pipeline needs no secret and no
// change; format::open() still checks structure and checksum after the
// HMAC has been checked here; and a user cache can be wrapped too.
//
// - save(): format::sign(blob, secret), then the inner save. A blob that
//   does not open is not saved (logged).
// - fetch()/load(): the inner blob, or a miss when it is unsigned or its
//   HMAC does not match (tampered, or another secret): counted in
//   refused_unauthenticated, never quarantined, since a host with the wrong
//   secret must not delete the fleet's good entries. The next build
//   overwrites it with a signed entry. A compile's refusal counts once, at
//   its record_outcome(), however often the compile read the key (fetch());
//   a plain load() counts each time.
// - Leases, quarantine, degraded() and outcomes go to the inner cache when it
//   is a ManagedCache.
//
// Thread-safety: as the inner cache.
#pragma once

#include <atomic>
#include <cstddef>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "cache/managed_cache.hpp"

namespace kiln::cache {

class SigningEngineCache final : public ManagedCache {
 public:
  // Throws kiln::Error(invalid_argument) for an empty secret.
  SigningEngineCache(std::shared_ptr<EngineCache> inner, std::vector<std::byte> secret);

  void save(const std::string& key, std::span<const std::byte> blob) override;
  std::optional<std::vector<std::byte>> load(const std::string& key) override;
  std::optional<std::vector<std::byte>> fetch(const std::string& key) override;
  void record_outcome(const std::string& key, Outcome outcome, uint64_t build_ms_saved) override;
  std::unique_ptr<BuildLease> acquire_build_lease(const std::string& key) override;
  bool quarantine(const std::string& key, const std::string& reason) override;
  bool degraded() const override;

  uint64_t refused_unauthenticated() const { return m_refused.load(); }
  // Why a compile's read of `key` was refused, until its outcome is recorded:
  // the compile's miss then says so instead of "not in cache".
  std::optional<std::string> refusal(const std::string& key) const;
  const std::shared_ptr<EngineCache>& inner() const { return m_inner; }

 private:
  // `in_compile`: read by fetch(), so counted at record_outcome().
  std::optional<std::vector<std::byte>> verified(const std::string& key,
                                                 std::optional<std::vector<std::byte>> blob, bool in_compile);
  void count_refusal();

  std::shared_ptr<EngineCache> m_inner;
  ManagedCache* m_managed;  // m_inner as a ManagedCache, or null
  std::vector<std::byte> m_secret;
  std::atomic<uint64_t> m_refused{0};
  mutable std::mutex m_pending_mutex;
  std::map<std::string, std::string> m_pending;  // key → why, refused by a compile not yet recorded
};

// The signing secret from a file: its bytes with trailing whitespace
// removed. Throws kiln::Error(invalid_argument) when it cannot be read or is
// shorter than 16 bytes; warns once when others may read the file.
std::vector<std::byte> read_secret_file(const std::filesystem::path& path);
// The secret from `text` (an environment variable's value), same rules.
std::vector<std::byte> secret_from_text(const std::string& text, const std::string& origin);

}  // namespace kiln::cache
