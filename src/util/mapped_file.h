// Read-only memory mapping of a whole file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace metharme {

class MappedFile {
 public:
  MappedFile() = default;
  explicit MappedFile(const std::string& path);  // throws Error naming the path
  ~MappedFile();
  MappedFile(MappedFile&& o) noexcept;
  MappedFile& operator=(MappedFile&& o) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  void release();
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// Drops the pages fully inside [p, p+n) of a read-only file mapping from this process's resident
// set (they stay in the page cache and fault back in if read again). For data that was copied
// elsewhere, e.g. repacked weights.
void drop_mapped_pages(const void* p, size_t n);
// Maps [p, p+n) of a file mapping in one go (read-ahead and page tables) before a full read.
void prefault_mapped_pages(const void* p, size_t n);

}  // namespace metharme
