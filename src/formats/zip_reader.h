// Read-only zip archives over a memory mapping (what torch.save writes since PyTorch 1.6).
// Supports STORED and DEFLATE entries and the ZIP64 extensions (archives and entries over 4 GiB).
// STORED entries are handed out as views into the mapping; DEFLATE ones are inflated on request.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "util/mapped_file.h"

namespace metharme {

struct ZipEntry {
  std::string name;
  uint16_t method = 0;        // 0 stored, 8 deflate
  uint32_t crc32 = 0;
  uint64_t compressed = 0;    // bytes in the archive
  uint64_t size = 0;          // bytes once extracted
  uint64_t data_offset = 0;   // where the entry's (compressed) bytes start in the file
};

class ZipReader {
 public:
  // Maps `path` and reads its central directory; errors name the file and what is wrong.
  explicit ZipReader(const std::string& path);

  const std::string& path() const { return file_.path(); }
  const std::vector<ZipEntry>& entries() const { return entries_; }
  const ZipEntry* find(const std::string& name) const;

  // STORED entries only: a pointer into the mapping (valid while this reader lives).
  const uint8_t* stored_data(const ZipEntry& e) const;
  // Any entry, extracted into `out` (CRC checked). Prefer stored_data() for big STORED entries.
  void extract(const ZipEntry& e, std::vector<uint8_t>& out) const;

  static bool looks_like_zip(const uint8_t* p, size_t n);  // local-header signature at offset 0

 private:
  void read_directory();
  MappedFile file_;
  std::vector<ZipEntry> entries_;
  std::map<std::string, size_t> by_name_;
};

}  // namespace metharme
