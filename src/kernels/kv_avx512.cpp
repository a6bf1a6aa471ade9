// AVX-512 KV kernels over q8 / q4 rows (kernels/kv.h): the AVX2 design (kv_avx2.cpp) at 16 floats
// per vector. A block of 32 is two vectors; scores take 4 positions and 1, 2 or 4 query heads per
// pass (up to 16 accumulators), the weighted sum keeps 128 outputs (8 vectors) in registers.
// f32 / f16 rows and head_dim % 32 != 0 go to kv_detail (dense kernels or scalar).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>

#include <cstring>

#include "kernels/kv.h"

namespace metharme::kernels {

namespace {

template <KvType T>
constexpr size_t kBlockBytes = T == KvType::kQ8 ? 34 : 18;

// Software prefetch this far ahead of the rows being read: the hardware streamer stops at each
// 4 KiB page, and a cached row (136 bytes at q8, head_dim 128) leaves little time to restart it.
constexpr size_t kAhead = 2048;
inline void prefetch_range(const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; i += 64) _mm_prefetch(reinterpret_cast<const char*>(p + kAhead + i), _MM_HINT_T0);
}

inline float scale_of(const uint8_t* blk) {
  uint16_t h;
  std::memcpy(&h, blk, 2);
  return _cvtsh_ss(h);
}

// The 32 values of a block, unscaled, as 2 x 16 floats.
template <KvType T>
inline void block_values(const uint8_t* blk, __m512 v[2]) {
  if constexpr (T == KvType::kQ8) {
    v[0] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2))));
    v[1] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 18))));
  } else {
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2));
    const __m128i m = _mm_set1_epi8(15), eight = _mm_set1_epi8(8);
    v[0] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_sub_epi8(_mm_and_si128(b, m), eight)));
    v[1] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(b, 4), m), eight)));
  }
}

inline __m256 fold(__m512 a) {
  return _mm256_add_ps(_mm512_castps512_ps256(a), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)));
}

// [sum a0, sum a1, sum a2, sum a3]
inline __m128 hsum4(__m512 a0, __m512 a1, __m512 a2, __m512 a3) {
  const __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(fold(a0), fold(a1)), _mm256_hadd_ps(fold(a2), fold(a3)));
  return _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
}

template <KvType T, int P, int NH>
void scores_block(const uint8_t* k, size_t rb, int nb, int j0, const float* q, int64_t ldq, int h0, float* s,
                  int64_t lds) {
  __m512 acc[P][NH];
  for (int p = 0; p < P; ++p)
    for (int h = 0; h < NH; ++h) acc[p][h] = _mm512_setzero_ps();
  prefetch_range(k + size_t(j0) * rb, P * rb);
  for (int b = 0; b < nb; ++b) {
    for (int p = 0; p < P; ++p) {
      const uint8_t* blk = k + size_t(j0 + p) * rb + size_t(b) * kBlockBytes<T>;
      const __m512 d = _mm512_set1_ps(scale_of(blk));
      __m512 v[2];
      block_values<T>(blk, v);
      for (int i = 0; i < 2; ++i) {
        v[i] = _mm512_mul_ps(v[i], d);
        for (int h = 0; h < NH; ++h)
          acc[p][h] = _mm512_fmadd_ps(v[i], _mm512_loadu_ps(q + (h0 + h) * ldq + 32 * b + 16 * i), acc[p][h]);
      }
    }
  }
  for (int h = 0; h < NH; ++h) {
    float* out = s + (h0 + h) * lds + j0;
    if constexpr (P == 4)
      _mm_storeu_ps(out, hsum4(acc[0][h], acc[1][h], acc[2][h], acc[3][h]));
    else
      *out = _mm512_reduce_add_ps(acc[0][h]);
  }
}

template <KvType T, int NH>
void scores_heads(const uint8_t* k, size_t rb, int nb, int n_pos, const float* q, int64_t ldq, int h0, float* s,
                  int64_t lds) {
  int j = 0;
  for (; j + 4 <= n_pos; j += 4) scores_block<T, 4, NH>(k, rb, nb, j, q, ldq, h0, s, lds);
  for (; j < n_pos; ++j) scores_block<T, 1, NH>(k, rb, nb, j, q, ldq, h0, s, lds);
}

template <KvType T>
void scores_t(const void* k, int head_dim, int n_pos, const float* q, int64_t ldq, int n_q, float* s, int64_t lds) {
  const auto* kb = static_cast<const uint8_t*>(k);
  const size_t rb = kv_row_bytes(T, head_dim);
  const int nb = head_dim / kKvBlock;
  int h = 0;
  for (; h + 4 <= n_q; h += 4) scores_heads<T, 4>(kb, rb, nb, n_pos, q, ldq, h, s, lds);
  for (; h + 2 <= n_q; h += 2) scores_heads<T, 2>(kb, rb, nb, n_pos, q, ldq, h, s, lds);
  if (h < n_q) scores_heads<T, 1>(kb, rb, nb, n_pos, q, ldq, h, s, lds);
}

void scores(KvType t, const void* k, int head_dim, int n_pos, const float* q, int64_t ldq, int n_q, float* s,
            int64_t lds) {
  if (head_dim % kKvBlock != 0 || t == KvType::kF32 || t == KvType::kF16)
    return kv_detail::dense_scores(t, k, head_dim, n_pos, q, ldq, n_q, s, lds);
  if (t == KvType::kQ8) return scores_t<KvType::kQ8>(k, head_dim, n_pos, q, ldq, n_q, s, lds);
  scores_t<KvType::kQ4>(k, head_dim, n_pos, q, ldq, n_q, s, lds);
}

// NB blocks (NB * 32 outputs, 2 * NB vectors) of one head, from block b0, over every position.
template <KvType T, int NB>
void wsum_chunk(const uint8_t* v, size_t rb, int b0, int n_pos, const float* p, float* o) {
  __m512 acc[NB][2];
  for (int b = 0; b < NB; ++b)
    for (int i = 0; i < 2; ++i) acc[b][i] = _mm512_loadu_ps(o + 32 * (b0 + b) + 16 * i);
  for (int j = 0; j < n_pos; ++j) {
    const uint8_t* row = v + size_t(j) * rb + size_t(b0) * kBlockBytes<T>;
    prefetch_range(row, NB * kBlockBytes<T>);
    for (int b = 0; b < NB; ++b) {
      const uint8_t* blk = row + size_t(b) * kBlockBytes<T>;
      const __m512 c = _mm512_set1_ps(p[j] * scale_of(blk));
      __m512 x[2];
      block_values<T>(blk, x);
      for (int i = 0; i < 2; ++i) acc[b][i] = _mm512_fmadd_ps(x[i], c, acc[b][i]);
    }
  }
  for (int b = 0; b < NB; ++b)
    for (int i = 0; i < 2; ++i) _mm512_storeu_ps(o + 32 * (b0 + b) + 16 * i, acc[b][i]);
}

template <KvType T>
void wsum_t(const void* v, int head_dim, int n_pos, const float* p, int64_t ldp, int n_q, float* o, int64_t ldo) {
  const auto* vb = static_cast<const uint8_t*>(v);
  const size_t rb = kv_row_bytes(T, head_dim);
  const int nb = head_dim / kKvBlock;
  for (int h = 0; h < n_q; ++h) {
    int b = 0;
    for (; b + 4 <= nb; b += 4) wsum_chunk<T, 4>(vb, rb, b, n_pos, p + h * ldp, o + h * ldo);
    for (; b + 2 <= nb; b += 2) wsum_chunk<T, 2>(vb, rb, b, n_pos, p + h * ldp, o + h * ldo);
    if (b < nb) wsum_chunk<T, 1>(vb, rb, b, n_pos, p + h * ldp, o + h * ldo);
  }
}

void weighted_sum(KvType t, const void* v, int head_dim, int n_pos, const float* p, int64_t ldp, int n_q, float* o,
                  int64_t ldo) {
  if (head_dim % kKvBlock != 0 || t == KvType::kF32 || t == KvType::kF16)
    return kv_detail::dense_weighted_sum(t, v, head_dim, n_pos, p, ldp, n_q, o, ldo);
  if (t == KvType::kQ8) return wsum_t<KvType::kQ8>(v, head_dim, n_pos, p, ldp, n_q, o, ldo);
  wsum_t<KvType::kQ4>(v, head_dim, n_pos, p, ldp, n_q, o, ldo);
}

template <KvType T>
void to_f32_t(const void* src, int head_dim, int n_rows, float* dst) {
  const auto* s = static_cast<const uint8_t*>(src);
  const int nb = head_dim / kKvBlock;
  for (int64_t blk = 0; blk < int64_t(n_rows) * nb; ++blk) {
    const uint8_t* in = s + size_t(blk) * kBlockBytes<T>;
    const __m512 d = _mm512_set1_ps(scale_of(in));
    __m512 x[2];
    block_values<T>(in, x);
    for (int i = 0; i < 2; ++i) _mm512_storeu_ps(dst + blk * 32 + 16 * i, _mm512_mul_ps(x[i], d));
  }
}

void to_f32(KvType t, const void* src, int head_dim, int n_rows, float* dst) {
  if (head_dim % kKvBlock != 0 || t == KvType::kF32 || t == KvType::kF16)
    return kv_detail::dense_to_f32(t, src, head_dim, n_rows, dst);
  if (t == KvType::kQ8) return to_f32_t<KvType::kQ8>(src, head_dim, n_rows, dst);
  to_f32_t<KvType::kQ4>(src, head_dim, n_rows, dst);
}

}  // namespace

const KvKernels& kv_kernels_avx512() {
  static const KvKernels k{
      scores, weighted_sum, to_f32, kv_kernels_scalar().from_f32, kv_detail::flash_avx512, kv_detail::decode_avx512};
  return k;
}

}  // namespace metharme::kernels
