// FaultInjectionFs: a CacheFs for tests that fails chosen operations with a
// chosen errno (ENOSPC for a full disk, EROFS for a read-only mount, EXDEV
// for a failed rename) and forwards everything else to a real CacheFs.
//
// An injected write failure is realistic: half the bytes go to a real temp
// file that is then abandoned uncommitted, exactly as AtomicFile behaves when
// the disk fills mid-write, so tests also check that no temp file and no
// partial entry are left behind.
//
// Thread-safety: all methods may be called concurrently.
#pragma once

#include <array>
#include <mutex>

#include "cache/cache_fs.hpp"

namespace kiln::cache {

enum class FsOp { create_directories, write, read, set_mtime, remove, rename, list, count_ };

class FaultInjectionFs final : public CacheFsWrapper {
 public:
  explicit FaultInjectionFs(std::shared_ptr<CacheFs> target = posix_cache_fs());

  // The next `times` calls of `op` fail with `error`; times < 0: every call
  // until clear().
  void inject(FsOp op, int error, int times = -1);
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
  };
  // Counts the call; the errno to fail with, or 0 to forward.
  int take(FsOp op);

  mutable std::mutex m_mutex;
  std::array<Fault, static_cast<size_t>(FsOp::count_)> m_faults{};
};

}  // namespace kiln::cache
