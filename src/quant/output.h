// The finished model folder: model.safetensors (quantized linears from the per-layer checkpoints,
// everything else copied from the source in its own dtype), config.json with quantization_config,
// quantize_config.json (AutoGPTQ keys), tokenizer files, and quant_log.json.
#pragma once

#include <array>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "formats/hf_config.h"
#include "formats/tensor_store.h"
#include "quant/layer_quant.h"
#include "quant/pack.h"

namespace metharme::quant {

struct OutputSpec {
  std::string model_dir;
  const LlamaConfig* config = nullptr;
  const TensorStore* source = nullptr;
  std::vector<std::string> layer_files;        // per layer: its packed tensors
  std::array<bool, kNumLinears> quantized{};   // the same for every layer
  PackFormat format = PackFormat::kG2;
  QuantConfig qc;
  bool true_sequential = false;
  nlohmann::json log;                          // becomes quant_log.json
};

// quantization_config as config.json carries it (also the body of quantize_config.json).
nlohmann::json quantization_config_json(const OutputSpec& s, bool for_config_json);

// Writes every file into `dir` (created; must not exist). Each file goes through a temp name.
void write_model_folder(const std::string& dir, const OutputSpec& s);

}  // namespace metharme::quant
