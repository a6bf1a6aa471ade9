// Random GGUF blocks for the quantized-linear tests: random code and scale bytes with the block's
// fp16 factors (d, dmin, m) set to sane magnitudes, and a tensor view over them.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "formats/gguf_reader.h"

namespace metharme::test {

// An N x K matrix of type t (Q4_0, Q4_1, Q4_K, Q8_0, Q5_0, Q5_1, Q3_K, Q5_K or Q6_K).
std::vector<uint8_t> random_gguf_blocks(GgmlType t, int N, int K, std::mt19937& rng);

// A tensor named `name` of shape [N][K] over `bytes` (which must outlive it).
GgufTensorInfo gguf_tensor_view(GgmlType t, const std::vector<uint8_t>& bytes, int N, int K,
                                const std::string& name = "blk.0.attn_q.weight");

}  // namespace metharme::test
