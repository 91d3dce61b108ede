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
// - get()/load(): the inner blob, or a miss refused_unsigned or
//   refused_bad_signature (tampered, or another secret), counted in
//   refused_unauthenticated, never quarantined, since a host with the wrong
//   secret must not delete the fleet's good entries. The next build
//   overwrites it with a signed entry. A compile's refusal counts once, at
//   its record_outcome(), which is handed the lookup's result; a plain
//   load() is a get() and its outcome, so it counts each time.
// - Leases, quarantine, degraded() and outcomes go to the inner store
//   (CompositeStore).
//
// Thread-safety: as the inner cache.
#pragma once

#include <atomic>
#include <cstddef>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cache/store.hpp"

namespace kiln::cache {

class SigningEngineCache final : public CompositeStore {
 public:
  // Throws kiln::Error(invalid_argument) for an empty secret.
  SigningEngineCache(std::shared_ptr<Store> inner, std::vector<std::byte> secret);

  std::string name() const override;
  Fetched get(const std::string& key) override;
  void put(const std::string& key, std::span<const std::byte> blob) override;
  void record_outcome(const std::string& key, const Fetched& lookup, Outcome outcome,
                      uint64_t build_ms_saved) override;
  // The inner store's counters, plus the refusals it does not count itself.
  std::optional<CacheStats> counters() override;

  uint64_t refused_unauthenticated() const { return m_refused.load(); }
  const std::shared_ptr<Store>& inner() const { return kids().front(); }

 private:
  void note_refusal();

  std::vector<std::byte> m_secret;
  std::atomic<uint64_t> m_refused{0};
  std::atomic<uint64_t> m_refused_uncounted{0};  // those the inner store did not count
};

// The signing secret from a file: its bytes with trailing whitespace
// removed. Throws kiln::Error(invalid_argument) naming the file when it
// cannot be read, is not a regular file (checked after opening without
// blocking, so a FIFO or device never hangs or floods the process), holds
// more than 64 KiB or is shorter than 16 bytes; warns once when others may
// read the file. Symlinks are followed.
std::vector<std::byte> read_secret_file(const std::filesystem::path& path);
// The secret from `text` (an environment variable's value), same rules.
std::vector<std::byte> secret_from_text(const std::string& text, const std::string& origin);

}  // namespace kiln::cache
