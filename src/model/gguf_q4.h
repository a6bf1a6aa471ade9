// GGUF Q4_0, Q4_1 and Q4_K matrices repacked at load straight from their blocks into the int4
// kernels' tiles (kernels/q4.h, ops/q4_linear.h), codes unchanged: Q4_0 as scale d and zero point
// 8 (exact), Q4_1 as scale d, the zero point z nearest to -m/d and the remainder m + d*z as the
// block's offset (exact up to fp32 rounding), Q4_K with its own scale bytes (exact).
#pragma once

#include "formats/gguf_reader.h"
#include "ops/linear.h"
#include "util/thread_pool.h"

namespace metharme {

// Whether t is one of the types gguf_q4_linear takes.
bool gguf_q4_type(GgmlType t);

// t is a [N][K] matrix in GGUF row order; output row n reads row hf_qk_row_to_gguf(n, qk_head_dim)
// when qk_head_dim is set (attn_q / attn_k), else row n. A block scale, min or offset that is not
// a finite number fails naming `file`, the tensor and the file's row.
ops::Linear gguf_q4_linear(const GgufTensorInfo& t, int N, int K, int qk_head_dim, ThreadPool& pool,
                           const std::string& file);

}  // namespace metharme
