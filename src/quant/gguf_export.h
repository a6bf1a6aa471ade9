// Export of a model folder (GPTQ 4-bit or 16-bit) to one GGUF file that llama.cpp and KoboldCpp
// load, with metadata and tokenizer keys as llama.cpp's convert_hf_to_gguf.py writes them for
// LLaMA (including its Q/K row order, formats/gguf_llama.h).
//
// Types (--type):
//   auto  GPTQ linears whose 32-wide blocks each lie inside one group become Q4_1 with the codes
//         unchanged (d = s, m = fp16(-s*z): only m's rounding differs); other GPTQ linears
//         (act-order with scattered groups) become Q8_0 of the exact GPTQ weights; 16-bit linears
//         stay F16. Embedding and output keep F16, norms F32.
//   q4_1  as auto, but scattered GPTQ linears and 16-bit linears are quantized to Q4_1 (min/max)
//   q8_0  every matrix Q8_0;  f16 / f32  every matrix in that float type
#pragma once

#include <string>
#include <vector>

namespace metharme {

struct GgufExportOptions {
  std::string type = "auto";  // auto, q4_1, q8_0, f16, f32
  bool quiet = false;
};

struct GgufTensorReport {
  std::string name;         // GGUF name
  std::string type;         // ggml type written
  bool codes_kept = false;  // GPTQ 4-bit codes copied unchanged
  bool exact = false;       // every written weight dequantizes to the source value
  double max_err = 0;       // largest |written - source| over the tensor's weights
};

struct GgufExportReport {
  std::vector<GgufTensorReport> tensors;
  std::string path;
  size_t bytes = 0;
};

// Writes `out_path` (temp file + rename). Errors name the folder, tensor or option.
GgufExportReport export_gguf(const std::string& model_dir, const std::string& out_path, const GgufExportOptions& opt);

}  // namespace metharme
