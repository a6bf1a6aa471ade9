// Int4 matrix kernels over the repacked GPTQ layout. Each ISA fills one Q4Kernels table; the
// scalar table is the reference the tests trust.
//
// A weight matrix W [N][K] (W[n][k] = s[g][n] * (code[k][n] - zero[g][n])) is stored in tiles of
// 16 output columns. Input k runs in "kernel order": act-order is resolved at load by sorting
// the input rows by group (ops/q4_linear.cpp), so every group is a contiguous run of `gs` rows and
// the caller permutes activations instead. kp (padded K) is a multiple of gs, gs of 32.
//
//   qs     [n_tiles][kp/8][64] bytes. In step o (k = 8o..8o+7) byte (32*h + 4*c + i), h < 2,
//          c < 8, i < 4, belongs to column 16*t + 8*h + c: its low nibble is the code of
//          k = 8o + i, its high nibble the code of k = 8o + 4 + i. So each 32-bit lane of a
//          256-bit load holds 8 codes of one column, and a lane of the low (high) nibbles holds
//          4 consecutive k: the shape of an int8 dot product with 4 broadcast activations.
//   scales [n_tiles][n_groups][16] fp16, or scales_f32 in the same shape in fp32 when the
//          checkpoint's fp32 scales are not all fp16 values (then scales is unused)
//   zeros  [n_tiles][n_groups][16] u8, the integer zero point (already +1 for GPTQ v1 files)
// Padding columns and padding rows have code 0 and scale 0.
//
// GGUF Q4_K keeps its own scale layout instead (Q4Matrix::ksc set; gs 32, n_groups a multiple of 8,
// a super-block being 8 groups): W[n][k] = s * code - m with s = kd * ksc and m = kdmin * kmin,
//   ksc, kmin  [n_tiles][n_groups][16] u8, the block's 6-bit scale and min
//   kd, kdmin  [n_tiles][n_groups/8][16] fp16, the super-block's factors
// (4.6 bits a weight, against 6.25 for fp32 scales, zeros and offsets; the products are exact in
// fp32: 11 x 6 bits). scales, scales_f32 and zeros are then unused and uniform_zero is 0.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/isa.h"

namespace metharme::kernels {

constexpr int kQ4TileCols = 16;
constexpr int kQ4StepK = 8;  // k per 64-byte step of a tile
constexpr int kQ4StepBytes = 64;

struct Q4Matrix {
  int n = 0;         // output columns (N)
  int kp = 0;        // input rows in kernel order, padded
  int gs = 0;        // rows per group (kernel order), multiple of 32
  int n_groups = 0;  // kp / gs
  int n_tiles = 0;   // ceil(n / 16)
  const uint8_t* qs = nullptr;
  const uint16_t* scales = nullptr;
  const float* scales_f32 = nullptr;  // used instead of scales when set
  const uint8_t* zeros = nullptr;
  // >= 0 when every entry of zeros equals it (GGUF Q4_0: 8), so a kernel may use the constant
  // instead of loading and widening the zeros of each group; -1 when they vary.
  int uniform_zero = -1;
  const uint8_t* ksc = nullptr;  // Q4_K layout (above), or null
  const uint8_t* kmin = nullptr;
  const uint16_t* kd = nullptr;
  const uint16_t* kdmin = nullptr;

  size_t tile_qs_bytes() const { return size_t(kp) / kQ4StepK * kQ4StepBytes; }
};

// Activations of M rows quantized to int8 in blocks of `block` values (block divides gs):
// x[m][k] ~= d[m][k / block] * q[m][k]; sum[m][b] = sum of q over block b. Row strides: kp, kp / block.
struct Q8Act {
  const int8_t* q = nullptr;
  const float* d = nullptr;
  const int32_t* sum = nullptr;
  int kp = 0, block = 0;
};

// Activations of M rows in fp32, kernel order: x [M][kp]; gsum [M][n_groups] = sum of x over each group.
struct F32Act {
  const float* x = nullptr;
  const float* gsum = nullptr;
  int kp = 0, n_groups = 0;
};

struct Q4Kernels {
  // One row: q[k] = round(x[k] / d[b]) with d[b] = max|x| / 127 over the block, sums per block.
  // n is a multiple of block.
  void (*quantize_q8)(const float* x, int n, int block, int8_t* q, float* d, int32_t* sum);
  // y[m*ldy + n] = sum_k W[n][k] x[m][k] for m < M and the columns of tiles [t0, t1) (those < N).
  // The int8 design: integer dot products per block, scaled per block and group.
  void (*gemm_q8)(const Q4Matrix& w, const Q8Act& x, int M, int t0, int t1, float* y, int64_t ldy);
  // The same with fp32 activations: codes are converted to float in registers.
  void (*gemm_f32)(const Q4Matrix& w, const F32Act& x, int M, int t0, int t1, float* y, int64_t ldy);
  // W rows of tiles [t0, t1) in fp32, kernel order: out[(n - 16*t0) * kp + k] (padding included).
  void (*dequant)(const Q4Matrix& w, int t0, int t1, float* out);
};

const Q4Kernels& q4_kernels(Isa isa);
// The table to use: active_isa(), lowered past any ISA whose self-test failed (kernels/selftest.h).
// Not inline: an inline copy compiled in an AVX-512 file could be the one the linker keeps.
const Q4Kernels& q4_kernels();

// The AMX product (kernels/q4_amx.cpp): gemm_q8's contract, for x.block a multiple of 32.
using Q4GemmQ8 = void (*)(const Q4Matrix& w, const Q8Act& x, int M, int t0, int t1, float* y, int64_t ldy);
// It when amx_enabled(), int4 runs at kAvx512 and the AMX self-test ("int4-amx", q4_selftest.cpp;
// run by the first call) passed, else nullptr: the caller then uses q4_kernels().gemm_q8.
Q4GemmQ8 q4_gemm_q8_amx();
// The kernel itself (calling it where amx_supported() is false is undefined).
Q4GemmQ8 q4_gemm_q8_amx_unchecked();
// Rows from which ops/q4_linear.cpp uses the AMX product (bench/RESULTS.md, issue 16).
constexpr int kQ4AmxMinRows = 32;

// Per-ISA tables (calling one the CPU lacks is undefined).
const Q4Kernels& q4_kernels_scalar();
// Cell gi ([n_tiles][n_groups][16]) of w in fp32: its scale, its subtracted min (Q4_K; else 0)
// and its zero point (Q4_K: 0), whichever layout holds them: W = scale * (code - zero) - min.
// Plain C++ (kernels/q4_scalar.cpp), what the kernels compute in registers.
float q4_scale_at(const Q4Matrix& w, size_t gi);
float q4_min_at(const Q4Matrix& w, size_t gi);
int q4_zero_at(const Q4Matrix& w, size_t gi);
const Q4Kernels& q4_kernels_avx2();
const Q4Kernels& q4_kernels_avx512();

}  // namespace metharme::kernels
