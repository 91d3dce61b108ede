// AtomicFile: writes a file so that readers see either the old contents or
// the complete new contents, never a partial write.
//
// The bytes go to a uniquely named temp file in the target's folder (same
// file system, so the final rename is atomic); commit() fsyncs it, renames it
// over the target and fsyncs the folder. commit() is explicit: the destructor
// never commits, it removes an uncommitted temp file, because committing on
// an early return or exception would publish half-written data.
//
// Failures (cannot create, disk full, rename refused) are expected: they are
// reported through bool results and error(), never thrown. After the first
// failure every later call fails and commit() leaves the target untouched.
//
// Thread-safety: one object is used by one thread at a time. Concurrent
// AtomicFiles on the same target are safe (last commit wins); callers that
// must not lose updates serialize read-merge-write with a LockFile.
// Generic: depends on nothing kiln-specific, a candidate for src/util/.
#pragma once

#include <cstddef>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>

namespace kiln {

class AtomicFile {
 public:
  // Creates the temp file "<folder>/.<name>.tmp.<pid>.<n>.<salt>" (hidden,
  // unique across threads and processes). The folder must exist.
  explicit AtomicFile(std::filesystem::path target);
  ~AtomicFile();  // removes the temp file unless committed
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  bool write(std::span<const std::byte> bytes);
  bool write(std::string_view bytes);
  // fsync, rename over the target, fsync the folder.
  [[nodiscard]] bool commit();

  bool ok() const { return m_error.empty(); }
  const std::string& error() const { return m_error; }
  const std::filesystem::path& target() const { return m_target; }
  const std::filesystem::path& temp_path() const { return m_temp; }

 private:
  bool fail(const std::string& what);
  void discard();

  std::filesystem::path m_target;
  std::filesystem::path m_temp;  // empty once committed or removed
  int m_fd = -1;
  std::string m_error;
};

}  // namespace kiln
