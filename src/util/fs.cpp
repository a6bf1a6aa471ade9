#include "util/fs.h"

#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "util/error.h"

namespace metharme {

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, ": cannot open: ", std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)) {
  tmp_ = path_ + ".tmp-" + std::to_string(::getpid());
  f_ = std::fopen(tmp_.c_str(), "wb");
  if (!f_) fail(path_, ": cannot create: ", std::strerror(errno));
}

AtomicFile::~AtomicFile() {
  if (f_) {
    std::fclose(f_);
    std::remove(tmp_.c_str());
  }
}

void AtomicFile::write(const void* data, size_t n) {
  if (n && std::fwrite(data, 1, n, f_) != n) fail(path_, ": write failed: ", std::strerror(errno));
  written_ += n;
}

void AtomicFile::commit() {
  if (!f_) fail(path_, ": already committed");
  if (std::fflush(f_) != 0 || ::fsync(::fileno(f_)) != 0)
    fail(path_, ": cannot flush: ", std::strerror(errno));
  std::fclose(f_);
  f_ = nullptr;
  if (std::rename(tmp_.c_str(), path_.c_str()) != 0) {
    int e = errno;
    std::remove(tmp_.c_str());
    fail(path_, ": cannot rename temp file into place: ", std::strerror(e));
  }
}

void write_file_atomic(const std::string& path, std::string_view content) {
  AtomicFile f(path);
  f.write(content);
  f.commit();
}

std::string read_maybe_gzip(const std::string& path, bool* was_gzip) {
  errno = 0;
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) fail(path, ": cannot open: ", errno ? std::strerror(errno) : "zlib could not allocate");
  gzbuffer(f, 1 << 20);
  std::string out;
  char buf[1 << 16];
  for (;;) {
    int n = gzread(f, buf, sizeof buf);
    if (n < 0) {
      int code = 0;
      std::string msg = gzerror(f, &code);
      gzclose(f);
      fail(path, ": cannot read (", code == Z_ERRNO ? std::strerror(errno) : msg, ")");
    }
    if (n == 0) break;
    out.append(buf, size_t(n));
  }
  bool gz = gzdirect(f) == 0;
  // A truncated gzip stream reads as EOF with an error pending.
  int code = 0;
  const char* msg = gzerror(f, &code);
  if (code != Z_OK && code != Z_BUF_ERROR) {
    std::string m = msg;
    gzclose(f);
    fail(path, ": corrupt gzip data (", m, ")");
  }
  int rc = gzclose(f);
  if (rc == Z_BUF_ERROR) fail(path, ": truncated gzip data");
  if (rc != Z_OK) fail(path, ": corrupt gzip data");
  if (was_gzip) *was_gzip = gz;
  return out;
}

}  // namespace metharme
