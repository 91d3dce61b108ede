// FaultInjectionFs: a CacheFs for tests that fails chosen operations with a
// chosen errno (ENOSPC for a full disk, EROFS for a read-only mount, EACCES
// for a folder of another user, EXDEV for a failed rename, EIO for a dying
// disk) and forwards everything else to a real CacheFs.
//
// An injected write failure is realistic: it strikes at a chosen stage of
// the temp-file-then-rename publish (WriteStage) and leaves on disk what
// AtomicFile leaves at that stage before it cleans up: nothing (the temp file
// cannot be created), half the bytes (a short write: disk full mid-write), or
// the complete but uncommitted temp file (fsync or rename refused). Tests can
// then check that no temp file and no partial entry survive, and that an
// entry saved before is still served intact.
//
// Thread-safety: all methods may be called concurrently.
#pragma once

#include <array>
#include <mutex>

#include "cache/cache_fs.hpp"

namespace kiln::cache {

enum class FsOp { create_directories, write, read, set_mtime, remove, rename, list, count_ };

// Where in write_file_atomic an injected write fault strikes.
enum class WriteStage { create, short_write, fsync, rename };

class FaultInjectionFs final : public CacheFsWrapper {
 public:
  explicit FaultInjectionFs(std::shared_ptr<CacheFs> target = posix_cache_fs());

  // The next `times` calls of `op` fail with `error`; times < 0: every call
  // until clear(). A write fails as a short write.
  void inject(FsOp op, int error, int times = -1);
  // The next `times` writes fail at `stage` with `error`.
  void inject_write(WriteStage stage, int error, int times = -1);
  void clear();
  int calls(FsOp op) const;
  int failures(FsOp op) const;

  IoStatus create_directories(const std::filesystem::path& dir) override;
  IoStatus write_file_atomic(const std::filesystem::path& target, std::span<const std::byte> bytes) override;
  IoStatus read_file(const std::filesystem::path& file, std::vector<std::byte>& out) override;
  IoStatus set_mtime_now(const std::filesystem::path& file) override;
  IoStatus remove_file(const std::filesystem::path& file) override;
  IoStatus rename_file(const std::filesystem::path& from, const std::filesystem::path& to) override;
  IoStatus list_dir(const std::filesystem::path& dir, std::vector<DirEntry>& out) override;

 private:
  struct Fault {
    int error = 0;
    int times = 0;  // < 0: unlimited
    int calls = 0;
    int failures = 0;
    WriteStage stage = WriteStage::short_write;  // FsOp::write only
  };
  // Counts the call; the errno to fail with, or 0 to forward.
  int take(FsOp op, WriteStage* stage = nullptr);

  mutable std::mutex m_mutex;
  std::array<Fault, static_cast<size_t>(FsOp::count_)> m_faults{};
};

}  // namespace kiln::cache
