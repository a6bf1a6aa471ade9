// 4-bit GPTQ linear layers: repacking checkpoint tensors into the kernels' tile layout (once, at
// load) and running them. Act-order is resolved here: the input rows are sorted by group so the
// kernels see contiguous groups, and the activations are permuted instead (as ExLlama does).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kernels/q4.h"
#include "ops/linear.h"
#include "util/buffer.h"

namespace metharme::ops {

// One GPTQ linear as stored in a checkpoint, already validated for shapes by the loader
// (model/gptq_loader.cpp). W[n][k] = s[g][n] * (code[k][n] - zero[g][n]), g = g_idx[k] or k / group_size.
struct GptqSource {
  int n = 0, k = 0;                   // output columns N, input rows K
  int n_groups = 0;                   // G: rows of scales (and of qzeros)
  int group_size = 0;                 // used when g_idx is null
  const uint32_t* qweight = nullptr;  // [ceil(K/8)][N]: code(k, n) = qweight[k/8][n] >> 4*(k%8) & 15
  const uint32_t* qzeros = nullptr;   // [G][ceil(N/8)]: packed along n the same way; or null (G0)
  int zero_offset = 1;                // added to packed zeros: 1 for GPTQ(-for-LLaMa) files, 0 for gptq_v2
  const void* zeros_g0 = nullptr;     // G0: [N] float zeros with W = s*code - zeros
  kernels::WType zeros_g0_type = kernels::WType::kF32;
  const void* scales = nullptr;  // [G][N]
  kernels::WType scales_type = kernels::WType::kF16;
  const int32_t* g_idx = nullptr;  // [K] or null
  const void* bias = nullptr;      // [N] or null
  kernels::WType bias_type = kernels::WType::kF16;
  std::string name;  // for error messages
};

struct Q4Weight {
  int n_out = 0, n_in = 0;  // N, K as in the checkpoint
  int group_size = 0;       // rows per group in the checkpoint (K when ungrouped)
  bool act_order = false;   // input rows were reordered
  int block = 0;            // int8 activation block (divides mat.gs)
  kernels::Q4Matrix mat;    // views into the buffers below
  // perm[j] = input row feeding kernel row j, -1 for padding; empty = identity (rows >= K are padding)
  std::vector<int32_t> perm;
  PageBuffer qs;
  std::vector<uint16_t> scales;   // fp16, or empty when scales_f32 is used
  std::vector<float> scales_f32;  // fp32 checkpoint scales that fp16 cannot hold exactly
  std::vector<uint8_t> zeros;
  std::vector<float> bias;  // empty when the checkpoint has none (or all zeros)
  // Per-block float offsets (GGUF Q4_1: w = d*q + m = d*(q - z) + (m + d*z), z the nearest
  // integer zero point, so the offset is the small remainder): [N][K/32] fp32, added as
  // W[n][k] += offsets[n][k/32]; empty for GPTQ weights. Only with the identity row order.
  // Applied after the int4 product as a small dense product with the 32-wide sums of x.
  std::vector<float> offsets;
  // GGUF Q4_K in its own scale layout (kernels/q4.h; then scales, scales_f32, zeros and offsets
  // are empty): 6-bit scales and mins per 32 rows, fp16 factors per 256.
  std::vector<uint8_t> ksc, kmin;
  std::vector<uint16_t> kd, kdmin;
};

// Moves Q4_K scales (shapes as in kernels/q4.h) into w, replacing its scales, zeros and offsets.
void q4_set_k_scales(Q4Weight& w, std::vector<uint8_t> ksc, std::vector<uint8_t> kmin, std::vector<uint16_t> kd,
                     std::vector<uint16_t> kdmin);
// The per-group fp32 scales [n_tiles][n_groups][16], zero points (same shape) and per-32-row
// offsets [N][K/32] (empty when none) that express w in the GPTQ-shaped form, whatever its layout
// (for the GPU, whose shaders read that form).
struct Q4Groups {
  std::vector<float> scales;
  std::vector<uint8_t> zeros;
  std::vector<float> offsets;
};
Q4Groups q4_groups(const Q4Weight& w);

// Repacks with `n_threads` threads. Errors (g_idx out of range, non-integer G0 zeros, ...) name src.name.
std::shared_ptr<Q4Weight> q4_repack(const GptqSource& src, int n_threads);

// One weight's parts: W[n][k] = scale * (code - zero), with k the checkpoint's input row.
struct Q4Entry {
  uint8_t code = 0, zero = 0;
  float scale = 0;
};
// kernel_row[k] = the kernel-order row holding input row k (inverse of perm), for q4_entry.
std::vector<int32_t> q4_kernel_rows(const Q4Weight& w);
Q4Entry q4_entry(const Q4Weight& w, int n, int kernel_row);

// W in fp32, [N][K] in the original input order (for tests and tools).
std::vector<float> q4_dequantize(const Q4Weight& w);

size_t q4_weight_bytes(const Q4Weight& w);
std::string q4_describe(const Q4Weight& w);

// How activations meet int4 weights: int8 with integer dot products, or fp32 with codes converted
// in registers (exact up to fp32 rounding). kAuto picks the faster per path (bench/RESULTS.md).
enum class Q4Act { kAuto, kQ8, kF32 };
void set_q4_act(Q4Act a);
Q4Act q4_act();                // METHARME_Q4_ACT=q8|f32|auto overrides the default (auto)
Q4Act q4_act_for_rows(int M);  // what kAuto resolves to for an M-row product
const char* q4_act_name(Q4Act a);
bool parse_q4_act(const std::string& s, Q4Act* out);

// y = x W^T for several int4 linears sharing x [M][n_in] (one parallel job; activations are
// prepared once per distinct input permutation).
void q4_linear_multi(const LinearOut* outs, int n_outs, const float* x, int M, ThreadPool& pool);

}  // namespace metharme::ops
