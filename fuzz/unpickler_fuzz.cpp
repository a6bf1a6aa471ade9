// The restricted unpickler on raw pickle bytes: successive pickles until the data ends.
#include "formats/torch_pickle.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace metharme;
  try {
    Unpickler up(data, size, "data.pkl");
    for (int i = 0; i < 8 && up.position() < size; ++i) up.load();
  } catch (const Error&) {
  }
  return 0;
}
