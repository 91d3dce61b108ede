// LockFile: an exclusive, advisory, inter-process lock held on a separate
// "<something>.lock" file, released when the object dies.
//
// The lock is flock(2) on a file descriptor, so the kernel drops it when the
// holder exits or crashes: there are no stale locks to detect or break (the
// reason ccache's LockFile needs a staleness rule). The lock file itself is
// left in place on release; deleting it would let a waiter lock an unlinked
// inode while a newcomer locks a fresh one. flock locks belong to an open file
// description, so two LockFile objects in one process exclude each other too.
//
// Failure to create or lock the file is an expected condition (read-only
// folder, timeout): acquire() reports it through its result and error(),
// never by throwing.
//
// Thread-safety: one object is used by one thread at a time; distinct objects
// on the same path may be used concurrently from any threads or processes.
// Generic: depends on nothing kiln-specific, a candidate for src/util/.
#pragma once

#include <chrono>
#include <filesystem>
#include <string>

namespace kiln {

class LockFile {
 public:
  explicit LockFile(std::filesystem::path path);
  ~LockFile();  // releases the lock if held
  LockFile(LockFile&& other) noexcept;
  LockFile& operator=(LockFile&& other) noexcept;
  LockFile(const LockFile&) = delete;
  LockFile& operator=(const LockFile&) = delete;

  // Creates the lock file if needed and waits up to `timeout` for the lock.
  // False (with error() set) when the file cannot be created or the wait
  // times out.
  [[nodiscard]] bool acquire(std::chrono::milliseconds timeout = std::chrono::seconds(30));
  // One attempt, no waiting.
  [[nodiscard]] bool try_acquire();
  void release();

  bool acquired() const { return m_fd >= 0; }
  const std::filesystem::path& path() const { return m_path; }
  const std::string& error() const { return m_error; }

 private:
  // One attempt; sets `would_block` when another holder has the lock.
  bool lock_once(bool& would_block);

  std::filesystem::path m_path;
  int m_fd = -1;  // open and locked, or -1
  std::string m_error;
};

}  // namespace kiln
