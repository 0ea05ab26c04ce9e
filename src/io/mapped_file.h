// A regular file mapped read-only for the life of the object; its descriptor stays open so that
// parts of the mapping can also be read with pread (a copy from the page cache costs a fifth of
// faulting the same pages into the mapping).
#pragma once

#include <cstdint>
#include <string>

namespace trit::engine {

class MappedFile {
 public:
  MappedFile() = default;
  // Throws trit::Error naming the path when it cannot be opened, is not a regular file, or
  // cannot be mapped. An empty file maps to data() == nullptr, size() == 0.
  static MappedFile open(const std::string& path);
  ~MappedFile();
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  // Tells the kernel the pages fully inside [p, p + n) are no longer needed, so they leave the
  // resident set (they are read again from the file if touched later). For data converted at
  // load whose original bytes are not used again.
  void release(const uint8_t* p, uint64_t n) const;
  // Asks the kernel to start reading the pages of [p, p + n) (read-ahead); returns at once.
  void prefetch(const uint8_t* p, uint64_t n) const;
  // Copies the mapping's bytes [p, p + n) into dst through the file descriptor, leaving the
  // mapping's pages untouched. Returns 0, or the errno of a failed read (EIO also for a file
  // that became shorter).
  int read(const uint8_t* p, uint64_t n, uint8_t* dst) const;
  bool contains(const uint8_t* p) const { return data_ && p >= data_ && p < data_ + size_; }

  const uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }

 private:
  void close();
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
  int fd_ = -1;
};

}  // namespace trit::engine
