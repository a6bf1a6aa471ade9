// model.safetensors.index.json beside one small valid shard (a.safetensors holding "x" and "y").
#include <filesystem>

#include "formats/safetensors.h"
#include "formats/tensor_store.h"
#include "fuzz/fuzz_util.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace metharme;
  static const bool shard_written = [] {
    std::filesystem::create_directories(fuzz::work_dir() + "/model");
    SafetensorsWriter w(fuzz::work_dir() + "/model/a.safetensors");
    const float x[4] = {1, 2, 3, 4};
    const uint16_t y[2] = {0x3C00, 0x4000};
    w.declare("x", DType::F32, {2, 2});
    w.declare("y", DType::F16, {2});
    w.write_tensor("x", x);
    w.write_tensor("y", y);
    w.commit();
    return true;
  }();
  (void)shard_written;
  fuzz::write_input("model/model.safetensors.index.json", data, size);
  try {
    TensorStore s = TensorStore::open_folder(fuzz::work_dir() + "/model");
  } catch (const Error&) {
  }
  return 0;
}
