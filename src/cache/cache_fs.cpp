#include "cache/cache_fs.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>

#include "util/atomic_file.hpp"

namespace kiln::cache {

IoStatus IoStatus::failure(int error, const std::string& what) {
  return IoStatus{error == 0 ? EIO : error, what + ": " + std::strerror(error == 0 ? EIO : error)};
}

namespace {

// An explicit timestamp needs ownership of the file (or CAP_FOWNER); in a
// folder shared by several users fall back to UTIME_NOW, which only needs
// write access and has the kernel's coarser clock.
int set_mtime(const char* path) {
  struct timespec now {};
  ::clock_gettime(CLOCK_REALTIME, &now);
  struct timespec times[2] = {now, now};
  if (::utimensat(AT_FDCWD, path, times, 0) == 0) return 0;
  if (errno != EPERM && errno != EACCES) return errno;
  return ::utimensat(AT_FDCWD, path, nullptr, 0) == 0 ? 0 : errno;
}

// AtomicFile keeps a message, not the errno; errno is the best guess left.
IoStatus from_atomic_file(const AtomicFile& file) { return IoStatus{errno != 0 ? errno : EIO, file.error()}; }

class PosixCacheFs final : public CacheFs {
 public:
  IoStatus create_directories(const std::filesystem::path& dir) override {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) return IoStatus::failure(ec.value(), "cannot create folder " + dir.string());
    // create_directories succeeds on an existing non-folder only on some
    // implementations; check what is there.
    if (!std::filesystem::is_directory(dir, ec))
      return IoStatus::failure(ENOTDIR, "cannot create folder " + dir.string());
    return IoStatus::success();
  }

  IoStatus write_file_atomic(const std::filesystem::path& target, std::span<const std::byte> bytes) override {
    AtomicFile file(target);
    if (!file.write(bytes)) return from_atomic_file(file);
    // Stamped before the rename, so the entry appears with its final mtime.
    if (int err = set_mtime(file.temp_path().c_str()); err != 0) {
      return IoStatus::failure(err, "cannot set the mtime of " + file.temp_path().string());
    }
    if (!file.commit()) return from_atomic_file(file);
    return IoStatus::success();
  }

  IoStatus read_file(const std::filesystem::path& path, std::vector<std::byte>& out) override {
    out.clear();
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return IoStatus::failure(errno, "cannot open " + path.string());
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      int err = errno;
      ::close(fd);
      return IoStatus::failure(err, "cannot stat " + path.string());
    }
    out.resize(static_cast<size_t>(st.st_size));
    size_t done = 0;
    while (done < out.size()) {
      ssize_t n = ::read(fd, out.data() + done, out.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        int err = n < 0 ? errno : EIO;  // shrank under us: not an entry we published
        ::close(fd);
        out.clear();
        return IoStatus::failure(err, "cannot read " + path.string());
      }
      done += static_cast<size_t>(n);
    }
    ::close(fd);
    return IoStatus::success();
  }

  IoStatus set_mtime_now(const std::filesystem::path& path) override {
    if (int err = set_mtime(path.c_str()); err != 0) {
      return IoStatus::failure(err, "cannot set the mtime of " + path.string());
    }
    return IoStatus::success();
  }

  IoStatus remove_file(const std::filesystem::path& path) override {
    if (::unlink(path.c_str()) != 0) return IoStatus::failure(errno, "cannot remove " + path.string());
    return IoStatus::success();
  }

  IoStatus rename_file(const std::filesystem::path& from, const std::filesystem::path& to) override {
    if (::rename(from.c_str(), to.c_str()) != 0) {
      return IoStatus::failure(errno, "cannot rename " + from.string() + " to " + to.string());
    }
    return IoStatus::success();
  }

  IoStatus list_dir(const std::filesystem::path& dir, std::vector<DirEntry>& out) override {
    out.clear();
    int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir_fd < 0) return IoStatus::failure(errno, "cannot open folder " + dir.string());
    DIR* stream = ::fdopendir(dir_fd);
    if (!stream) {
      int err = errno;
      ::close(dir_fd);
      return IoStatus::failure(err, "cannot list folder " + dir.string());
    }
    while (struct dirent* item = ::readdir(stream)) {
      std::string name = item->d_name;
      if (name == "." || name == "..") continue;
      struct stat st {};
      // A file removed between readdir and stat is simply gone.
      if (::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
      DirEntry entry;
      entry.name = std::move(name);
      entry.is_dir = S_ISDIR(st.st_mode);
      entry.is_regular = S_ISREG(st.st_mode);
      entry.size = static_cast<uint64_t>(st.st_size);
      entry.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
      out.push_back(std::move(entry));
    }
    ::closedir(stream);  // closes dir_fd
    return IoStatus::success();
  }
};

}  // namespace

std::shared_ptr<CacheFs> posix_cache_fs() {
  static const std::shared_ptr<CacheFs> instance = std::make_shared<PosixCacheFs>();
  return instance;
}

}  // namespace kiln::cache
