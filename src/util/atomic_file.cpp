#include "util/atomic_file.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <utility>

namespace kiln {

namespace {

std::filesystem::path folder_of(const std::filesystem::path& path) {
  auto parent = path.parent_path();
  return parent.empty() ? std::filesystem::path(".") : parent;
}

}  // namespace

AtomicFile::AtomicFile(std::filesystem::path target) : m_target(std::move(target)) {
  // Not mkstemp: it creates mode 0600, and a cache folder shared by several
  // users needs the mode the umask allows, which only open() applies safely
  // (reading the umask means setting it, racing other threads).
  static std::atomic<uint64_t> counter{0};
  static const uint64_t salt = std::random_device{}();
  auto folder = folder_of(m_target);
  for (int attempt = 0; attempt < 16; ++attempt) {
    char suffix[64];
    std::snprintf(suffix, sizeof suffix, ".tmp.%d.%llx.%llx", static_cast<int>(::getpid()),
                  static_cast<unsigned long long>(counter.fetch_add(1)),
                  static_cast<unsigned long long>(salt + static_cast<uint64_t>(attempt)));
    auto candidate = folder / ("." + m_target.filename().string() + suffix);
    m_fd = ::open(candidate.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (m_fd >= 0) {
      m_temp = std::move(candidate);
      return;
    }
    if (errno != EEXIST) break;
  }
  fail("cannot create a temp file next to " + m_target.string());
}

AtomicFile::~AtomicFile() { discard(); }

bool AtomicFile::fail(const std::string& what) {
  if (m_error.empty()) m_error = what + ": " + std::strerror(errno);
  return false;
}

void AtomicFile::discard() {
  if (m_fd >= 0) {
    ::close(m_fd);
    m_fd = -1;
  }
  if (!m_temp.empty()) {
    ::unlink(m_temp.c_str());
    m_temp.clear();
  }
}

bool AtomicFile::write(std::span<const std::byte> bytes) {
  if (!ok() || m_fd < 0) return false;
  const auto* data = reinterpret_cast<const char*>(bytes.data());
  size_t left = bytes.size();
  while (left > 0) {
    ssize_t n = ::write(m_fd, data, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail("cannot write " + m_temp.string());
    }
    data += n;
    left -= static_cast<size_t>(n);
  }
  return true;
}

bool AtomicFile::write(std::string_view bytes) {
  return write(std::as_bytes(std::span(bytes.data(), bytes.size())));
}

bool AtomicFile::commit() {
  if (!ok() || m_fd < 0) return false;
  if (::fsync(m_fd) != 0) {
    fail("cannot fsync " + m_temp.string());
    discard();
    return false;
  }
  if (::close(std::exchange(m_fd, -1)) != 0) {
    fail("cannot close " + m_temp.string());
    discard();
    return false;
  }
  if (::rename(m_temp.c_str(), m_target.c_str()) != 0) {
    fail("cannot rename " + m_temp.string() + " to " + m_target.string());
    discard();
    return false;
  }
  m_temp.clear();
  // Makes the rename itself durable; failure here loses nothing that a
  // reader could observe, so it is not reported.
  int dir = ::open(folder_of(m_target).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
  return true;
}

}  // namespace kiln
