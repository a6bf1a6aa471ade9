// GPTQ 4-bit linears: detection of the on-disk generation and repacking at load.
//
// Generations (../shared/docs/gptq.md section 1):
//   G0   `.zeros` + `.scales` float per output row (W = s*code - zeros), no groups
//   G1   packed `.qzeros` (stored zero - 1), contiguous groups, f32 or f16 scales, all-zero `.bias`
//   G2   G1 + `.g_idx` (act-order: rows of a group scattered), f16 scales
//   gptq_v2  G2 tensors but zeros stored as is (quantization_config.checkpoint_format "gptq_v2")
// The group size comes from quantize_config.json / config.json quantization_config, or is
// inferred from the shapes.
#pragma once

#include <string>
#include <vector>

#include "formats/hf_config.h"
#include "formats/tensor_store.h"
#include "ops/linear.h"

namespace metharme {

// Whether `<prefix>.qweight` exists.
bool has_gptq_linear(const TensorStore& store, const std::string& prefix);

// Reads and repacks one GPTQ linear of shape [n_out, n_in]; marks the tensors it read in `used`
// and drops their file pages from memory afterwards.
ops::Linear load_gptq_linear(const TensorStore& store, const LlamaConfig& config, const std::string& prefix,
                             int n_out, int n_in, std::vector<std::string>& used);

}  // namespace metharme
