// LLaMA weights as the forward pass uses them: linears in kernel-ready form (mapped dense rows or
// repacked int4), norms in fp32, the embedding table as stored.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "formats/hf_config.h"
#include "formats/tensor_store.h"
#include "ops/linear.h"
#include "util/buffer.h"

namespace metharme {

struct LayerWeights {
  std::vector<float> attn_norm;  // [d]
  std::vector<float> ffn_norm;   // [d]
  ops::Linear wq;                // [n_heads*head_dim, d]
  ops::Linear wk;                // [n_kv_heads*head_dim, d]
  ops::Linear wv;                // [n_kv_heads*head_dim, d]
  ops::Linear wo;                // [d, n_heads*head_dim]
  ops::Linear w_gate;            // [ffn, d]
  ops::Linear w_up;              // [ffn, d]
  ops::Linear w_down;            // [d, ffn]
};

struct ModelWeights {
  std::string dir;
  LlamaConfig config;
  TensorStore store;          // owns the mappings every view below points into
  TensorView embed;           // [vocab, d], F32/F16/BF16
  std::vector<float> final_norm;  // [d]
  ops::Linear lm_head;        // [vocab, d] (the embedding matrix when tied)
  PageBuffer lm_head_copy;    // lm_head's bytes on huge pages (read whole every token)
  std::vector<LayerWeights> layers;
  std::string format;         // "f16", "bf16", "gptq 4-bit g128 (g_idx)", ...
  size_t file_tensors = 0;    // tensors in the weight file when `store` does not index them (GGUF)

  size_t linear_bytes() const;  // bytes of all layer linears
  size_t bytes_per_token() const;  // weights read per decoded token (linears + lm_head + one embedding row)
};

struct LoadOptions {
  bool warn_unknown = true;   // print a warning for tensors the model does not use
  bool quiet = false;
};

// `dir` is a model folder, or a GGUF file (model/gguf_loader.h).
std::unique_ptr<ModelWeights> load_weights(const std::string& dir, const LoadOptions& opt = {});

// Builds a linear from `<prefix>.weight` (dense) or the GPTQ tensors `<prefix>.qweight` & co.
// Marks every tensor it reads in `used`.
ops::Linear load_linear(const ModelWeights& m, const std::string& prefix, int n_out, int n_in,
                        std::vector<std::string>& used);

// The kernels' weight type of a float tensor; other dtypes are an error naming the tensor.
kernels::WType wtype_of(const TensorView& t);

}  // namespace metharme
