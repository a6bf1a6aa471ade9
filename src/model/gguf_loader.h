// LLaMA models from a GGUF file (formats/gguf_reader.h) into ModelWeights.
//
// Linears by ggml type:
//   Q4_0          repacked into the int4 kernels' layout (a block of 32 is a group with scale d and
//                 integer zero point 8: w = d*(q - 8), exact), so it runs at int4 speed
//   F32/F16/BF16  used in place from the mapping (Q/K rows reordered into an owned copy)
//   others        dequantized at load to f16 (ggml's rule, formats/ggml_quants.h, then rounded)
// Q/K rows are put back in Hugging Face order (formats/gguf_llama.h) so the usual RoPE applies.
#pragma once

#include <memory>
#include <string>

#include "model/weights.h"

namespace metharme {

std::unique_ptr<ModelWeights> load_gguf_weights(const std::string& path, const LoadOptions& opt);

}  // namespace metharme
