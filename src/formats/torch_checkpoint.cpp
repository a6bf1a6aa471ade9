#include "formats/torch_checkpoint.h"

#include <filesystem>

#include "util/error.h"

namespace metharme {

bool open_torch_folder(TensorStore& /*store*/, const std::string& dir) {
  namespace fs = std::filesystem;
  for (const auto& e : fs::directory_iterator(dir)) {
    auto ext = e.path().extension();
    if (ext == ".bin" || ext == ".pt" || ext == ".pth")
      fail(e.path().string(), ": PyTorch checkpoints are not readable yet; convert to safetensors");
  }
  return false;
}

}  // namespace metharme
