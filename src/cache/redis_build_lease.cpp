#include "cache/redis_build_lease.hpp"

#include <random>

#include "util/log.hpp"

namespace kiln::cache {

namespace {

constexpr const char* k_renew_script =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else "
    "return 0 end";
constexpr const char* k_release_script =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

}  // namespace

std::string random_hex(size_t bytes) {
  static constexpr char k_digits[] = "0123456789abcdef";
  std::random_device device;
  std::string out;
  for (size_t i = 0; i < bytes; ++i) {
    auto byte = static_cast<unsigned>(device()) & 0xffu;
    out += k_digits[byte >> 4];
    out += k_digits[byte & 0xf];
  }
  return out;
}

RedisBuildLease::Outcome RedisBuildLease::try_take(const std::shared_ptr<RedisClient>& client,
                                                   const std::string& lease_key,
                                                   std::unique_ptr<RedisBuildLease>& lease) {
  std::string token = random_hex(16);
  std::string ms = std::to_string(client->options().lease.count());
  auto reply = client->call([&](RedisConnection& c) {
    auto r = c.command({"SET", lease_key, token, "NX", "PX", ms});
    return r->type == REDIS_REPLY_STATUS;  // OK; nil when someone holds it
  });
  if (!reply) return Outcome::unavailable;
  if (!*reply) return Outcome::held_by_other;
  lease = std::make_unique<RedisBuildLease>(Passkey{}, client, lease_key, std::move(token));
  return Outcome::taken;
}

RedisBuildLease::RedisBuildLease(Passkey, std::shared_ptr<RedisClient> client, std::string key,
                                 std::string token)
    : m_client(std::move(client)), m_key(std::move(key)), m_token(std::move(token)) {
  m_renewer = std::jthread([this](const std::stop_token& stop) { renew_loop(stop); });
}

RedisBuildLease::~RedisBuildLease() {
  m_renewer.request_stop();
  m_wake.notify_all();
  if (m_renewer.joinable()) m_renewer.join();
  if (!held()) return;
  // If Redis is down the lease simply expires.
  (void)m_client->call([&](RedisConnection& c) {
    return c.command({"EVAL", k_release_script, "1", m_key, m_token})->integer;
  });
}

bool RedisBuildLease::held() const {
  std::lock_guard lock(m_mutex);
  return m_held;
}

void RedisBuildLease::renew_loop(const std::stop_token& stop) {
  const auto period = m_client->options().lease / 3;
  const std::string ms = std::to_string(m_client->options().lease.count());
  std::unique_lock lock(m_mutex);
  while (!stop.stop_requested()) {
    m_wake.wait_for(lock, stop, period, [] { return false; });
    if (stop.stop_requested()) break;
    lock.unlock();
    auto renewed = m_client->call([&](RedisConnection& c) {
      return c.command({"EVAL", k_renew_script, "1", m_key, m_token, ms})->integer;
    });
    lock.lock();
    if (renewed && *renewed == 0) {
      m_held = false;
      log::warn("engine cache: the build lease " + m_key +
                " expired while building (Redis was unreachable for longer than lease_ms); another host may "
                "build the same engine");
      return;
    }
  }
}

}  // namespace kiln::cache
