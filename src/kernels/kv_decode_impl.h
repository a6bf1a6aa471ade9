// Decode attention in one sweep of the cache (kernels/kv.h, DecodeQuery), written once over a
// vector traits type V (kv_vec_avx2.h, kv_vec_avx512.h): the flash traits plus
//   hsum(a), hmax(a), hsum4(a0, a1, a2, a3, out[4]); half(fp16 bits) -> float; half_bcast(p): the
//   fp16 at p in every lane;
//   chunk<T>(p, x[32 / W]): the 32 values of one chunk of a row of type T, unscaled;
//   kDecScoreHeads, kDecOutHeads, kDecOutChunks: register block sizes.
// For each block of kDecodeKeys positions: scores of every query head against the block's keys
// (read from memory once, each row decoded in registers), an online softmax over the block
// (vector exp), then the block's values (read once) summed into the outputs, which live in `out`
// across blocks and are rescaled when a head's running max grows. Rows are read in place in their
// own types; a row is head_dim / 32 vector chunks and a scalar tail of head_dim % 32 values.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/kv.h"

namespace metharme::kernels::decode {

constexpr int kB = kDecodeKeys;

template <KvType T>
constexpr bool kQuant = T == KvType::kQ8 || T == KvType::kQ4;
// Bytes of one full 32-value chunk of a row: chunk c starts at c * kChunkBytes<T>, the tail after
// the last full chunk.
template <KvType T>
constexpr size_t kChunkBytes = T == KvType::kQ8    ? 34
                               : T == KvType::kQ4  ? 18
                               : T == KvType::kF16 ? 64
                                                   : 128;

template <class V, KvType T>
inline float chunk_scale(const uint8_t* p) {
  if constexpr (kQuant<T>) {
    uint16_t h;
    std::memcpy(&h, p, 2);
    return V::half(h);
  } else {
    return 1.0f;
  }
}

// The last head_dim % 32 values of a row (nc full chunks before them), decoded one by one.
template <class V, KvType T>
inline void tail_values(const uint8_t* row, int nc, int len, float* y) {
  const uint8_t* p = row + size_t(nc) * kChunkBytes<T>;
  if constexpr (T == KvType::kF32) {
    std::memcpy(y, p, size_t(len) * 4);
  } else if constexpr (T == KvType::kF16) {
    for (int i = 0; i < len; ++i) {
      uint16_t h;
      std::memcpy(&h, p + 2 * i, 2);
      y[i] = V::half(h);
    }
  } else if constexpr (T == KvType::kQ8) {
    const float d = chunk_scale<V, T>(p);
    for (int i = 0; i < len; ++i) y[i] = d * float(int8_t(p[2 + i]));
  } else {
    const float d = chunk_scale<V, T>(p);
    const int half = (len + 1) / 2;
    for (int i = 0; i < len; ++i) {
      const uint8_t b = p[2 + (i < half ? i : i - half)];
      y[i] = d * float(int(i < half ? b & 15 : b >> 4) - 8);
    }
  }
}

inline void prefetch_row(const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; i += 64) __builtin_prefetch(p + i, 0, 3);
}

// Where the block's scores / probabilities, running max and sum, and rescale factors live.
struct Work {
  float *s, *mx, *l, *al;  // s: [n_q][kB]
};

// s[h][jj + p] = scale * q_h . K_{jj + p} for P positions and NH heads from h0; rows: the block's
// first key row. pf: prefetch the same rows of the next block and this block's value rows.
template <class V, KvType T, int P, int NH>
inline void score_rows(const uint8_t* rows, size_t rb, int jj, const DecodeQuery& d, int h0, float* s,
                       const uint8_t* vrows, size_t vrb, bool pf) {
  using R = typename V::R;
  constexpr int K = 32 / V::W;
  const int nc = d.head_dim / 32, tl = d.head_dim % 32;
  // With one head, two accumulators per position halve each FMA dependency chain; with more
  // heads there are enough independent chains already.
  constexpr int A = NH == 1 ? 2 : 1;
  R acc[P][NH][A];
  for (int p = 0; p < P; ++p)
    for (int h = 0; h < NH; ++h)
      for (int a = 0; a < A; ++a) acc[p][h][a] = V::zero();
  if (pf)
    for (int p = 0; p < P; ++p) {
      prefetch_row(rows + size_t(jj + p + kB) * rb, rb);
      prefetch_row(vrows + size_t(jj + p) * vrb, vrb);
    }
  for (int c = 0; c < nc; ++c)
    for (int p = 0; p < P; ++p) {
      const uint8_t* cp = rows + size_t(jj + p) * rb + size_t(c) * kChunkBytes<T>;
      R x[K];
      V::template chunk<T>(cp, x);
      if constexpr (kQuant<T>) {
        const R sc = V::half_bcast(cp);
        for (int i = 0; i < K; ++i) x[i] = V::mul(x[i], sc);
      }
      for (int i = 0; i < K; ++i)
        for (int h = 0; h < NH; ++h)
          acc[p][h][i % A] = V::fma(x[i], V::load(d.q + (h0 + h) * d.ldq + 32 * c + V::W * i), acc[p][h][i % A]);
    }
  R tot[P][NH];
  for (int p = 0; p < P; ++p)
    for (int h = 0; h < NH; ++h) tot[p][h] = A == 2 ? V::add(acc[p][h][0], acc[p][h][A - 1]) : acc[p][h][0];
  float sum[NH][P];
  for (int h = 0; h < NH; ++h) {
    if constexpr (P == 4)
      V::hsum4(tot[0][h], tot[1][h], tot[2][h], tot[3][h], sum[h]);
    else
      for (int p = 0; p < P; ++p) sum[h][p] = V::hsum(tot[p][h]);
  }
  if (tl)
    for (int p = 0; p < P; ++p) {
      float y[32];
      tail_values<V, T>(rows + size_t(jj + p) * rb, nc, tl, y);
      for (int h = 0; h < NH; ++h) {
        const float* q = d.q + (h0 + h) * d.ldq + 32 * nc;
        for (int i = 0; i < tl; ++i) sum[h][p] += q[i] * y[i];
      }
    }
  for (int h = 0; h < NH; ++h)
    for (int p = 0; p < P; ++p) s[(h0 + h) * kB + jj + p] = sum[h][p] * d.scale;
}

template <class V, KvType T, int NH>
inline void score_heads(const uint8_t* rows, size_t rb, int bc, const DecodeQuery& d, int h0, float* s,
                        const uint8_t* vrows, size_t vrb) {
  int j = 0;
  for (; j + 4 <= bc; j += 4) score_rows<V, T, 4, NH>(rows, rb, j, d, h0, s, vrows, vrb, h0 == 0);
  for (; j < bc; ++j) score_rows<V, T, 1, NH>(rows, rb, j, d, h0, s, vrows, vrb, h0 == 0);
}

template <class V, KvType T>
void score_block(const uint8_t* rows, size_t rb, int bc, const DecodeQuery& d, float* s, const uint8_t* vrows,
                 size_t vrb) {
  int h = 0;
  if constexpr (V::kDecScoreHeads >= 4)
    for (; h + 4 <= d.n_q; h += 4) score_heads<V, T, 4>(rows, rb, bc, d, h, s, vrows, vrb);
  if constexpr (V::kDecScoreHeads >= 2)
    for (; h + 2 <= d.n_q; h += 2) score_heads<V, T, 2>(rows, rb, bc, d, h, s, vrows, vrb);
  for (; h < d.n_q; ++h) score_heads<V, T, 1>(rows, rb, bc, d, h, s, vrows, vrb);
}

// Online softmax of one block, head by head: scores past bc become -inf (probability 0), the
// block max raises the running max, s becomes exp(s - max), al the factor exp(old max - new max)
// that the outputs and the running sum take (0 on the first block, whose old max is -inf).
template <class V>
void softmax_block(int bc, int n_q, const Work& w) {
  using R = typename V::R;
  const int bv = (bc + V::W - 1) / V::W * V::W;
  for (int h = 0; h < n_q; ++h) {
    float* r = w.s + h * kB;
    for (int j = bc; j < bv; ++j) r[j] = -INFINITY;
    R m = V::load(r);
    for (int j = V::W; j < bv; j += V::W) m = V::max(m, V::load(r + j));
    const float mn = std::max(w.mx[h], V::hmax(m));
    const R mv = V::set1(mn);
    R sum = V::zero();
    for (int j = 0; j < bv; j += V::W) {
      const R p = V::exp(V::sub(V::load(r + j), mv));
      V::store(r + j, p);
      sum = V::add(sum, p);
    }
    w.al[h] = mn == w.mx[h] ? 1.0f : std::exp(w.mx[h] - mn);
    w.l[h] = w.l[h] * w.al[h] + V::hsum(sum);
    w.mx[h] = mn;
  }
}

// out_h[32 c0 .. 32 (c0 + NC)) = al_h * out_h + sum_j p_h[j] V_j, for NH heads from h0: NH x NC
// chunks of accumulators in registers over the bc value rows of the block.
template <class V, KvType T, int NH, int NC>
inline void out_tile(const uint8_t* rows, size_t rb, int bc, int c0, const DecodeQuery& d, int h0, const Work& w) {
  using R = typename V::R;
  constexpr int K = 32 / V::W;
  R acc[NH][NC * K];
  for (int h = 0; h < NH; ++h) {
    const R a = V::set1(w.al[h0 + h]);
    for (int i = 0; i < NC * K; ++i) acc[h][i] = V::mul(V::load(d.out + (h0 + h) * d.ldo + 32 * c0 + V::W * i), a);
  }
  for (int j = 0; j < bc; ++j)
    for (int c = 0; c < NC; ++c) {
      const uint8_t* cp = rows + size_t(j) * rb + size_t(c0 + c) * kChunkBytes<T>;
      R x[K];
      V::template chunk<T>(cp, x);
      R sc = V::set1(1.0f);
      if constexpr (kQuant<T>) sc = V::half_bcast(cp);
      for (int h = 0; h < NH; ++h) {
        const R p = kQuant<T> ? V::mul(V::set1(w.s[(h0 + h) * kB + j]), sc) : V::set1(w.s[(h0 + h) * kB + j]);
        for (int i = 0; i < K; ++i) acc[h][c * K + i] = V::fma(x[i], p, acc[h][c * K + i]);
      }
    }
  for (int h = 0; h < NH; ++h)
    for (int i = 0; i < NC * K; ++i) V::store(d.out + (h0 + h) * d.ldo + 32 * c0 + V::W * i, acc[h][i]);
}

// The same for the tail values of head h, one by one.
template <class V, KvType T>
inline void out_tail(const uint8_t* rows, size_t rb, int bc, const DecodeQuery& d, int h, const Work& w) {
  const int nc = d.head_dim / 32, tl = d.head_dim % 32;
  float* o = d.out + h * d.ldo + 32 * nc;
  for (int i = 0; i < tl; ++i) o[i] *= w.al[h];
  for (int j = 0; j < bc; ++j) {
    float y[32];
    tail_values<V, T>(rows + size_t(j) * rb, nc, tl, y);
    const float p = w.s[h * kB + j];
    for (int i = 0; i < tl; ++i) o[i] += p * y[i];
  }
}

template <class V, KvType T, int NH>
inline void out_heads(const uint8_t* rows, size_t rb, int bc, const DecodeQuery& d, int h0, const Work& w) {
  constexpr int NC = V::kDecOutChunks;
  const int nc = d.head_dim / 32;
  int c = 0;
  for (; c + NC <= nc; c += NC) out_tile<V, T, NH, NC>(rows, rb, bc, c, d, h0, w);
  for (; c < nc; ++c) out_tile<V, T, NH, 1>(rows, rb, bc, c, d, h0, w);
  if (d.head_dim % 32)
    for (int h = h0; h < h0 + NH; ++h) out_tail<V, T>(rows, rb, bc, d, h, w);
}

template <class V, KvType T>
void out_block(const uint8_t* rows, size_t rb, int bc, const DecodeQuery& d, const Work& w) {
  int h = 0;
  if constexpr (V::kDecOutHeads >= 2)
    for (; h + 2 <= d.n_q; h += 2) out_heads<V, T, 2>(rows, rb, bc, d, h, w);
  for (; h < d.n_q; ++h) out_heads<V, T, 1>(rows, rb, bc, d, h, w);
}

template <class V, KvType KT, KvType VT>
void run(const uint8_t* k, const uint8_t* v, const DecodeQuery& d) {
  const size_t krb = kv_row_bytes(KT, d.head_dim), vrb = kv_row_bytes(VT, d.head_dim);
  const Work w{d.work, d.work + size_t(d.n_q) * kB, d.work + size_t(d.n_q) * (kB + 1),
               d.work + size_t(d.n_q) * (kB + 2)};
  for (int h = 0; h < d.n_q; ++h) {
    w.mx[h] = -INFINITY;
    w.l[h] = 0.0f;
    std::fill(d.out + h * d.ldo, d.out + h * d.ldo + d.head_dim, 0.0f);
  }
  for (int j0 = 0; j0 < d.n_pos; j0 += kB) {
    const int bc = std::min(kB, d.n_pos - j0);
    const uint8_t* vrows = v + size_t(j0) * vrb;
    score_block<V, KT>(k + size_t(j0) * krb, krb, bc, d, w.s, vrows, vrb);
    softmax_block<V>(bc, d.n_q, w);
    out_block<V, VT>(vrows, vrb, bc, d, w);
  }
  for (int h = 0; h < d.n_q; ++h) {
    const float inv = 1.0f / w.l[h];
    float* o = d.out + h * d.ldo;
    for (int i = 0; i < d.head_dim; ++i) o[i] *= inv;
  }
}

template <class V, KvType KT>
void with_k(const void* k, KvType vt, const void* v, const DecodeQuery& d) {
  const auto* kb = static_cast<const uint8_t*>(k);
  const auto* vb = static_cast<const uint8_t*>(v);
  switch (vt) {
    case KvType::kF32:
      return run<V, KT, KvType::kF32>(kb, vb, d);
    case KvType::kF16:
      return run<V, KT, KvType::kF16>(kb, vb, d);
    case KvType::kQ8:
      return run<V, KT, KvType::kQ8>(kb, vb, d);
    case KvType::kQ4:
      return run<V, KT, KvType::kQ4>(kb, vb, d);
  }
}

template <class V>
void attend(KvType kt, const void* k, KvType vt, const void* v, const DecodeQuery& d) {
  switch (kt) {
    case KvType::kF32:
      return with_k<V, KvType::kF32>(k, vt, v, d);
    case KvType::kF16:
      return with_k<V, KvType::kF16>(k, vt, v, d);
    case KvType::kQ8:
      return with_k<V, KvType::kQ8>(k, vt, v, d);
    case KvType::kQ4:
      return with_k<V, KvType::kQ4>(k, vt, v, d);
  }
}

}  // namespace metharme::kernels::decode
