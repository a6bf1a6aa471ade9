// Int8-code matrix kernels: the layout GGUF's Q8_0, Q5_0, Q5_1, Q3_K, Q5_K and Q6_K weights are
// repacked into at load (model/gguf_i8.cpp). Each ISA fills one I8Kernels table; the scalar table
// is the reference the tests trust.
//
// W[n][k] = scale[n][k / sb] * code[n][k] + add[n][k / 32], codes signed int8:
//   Q8_0: code = q (-128..127), sb = 32, scale = d, no add            (exact)
//   Q5_0: code = q - 16 (-16..15), sb = 32, scale = d, no add         (exact)
//   Q5_1: code = q (0..31), sb = 32, scale = d, add = m               (exact)
//   Q3_K: code = q2 - 4 or q2 (-4..3), sb = 16, scale = d * (sc - 32) (exact)
//   Q6_K: code = q - 32 (-32..31), sb = 16, scale = d * sc            (exact: d*sc fits fp32)
//   Q5_K: code = q (0..31), sb = 32, scale = d * sc, add = -dmin * m  (exact)
// Why one 8-bit family rather than native 3/5/6-bit layouts: see README "GGUF files" (one kernel
// serves six types; measured bytes and speed in bench/RESULTS.md, issue 17).
//
// Tiles of 16 output columns; K (kp) a multiple of 32.
//   qs     [n_tiles][kp/4][64] int8. In step o (k = 4o..4o+3) byte 4*c + i is the code of column
//          16*t + c at k = 4o + i: a 32-bit lane holds 4 consecutive k of one column, the shape
//          of a 4-wide int8 dot product with 4 broadcast activations.
//   scales [n_tiles][kp/sb][16] fp32
//   adds   [n_tiles][kp/32][16] fp32, or null
// Padding columns have code 0, scale 0 and add 0.
//
// The K-quants (Q3_K, Q5_K, Q6_K) keep their files' scale layout instead (ksc set; kp a multiple
// of 256): the scale of rows k..k+sb-1 is kd * ksc and, with kmin, the add of rows k..k+31 is
// -kdmin * kmin:
//   ksc    [n_tiles][kp/sb][16] int8 (Q6_K's signed scales, Q3_K's sc - 32, Q5_K's 6-bit ones)
//   kmin   [n_tiles][kp/32][16] u8 (Q5_K's 6-bit mins), or null
//   kd, kdmin  [n_tiles][kp/256][16] fp16, the super-block's factors
// Q6_K then reads 8.56 bits a weight instead of 10 (Q5_K 8.63); the fp32 products equal the fp32
// scales and adds exactly (11 x 8 bits), so results do not change.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/isa.h"

namespace metharme::kernels {

constexpr int kI8TileCols = 16;
constexpr int kI8StepK = 4;  // k per 64-byte step of a tile
constexpr int kI8StepBytes = 64;

struct I8Matrix {
  int n = 0;           // output columns (N)
  int kp = 0;          // input rows (K), a multiple of 32
  int n_tiles = 0;     // ceil(n / 16)
  int sb = 32;         // rows per scale: 16 or 32
  bool small = false;  // every |code| <= 32 (lets the AVX2 kernel sum 4 steps in int16)
  const int8_t* qs = nullptr;
  const float* scales = nullptr;
  const float* adds = nullptr;
  const int8_t* ksc = nullptr;  // the K-quant layout (above), or null
  const uint8_t* kmin = nullptr;
  const uint16_t* kd = nullptr;
  const uint16_t* kdmin = nullptr;
};

// Activations of M rows quantized to int8 in blocks of 32: x[m][k] ~= d[m][k/32] * q[m][k];
// s16[m][j] = sum of q over k = 16j..16j+15. Row strides kp, kp/32, kp/16.
struct I8Act {
  const int8_t* q = nullptr;
  const float* d = nullptr;
  const int32_t* s16 = nullptr;
  int kp = 0;
};

struct I8Kernels {
  // y[m*ldy + n] = sum_k W[n][k] x[m][k] for m < M and the columns of tiles [t0, t1) (those < N).
  void (*gemm)(const I8Matrix& w, const I8Act& x, int M, int t0, int t1, float* y, int64_t ldy);
};

// W rows of tiles [t0, t1) in fp32: out[(n - 16*t0) * kp + k] (padding columns included), as
// scale * code + add with ggml's rounding. Plain C++ (only the exact fp32-activation path and
// tests use it).
void i8_dequant(const I8Matrix& w, int t0, int t1, float* out);
// The fp32 scale of rows si*sb.. and add of rows 32b.. (0 without adds) of column c in tile t,
// whichever layout holds them (plain C++, what the kernels compute in registers).
float i8_scale_at(const I8Matrix& w, int t, int si, int c);
float i8_add_at(const I8Matrix& w, int t, int b, int c);

const I8Kernels& i8_kernels(Isa isa);
const I8Kernels& i8_kernels();  // checked_isa(i8_family()), see kernels/selftest.h

const I8Kernels& i8_kernels_scalar();
const I8Kernels& i8_kernels_avx2();
const I8Kernels& i8_kernels_avx512();

}  // namespace metharme::kernels
