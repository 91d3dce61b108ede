#include "util/mapped_file.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "kiln/error.hpp"

namespace kiln {

namespace {
[[noreturn]] void fail(const std::filesystem::path& path, const char* what) {
  throw Error(ErrorCode::io, path.string() + ": cannot " + what + ": " + std::strerror(errno));
}
}  // namespace

std::shared_ptr<const MappedFile> MappedFile::open(const std::filesystem::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, "open");
  try {
    auto file = map(fd, path);
    ::close(fd);  // the mapping stays valid without the descriptor
    return file;
  } catch (...) {
    ::close(fd);
    throw;
  }
}

std::shared_ptr<const MappedFile> MappedFile::map(int fd, const std::filesystem::path& path) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) fail(path, "stat");
  auto size = static_cast<size_t>(st.st_size);
  void* addr = nullptr;
  if (size > 0) {
    addr = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (addr == MAP_FAILED) fail(path, "map");
  }
  return std::make_shared<const MappedFile>(PassKey{}, static_cast<const std::byte*>(addr), size);
}

MappedFile::~MappedFile() {
  if (m_size > 0) ::munmap(const_cast<std::byte*>(m_data), m_size);
}

}  // namespace kiln
