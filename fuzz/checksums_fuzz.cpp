// A checksum list (md5sum / sha256sum / BSD format) from an XOR release.
#include "formats/xor_release.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace metharme;
  try {
    parse_checksum_list(std::string(reinterpret_cast<const char*>(data), size), "checksums.md5");
  } catch (const Error&) {
  }
  return 0;
}
