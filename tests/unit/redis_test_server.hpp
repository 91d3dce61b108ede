// A real redis-server for tests: started on a free loopback port (and a unix
// socket) with a temp dir and no persistence, stopped by the destructor.
// Tests call REQUIRE_REDIS_SERVER() first: without the binary they skip
// with a message (scripts/install-deps installs redis-server, so CI runs
// them).
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "test_helpers.hpp"

extern char** environ;

namespace kiln::testing {

inline std::optional<std::filesystem::path> redis_server_binary() {
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/bin:/usr/sbin";
  size_t start = 0;
  while (start <= dirs.size()) {
    size_t colon = dirs.find(':', start);
    if (colon == std::string::npos) colon = dirs.size();
    std::filesystem::path candidate =
        std::filesystem::path(dirs.substr(start, colon - start)) / "redis-server";
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    start = colon + 1;
  }
  return std::nullopt;
}

#define REQUIRE_REDIS_SERVER()                                                                        \
  do {                                                                                                \
    if (!::kiln::testing::redis_server_binary()) {                                                    \
      GTEST_SKIP()                                                                                    \
          << "redis-server is not installed (scripts/install-deps installs it): Redis tests skipped"; \
    }                                                                                                 \
  } while (0)

class RedisTestServer {
 public:
  explicit RedisTestServer(std::vector<std::string> extra_args = {})
      : m_binary(redis_server_binary().value()), m_extra(std::move(extra_args)), m_port(free_port()) {
    start();
  }
  ~RedisTestServer() { stop(); }
  RedisTestServer(const RedisTestServer&) = delete;
  RedisTestServer& operator=(const RedisTestServer&) = delete;

  int port() const { return m_port; }
  pid_t pid() const { return m_pid; }
  std::filesystem::path socket_path() const { return m_dir / "redis.sock"; }
  // "redis://127.0.0.1:PORT/0?QUERY"
  std::string uri(const std::string& query = "") const {
    return "redis://127.0.0.1:" + std::to_string(m_port) + "/0" + (query.empty() ? "" : "?" + query);
  }

  // Starts (again) on the same port, empty (no persistence).
  void start() {
    std::vector<std::string> args{m_binary.string(),
                                  "--port",
                                  std::to_string(m_port),
                                  "--bind",
                                  "127.0.0.1",
                                  "--save",
                                  "",
                                  "--appendonly",
                                  "no",
                                  "--dir",
                                  m_dir.path().string(),
                                  "--unixsocket",
                                  socket_path().string(),
                                  "--unixsocketperm",
                                  "700",
                                  "--logfile",
                                  (m_dir / "redis.log").string(),
                                  "--daemonize",
                                  "no"};
    args.insert(args.end(), m_extra.begin(), m_extra.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    // Its output goes to /dev/null, so it never holds a pipe of the test
    // (a test reading its own output through a pipe would wait for it).
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
    int spawned = ::posix_spawn(&m_pid, m_binary.c_str(), &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (spawned != 0) throw std::runtime_error("cannot start redis-server");
    for (int i = 0; i < 200; ++i) {  // up to 10 s on a loaded machine
      if (ping()) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    stop();
    throw std::runtime_error("redis-server did not come up on port " + std::to_string(m_port));
  }

  // Kills it hard (a crash, not a shutdown) and waits for it.
  void stop() {
    if (m_pid <= 0) return;
    ::kill(m_pid, SIGKILL);
    int status = 0;
    ::waitpid(m_pid, &status, 0);
    m_pid = -1;
  }
  // Freezes or thaws it: a Redis that is there but does not answer.
  void pause() { ::kill(m_pid, SIGSTOP); }
  void resume() { ::kill(m_pid, SIGCONT); }

  // One command on a fresh connection; the reply as text ("(nil)" for nil,
  // integers in decimal, arrays joined by '\n').
  std::string command(const std::vector<std::string>& args) const {
    redisContext* c = redisConnect("127.0.0.1", m_port);
    if (!c || c->err) {
      if (c) redisFree(c);
      throw std::runtime_error("cannot connect to the test redis");
    }
    std::vector<const char*> argv;
    std::vector<size_t> lengths;
    for (const auto& a : args) {
      argv.push_back(a.data());
      lengths.push_back(a.size());
    }
    auto* reply = static_cast<redisReply*>(
        redisCommandArgv(c, static_cast<int>(argv.size()), argv.data(), lengths.data()));
    std::string text = reply ? to_text(reply) : "(error)";
    if (reply) freeReplyObject(reply);
    redisFree(c);
    return text;
  }

 private:
  static std::string to_text(const redisReply* r) {
    switch (r->type) {
      case REDIS_REPLY_NIL:
        return "(nil)";
      case REDIS_REPLY_INTEGER:
        return std::to_string(r->integer);
      case REDIS_REPLY_ARRAY: {
        std::string out;
        for (size_t i = 0; i < r->elements; ++i) out += (i ? "\n" : "") + to_text(r->element[i]);
        return out;
      }
      default:
        return std::string(r->str, r->len);
    }
  }

  bool ping() const {
    timeval tv{0, 200'000};
    redisContext* c = redisConnectWithTimeout("127.0.0.1", m_port, tv);
    bool ok = false;
    if (c && !c->err) {
      auto* reply = static_cast<redisReply*>(redisCommand(c, "PING"));
      ok = reply != nullptr;  // PONG, or NOAUTH from a server with a password: up either way
      if (reply) freeReplyObject(reply);
    }
    if (c) redisFree(c);
    return ok;
  }

  static int free_port() {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    socklen_t length = sizeof addr;
    if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &length) != 0) {
      if (fd >= 0) ::close(fd);
      throw std::runtime_error("no free loopback port");
    }
    ::close(fd);
    return ntohs(addr.sin_port);
  }

  std::filesystem::path m_binary;
  std::vector<std::string> m_extra;
  TempDir m_dir;
  int m_port;
  pid_t m_pid = -1;
};

}  // namespace kiln::testing
