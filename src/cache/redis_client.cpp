#include "cache/redis_client.hpp"

#include <sys/time.h>

#include "util/log.hpp"

namespace kiln::cache {

namespace {

timeval to_timeval(std::chrono::milliseconds ms) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(ms.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms.count() % 1000) * 1000);
  return tv;
}

// Error replies that mean "Redis is not serving right now" rather than "this
// command is wrong": a restarting server loading its data, a replica cut off
// from its master, a busy script.
bool is_transient(std::string_view message) {
  return message.starts_with("LOADING") || message.starts_with("MASTERDOWN") || message.starts_with("BUSY") ||
         message.starts_with("TRYAGAIN");
}

constexpr size_t k_max_idle = 8;

}  // namespace

RedisConnection::RedisConnection(const RedisOptions& o) {
  timeval connect_timeout = to_timeval(o.connect_timeout);
  redisContext* context = o.unix_path.empty()
                              ? redisConnectWithTimeout(o.host.c_str(), o.port, connect_timeout)
                              : redisConnectUnixWithTimeout(o.unix_path.c_str(), connect_timeout);
  if (!context) throw RedisIoError("cannot allocate a Redis context");
  m_context.reset(context);
  if (context->err) fail("cannot connect");
  if (redisSetTimeout(context, to_timeval(o.command_timeout)) != REDIS_OK)
    fail("cannot set the command timeout");
  if (o.unix_path.empty()) (void)redisEnableKeepAlive(context);
  try {
    if (!o.password.empty()) {
      if (o.user.empty())
        command({"AUTH", o.password});
      else
        command({"AUTH", o.user, o.password});
    }
    if (o.db != 0) {
      std::string db = std::to_string(o.db);
      command({"SELECT", db});
    }
  } catch (const RedisReplyError& e) {
    // Wrong password or db: Redis is useless to us until the config changes,
    // which is an outage from the cache's point of view.
    throw RedisIoError(std::string("connection setup refused: ") + e.what());
  }
}

void RedisConnection::fail(const std::string& what) {
  std::string detail = m_context && m_context->err ? std::string(m_context->errstr) : "unknown error";
  throw RedisIoError(what + ": " + detail);
}

RedisReply RedisConnection::read_reply() {
  void* raw = nullptr;
  if (redisGetReply(m_context.get(), &raw) != REDIS_OK || !raw) fail("no reply");
  return RedisReply(static_cast<redisReply*>(raw));
}

RedisReply RedisConnection::command(const Args& args) {
  auto replies = pipeline({args});
  RedisReply& reply = replies.front();
  if (reply->type == REDIS_REPLY_ERROR) {
    std::string message(reply->str, reply->len);
    if (is_transient(message)) throw RedisIoError("Redis is not serving: " + message);
    throw RedisReplyError(message);
  }
  return std::move(reply);
}

std::vector<RedisReply> RedisConnection::pipeline(const std::vector<Args>& commands) {
  std::vector<const char*> argv;
  std::vector<size_t> lengths;
  for (const Args& args : commands) {
    argv.clear();
    lengths.clear();
    for (std::string_view a : args) {
      argv.push_back(a.data());
      lengths.push_back(a.size());
    }
    if (redisAppendCommandArgv(m_context.get(), static_cast<int>(argv.size()), argv.data(), lengths.data()) !=
        REDIS_OK) {
      fail("cannot send a command");
    }
  }
  std::vector<RedisReply> replies;
  replies.reserve(commands.size());
  for (size_t i = 0; i < commands.size(); ++i) {
    replies.push_back(read_reply());
    if (replies.back()->type == REDIS_REPLY_ERROR &&
        is_transient(std::string_view(replies.back()->str, replies.back()->len))) {
      throw RedisIoError("Redis is not serving: " + std::string(replies.back()->str, replies.back()->len));
    }
  }
  return replies;
}

RedisClient::RedisClient(RedisOptions options) : m_options(std::move(options)) {}

std::unique_ptr<RedisConnection> RedisClient::checkout() {
  {
    std::lock_guard lock(m_mutex);
    if (!m_idle.empty()) {
      auto connection = std::move(m_idle.back());
      m_idle.pop_back();
      return connection;
    }
  }
  return nullptr;
}

void RedisClient::checkin(std::unique_ptr<RedisConnection> connection) {
  std::lock_guard lock(m_mutex);
  if (m_idle.size() < k_max_idle) m_idle.push_back(std::move(connection));
}

bool RedisClient::run(const std::function<void(RedisConnection&)>& body) {
  if (m_down.load()) {
    std::lock_guard lock(m_mutex);
    if (std::chrono::steady_clock::now() < m_retry_at) return false;
    // Claim this retry, so concurrent callers do not all wait on a connect.
    m_retry_at = std::chrono::steady_clock::now() + m_options.retry;
  }
  for (int attempt = 0; attempt < 2; ++attempt) {
    auto connection = checkout();
    bool pooled = connection != nullptr;
    try {
      if (!connection) connection = std::make_unique<RedisConnection>(m_options);
      body(*connection);
      checkin(std::move(connection));
      mark_up();
      return true;
    } catch (const RedisIoError& e) {
      if (pooled) continue;  // a stale idle connection: try once more on a fresh one
      mark_down(e.what());
      return false;
    } catch (const RedisReplyError& e) {
      // The connection is fine; the command was refused.
      checkin(std::move(connection));
      mark_up();
      ++m_errors;
      std::string message = e.what();
      log::warn_once("redis-reply:" + m_options.describe() + ":" + message.substr(0, message.find(' ')),
                     "engine cache: Redis at " + m_options.describe() + " refused a command: " + message +
                         " (the lookup or save is skipped)");
      return false;
    }
  }
  mark_down("connection lost");
  return false;
}

void RedisClient::mark_down(const std::string& reason) {
  {
    std::lock_guard lock(m_mutex);
    m_idle.clear();
    m_retry_at = std::chrono::steady_clock::now() + m_options.retry;
  }
  if (!m_down.exchange(true)) {
    ++m_outages;
    log::warn("engine cache: Redis at " + m_options.describe() + " is unreachable (" + reason +
              "); lookups miss and saves are dropped until it returns");
  }
}

void RedisClient::mark_up() {
  if (m_down.exchange(false)) log::info("engine cache: Redis at " + m_options.describe() + " is back");
}

}  // namespace kiln::cache
