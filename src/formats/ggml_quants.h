// Dequantization of ggml's block types to fp32, written from the block layouts ggml documents
// (ggml-common.h). Every block is little-endian; "fp16" fields are IEEE half.
//
//   Q4_0  32 values, 18 B: fp16 d, 16 B nibbles.      x[j] = d*(lo(j) - 8), x[j+16] = d*(hi(j) - 8)
//   Q4_1  32 values, 20 B: fp16 d, fp16 m, nibbles.   x = d*q + m
//   Q5_0  32 values, 22 B: fp16 d, u32 high bits, nibbles. x = d*(q5 - 16)
//   Q5_1  32 values, 24 B: fp16 d, fp16 m, u32 high bits, nibbles. x = d*q5 + m
//   Q8_0  32 values, 34 B: fp16 d, 32 int8.          x = d*q
//   Q2_K 256 values, 84 B: 16 (scale|min<<4) bytes, 64 B 2-bit codes, fp16 d, fp16 dmin;
//        16 sub-blocks of 16: x = d*scale*q - dmin*min
//   Q3_K 256 values, 110 B: 32 B high-bit mask, 64 B 2-bit codes, 12 B of sixteen 6-bit scales,
//        fp16 d; x = d*(scale - 32)*(q2 - (high bit clear ? 4 : 0))
//   Q4_K 256 values, 144 B: fp16 d, fp16 dmin, 12 B of eight 6-bit scales and mins, 128 B nibbles;
//        8 sub-blocks of 32: x = d*scale*q - dmin*min
//   Q5_K 256 values, 176 B: as Q4_K plus 32 B of high bits between the scales and the nibbles
//   Q6_K 256 values, 210 B: 128 B low nibbles, 64 B 2-bit highs, 16 int8 scales, fp16 d;
//        16 sub-blocks of 16: x = d*scale*(q6 - 32)
#pragma once

#include <cstddef>
#include <cstdint>

#include "formats/gguf.h"

namespace metharme {

// Dequantizes n values (a multiple of the type's block) of type t from `src` into `out`.
// F32, F16 and BF16 are converted as well.
void ggml_dequantize(GgmlType t, const void* src, int64_t n, float* out);

// Quantizes n values (a multiple of the block) to type t the way ggml's reference quantizers do
// (round to nearest): F32, F16, BF16, Q4_0 (d = signed absmax / -8), Q4_1 (d = (max - min) / 15,
// m = min), Q8_0 (d = absmax / 127), Q4_K and Q6_K (below). Other types are an error.
void ggml_quantize(GgmlType t, const float* x, int64_t n, uint8_t* out);

// Q4_K (n a multiple of 256): per 32-value sub-block the wanted scale and min (x ~= scale*q - min)
// from sub_scale / sub_min (n/32 each, e.g. a GPTQ group's s and s*z), or from the sub-block's
// min/max when they are null; both are rounded to the block's 6-bit grids, then the codes to
// nearest. Q6_K: per 16 values the signed absmax maps to code -32, scales on an int8 grid.
// (formats/ggml_kquant.cpp; ggml_quantize calls these for Q4_K and Q6_K.)
void ggml_quantize_q4_k(const float* x, int64_t n, uint8_t* out, const float* sub_scale = nullptr,
                        const float* sub_min = nullptr);
void ggml_quantize_q6_k(const float* x, int64_t n, uint8_t* out);

// The sixteen signed scales (6-bit value - 32) of a Q3_K block's 12 scale bytes.
void ggml_q3_k_scales(const uint8_t* scales, int* out);

// The 6-bit scale and min of sub-block j < 8 of a Q4_K / Q5_K block's 12 scale bytes, and the inverse.
void ggml_k4_scale_min(int j, const uint8_t* scales, uint8_t* sc, uint8_t* mn);
void ggml_k4_put_scale_min(int j, uint8_t sc, uint8_t mn, uint8_t* scales);

}  // namespace metharme
