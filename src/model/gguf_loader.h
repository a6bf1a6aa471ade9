// LLaMA models from a GGUF file (formats/gguf_reader.h) into ModelWeights.
//
// Linears by ggml type:
//   Q4_0, Q4_1,   repacked into the int4 kernels' layout (a 32-value (sub-)block is a group with
//   Q4_K          its scale and the nearest integer zero point; what remains of Q4_1's m or Q4_K's
//                 min is a per-block offset added after the int4 product, ops/q4_linear.h),
//                 exact to fp32 rounding, so they run at int4 speed
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
