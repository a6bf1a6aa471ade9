// Random, sensibly scaled LLaMA models of any shape, written streaming (a 7B model never sits in
// memory): GPTQ 4-bit folders, dense fp16 folders, and llama.cpp GGUF files (Q4_0 / Q8_0) for
// benchmarks and tests. Weights have std ~0.02 like a trained LLaMA's linears; norms are 1.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace metharme {

struct SynthShape {
  int hidden = 0, intermediate = 0, layers = 0, heads = 0, kv_heads = 0, vocab = 0;
  int max_positions = 2048;
};

// "7b" (LLaMA-7B), "1b" (TinyLlama-1.1B: GQA 32/4), "tiny" (d 256, 2 layers); vocab left 0.
SynthShape synth_shape(const std::string& name);

enum class SynthFormat { kGptq, kFp16, kGgufQ4_0, kGgufQ8_0, kGgufQ4_K_M };

struct SynthOptions {
  SynthShape shape;
  SynthFormat format = SynthFormat::kGptq;
  int bits = 4;
  int group_size = 128;  // -1: one group per row
  bool act_order = false;
  uint64_t seed = 0;
  int n_threads = 0;     // 0 = all CPUs
  bool progress = true;
};

// The tokenizer that goes with the model (copied into folders, embedded into GGUF files).
struct SynthVocab {
  std::string model_file;            // tokenizer.model to copy (folders)
  std::vector<std::string> pieces;   // id -> piece
  std::vector<float> scores;
  std::vector<int32_t> types;        // GGUF token types: 1 normal, 2 unknown, 3 control, 6 byte
};

// GPTQ / fp16: `out` is a folder (created; existing files with the same names are replaced).
// GGUF: `out` is the .gguf file. Errors name the offending option.
void synth_model(const SynthOptions& opt, const SynthVocab& vocab, const std::string& out);

}  // namespace metharme
