// XOR-encoded releases (how Metharme 7B's 16-bit weights were published): each payload file is
// target XOR base', where base' is the same-named base file zero-padded or truncated to the
// target's length, usually gzip-compressed. Only holders of the base can rebuild the target.
//
// Payload files are handled by kind: checksum lists (*.md5, *.sha256, MD5SUMS, checksums*, ...)
// are copied and checked against; gzip files (by magic) are inflated on the fly and XOR'd; files
// that parse as JSON are copied; anything else is XOR'd as raw bytes when the base has a file of
// that name and copied otherwise (README.md, ...). A gzip payload without a base file is an error. Decoding streams in blocks
// (memory does not grow with file size) into a staging folder that is renamed into place only
// when every listed checksum matches.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace metharme {

struct XorDecodeOptions {
  bool force = false;                        // replace an existing output folder
  bool progress = true;                      // progress bar for big files
  uint64_t progress_min_bytes = 64ull << 20;  // payload files at least this big get one
  size_t block_bytes = 4u << 20;             // streaming block
  std::function<void(const std::string&)> report;  // one line per file and check (may be empty)
};

struct XorFileResult {
  enum class Kind { kXor, kXorGzip, kCopyJson, kCopyNoBase, kChecksumList };
  enum class Check { kNotListed, kOk, kMismatch };
  std::string name;
  Kind kind = Kind::kXor;
  uint64_t bytes = 0;     // bytes written
  std::string sha256;     // of the written file
  Check check = Check::kNotListed;
  std::string detail;     // which list verified it, or what mismatched
};

struct XorDecodeResult {
  std::vector<XorFileResult> files;
  size_t verified = 0, mismatched = 0, unlisted = 0;
  bool wrote_manifest = false;  // checksums.sha256 generated for the decoded files
};

// Decodes `payload_dir` against `base_dir` into `out_dir`. On a checksum mismatch (or any other
// error) throws Error after reporting, and `out_dir` is left as it was.
XorDecodeResult xor_decode(const std::string& base_dir, const std::string& payload_dir, const std::string& out_dir,
                           const XorDecodeOptions& opt);

// Parses a checksum list in md5sum/sha256sum format ("HEX  name" or "HEX *name") or BSD format
// ("MD5 (name) = HEX"). Returns (name, algo "md5"|"sha256", lowercase hex) triples.
struct ChecksumEntry {
  std::string name, algo, hex;
};
std::vector<ChecksumEntry> parse_checksum_list(const std::string& text, const std::string& origin);

}  // namespace metharme
