// A read-only memory mapping of a whole file, unmapped when the last owner
// lets go. Used to borrow large weight files (ONNX external data) without
// copying them into process memory: pages are read on demand and may be
// dropped by the kernel under pressure.
#pragma once

#include <cstddef>
#include <filesystem>
#include <memory>
#include <span>

namespace kiln {

class MappedFile {
 public:
  // Throws kiln::Error(io) naming the path if it cannot be opened or mapped.
  static std::shared_ptr<const MappedFile> open(const std::filesystem::path& path);
  // Maps the file open on `fd` (which stays open, the caller's to close), for
  // a caller that also reads that very file through the descriptor. `path`
  // names it in errors.
  static std::shared_ptr<const MappedFile> map(int fd, const std::filesystem::path& path);

  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  std::span<const std::byte> bytes() const { return {m_data, m_size}; }

 private:
  struct PassKey {};  // only open() constructs, yet make_shared can reach the constructor

 public:
  MappedFile(PassKey, const std::byte* data, size_t size) : m_data(data), m_size(size) {}

 private:
  const std::byte* m_data;
  size_t m_size;
};

}  // namespace kiln
