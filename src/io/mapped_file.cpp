#include "io/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "core/error.h"
#include "core/memory_limits.h"

namespace trit::engine {

MappedFile MappedFile::open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, ": cannot open: ", std::strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    fail(path, ": cannot stat: ", std::strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(path, ": not a regular file");
  }
  MappedFile f;
  f.size_ = uint64_t(st.st_size);
  if (f.size_ > 0) {
    void* m = mmap(nullptr, size_t(f.size_), PROT_READ, MAP_PRIVATE, fd, 0);
    const int e = errno;
    if (m == MAP_FAILED) {
      ::close(fd);
      fail(path, ": cannot map ", f.size_, " bytes: ", std::strerror(e), address_space_note());
    }
    f.data_ = static_cast<const uint8_t*>(m);
    f.fd_ = fd;
  } else {
    ::close(fd);
  }
  return f;
}

void MappedFile::release(const uint8_t* p, uint64_t n) const {
  if (data_ == nullptr || p < data_ || p + n > data_ + size_) return;
  const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (uintptr_t(p) + page - 1) / page * page;
  const uintptr_t end = (uintptr_t(p) + n) / page * page;
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

void MappedFile::prefetch(const uint8_t* p, uint64_t n) const {
  if (data_ == nullptr || n == 0 || p < data_ || p + n > data_ + size_) return;
  const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = uintptr_t(p) / page * page;
  const uintptr_t end = (uintptr_t(p) + n + page - 1) / page * page;
  madvise(reinterpret_cast<void*>(begin), end - begin, MADV_WILLNEED);
}

int MappedFile::read(const uint8_t* p, uint64_t n, uint8_t* dst) const {
  if (n == 0) return 0;
  if (fd_ < 0 || p < data_ || n > size_ || uint64_t(p - data_) > size_ - n) return EINVAL;
  uint64_t at = uint64_t(p - data_);
  while (n > 0) {
    const ssize_t got = ::pread(fd_, dst, size_t(std::min<uint64_t>(n, 1u << 30)), off_t(at));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) return errno;
    if (got == 0) return EIO;  // the file became shorter than its mapping
    dst += got;
    at += uint64_t(got);
    n -= uint64_t(got);
  }
  return 0;
}

void MappedFile::close() {
  if (data_ != nullptr) munmap(const_cast<uint8_t*>(data_), size_t(size_));
  if (fd_ >= 0) ::close(fd_);
  data_ = nullptr;
  size_ = 0;
  fd_ = -1;
}

MappedFile::~MappedFile() {
  close();
}

MappedFile::MappedFile(MappedFile&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      fd_(std::exchange(other.fd_, -1)) {}

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this != &other) {
    close();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

}  // namespace trit::engine
