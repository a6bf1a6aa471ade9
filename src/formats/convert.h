// Rewrites any model folder the tensor store reads (safetensors, torch.save .bin/.pt, sharded or
// not) as a Hugging Face safetensors folder, optionally changing the float dtype.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "formats/tensor.h"

namespace metharme {

struct ConvertOptions {
  // Target type for float tensors (F16, BF16 or F32); unset keeps each tensor's type. GPTQ
  // quantization tensors (qweight, qzeros, scales, g_idx, zeros) always keep theirs.
  std::optional<DType> dtype;
  uint64_t max_shard_bytes = 5'000'000'000;  // tensor bytes per shard; one shard => model.safetensors
  bool force = false;                         // replace an existing output folder
  bool progress = true;
};

struct ConvertResult {
  size_t tensors = 0, shards = 0, converted = 0;  // converted: tensors whose dtype changed
  uint64_t bytes = 0;                             // tensor bytes written
  std::vector<std::string> files;                 // everything written to the output folder
};

// Reads `in_dir`, writes `out_dir` through a staging folder renamed into place at the end.
// Files beside the weights (config.json, tokenizer files, ...) are copied; with a dtype,
// config.json's "torch_dtype" is updated.
ConvertResult convert_to_safetensors(const std::string& in_dir, const std::string& out_dir, const ConvertOptions& opt);

// Orders tensor names with embedded numbers compared by value ("layers.2" before "layers.10").
bool natural_less(const std::string& a, const std::string& b);

}  // namespace metharme
