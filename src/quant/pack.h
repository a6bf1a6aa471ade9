// GPTQ checkpoint tensors of one linear (docs/gptq.md section 1): packing our quantized matrices
// into G2 / G1 / gptq_v2 layouts, and reading such tensors back into a QuantizedLinear.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "formats/tensor.h"
#include "formats/tensor_store.h"
#include "quant/quantizer.h"

namespace metharme::quant {

// G2: qweight/qzeros/scales(f16)/g_idx, zero stored minus one (GPTQ-for-LLaMa since 2023-03-28,
//     AutoGPTQ, ExLlama, transformers). G1: no g_idx, f32 scales, zero bias, contiguous groups
//     (0cc4m's KoboldAI fork). gptq_v2: like G2 but zero stored as is (GPTQModel).
enum class PackFormat { kG2, kG1, kGptqV2 };
PackFormat parse_pack_format(const std::string& s);
const char* pack_format_name(PackFormat f);
inline bool stores_zero_minus_one(PackFormat f) { return f != PackFormat::kGptqV2; }
inline bool fp16_scales(PackFormat f) { return f != PackFormat::kG1; }

struct OwnedTensor {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> data;
};

// Whether a [n_out, n_in] linear fits the packed layout every GPTQ reader accepts
// (AutoGPTQ's QuantLinear sizes qweight and qzeros with in/32 and out/32).
bool packable(int n_out, int n_in);

// `<prefix>.qweight` int32 [K*bits/32, N], `.qzeros` int32 [G, N*bits/32], `.scales` [G, N],
// `.g_idx` int32 [K] (G2, gptq_v2) or `.bias` f32 [N] zeros (G1).
std::vector<OwnedTensor> pack_linear(const QuantizedLinear& q, const std::string& prefix, PackFormat f, int bits);

// Reads `<prefix>.*` back (any of the three layouts; G1 when there is no g_idx). `zero_minus_one`
// says how qzeros are stored. Scales are kept as stored (fp16 values widened to f32).
QuantizedLinear unpack_linear(const TensorStore& store, const std::string& prefix, int bits, bool zero_minus_one);

}  // namespace metharme::quant
