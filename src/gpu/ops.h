// The forward pass's operations on a Vulkan device: each records one dispatch into the
// Context's open step. Shapes as in ops/ and kernels/; every activation is fp32, row-major with
// the row stride equal to its width.
#pragma once

#include <string>

#include "gpu/device.h"
#include "kernels/kv.h"
#include "ops/linear.h"

namespace metharme::gpu {

// A linear layer's weights on the device.
struct DeviceLinear {
  enum class Kind { kDense, kQ4, kI8 } kind = Kind::kDense;
  int n = 0, k = 0;  // output columns N, input rows K
  // int4 (kernels/q4.h layout): codes, fp32 scales, u8 zeros, kernel-row -> input-row map, bias,
  // and GGUF Q4_1/Q4_K's per-32-row offsets [n][n_blocks] (n_blocks 0: none).
  Buffer qs, scales, zeros, perm, bias, offsets;
  int kp = 0, gs = 0, n_groups = 0, n_blocks = 0;
  bool has_bias = false;
  // int8 codes (kernels/i8w.h layout: GGUF Q8_0, Q5_K, Q6_K): qs, fp32 scales per sb rows, adds.
  Buffer adds;
  int sb = 32;
  bool has_adds = false;
  // dense: [n][k] rows of f32 (wtype 0), f16 (1) or bf16 (2).
  Buffer w;
  int wtype = 0;
};

// Whether a linear can run on the device; *why names what is missing when not.
bool linear_supported(const ops::Linear& l, std::string* why);
// Bytes the device copy of `l` takes.
size_t linear_device_bytes(const ops::Linear& l);
DeviceLinear upload_linear(Context& ctx, const ops::Linear& l, const std::string& name);
void free_linear(Context& ctx, DeviceLinear& l);

// y [M][n] = x [M][k] W^T.
void matmul(Context& ctx, const DeviceLinear& w, Buffer x, Buffer y, int M);
// out[m] = w * x[m] / rms(x[m]) for M rows of d (out may be x).
void rmsnorm(Context& ctx, Buffer x, Buffer w, Buffer out, int M, int d, float eps);
// Turns n_heads heads (hd each) of each row of x [M][n_heads*hd] to its token's position; tok is
// [M][2] int32 (position, sequence); cos/sin are [n_pos][hd/2] tables.
void rope(Context& ctx, Buffer x, Buffer tok, Buffer cos, Buffer sin, int M, int n_heads, int hd);

// One layer's KV cache on the device: rows [n_seq][kv_heads][n_ctx] of head_dim values, K and V
// each f32, f16, q8 or q4 in kernels/kv.h's row layout, a row padded to a multiple of 4 bytes.
struct DeviceKv {
  Buffer k, v;
  int kv_heads = 0, hd = 0, n_ctx = 0, n_seq = 0;
  kernels::KvType tk = kernels::KvType::kF32, tv = kernels::KvType::kF32;
  static size_t row_stride(kernels::KvType t, int hd) { return (kernels::kv_row_bytes(t, hd) + 3) / 4 * 4; }
  size_t rows() const { return size_t(n_seq) * kv_heads * n_ctx; }
  size_t k_bytes() const { return rows() * row_stride(tk, hd); }
  size_t v_bytes() const { return rows() * row_stride(tv, hd); }
};
void kv_store(Context& ctx, const DeviceKv& kv, Buffer k, Buffer v, Buffer tok, int M);
// out [M][n_heads*hd] = causal attention of q [M][n_heads*hd] over kv (positions <= each row's):
// attention_tiled (flash-style, tiles of 8 rows sharing each K/V block; hd <= 128) for batches of
// kTiledRows rows or more, attention_rows (one workgroup per row and head) otherwise.
constexpr int kTiledRows = 8;
void attention(Context& ctx, const DeviceKv& kv, Buffer q, Buffer tok, Buffer out, int M, int n_heads, float scale);
void attention_rows(Context& ctx, const DeviceKv& kv, Buffer q, Buffer tok, Buffer out, int M, int n_heads,
                    float scale);
void attention_tiled(Context& ctx, const DeviceKv& kv, Buffer q, Buffer tok, Buffer out, int M, int n_heads,
                     float scale);
void silu_mul(Context& ctx, Buffer a, Buffer b, int n);  // a = silu(a) * b
void add(Context& ctx, Buffer y, Buffer x, int n);       // y += x

}  // namespace metharme::gpu
