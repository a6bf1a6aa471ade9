// Hugging Face LlamaForCausalLM config.json, plus the GPTQ settings that may sit beside it.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "util/rope_scaling.h"

namespace metharme {

struct LlamaConfig {
  int hidden_size = 0;            // d
  int intermediate_size = 0;      // ffn
  int num_attention_heads = 0;    // n_heads
  int num_key_value_heads = 0;    // n_kv_heads (defaults to n_heads)
  int num_hidden_layers = 0;
  int vocab_size = 0;
  int max_position_embeddings = 2048;
  int head_dim = 0;               // d / n_heads unless given
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;       // config.json's rope_scaling (none when absent or null)
  bool tie_word_embeddings = false;
  int bos_token_id = 1;
  std::vector<int> eos_token_ids{2};
  std::string torch_dtype = "float16";
  nlohmann::json quantization_config;  // config.json's, or quantize_config.json's; null if neither
  nlohmann::json raw;                  // the whole config.json

  int kv_dim() const { return num_key_value_heads * head_dim; }
  int q_dim() const { return num_attention_heads * head_dim; }
};

// A GGUF file gives its llama.* metadata instead (formats/gguf_llama.h).
// Parses `<dir>/config.json` (and `<dir>/quantize_config.json` when present). Missing or
// ill-typed required fields are errors naming the field.
LlamaConfig load_llama_config(const std::string& dir);
LlamaConfig parse_llama_config(const nlohmann::json& j, const std::string& origin);
// config.json's `rope_scaling` object as Hugging Face transformers reads it ("type" or
// "rope_type": default, linear, dynamic, yarn, llama3); values out of range and keys that do not
// belong to the scheme are errors naming `origin` and the field.
RopeScaling parse_rope_scaling(const nlohmann::json& r, const std::string& origin);

// Accepted ranges, shared with the GGUF reader and the command-line overrides.
constexpr double kMinRopeFactor = 1.0 / 64, kMaxRopeFactor = 1024;

}  // namespace metharme
