// LLaMA models in GGUF: the llama.* hyperparameters as a LlamaConfig, the tensor names, and the
// row order of the Q and K projections.
//
// llama.cpp's converter reorders the rows of attn_q / attn_k inside each head so that its RoPE
// (which rotates adjacent pairs 2i, 2i+1) matches Hugging Face's "rotate half" (pairs i, i+hd/2):
// GGUF row 2i + h of a head holds HF row h*hd/2 + i (h in {0, 1}, i < hd/2). The loader undoes
// it; the exporter applies it.
#pragma once

#include <string>

#include "formats/gguf_reader.h"
#include "formats/hf_config.h"

namespace metharme {

// general.architecture must be "llama"; required keys missing or ill-typed, and features the
// forward pass lacks (rope scaling, partial rotary dims, experts), are errors naming the key.
LlamaConfig gguf_llama_config(const GgufFile& f);

// HF row of GGUF row r of a Q/K projection with heads of head_dim rows (and the inverse).
inline int gguf_qk_row_to_hf(int r, int head_dim) {
  const int base = r - r % head_dim, local = r % head_dim;
  return base + (local % 2) * (head_dim / 2) + local / 2;
}
inline int hf_qk_row_to_gguf(int r, int head_dim) {
  const int base = r - r % head_dim, local = r % head_dim, half = head_dim / 2;
  return base + 2 * (local % half) + local / half;
}

// "blk.<layer>.<what>.weight"
std::string gguf_blk(int layer, const std::string& what);

}  // namespace metharme
