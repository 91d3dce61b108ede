// CacheFs: the file operations the disk engine cache performs, behind a small
// interface (LevelDB's Env, reduced to what the cache needs), so tests can
// inject failures (disk full, read-only file system, failed renames) that are
// hard to produce for real, especially as root.
//
// Every operation reports failure through IoStatus (an errno and a message
// naming the path), never by throwing. write_file_atomic() publishes all the
// bytes or none: a reader sees the old file, the complete new file, or no file.
// Locks are not part of the interface: the cache takes them with LockFile.
//
// Thread-safety: implementations may be called from several threads at once.
// Ownership: the cache holds its CacheFs through a shared_ptr.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace kiln::cache {

struct IoStatus {
  int error = 0;  // errno; 0 for success
  std::string message;

  bool ok() const { return error == 0; }
  static IoStatus success() { return {}; }
  // "<what>: <strerror(error)>"
  static IoStatus failure(int error, const std::string& what);
};

struct DirEntry {
  std::string name;
  bool is_dir = false;
  bool is_regular = false;
  uint64_t size = 0;
  int64_t mtime_ns = 0;  // since the Unix epoch
};

class CacheFs {
 public:
  virtual ~CacheFs() = default;
  // Like mkdir -p; success if the folder already exists.
  virtual IoStatus create_directories(const std::filesystem::path& dir) = 0;
  // Temp file in the target's folder, fsync, mtime set to now, rename.
  virtual IoStatus write_file_atomic(const std::filesystem::path& target,
                                     std::span<const std::byte> bytes) = 0;
  // ENOENT when the file does not exist.
  virtual IoStatus read_file(const std::filesystem::path& file, std::vector<std::byte>& out) = 0;
  // Sets the mtime to the current time with the clock's full resolution, so
  // that mtime order is access order even within one kernel clock tick.
  virtual IoStatus set_mtime_now(const std::filesystem::path& file) = 0;
  // ENOENT when the file does not exist.
  virtual IoStatus remove_file(const std::filesystem::path& file) = 0;
  virtual IoStatus rename_file(const std::filesystem::path& from, const std::filesystem::path& to) = 0;
  // The folder's entries other than "." and "..", not followed through
  // symlinks. ENOENT when the folder does not exist.
  virtual IoStatus list_dir(const std::filesystem::path& dir, std::vector<DirEntry>& out) = 0;
};

// The real file system (POSIX calls, AtomicFile for writes).
std::shared_ptr<CacheFs> posix_cache_fs();

// Forwards every call to a target; a test double overrides only what it needs.
class CacheFsWrapper : public CacheFs {
 public:
  explicit CacheFsWrapper(std::shared_ptr<CacheFs> target) : m_target(std::move(target)) {}

  IoStatus create_directories(const std::filesystem::path& dir) override {
    return m_target->create_directories(dir);
  }
  IoStatus write_file_atomic(const std::filesystem::path& target, std::span<const std::byte> bytes) override {
    return m_target->write_file_atomic(target, bytes);
  }
  IoStatus read_file(const std::filesystem::path& file, std::vector<std::byte>& out) override {
    return m_target->read_file(file, out);
  }
  IoStatus set_mtime_now(const std::filesystem::path& file) override { return m_target->set_mtime_now(file); }
  IoStatus remove_file(const std::filesystem::path& file) override { return m_target->remove_file(file); }
  IoStatus rename_file(const std::filesystem::path& from, const std::filesystem::path& to) override {
    return m_target->rename_file(from, to);
  }
  IoStatus list_dir(const std::filesystem::path& dir, std::vector<DirEntry>& out) override {
    return m_target->list_dir(dir, out);
  }

 protected:
  CacheFs& target() { return *m_target; }

 private:
  std::shared_ptr<CacheFs> m_target;
};

}  // namespace kiln::cache
