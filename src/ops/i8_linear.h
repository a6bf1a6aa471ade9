// Int8-code linear layers (GGUF Q8_0, Q5_K, Q6_K repacked at load into kernels/i8w.h's layout)
// and running them: int8 activations in blocks of 32 with the integer kernels, or, in the exact
// mode (METHARME_Q4_ACT=f32, ops/q4_linear.h), panels dequantized to fp32 for sgemm.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kernels/i8w.h"
#include "ops/linear.h"
#include "util/buffer.h"

namespace metharme::ops {

struct I8Weight {
  int n_out = 0, n_in = 0;  // N, K
  std::string kind;         // source type, for describe(): "q8_0", "q5_k", "q6_k"
  kernels::I8Matrix mat;    // views into the buffers below
  PageBuffer qs;
  std::vector<float> scales, adds;
  // Q6_K / Q5_K in their own scale layout (kernels/i8w.h; then scales and adds are empty).
  std::vector<int8_t> ksc;
  std::vector<uint8_t> kmin;
  std::vector<uint16_t> kd, kdmin;
};

// An empty weight of N x K (K a multiple of 32) with scales per `sb` rows (16 or 32) and, when
// `with_adds`, per-32 adds; the caller fills it with i8_set and then calls i8_finish.
std::shared_ptr<I8Weight> i8_alloc(int n, int k, int sb, bool with_adds, const std::string& kind);
// Code of W[n][k], and the scale / add of its block (index k / sb and k / 32).
void i8_set_code(I8Weight& w, int n, int k, int8_t code);
// Codes of W[n][k0 .. k0+count-1] (k0 and count multiples of 4), four at a time.
void i8_set_codes(I8Weight& w, int n, int k0, const int8_t* codes, int count);
float& i8_scale(I8Weight& w, int n, int k);
float& i8_add(I8Weight& w, int n, int k);
void i8_finish(I8Weight& w);  // sets mat.small from the codes
// Switches w (K a multiple of 256) to the Q6_K / Q5_K scale layout: per-block integer scales
// (and, with adds, mins) and fp16 factors per 256 rows, set with the four functions below.
void i8_use_k_scales(I8Weight& w);
int8_t& i8_ksc(I8Weight& w, int n, int k);      // block k / sb
uint8_t& i8_kmin(I8Weight& w, int n, int k);    // block k / 32
uint16_t& i8_kd(I8Weight& w, int n, int k);     // super-block k / 256
uint16_t& i8_kdmin(I8Weight& w, int n, int k);  // super-block k / 256
// The scales [n_tiles][kp/sb][16] and adds [n_tiles][kp/32][16] (empty: none) in fp32, whatever
// the layout (for the GPU, whose shaders read that form).
struct I8Scales {
  std::vector<float> scales, adds;
};
I8Scales i8_scales(const I8Weight& w);

std::vector<float> i8_dequantize(const I8Weight& w);  // [N][K] fp32
size_t i8_weight_bytes(const I8Weight& w);
std::string i8_describe(const I8Weight& w);

// y = x W^T for several int8-code linears sharing x [M][n_in].
void i8_linear_multi(const LinearOut* outs, int n_outs, const float* x, int M, ThreadPool& pool);

}  // namespace metharme::ops
