// Streaming MD5 / SHA-256 digests (OpenSSL's libcrypto), as lowercase hex.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

namespace metharme {

class Digest {
 public:
  enum class Algo { kMd5, kSha256 };
  explicit Digest(Algo algo);
  ~Digest();
  Digest(const Digest&) = delete;
  Digest& operator=(const Digest&) = delete;

  void update(const void* data, size_t n);
  std::string hex();  // finishes the digest; call once

  static const char* name(Algo a) { return a == Algo::kMd5 ? "md5" : "sha256"; }
  static size_t hex_length(Algo a) { return a == Algo::kMd5 ? 32 : 64; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Digest of a whole file, read in blocks.
std::string file_digest(const std::string& path, Digest::Algo algo);

}  // namespace metharme
