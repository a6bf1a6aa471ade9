// A whole .safetensors file: header length, JSON header, tensor bytes.
#include "formats/safetensors.h"
#include "formats/tensor.h"
#include "fuzz/fuzz_util.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace metharme;
  const std::string path = fuzz::write_input("model.safetensors", data, size);
  try {
    SafetensorsFile f(path);
    for (const TensorView& t : f.tensors())  // converting touches every byte a view claims
      if (dtype_is_float(t.dtype) && t.nbytes <= (1u << 20)) tensor_to_f32(t);
  } catch (const Error&) {
  }
  return 0;
}
