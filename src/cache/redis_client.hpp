// RedisClient: hiredis connections to one Redis, shared by a cache and its
// build leases, with the failure policy of a cache that must never fail a
// compile:
//
// - Connections are pooled (a hiredis context is single-threaded; each call
//   checks one out, so threads never share a context) and opened lazily with
//   a connect timeout; every command has a socket timeout.
// - A connection failure (refused, reset, timed out, Redis LOADING after a
//   restart) puts the client "down": one warning per outage, and until
//   `retry` has passed every call returns at once without touching the
//   network, so a dead Redis costs a compile nothing but misses. The first
//   call after `retry` tries again; when it succeeds the client is up and a
//   later failure is a new outage (warned again).
// - A pooled connection that fails is retried once on a fresh connection
//   before declaring an outage: after Redis restarts, every idle connection
//   is dead but Redis is fine.
// - An error reply (OOM under maxmemory noeviction, NOPERM from an ACL, a
//   READONLY replica) is not an outage: warned once per kind, the call fails.
//
// Thread-safety: every method may be called from several threads at once.
#pragma once

#include <hiredis/hiredis.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "cache/redis_options.hpp"

namespace kiln::cache {

struct RedisReplyDeleter {
  void operator()(redisReply* reply) const { freeReplyObject(reply); }
};
using RedisReply = std::unique_ptr<redisReply, RedisReplyDeleter>;

// The connection is unusable (I/O error, timeout, Redis not serving).
class RedisIoError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};
// Redis answered with an error reply.
class RedisReplyError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// One hiredis context: connected, authenticated, on the right db.
class RedisConnection {
 public:
  using Args = std::vector<std::string_view>;

  // Throws RedisIoError.
  explicit RedisConnection(const RedisOptions& options);

  // One command. Throws RedisIoError or RedisReplyError; a nil reply is a
  // reply of type REDIS_REPLY_NIL.
  RedisReply command(const Args& args);
  // Several commands in one round trip; replies in order. Error replies are
  // returned, not thrown, so one failed command does not hide the others.
  std::vector<RedisReply> pipeline(const std::vector<Args>& commands);

 private:
  struct ContextDeleter {
    void operator()(redisContext* context) const { redisFree(context); }
  };
  [[noreturn]] void fail(const std::string& what);
  RedisReply read_reply();

  std::unique_ptr<redisContext, ContextDeleter> m_context;
};

class RedisClient {
 public:
  explicit RedisClient(RedisOptions options);

  const RedisOptions& options() const { return m_options; }

  // Runs `fn` with a connection. Nullopt when Redis is down (now or found
  // so by this call) or answered an error reply: the caller treats that as
  // a miss or a dropped save.
  template <typename F>
  auto call(F&& fn) -> std::optional<decltype(fn(std::declval<RedisConnection&>()))> {
    using Result = decltype(fn(std::declval<RedisConnection&>()));
    std::optional<Result> result;
    run([&](RedisConnection& connection) { result.emplace(fn(connection)); });
    return result;
  }

  bool down() const { return m_down.load(); }
  uint64_t outages() const { return m_outages.load(); }
  uint64_t errors() const { return m_errors.load(); }

 private:
  // True when `body` ran to the end.
  bool run(const std::function<void(RedisConnection&)>& body);
  std::unique_ptr<RedisConnection> checkout();
  void checkin(std::unique_ptr<RedisConnection> connection);
  void mark_down(const std::string& reason);
  void mark_up();

  RedisOptions m_options;
  std::mutex m_mutex;
  std::vector<std::unique_ptr<RedisConnection>> m_idle;  // guarded by m_mutex
  std::chrono::steady_clock::time_point m_retry_at;      // guarded by m_mutex
  std::atomic<bool> m_down{false};
  std::atomic<uint64_t> m_outages{0};
  std::atomic<uint64_t> m_errors{0};
};

}  // namespace kiln::cache
