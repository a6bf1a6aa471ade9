// File-system helpers: whole-file reads and crash-safe writes (temp file + fsync + rename).
#pragma once

#include <cstdio>
#include <string>
#include <string_view>

namespace metharme {

std::string read_text_file(const std::string& path);  // throws Error naming the path

// The whole file, gunzipped when it is gzip data (plain files pass through); truncated or corrupt
// gzip data is an error naming the path.
std::string read_maybe_gzip(const std::string& path, bool* was_gzip = nullptr);

// Writes to "<path>.tmp-<pid>" and renames over `path` on commit(); an uncommitted file is removed
// on destruction, so a crash or an exception never leaves a half-written `path`.
class AtomicFile {
 public:
  explicit AtomicFile(std::string path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t n);
  void write(std::string_view s) { write(s.data(), s.size()); }
  size_t written() const { return written_; }
  FILE* handle() { return f_; }
  void commit();  // flush, fsync, rename

 private:
  std::string path_, tmp_;
  FILE* f_ = nullptr;
  size_t written_ = 0;
};

void write_file_atomic(const std::string& path, std::string_view content);

}  // namespace metharme
