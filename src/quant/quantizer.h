// Uniform integer quantization of weight rows (GPTQ-for-LLaMa's Quantizer, per output row),
// the quantized-matrix container, round-to-nearest (RTN) and dequantization.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "util/thread_pool.h"

namespace metharme::quant {

struct QuantConfig {
  int bits = 4;
  int group_size = -1;        // input columns per group; -1 = one group per row
  bool sym = false;           // symmetric grid (zero = 2^(bits-1))
  bool act_order = false;     // GPTQ: quantize columns in descending Hessian-diagonal order
  bool static_groups = false;  // groups fixed on original column ranges before the sweep
  float percdamp = 0.01f;     // damping = percdamp * mean(diag H)
  int block_size = 128;       // GPTQ lazy-update block
  bool zero_at_least_one = false;  // asymmetric zero points >= 1 (formats storing zero-1 cannot hold 0)

  int maxq() const { return (1 << bits) - 1; }
};

// One quantized weight matrix W [N][K] (N = outputs, K = inputs).
struct QuantizedLinear {
  int n_out = 0, n_in = 0;
  int group_size = 0;          // effective (K when ungrouped)
  int n_groups = 0;            // G
  std::vector<uint8_t> codes;  // [K][N]: the code of W[n][k] is codes[k*N + n]
  std::vector<float> scales;   // [G][N]
  std::vector<uint8_t> zeros;  // [G][N] integer zero points in [0, maxq]
  std::vector<int32_t> g_idx;  // [K] group of each input column
  std::vector<int32_t> perm;   // act-order: perm[p] = column quantized at position p (empty: identity)
  double loss = 0;             // GPTQ: sum (w-q)^2 / Hinv_cc^2 / 2 (GPTQ-for-LLaMa's "error"); RTN: sum (w-q)^2
  int dead_columns = 0;        // inputs that were always zero in calibration
  double damp = 0;             // value added to the Hessian diagonal
  int damp_retries = 0;        // times damping was raised x10 because H was not positive definite
};

// Grid of one row from its values' min and max (fp32 arithmetic as in the reference).
struct Grid {
  float scale, zero;
};
Grid make_grid(float lo, float hi, const QuantConfig& c);

// The integer code of x on a grid: clamp(round_half_even(x / scale) + zero, 0, maxq). nearbyint
// rounds half to even in the default rounding mode, with GCC and clang alike.
inline int quant_code(float x, Grid g, int maxq) {
  float q = std::nearbyint(x / g.scale) + g.zero;
  q = q < 0.0f ? 0.0f : q;
  q = q > float(maxq) ? float(maxq) : q;
  return int(q);
}

// Round-to-nearest of W [N][K] (row-major), grids from each group's min/max; no calibration.
QuantizedLinear rtn_quantize(const float* W, int N, int K, const QuantConfig& c, ThreadPool& pool);

// W'[n][k] = scale[g][n] * (code - zero[g][n]), g = g_idx[k]. With fp16_scales the scales are
// first rounded to fp16, as the checkpoint stores them.
void dequantize(const QuantizedLinear& q, bool fp16_scales, float* W);

// Sum of squares of (W - W') and of W, for ||W - W'||_F / ||W||_F.
double rel_weight_error(const float* W, const float* Wq, size_t n);

}  // namespace metharme::quant
