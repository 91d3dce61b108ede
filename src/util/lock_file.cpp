#include "util/lock_file.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>
#include <utility>

namespace kiln {

LockFile::LockFile(std::filesystem::path path) : m_path(std::move(path)) {}

LockFile::~LockFile() { release(); }

LockFile::LockFile(LockFile&& other) noexcept
    : m_path(std::move(other.m_path)),
      m_fd(std::exchange(other.m_fd, -1)),
      m_error(std::move(other.m_error)) {}

LockFile& LockFile::operator=(LockFile&& other) noexcept {
  if (this != &other) {
    release();
    m_path = std::move(other.m_path);
    m_fd = std::exchange(other.m_fd, -1);
    m_error = std::move(other.m_error);
  }
  return *this;
}

bool LockFile::lock_once(bool& would_block) {
  would_block = false;
  int fd = ::open(m_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0666);
  if (fd < 0) {
    m_error = "cannot create lock file " + m_path.string() + ": " + std::strerror(errno);
    return false;
  }
  int rc;
  do {
    rc = ::flock(fd, LOCK_EX | LOCK_NB);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    int err = errno;
    ::close(fd);
    would_block = err == EWOULDBLOCK;
    m_error = "cannot lock " + m_path.string() + ": " + std::strerror(err);
    return false;
  }
  m_fd = fd;
  m_error.clear();
  return true;
}

bool LockFile::try_acquire() {
  if (acquired()) return true;
  bool would_block = false;
  return lock_once(would_block);
}

bool LockFile::acquire(std::chrono::milliseconds timeout) {
  if (acquired()) return true;
  // Polling with LOCK_NB rather than a blocking flock() keeps the timeout
  // simple; backoff grows from 1 ms so short critical sections (a cache save)
  // are waited out promptly.
  auto deadline = std::chrono::steady_clock::now() + timeout;
  auto pause = std::chrono::milliseconds(1);
  while (true) {
    bool would_block = false;
    if (lock_once(would_block)) return true;
    if (!would_block) return false;
    if (std::chrono::steady_clock::now() >= deadline) {
      m_error =
          "timed out after " + std::to_string(timeout.count()) + " ms waiting for lock " + m_path.string();
      return false;
    }
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds(50));
  }
}

void LockFile::release() {
  if (m_fd >= 0) {
    // Closing the descriptor drops the flock.
    ::close(m_fd);
    m_fd = -1;
  }
}

}  // namespace kiln
