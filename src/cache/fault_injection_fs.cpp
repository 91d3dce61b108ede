#include "cache/fault_injection_fs.hpp"

#include "util/atomic_file.hpp"

namespace kiln::cache {

FaultInjectionFs::FaultInjectionFs(std::shared_ptr<CacheFs> target) : CacheFsWrapper(std::move(target)) {}

void FaultInjectionFs::inject(FsOp op, int error, int times) {
  std::lock_guard lock(m_mutex);
  auto& fault = m_faults[static_cast<size_t>(op)];
  fault.error = error;
  fault.times = times;
  fault.stage = WriteStage::short_write;
}

void FaultInjectionFs::inject_write(WriteStage stage, int error, int times) {
  std::lock_guard lock(m_mutex);
  auto& fault = m_faults[static_cast<size_t>(FsOp::write)];
  fault.error = error;
  fault.times = times;
  fault.stage = stage;
}

void FaultInjectionFs::clear() {
  std::lock_guard lock(m_mutex);
  for (auto& fault : m_faults) {
    fault.error = 0;
    fault.times = 0;
  }
}

int FaultInjectionFs::calls(FsOp op) const {
  std::lock_guard lock(m_mutex);
  return m_faults[static_cast<size_t>(op)].calls;
}

int FaultInjectionFs::failures(FsOp op) const {
  std::lock_guard lock(m_mutex);
  return m_faults[static_cast<size_t>(op)].failures;
}

int FaultInjectionFs::take(FsOp op, WriteStage* stage) {
  std::lock_guard lock(m_mutex);
  auto& fault = m_faults[static_cast<size_t>(op)];
  if (stage) *stage = fault.stage;
  ++fault.calls;
  if (fault.error == 0 || fault.times == 0) return 0;
  if (fault.times > 0) --fault.times;
  ++fault.failures;
  return fault.error;
}

IoStatus FaultInjectionFs::create_directories(const std::filesystem::path& dir) {
  if (int err = take(FsOp::create_directories))
    return IoStatus::failure(err, "injected: cannot create " + dir.string());
  return CacheFsWrapper::create_directories(dir);
}

IoStatus FaultInjectionFs::write_file_atomic(const std::filesystem::path& target,
                                             std::span<const std::byte> bytes) {
  WriteStage stage{};
  if (int err = take(FsOp::write, &stage)) {
    // What reaches the disk before the failure, then cleaned up as
    // AtomicFile cleans up (its destructor removes the uncommitted temp file).
    const char* what = "create a temp file for";
    if (stage != WriteStage::create) {
      AtomicFile file(target);
      bool whole = stage == WriteStage::fsync || stage == WriteStage::rename;
      (void)file.write(whole ? bytes : bytes.first(bytes.size() / 2));
      what = stage == WriteStage::short_write ? "write"
             : stage == WriteStage::fsync     ? "fsync"
                                              : "rename into place";
    }
    return IoStatus::failure(err, std::string("injected: cannot ") + what + " " + target.string());
  }
  return CacheFsWrapper::write_file_atomic(target, bytes);
}

IoStatus FaultInjectionFs::read_file(const std::filesystem::path& file, std::vector<std::byte>& out) {
  if (int err = take(FsOp::read)) return IoStatus::failure(err, "injected: cannot read " + file.string());
  return CacheFsWrapper::read_file(file, out);
}

IoStatus FaultInjectionFs::set_mtime_now(const std::filesystem::path& file) {
  if (int err = take(FsOp::set_mtime))
    return IoStatus::failure(err, "injected: cannot touch " + file.string());
  return CacheFsWrapper::set_mtime_now(file);
}

IoStatus FaultInjectionFs::remove_file(const std::filesystem::path& file) {
  if (int err = take(FsOp::remove)) return IoStatus::failure(err, "injected: cannot remove " + file.string());
  return CacheFsWrapper::remove_file(file);
}

IoStatus FaultInjectionFs::rename_file(const std::filesystem::path& from, const std::filesystem::path& to) {
  if (int err = take(FsOp::rename)) return IoStatus::failure(err, "injected: cannot rename " + from.string());
  return CacheFsWrapper::rename_file(from, to);
}

IoStatus FaultInjectionFs::list_dir(const std::filesystem::path& dir, std::vector<DirEntry>& out) {
  if (int err = take(FsOp::list)) return IoStatus::failure(err, "injected: cannot list " + dir.string());
  return CacheFsWrapper::list_dir(dir, out);
}

}  // namespace kiln::cache
