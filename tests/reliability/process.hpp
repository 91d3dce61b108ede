// Child processes for the reliability tests: started with posix_spawn (a
// fresh exec, never a bare fork of the test process), stdout and stderr to a
// file, killed with any signal, reaped. Header-only.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

extern char** environ;

namespace kiln::reliability {

class Child {
 public:
  // Starts argv[0] with its output (both streams) going to `log`.
  Child(const std::vector<std::string>& argv, const std::filesystem::path& log) : m_log(log) {
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    int rc = ::posix_spawn(&m_pid, args[0], &actions, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) throw std::runtime_error("cannot start " + argv[0]);
  }
  ~Child() {
    if (m_pid > 0 && !m_reaped) {
      ::kill(m_pid, SIGKILL);
      wait();
    }
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  pid_t pid() const { return m_pid; }
  void kill(int signal = SIGKILL) { ::kill(m_pid, signal); }

  // Blocks until the child ends; its exit code, or 128 + the signal.
  int wait() {
    if (!m_reaped) {
      int status = 0;
      while (::waitpid(m_pid, &status, 0) < 0 && errno == EINTR) {
      }
      m_status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      m_reaped = true;
    }
    return m_status;
  }
  // Nullopt while running.
  std::optional<int> poll() {
    if (m_reaped) return m_status;
    int status = 0;
    if (::waitpid(m_pid, &status, WNOHANG) != m_pid) return std::nullopt;
    m_status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    m_reaped = true;
    return m_status;
  }

  std::string output() const {
    std::ifstream in(m_log);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }

 private:
  pid_t m_pid = -1;
  std::filesystem::path m_log;
  bool m_reaped = false;
  int m_status = -1;
};

// The number after "name=" in `text`, or -1.
inline long long field_of(const std::string& text, const std::string& name) {
  auto at = text.find(" " + name + "=");
  if (at == std::string::npos) return -1;
  return std::atoll(text.c_str() + at + name.size() + 2);
}

// Long variants (make test-long) set KILN_LONG_TESTS=1.
inline bool long_tests() {
  const char* value = std::getenv("KILN_LONG_TESTS");
  return value && std::string(value) == "1";
}

}  // namespace kiln::reliability
