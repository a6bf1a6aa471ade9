// GGUF Q8_0, Q5_0, Q5_1, Q3_K, Q5_K and Q6_K matrices repacked at load into the int8-code kernels' layout
// (kernels/i8w.h, ops/i8_linear.h): codes and scales unchanged, so the weights are exact.
#pragma once

#include <string>

#include "formats/gguf_reader.h"
#include "ops/i8_linear.h"
#include "util/thread_pool.h"

namespace metharme {

// Whether t is one of the types gguf_i8_linear takes.
bool gguf_i8_type(GgmlType t);

// t is a [N][K] matrix in GGUF row order; output row n reads row hf_qk_row_to_gguf(n, qk_head_dim)
// when qk_head_dim is set (attn_q / attn_k), else row n. A block scale, min or offset that is not
// a finite number fails naming `file`, the tensor and the file's row.
ops::Linear gguf_i8_linear(const GgufTensorInfo& t, int N, int K, int qk_head_dim, ThreadPool& pool,
                           const std::string& file);

}  // namespace metharme
