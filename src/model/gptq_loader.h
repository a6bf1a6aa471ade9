// GPTQ 4-bit linears: detection of the on-disk generation and repacking at load.
#pragma once

#include <string>
#include <vector>

#include "formats/hf_config.h"
#include "formats/tensor_store.h"
#include "ops/linear.h"

namespace metharme {

// Whether `<prefix>.qweight` (or `.zeros`-style G0 tensors) exist.
bool has_gptq_linear(const TensorStore& store, const std::string& prefix);

// Reads and repacks one GPTQ linear of shape [n_out, n_in].
ops::Linear load_gptq_linear(const TensorStore& store, const LlamaConfig& config, const std::string& prefix,
                             int n_out, int n_in, std::vector<std::string>& used);

}  // namespace metharme
