// Flash attention of one prefill tile (kernels/kv.h, FlashTile), written once over a vector
// traits type V (kv_flash_avx2.cpp, kv_flash_avx512.cpp):
//   V::R register of V::W floats; load, store, set1, zero, add, sub, mul, max, fma(a, b, c) = a*b + c;
//   exp(x) (0 for x below -87, -inf included); mask_gt(a, b, x) = a > b ? -inf : x, lane by lane;
//   V::kScoreVecs / V::kOutVecs: vectors of the two register blocks below.
// The M = rows * n_q queries of the tile are laid out transposed (Qt[d][m], pre-scaled), so that
// scores come out as St[j][m] for a block of keys: the key values are broadcast straight from
// their decoded rows (no transpose of K), and the online softmax runs lane-parallel over m. The
// weighted sum reads the decoded value rows as they are: O[m][d] += St[j][m] * V[j][d].
#pragma once

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/kv.h"

namespace metharme::kernels::flash {

// Offsets (floats) into the tile's work area; every part starts on a multiple of 16 floats.
// Mp, Dp: m and head_dim rounded up to 16 (padding queries are zero, padding columns unused).
struct Layout {
  int mp, dp;
  size_t qt, st, kb, vb, o, mx, l, al, rp, total;
};

inline int round16(int x) { return (x + 15) / 16 * 16; }

inline Layout layout(int m, int head_dim) {
  Layout L{};
  L.mp = round16(m);
  L.dp = round16(head_dim);
  const size_t mp = size_t(L.mp), dp = size_t(L.dp), bc = kFlashKeys;
  L.qt = 0;                                           // [head_dim][mp]  queries, transposed and scaled
  L.st = L.qt + size_t(head_dim) * mp;                // [bc][mp]        scores, then probabilities
  L.kb = L.st + bc * mp;                              // [bc][head_dim]  decoded keys (round16'ed)
  L.vb = L.kb + size_t(round16(int(bc) * head_dim));  // [bc][dp] decoded values
  L.o = L.vb + bc * dp;                               // [mp][dp]        output accumulators
  L.mx = L.o + mp * dp;                               // [mp] running max, [mp] running sum,
  L.l = L.mx + mp;                                    // [mp] this block's rescale factor,
  L.al = L.l + mp;                                    // [mp] each query's position (the causal mask)
  L.rp = L.al + mp;
  L.total = L.rp + mp;
  return L;
}

// st[j*mp + m] = sum_d K[j][d] * qt[d*mp + m] for j < bc, m < mp: JR keys x MC vectors of queries.
template <class V, int JR, int MC>
inline void score_block(const float* K, int hd, int j, const float* qt, int mp, int m0, float* st) {
  using R = typename V::R;
  R acc[JR][MC];
  for (int a = 0; a < JR; ++a)
    for (int c = 0; c < MC; ++c) acc[a][c] = V::zero();
  for (int d = 0; d < hd; ++d) {
    R qv[MC];
    for (int c = 0; c < MC; ++c) qv[c] = V::load(qt + size_t(d) * mp + m0 + c * V::W);
    for (int a = 0; a < JR; ++a) {
      const R kv = V::set1(K[size_t(j + a) * hd + d]);
      for (int c = 0; c < MC; ++c) acc[a][c] = V::fma(kv, qv[c], acc[a][c]);
    }
  }
  for (int a = 0; a < JR; ++a)
    for (int c = 0; c < MC; ++c) V::store(st + size_t(j + a) * mp + m0 + c * V::W, acc[a][c]);
}

template <class V, int JR>
inline void score_rows(const float* K, int hd, int j, const float* qt, int mp, float* st) {
  constexpr int MC = V::kScoreVecs;
  const int mv = mp / V::W;
  int c = 0;
  for (; c + MC <= mv; c += MC) score_block<V, JR, MC>(K, hd, j, qt, mp, c * V::W, st);
  for (; c < mv; ++c) score_block<V, JR, 1>(K, hd, j, qt, mp, c * V::W, st);
}

template <class V>
inline void scores(const float* K, int hd, int bc, const float* qt, int mp, float* st) {
  int j = 0;
  for (; j + 4 <= bc; j += 4) score_rows<V, 4>(K, hd, j, qt, mp, st);
  for (; j < bc; ++j) score_rows<V, 1>(K, hd, j, qt, mp, st);
}

// Online softmax over one block, lane-parallel over queries: masks keys past each query's
// position (rp non-null), updates the running max mx and sum l, leaves probabilities
// exp(s - max) in st and each query's rescale factor exp(old max - new max) in al.
template <class V>
inline void softmax_block(float* st, int bc, int mp, const float* rp, float j0, float* mx, float* l, float* al) {
  using R = typename V::R;
  for (int m = 0; m < mp; m += V::W) {
    const R mo = V::load(mx + m);
    R mn = mo;
    if (rp) {
      const R pos = V::load(rp + m);
      for (int j = 0; j < bc; ++j) {
        const R s = V::mask_gt(V::set1(j0 + float(j)), pos, V::load(st + size_t(j) * mp + m));
        V::store(st + size_t(j) * mp + m, s);
        mn = V::max(mn, s);
      }
    } else {
      for (int j = 0; j < bc; ++j) mn = V::max(mn, V::load(st + size_t(j) * mp + m));
    }
    R sum = V::zero();
    for (int j = 0; j < bc; ++j) {
      const R p = V::exp(V::sub(V::load(st + size_t(j) * mp + m), mn));
      V::store(st + size_t(j) * mp + m, p);
      sum = V::add(sum, p);
    }
    const R alpha = V::exp(V::sub(mo, mn));
    V::store(l + m, V::fma(V::load(l + m), alpha, sum));
    V::store(mx + m, mn);
    V::store(al + m, alpha);
  }
}

// o[m][d] = al[m] * o[m][d] + sum_j st[j][m] * Vr[j][d]: MR queries x DC vectors of outputs.
template <class V, int MR, int DC>
inline void out_block(const float* st, int bc, int mp, int m0, const float* Vr, int64_t ldv, int d0, const float* al,
                      float* o, int dp) {
  using R = typename V::R;
  R acc[MR][DC];
  for (int i = 0; i < MR; ++i) {
    const R a = V::set1(al[m0 + i]);
    for (int c = 0; c < DC; ++c) acc[i][c] = V::mul(V::load(o + size_t(m0 + i) * dp + d0 + c * V::W), a);
  }
  for (int j = 0; j < bc; ++j) {
    R vv[DC];
    for (int c = 0; c < DC; ++c) vv[c] = V::load(Vr + j * ldv + d0 + c * V::W);
    for (int i = 0; i < MR; ++i) {
      const R p = V::set1(st[size_t(j) * mp + m0 + i]);
      for (int c = 0; c < DC; ++c) acc[i][c] = V::fma(p, vv[c], acc[i][c]);
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int c = 0; c < DC; ++c) V::store(o + size_t(m0 + i) * dp + d0 + c * V::W, acc[i][c]);
}

template <class V, int MR>
inline void out_rows(const float* st, int bc, int mp, int m0, const float* Vr, int64_t ldv, const float* al, float* o,
                     int dp) {
  constexpr int DC = V::kOutVecs;
  const int dv = dp / V::W;
  int c = 0;
  for (; c + DC <= dv; c += DC) out_block<V, MR, DC>(st, bc, mp, m0, Vr, ldv, c * V::W, al, o, dp);
  for (; c < dv; ++c) out_block<V, MR, 1>(st, bc, mp, m0, Vr, ldv, c * V::W, al, o, dp);
}

// Qt, the mask positions and the accumulators of a fresh tile.
inline void start_tile(const FlashTile& t, const Layout& L, int m) {
  float* qt = t.work + L.qt;
  for (int i = 0; i < L.mp; ++i) {
    const int r = i / t.n_q, h = i % t.n_q;
    const float* q = t.q + int64_t(r) * t.ldq + int64_t(h) * t.head_dim;
    for (int d = 0; d < t.head_dim; ++d) qt[size_t(d) * size_t(L.mp) + size_t(i)] = i < m ? t.scale * q[d] : 0.0f;
    // Padding queries see every key (finite scores, never an all-masked block).
    t.work[L.rp + size_t(i)] = i < m ? float(t.pos0 + r) : 3e38f;
    t.work[L.mx + size_t(i)] = -INFINITY;
    t.work[L.l + size_t(i)] = 0.0f;
  }
  std::fill(t.work + L.o, t.work + L.o + size_t(L.mp) * size_t(L.dp), 0.0f);
  std::fill(t.work + L.vb, t.work + L.vb + size_t(kFlashKeys) * size_t(L.dp), 0.0f);
}

// ToF32: the ISA's kv to_f32 (kernels/kv.h signature).
template <class V, class ToF32>
void tile(KvType kt, const void* k, KvType vt, const void* v, const FlashTile& t, ToF32 to_f32) {
  const int hd = t.head_dim, m = t.rows * t.n_q, n_keys = t.pos0 + t.rows;
  const Layout L = layout(m, hd);
  start_tile(t, L, m);
  float* w = t.work;
  const size_t krb = kv_row_bytes(kt, hd), vrb = kv_row_bytes(vt, hd);
  const auto* kb = static_cast<const uint8_t*>(k);
  const auto* vb = static_cast<const uint8_t*>(v);
  for (int j0 = 0; j0 < n_keys; j0 += kFlashKeys) {
    const int bc = std::min(kFlashKeys, n_keys - j0);
    const float* K = w + L.kb;
    if (kt == KvType::kF32)
      K = reinterpret_cast<const float*>(kb) + size_t(j0) * size_t(hd);
    else
      to_f32(kt, kb + size_t(j0) * krb, hd, bc, w + L.kb);
    const float* Vr = w + L.vb;
    int64_t ldv = L.dp;
    if (vt == KvType::kF32 && hd == L.dp) {
      Vr = reinterpret_cast<const float*>(vb) + size_t(j0) * size_t(hd);
    } else if (hd == L.dp) {
      to_f32(vt, vb + size_t(j0) * vrb, hd, bc, w + L.vb);
    } else {  // rows padded to dp (the padding stays zero)
      for (int j = 0; j < bc; ++j) to_f32(vt, vb + size_t(j0 + j) * vrb, hd, 1, w + L.vb + size_t(j) * size_t(L.dp));
    }
    scores<V>(K, hd, bc, w + L.qt, L.mp, w + L.st);
    const bool diagonal = j0 + bc - 1 > t.pos0;  // some query does not see every key of the block
    softmax_block<V>(w + L.st, bc, L.mp, diagonal ? w + L.rp : nullptr, float(j0), w + L.mx, w + L.l, w + L.al);
    int i = 0;
    for (; i + 4 <= m; i += 4) out_rows<V, 4>(w + L.st, bc, L.mp, i, Vr, ldv, w + L.al, w + L.o, L.dp);
    for (; i < m; ++i) out_rows<V, 1>(w + L.st, bc, L.mp, i, Vr, ldv, w + L.al, w + L.o, L.dp);
  }
  for (int i = 0; i < m; ++i) {
    const int r = i / t.n_q, h = i % t.n_q;
    const float inv = 1.0f / w[L.l + size_t(i)];
    const float* o = w + L.o + size_t(i) * size_t(L.dp);
    float* out = t.out + int64_t(r) * t.ldo + int64_t(h) * hd;
    for (int d = 0; d < hd; ++d) out[d] = o[d] * inv;
  }
}

}  // namespace metharme::kernels::flash
