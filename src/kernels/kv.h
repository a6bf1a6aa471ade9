// KV cache element types and the attention kernels that read them in place.
//
// A cached row is one position of one kv head: head_dim values, stored as
//   kF32: head_dim floats                        (4 * head_dim bytes)
//   kF16: head_dim IEEE halves                   (2 * head_dim bytes)
//   kQ8:  blocks of 32 values along head_dim (the last one shorter when head_dim % 32 != 0), each
//         { uint16 d (fp16 scale); int8 q[len] }, value = d * q, d = max|x| / 127   (q8_0-like)
//   kQ4:  the same blocks, each { uint16 d; uint8 q[(len + 1) / 2] }: byte i holds value i in its
//         low nibble and value i + (len + 1) / 2 in its high nibble, value = d * (nibble - 8),
//         d = (the value of largest magnitude) / -8                                      (q4_0-like)
// So a q8 row of head_dim 128 is 4 x 34 = 136 bytes and a q4 row 4 x 18 = 72 bytes; rows of one kv
// head are contiguous by position (model/kv_cache.h). Blocks of 32 are byte-compatible with
// ggml's block_q8_0 / block_q4_0.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/isa.h"

namespace metharme::kernels {

enum class KvType : uint8_t { kF32, kF16, kQ8, kQ4 };

constexpr int kKvBlock = 32;
size_t kv_row_bytes(KvType t, int head_dim);
const char* kv_type_name(KvType t);  // "f32", "f16", "q8", "q4"
// Accepts f32 f16 q8 q4 and llama.cpp's spellings q8_0 q4_0; false for anything else.
bool parse_kv_type(const char* s, KvType* out);

// One prefill tile of flash attention (kernels/kv_flash_impl.h): query rows [0, rows) at
// positions pos0 + r, each with n_q heads sharing one kv head; row r sees keys [0, pos0 + r].
// q[r*ldq + h*head_dim + d] (already rotated), out[r*ldo + h*head_dim + d]. scale: the softmax
// temperature (1/sqrt(head_dim)). work: kv_flash_work_floats(rows * n_q, head_dim) floats,
// 64-byte aligned.
struct FlashTile {
  const float* q;
  int64_t ldq;
  float* out;
  int64_t ldo;
  int rows, n_q, head_dim, pos0;
  float scale;
  float* work;
};
constexpr int kFlashKeys = 64;  // keys decoded per block, each used by every query row of the tile
size_t kv_flash_work_floats(int m, int head_dim);

// One decode step of the n_q query heads that share one kv head, over positions [0, n_pos):
// out[h*ldo + d] = softmax_j(scale * q_h . K_j) . V_j. q rows already rotated. work:
// kv_decode_work_floats(n_q, head_dim) floats, aligned for doubles (the scalar twin sums in them).
struct DecodeQuery {
  const float* q;
  int64_t ldq;
  float* out;
  int64_t ldo;
  int n_q, head_dim, n_pos;
  float scale;
  float* work;
};
constexpr int kDecodeKeys = 64;  // positions per block: K and V of a block are read once, while hot
size_t kv_decode_work_floats(int n_q, int head_dim);

struct KvKernels {
  // s[h*lds + j] = sum_d q[h*ldq + d] * K_j[d]   for h < n_q, j < n_pos (K_j: row j at k).
  void (*scores)(KvType t, const void* k, int head_dim, int n_pos, const float* q, int64_t ldq, int n_q, float* s,
                 int64_t lds);
  // o[h*ldo + d] += sum_j p[h*ldp + j] * V_j[d]   for h < n_q, d < head_dim.
  void (*weighted_sum)(KvType t, const void* v, int head_dim, int n_pos, const float* p, int64_t ldp, int n_q, float* o,
                       int64_t ldo);
  // n_rows rows of head_dim values to / from floats (dst / src: n_rows * head_dim floats).
  void (*to_f32)(KvType t, const void* src, int head_dim, int n_rows, float* dst);
  void (*from_f32)(KvType t, const float* src, int head_dim, int n_rows, void* dst);
  // Flash attention of one prefill tile over keys k and values v (rows of their own types): the
  // keys and values are streamed in blocks of kFlashKeys positions, each block decoded once for
  // all rows * n_q queries, with an online softmax (running max and sum), so no score row or
  // decoded copy of the whole prefix is ever written.
  void (*flash)(KvType kt, const void* k, KvType vt, const void* v, const FlashTile& t);
  // Decode attention in one sweep of the cache (kernels/kv_decode_impl.h): blocks of kDecodeKeys
  // positions, each block's keys scored for every query head, then an online softmax (running
  // max and sum per head), then its values summed into the outputs; K and V read in place.
  void (*decode)(KvType kt, const void* k, KvType vt, const void* v, const DecodeQuery& d);
};

const KvKernels& kv_kernels(Isa isa);
// active_isa(), lowered past any ISA whose self-test failed (kernels/selftest.h).
const KvKernels& kv_kernels();

const KvKernels& kv_kernels_scalar();
// The optimized tables share these: f32 and f16 rows go through the dense kernels (dense.h) of the
// dense family's checked ISA; quantized rows whose head_dim is not a multiple of 32 go to scalar.
namespace kv_detail {
void dense_scores(KvType t, const void* k, int head_dim, int n_pos, const float* q, int64_t ldq, int n_q, float* s,
                  int64_t lds);
void dense_weighted_sum(KvType t, const void* v, int head_dim, int n_pos, const float* p, int64_t ldp, int n_q,
                        float* o, int64_t ldo);
void dense_to_f32(KvType t, const void* src, int head_dim, int n_rows, float* dst);
void flash_scalar(KvType kt, const void* k, KvType vt, const void* v, const FlashTile& t);
void flash_avx2(KvType kt, const void* k, KvType vt, const void* v, const FlashTile& t);
void flash_avx512(KvType kt, const void* k, KvType vt, const void* v, const FlashTile& t);
void decode_scalar(KvType kt, const void* k, KvType vt, const void* v, const DecodeQuery& d);
void decode_avx2(KvType kt, const void* k, KvType vt, const void* v, const DecodeQuery& d);
void decode_avx512(KvType kt, const void* k, KvType vt, const void* v, const DecodeQuery& d);
}  // namespace kv_detail
const KvKernels& kv_kernels_avx2();
const KvKernels& kv_kernels_avx512();

}  // namespace metharme::kernels
