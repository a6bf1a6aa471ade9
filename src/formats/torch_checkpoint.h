// PyTorch checkpoints (torch.save zip and legacy layouts) read without executing pickle code.
//
// Zip layout (PyTorch >= 1.6): `<dir>/data.pkl` (the state dict, storages as persistent ids) and
// one `<dir>/data/<key>` entry per storage. Legacy layout: five pickles back to back (magic number,
// protocol version, system info, the state dict, the list of storage keys), then each storage as
// an int64 element count followed by its raw bytes. Storages are little-endian.
// Tensors are views into the file mapping when they are contiguous and aligned; otherwise (legacy
// files, strided tensors, deflated entries) they are copied once into owned memory.
#pragma once

#include <string>

#include "formats/tensor_store.h"

namespace metharme {

// Adds every tensor of the state dict in the torch.save file `path` (a top-level dict of tensors,
// possibly wrapped in {"state_dict": ...} / {"model": ...}). Errors name the file and the problem.
void add_torch_file(TensorStore& store, const std::string& path);

// Adds the tensors of the PyTorch weight files in `dir`: pytorch_model.bin.index.json and the shards
// it names, else every *.bin, *.pt and *.pth file except trainer state (training_args.bin,
// optimizer.pt, ...). Returns false when the folder has none.
bool open_torch_folder(TensorStore& store, const std::string& dir);

}  // namespace metharme
