#include "ops/q4_linear.h"

#include <cblas.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "util/error.h"
#include "util/half.h"

namespace metharme::ops {

using kernels::kQ4StepBytes;
using kernels::kQ4StepK;
using kernels::kQ4TileCols;
using kernels::WType;

namespace {

inline uint32_t load_u32(const uint32_t* p, size_t i) {
  uint32_t v;
  std::memcpy(&v, p + i, 4);
  return v;
}

inline float load_float(const void* p, WType t, size_t i) {
  const auto* b = static_cast<const uint8_t*>(p);
  if (t == WType::kF32) {
    float f;
    std::memcpy(&f, b + i * 4, 4);
    return f;
  }
  uint16_t h;
  std::memcpy(&h, b + i * 2, 2);
  return t == WType::kF16 ? fp16_to_f32(h) : bf16_to_f32(h);
}

inline size_t byte_of(int j, int c) {
  return size_t(j / kQ4StepK) * kQ4StepBytes + size_t(c / 8) * 32 + size_t(c % 8) * 4 + size_t(j % 4);
}

// Kernel-order rows: groups sorted by id, rows ascending inside a group, each group padded to gs.
struct RowPlan {
  std::vector<int32_t> perm;    // [kp] input row or -1
  std::vector<int32_t> groups;  // kernel group -> checkpoint group
  int gs = 0, kp = 0;
  bool identity = true, reordered = false;
};

RowPlan plan_rows(const GptqSource& s) {
  const int K = s.k, G = s.n_groups;
  std::vector<int32_t> grp(static_cast<size_t>(K));
  for (int k = 0; k < K; ++k) {
    int g = s.g_idx ? s.g_idx[k] : k / s.group_size;
    if (g < 0 || g >= G) fail(s.name, ": g_idx[", k, "] = ", g, " is outside the ", G, " groups of scales/qzeros");
    grp[size_t(k)] = g;
  }
  std::vector<int32_t> count(size_t(G), 0), kgroup(size_t(G), -1);
  for (int g : grp) ++count[size_t(g)];
  RowPlan p;
  int max_count = 0;
  for (int g = 0; g < G; ++g) {
    if (count[size_t(g)] == 0) continue;
    kgroup[size_t(g)] = int(p.groups.size());
    p.groups.push_back(g);
    max_count = std::max(max_count, count[size_t(g)]);
  }
  p.gs = (max_count + 31) / 32 * 32;
  const int64_t kp = int64_t(p.groups.size()) * p.gs;
  if (kp > 2 * int64_t(K) + 32 * int64_t(p.groups.size()))
    fail(s.name, ": g_idx spreads ", K, " rows over groups too unevenly (largest group ", max_count, " rows, ",
         p.groups.size(), " groups)");
  p.kp = int(kp);
  p.perm.assign(size_t(p.kp), -1);
  std::vector<int32_t> next(p.groups.size());
  for (size_t i = 0; i < next.size(); ++i) next[i] = int32_t(i) * p.gs;
  int prev = -1;
  for (int k = 0; k < K; ++k) {
    int slot = next[size_t(kgroup[size_t(grp[size_t(k)])])]++;
    p.perm[size_t(slot)] = k;
    if (slot != k) p.identity = false;
    if (slot < prev) p.reordered = true;
    prev = slot;
  }
  return p;
}

// Spreads the 4 nibbles of a 16-bit value into the low nibbles of 4 bytes.
inline uint32_t spread_nibbles(uint32_t x) {
  x = (x | (x << 8)) & 0x00FF00FFu;
  return (x | (x << 4)) & 0x0F0F0F0Fu;
}

// Packs the codes into the tiles. Work is split by kernel-order steps (8 rows), so no two tasks
// write the same bytes, and qweight is read row by row: its rows are N words apart, and walking
// it tile by tile instead would touch a new page for every 64 bytes.
void pack_codes(const GptqSource& s, const RowPlan& p, uint8_t* qs, size_t tile_bytes, ThreadPool& pool) {
  const int N = s.n, K = s.k;
  auto dst = [&](int j, int n) { return qs + size_t(n / kQ4TileCols) * tile_bytes + byte_of(j, n % kQ4TileCols); };
  if (p.identity) {
    // A qweight word holds k = 8r..8r+7 of one column: low half k 0..3, high half k 4..7, which
    // become the low and high nibbles of the column's 4 bytes in step r.
    const int qrows = (K + 7) / 8;
    pool.parallel_for(
        qrows, 1,
        [&](int64_t r0, int64_t r1, int) {
          for (int r = int(r0); r < int(r1); ++r) {
            const int valid = std::min(8, K - r * 8);  // nibbles past K are padding
            const uint32_t mask = valid < 8 ? (1u << (4 * valid)) - 1u : 0xFFFFFFFFu;
            const uint32_t* row = s.qweight + size_t(r) * size_t(N);
            for (int n = 0; n < N; ++n) {
              const uint32_t word = load_u32(row, size_t(n)) & mask;
              const uint32_t packed = spread_nibbles(word & 0xFFFF) | (spread_nibbles(word >> 16) << 4);
              std::memcpy(dst(r * 8, n), &packed, 4);
            }
          }
        },
        4);
    return;
  }
  // Reordered rows: unpack the codes to bytes [K][N] first (sequential reads), then gather rows
  // in kernel order from that.
  std::vector<uint8_t> codes(size_t(K) * size_t(N));
  pool.parallel_for((K + 7) / 8, 1,
                    [&](int64_t r0, int64_t r1, int) {
                      for (int r = int(r0); r < int(r1); ++r) {
                        const uint32_t* row = s.qweight + size_t(r) * size_t(N);
                        for (int i = 0; i < 8 && r * 8 + i < K; ++i) {
                          uint8_t* c = codes.data() + size_t(r * 8 + i) * size_t(N);
                          for (int n = 0; n < N; ++n) c[n] = uint8_t((load_u32(row, size_t(n)) >> (4 * i)) & 0xF);
                        }
                      }
                    },
                    4);
  pool.parallel_for(
      p.kp / kQ4StepK, 1,
      [&](int64_t o0, int64_t o1, int) {
        for (int j = int(o0) * kQ4StepK; j < int(o1) * kQ4StepK; ++j) {
          const int k = p.perm[size_t(j)];
          if (k < 0) continue;
          const uint8_t* c = codes.data() + size_t(k) * size_t(N);
          const int up = (j % 8) < 4 ? 0 : 4;
          for (int n = 0; n < N; ++n) *dst(j, n) |= uint8_t(c[n] << up);
        }
      },
      4);
}

int zero_point(const GptqSource& s, int g, int n, float scale) {
  if (s.qzeros) {
    const size_t words = size_t(s.n + 7) / 8;
    return int((load_u32(s.qzeros, size_t(g) * words + size_t(n / 8)) >> (4 * (n % 8))) & 0xF) + s.zero_offset;
  }
  // G0 stores zero * scale as a float; the quantizer's zero is an integer.
  const float zf = load_float(s.zeros_g0, s.zeros_g0_type, size_t(n));
  if (scale == 0) return 0;
  const float z = zf / scale;
  const float zr = std::nearbyint(z);
  if (!(std::fabs(z - zr) <= 1e-2f) || zr < 0 || zr > 255)
    fail(s.name, ": zeros[", n, "] = ", zf, " is not an integer multiple (0..255) of scales[", n, "] = ", scale);
  return int(zr);
}

std::atomic<int> g_q4_act{-1};

// When the real columns share one zero point, padding entries (scale 0) take it too and the
// matrix says so (Q4Matrix::uniform_zero): the kernels then skip the per-group zero loads.
void mark_uniform_zero(Q4Weight& w) {
  const auto& m = w.mat;
  if (w.zeros.empty()) return;
  const int z = w.zeros[0];
  for (int t = 0; t < m.n_tiles; ++t)
    for (int g = 0; g < m.n_groups; ++g)
      for (int c = 0; c < kQ4TileCols && t * kQ4TileCols + c < m.n; ++c)
        if (w.zeros[(size_t(t) * size_t(m.n_groups) + size_t(g)) * kQ4TileCols + size_t(c)] != z) return;
  std::fill(w.zeros.begin(), w.zeros.end(), uint8_t(z));
  w.mat.uniform_zero = z;
}

}  // namespace

std::shared_ptr<Q4Weight> q4_repack(const GptqSource& s, int n_threads) {
  MH_CHECK(s.n > 0 && s.k > 0 && s.n_groups > 0, s.name, ": empty GPTQ linear");
  RowPlan p = plan_rows(s);
  auto w = std::make_shared<Q4Weight>();
  w->n_out = s.n;
  w->n_in = s.k;
  w->group_size = s.g_idx ? (s.k + s.n_groups - 1) / s.n_groups : s.group_size;
  w->act_order = p.reordered;
  w->block = p.gs % 128 == 0 ? 128 : p.gs % 64 == 0 ? 64 : 32;
  const int Gk = int(p.groups.size());
  kernels::Q4Matrix& m = w->mat;
  m.n = s.n;
  m.kp = p.kp;
  m.gs = p.gs;
  m.n_groups = Gk;
  m.n_tiles = (s.n + kQ4TileCols - 1) / kQ4TileCols;
  w->qs = PageBuffer(size_t(m.n_tiles) * m.tile_qs_bytes());
  w->qs.advise_huge_pages();  // decode streams it every token: +20-30% read rate on this machine
  w->scales.assign(size_t(m.n_tiles) * size_t(Gk) * kQ4TileCols, 0);
  w->zeros.assign(w->scales.size(), 0);
  // fp32 scales stay fp32 unless every one is an fp16 value (then fp16 halves their reads).
  std::vector<float> scales_f32(w->scales.size(), 0.0f);
  bool fp16_exact = true;

  for (int n = 0; n < s.n; ++n) {
    const int t = n / kQ4TileCols, c = n % kQ4TileCols;
    for (int kg = 0; kg < Gk; ++kg) {
      const int g = p.groups[size_t(kg)];
      const float sc = load_float(s.scales, s.scales_type, size_t(g) * size_t(s.n) + size_t(n));
      if (!std::isfinite(sc))
        fail(s.name, ": scales[", g, "][", n, "] = ", sc, " is not a finite ",
             s.scales_type == WType::kF16 ? "fp16 " : "", "value");
      const int z = zero_point(s, g, n, sc);
      const size_t gi = (size_t(t) * size_t(Gk) + size_t(kg)) * kQ4TileCols + size_t(c);
      w->scales[gi] = f32_to_fp16(sc);
      scales_f32[gi] = sc;
      fp16_exact = fp16_exact && fp16_to_f32(w->scales[gi]) == sc;
      w->zeros[gi] = uint8_t(z);
    }
  }
  {
    ThreadPool pool(std::max(1, n_threads));
    pack_codes(s, p, w->qs.data(), m.tile_qs_bytes(), pool);
  }
  m.qs = w->qs.data();
  if (fp16_exact) {
    m.scales = w->scales.data();
  } else {
    w->scales = {};
    w->scales_f32 = std::move(scales_f32);
    m.scales_f32 = w->scales_f32.data();
  }
  mark_uniform_zero(*w);
  m.zeros = w->zeros.data();
  if (!p.identity) w->perm = std::move(p.perm);
  if (s.bias) {
    std::vector<float> b(size_t(s.n));
    bool any = false;
    for (int n = 0; n < s.n; ++n) {
      b[size_t(n)] = load_float(s.bias, s.bias_type, size_t(n));
      any = any || b[size_t(n)] != 0.0f;
    }
    if (any) w->bias = std::move(b);
  }
  return w;
}

Q4Entry q4_entry(const Q4Weight& w, int n, int j) {
  const auto& m = w.mat;
  MH_CHECK(!m.ksc, "q4_entry: a Q4_K matrix has no integer zero point");
  const int t = n / kQ4TileCols, c = n % kQ4TileCols;
  const uint8_t byte = m.qs[size_t(t) * m.tile_qs_bytes() + byte_of(j, c)];
  const size_t gi = (size_t(t) * size_t(m.n_groups) + size_t(j / m.gs)) * kQ4TileCols + size_t(c);
  Q4Entry e;
  e.code = uint8_t((j % 8) < 4 ? byte & 15 : byte >> 4);
  e.zero = m.zeros[gi];
  e.scale = kernels::q4_scale_at(m, gi);
  return e;
}

// ---- activation mode ------------------------------------------------------------------------

const char* q4_act_name(Q4Act a) {
  switch (a) {
    case Q4Act::kQ8:
      return "q8";
    case Q4Act::kF32:
      return "f32";
    case Q4Act::kAuto:
      break;
  }
  return "auto";
}

bool parse_q4_act(const std::string& s, Q4Act* out) {
  if (s == "q8")
    *out = Q4Act::kQ8;
  else if (s == "f32")
    *out = Q4Act::kF32;
  else if (s == "auto")
    *out = Q4Act::kAuto;
  else
    return false;
  return true;
}

void set_q4_act(Q4Act a) { g_q4_act.store(int(a), std::memory_order_relaxed); }

Q4Act q4_act() {
  int a = g_q4_act.load(std::memory_order_relaxed);
  if (a >= 0) return Q4Act(a);
  Q4Act v = Q4Act::kAuto;
  if (const char* env = std::getenv("METHARME_Q4_ACT")) {
    if (!parse_q4_act(env, &v)) fail("METHARME_Q4_ACT='", env, "' is not one of q8, f32, auto");
  }
  g_q4_act.store(int(v), std::memory_order_relaxed);
  return v;
}

Q4Act q4_act_for_rows(int M) {
  Q4Act a = q4_act();
  if (a != Q4Act::kAuto) return a;
  (void)M;
  return Q4Act::kQ8;
}

// ---- execution ------------------------------------------------------------------------------

namespace {

// At or above this many rows the fp32 design dequantizes panels of 64 columns and calls sgemm.
constexpr int kSgemmMinRows = 8;
constexpr int kPanelTiles = 4;

// Prepared activations for one input permutation. Buffers live in the calling thread and only
// grow, so the decode loop does not allocate after the first step.
struct ActBuf {
  const Q4Weight* key = nullptr;
  std::vector<float> xf, gsum;
  std::vector<int8_t> xq;
  std::vector<float> xd;
  std::vector<int32_t> xs;
};

template <class T>
void grow(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
}

bool same_layout(const Q4Weight& a, const Q4Weight& b, Q4Act mode) {
  if (a.mat.kp != b.mat.kp || a.n_in != b.n_in || a.perm.size() != b.perm.size()) return false;
  if (mode == Q4Act::kQ8 ? a.block != b.block : a.mat.gs != b.mat.gs) return false;
  return a.perm.empty() || std::memcmp(a.perm.data(), b.perm.data(), a.perm.size() * sizeof(int32_t)) == 0;
}

// x row in kernel order.
void gather_row(const Q4Weight& w, const float* x, float* out) {
  const int kp = w.mat.kp, K = w.n_in;
  if (w.perm.empty()) {
    std::memcpy(out, x, size_t(K) * sizeof(float));
    std::fill(out + K, out + kp, 0.0f);
    return;
  }
  for (int j = 0; j < kp; ++j) {
    int k = w.perm[size_t(j)];
    out[j] = k >= 0 ? x[k] : 0.0f;
  }
}

void prepare(ActBuf& a, const Q4Weight& w, Q4Act mode, const float* x, int M, ThreadPool& pool) {
  const int kp = w.mat.kp, K = w.n_in;
  const auto& kern = kernels::q4_kernels();
  if (mode == Q4Act::kQ8) {
    const int nb = kp / w.block;
    grow(a.xq, size_t(M) * size_t(kp));
    grow(a.xd, size_t(M) * size_t(nb));
    grow(a.xs, size_t(M) * size_t(nb));
    auto row = [&](int m) {
      thread_local std::vector<float> tmp;
      grow(tmp, size_t(kp));
      gather_row(w, x + size_t(m) * size_t(K), tmp.data());
      kern.quantize_q8(tmp.data(), kp, w.block, a.xq.data() + size_t(m) * size_t(kp),
                       a.xd.data() + size_t(m) * size_t(nb), a.xs.data() + size_t(m) * size_t(nb));
    };
    if (M < 4) {
      for (int m = 0; m < M; ++m) row(m);
    } else {
      pool.run(M, [&](int m, int) { row(m); });
    }
    return;
  }
  const int G = w.mat.n_groups, gs = w.mat.gs;
  grow(a.xf, size_t(M) * size_t(kp));
  grow(a.gsum, size_t(M) * size_t(G));
  auto row = [&](int m) {
    float* xr = a.xf.data() + size_t(m) * size_t(kp);
    gather_row(w, x + size_t(m) * size_t(K), xr);
    for (int g = 0; g < G; ++g) {
      float s = 0;
      for (int j = g * gs; j < (g + 1) * gs; ++j) s += xr[j];
      a.gsum[size_t(m) * size_t(G) + size_t(g)] = s;
    }
  };
  if (M < 4) {
    for (int m = 0; m < M; ++m) row(m);
  } else {
    pool.run(M, [&](int m, int) { row(m); });
  }
}

void run_sgemm_panel(const Q4Weight& w, const float* xf, int M, int t0, int t1, float* y) {
  const auto& m = w.mat;
  thread_local std::vector<float> panel;
  grow(panel, size_t(kPanelTiles) * kQ4TileCols * size_t(m.kp));
  for (int p0 = t0; p0 < t1; p0 += kPanelTiles) {
    const int p1 = std::min(t1, p0 + kPanelTiles);
    kernels::q4_kernels().dequant(m, p0, p1, panel.data());
    const int n0 = p0 * kQ4TileCols, cols = std::min(w.n_out, p1 * kQ4TileCols) - n0;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, cols, m.kp, 1.0f, xf, m.kp, panel.data(), m.kp, 0.0f,
                y + n0, w.n_out);
  }
}

// y[m][n] += sum_b offsets[n][b] * (sum of x[m][32b .. 32b+31]): the dense f16 kernels on the
// block sums. Buffers are the calling thread's and only grow.
void add_block_offsets(const Q4Weight& w, const float* x, int M, float* y, ThreadPool& pool) {
  const int K = w.n_in, N = w.n_out, B = K / 32;
  thread_local std::vector<float> sums, tmp;
  grow(sums, size_t(M) * size_t(B));
  grow(tmp, size_t(M) * size_t(N));
  for (int m = 0; m < M; ++m)
    for (int b = 0; b < B; ++b) {
      const float* xb = x + size_t(m) * size_t(K) + size_t(32 * b);
      float s = 0;
      for (int j = 0; j < 32; ++j) s += xb[j];
      sums[size_t(m) * size_t(B) + size_t(b)] = s;
    }
  const Linear off = make_dense_linear(WType::kF32, w.offsets.data(), N, B);
  linear(off, sums.data(), M, tmp.data(), pool);
  for (size_t i = 0; i < size_t(M) * size_t(N); ++i) y[i] += tmp[i];
}

}  // namespace

void q4_linear_multi(const LinearOut* outs, int n_outs, const float* x, int M, ThreadPool& pool) {
  if (M <= 0 || n_outs <= 0) return;
  const Q4Act mode = q4_act_for_rows(M);
  const bool sgemm = mode == Q4Act::kF32 && M >= kSgemmMinRows;
  constexpr int kMaxOuts = 8;
  MH_CHECK(n_outs <= kMaxOuts, "q4_linear_multi: too many linears");
  thread_local ActBuf tl_bufs[kMaxOuts];
  ActBuf* bufs = tl_bufs;  // the caller's; a bare thread_local name in the lambda would be the worker's
  int act_of[kMaxOuts];
  int n_acts = 0;
  for (int i = 0; i < n_outs; ++i) {
    const Q4Weight& w = *outs[i].w->q4;
    act_of[i] = -1;
    for (int j = 0; j < n_acts && act_of[i] < 0; ++j)
      if (same_layout(*bufs[j].key, w, mode)) act_of[i] = j;
    if (act_of[i] < 0) {
      bufs[n_acts].key = &w;
      prepare(bufs[n_acts], w, mode, x, M, pool);
      act_of[i] = n_acts++;
    }
  }
  // Split the tiles of all linears into pieces, a few per thread; sgemm pieces hold whole panels.
  const int align = sgemm ? kPanelTiles : 1;
  int64_t total = 0;
  for (int i = 0; i < n_outs; ++i) total += outs[i].w->q4->mat.n_tiles;
  const int per_thread = M < kSgemmMinRows ? 4 : 8;
  int64_t n_chunks = std::max<int64_t>(1, std::min<int64_t>(total / align, int64_t(pool.size()) * per_thread));
  int64_t per = (total + n_chunks - 1) / n_chunks;
  per = (per + align - 1) / align * align;
  // Linear i is cut into ceil(n_tiles / per) pieces; task t is found by walking the linears (no
  // per-piece table, so any thread count works and nothing is allocated).
  int n_pieces = 0;
  for (int i = 0; i < n_outs; ++i) n_pieces += int((outs[i].w->q4->mat.n_tiles + per - 1) / per);
  struct Piece {
    int lin, t0, t1;
  };
  auto piece = [&](int t) {
    int lin = 0;
    for (;; ++lin) {
      const int n = int((outs[lin].w->q4->mat.n_tiles + per - 1) / per);
      if (t < n) break;
      t -= n;
    }
    const int T = outs[lin].w->q4->mat.n_tiles, t0 = int(int64_t(t) * per);
    return Piece{lin, t0, int(std::min<int64_t>(T, t0 + per))};
  };
  const auto& kern = kernels::q4_kernels();
  // Enough rows to fill AMX tiles: the AMX product (nullptr where unusable, kernels/q4.h).
  // Q4_K's scale layout has no AMX path.
  const kernels::Q4GemmQ8 amx = M >= kernels::kQ4AmxMinRows ? kernels::q4_gemm_q8_amx() : nullptr;
  pool.run(n_pieces, [&](int task, int) {
    const Piece p = piece(task);
    const Q4Weight& w = *outs[p.lin].w->q4;
    const ActBuf& a = bufs[act_of[p.lin]];
    float* y = outs[p.lin].y;
    if (sgemm) {
      run_sgemm_panel(w, a.xf.data(), M, p.t0, p.t1, y);
    } else if (mode == Q4Act::kQ8) {
      kernels::Q8Act xa{a.xq.data(), a.xd.data(), a.xs.data(), w.mat.kp, w.block};
      (amx && !w.mat.ksc ? amx : kern.gemm_q8)(w.mat, xa, M, p.t0, p.t1, y, w.n_out);
    } else {
      kernels::F32Act xa{a.xf.data(), a.gsum.data(), w.mat.kp, w.mat.n_groups};
      kern.gemm_f32(w.mat, xa, M, p.t0, p.t1, y, w.n_out);
    }
  });
  for (int i = 0; i < n_outs; ++i)
    if (!outs[i].w->q4->offsets.empty()) add_block_offsets(*outs[i].w->q4, x, M, outs[i].y, pool);
  for (int i = 0; i < n_outs; ++i) {
    const Q4Weight& w = *outs[i].w->q4;
    if (w.bias.empty()) continue;
    for (int m = 0; m < M; ++m)
      for (int n = 0; n < w.n_out; ++n) outs[i].y[size_t(m) * size_t(w.n_out) + size_t(n)] += w.bias[size_t(n)];
  }
}

}  // namespace metharme::ops
