// RedisBuildLease: "this host is building key K", held in Redis so that a
// fleet builds each key once.
//
// - Taken with SET <lease key> <token> NX PX <lease_ms>; the token is random
//   per lease, so only its holder can renew or release it.
// - Renewed by a background thread every third of lease_ms (a Lua
//   compare-and-PEXPIRE), so a long build keeps it while a crashed or
//   partitioned builder loses it within lease_ms and another host takes
//   over.
// - Released on destruction by a Lua compare-and-delete: a lease that
//   expired and was taken by another host is never deleted by its old
//   holder.
//
// Thread-safety: one owner; the renewal thread is internal.
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "cache/redis_client.hpp"
#include "cache/store.hpp"

namespace kiln::cache {

class RedisBuildLease final : public BuildLease {
  struct Passkey {};  // only try_take() constructs a lease

 public:
  enum class Outcome { taken, held_by_other, unavailable };

  RedisBuildLease(Passkey, std::shared_ptr<RedisClient> client, std::string key, std::string token);

  // Tries once to take `lease_key`. On `taken`, `lease` holds it.
  static Outcome try_take(const std::shared_ptr<RedisClient>& client, const std::string& lease_key,
                          std::unique_ptr<RedisBuildLease>& lease);

  ~RedisBuildLease() override;
  RedisBuildLease(const RedisBuildLease&) = delete;
  RedisBuildLease& operator=(const RedisBuildLease&) = delete;

  const std::string& token() const { return m_token; }
  // False once a renewal found the lease gone (expired during an outage and
  // maybe taken by another host): the build goes on, perhaps twice.
  bool held() const;

 private:
  void renew_loop(const std::stop_token& stop);

  std::shared_ptr<RedisClient> m_client;
  std::string m_key;
  std::string m_token;
  mutable std::mutex m_mutex;
  std::condition_variable_any m_wake;
  bool m_held = true;  // guarded by m_mutex
  std::jthread m_renewer;
};

// A lease that holds nothing: the entry was published while we waited, so
// the caller loads again instead of building.
class NoBuildLease final : public BuildLease {};

// Random hex for tokens and entry generations (std::random_device).
std::string random_hex(size_t bytes);

}  // namespace kiln::cache
