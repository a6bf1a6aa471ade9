// A whole torch.save file (zip or legacy layout): pickle, storages, strided views and copies.
#include "formats/tensor_store.h"
#include "formats/torch_checkpoint.h"
#include "fuzz/fuzz_util.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace metharme;
  const std::string path = fuzz::write_input("model.pt", data, size);
  try {
    TensorStore s;
    add_torch_file(s, path);
    volatile uint8_t sink = 0;
    for (const std::string& name : s.names()) {  // every view must lie inside live memory
      const TensorView& t = s.get(name);
      if (t.nbytes) sink = sink + t.data[0] + t.data[t.nbytes - 1];
    }
  } catch (const Error&) {
  }
  return 0;
}
