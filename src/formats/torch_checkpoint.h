// PyTorch checkpoints (torch.save zip and legacy layouts) read without executing pickle code.
#pragma once

#include <string>

#include "formats/tensor_store.h"

namespace metharme {

// Adds the tensors of the PyTorch weight files in `dir` (pytorch_model.bin.index.json,
// *.bin, *.pt, *.pth) to `store`. Returns false when the folder has none.
bool open_torch_folder(TensorStore& store, const std::string& dir);

}  // namespace metharme
