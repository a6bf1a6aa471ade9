// A .npy file, then conversion of its data.
#include "formats/npy.h"
#include "formats/tensor.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace metharme;
  try {
    NpyArray a = parse_npy(std::string_view(reinterpret_cast<const char*>(data), size), "x.npy");
    if (dtype_is_float(a.dtype))
      a.to_f32();
    else
      a.to_i64();
  } catch (const Error&) {
  }
  return 0;
}
